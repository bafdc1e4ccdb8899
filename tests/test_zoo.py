"""The zoo behaves like timm models: API, features, intermediates, JSON models, errors."""

import pytest
import timm
import torch

import prunet
from prunet.zoo import UnknownModelError
from nvidia_reference import FIXTURES

ZOO = prunet.zoo.list_models()


def test_import_registers_every_zoo_model_with_timm():
    assert set(ZOO) == {"prunet_p0", "prunet_p1", "gpunet_0", "gpunet_1", "gpunet_2", "gpunet_d1", "gpunet_d2"}
    for name in ZOO:
        assert timm.is_model(name)
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.interpolation == "bicubic" and cfg.mean == (0.485, 0.456, 0.406)
        assert tuple(cfg.input_size) == tuple(prunet.zoo.entry(name).input_size)
        assert cfg.crop_pct == prunet.zoo.entry(name).eval_cfg["crop_pct"]


def test_data_config_resolves_like_any_timm_model():
    model = timm.create_model("prunet_p0")
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, 224, 224) and data_cfg["crop_pct"] == 0.875


@pytest.mark.parametrize("name", ["prunet_p0", "gpunet_d1"])
def test_features_only_levels_have_doubling_strides(name):
    feats = timm.create_model(name, features_only=True)
    red = feats.feature_info.reduction()
    assert red == [2 ** (i + 1) for i in range(len(red))]
    x = torch.randn(1, 3, 128, 128)
    outs = feats(x)
    assert [o.shape[1] for o in outs] == feats.feature_info.channels()
    sub = timm.create_model(name, features_only=True, out_indices=(2, 3, 4))
    assert sub.feature_info.reduction() == [8, 16, 32]
    assert [o.shape[-1] for o in sub(x)] == [16, 8, 4]


def test_forward_intermediates_matches_forward():
    model = timm.create_model("gpunet_0").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-5)
        assert len(inter) == len(model.feature_info)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
        assert [t.shape for t in only] == [t.shape for t in inter[-2:]]
        kept = model.prune_intermediate_layers(indices=(1, 2))
        assert kept == [1, 2]
        again = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(again, inter[1:3]))


def test_head_api():
    model = timm.create_model("gpunet_d1").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features == 1152
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size) and model.head_hidden_size == 1984
        assert model.get_classifier() is model.head.classifier
        model.reset_classifier(10)
        assert model(x).shape == (2, 10)
        model.reset_classifier(0, "")
        assert model(x).ndim == 4


def test_grad_checkpointing_same_output_and_group_matcher():
    model = timm.create_model("prunet_p0").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = model(x)
        model.set_grad_checkpointing(True)
        b = model(x)
    assert torch.allclose(a, b, atol=1e-5)
    from timm.models._manipulate import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True))
    assert len(groups) > 3


def test_torchscript_and_fx():
    model = timm.create_model("gpunet_1").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        scripted = torch.jit.script(model)
        assert torch.allclose(scripted(x), ref, atol=1e-5)
        traced = torch.fx.symbolic_trace(model)
        assert torch.allclose(traced(x), ref, atol=1e-5)


def test_json_file_is_a_model(tmp_path):
    spec = prunet.arch.load(FIXTURES / "configs" / "0.85ms.json")
    path = prunet.arch.save(spec, tmp_path / "mine.json")
    model = prunet.create_model(str(path), num_classes=7)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    nvidia = prunet.create_model(FIXTURES / "configs" / "0.85ms.json")
    assert nvidia.pretrained_cfg["input_size"] == (3, 288, 288)
    feats = prunet.create_model(str(path), features_only=True, out_indices=(3, 4))
    assert feats.feature_info.reduction() == [16, 32]


def test_timm_names_pass_through_and_unknown_names_fail_clearly():
    assert type(prunet.create_model("resnet18")).__name__ == "ResNet"
    with pytest.raises(UnknownModelError, match="not a zoo model"):
        prunet.create_model("prunet_p9")
    with pytest.raises(prunet.arch.ArchError, match="file not found"):
        prunet.create_model("nowhere/arch.json")
    with pytest.raises(UnknownModelError, match=r"local-dir:/nowhere/repo: cannot read its config.json"):
        prunet.create_model("local-dir:/nowhere/repo")  # a timm source, not a path (issue 12, item 5)


def test_in_chans_and_drop_path_rate():
    model = timm.create_model("gpunet_0", in_chans=1, drop_path_rate=0.1)
    assert model.stem[0].conv.in_channels == 1
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 1000)


def test_weights_initialised_like_timm_efficientnet():
    """Conv ~ N(0, sqrt(2/fan_out)), BN γ=1 β=0, classifier U(±1/sqrt(out)), biases 0 (issue 12,
    item 14); ``weight_init="torch"`` keeps PyTorch's defaults for reproducing older runs."""
    import math

    torch.manual_seed(0)
    model = timm.create_model("prunet_p0")
    head = model.head.conv_head.weight  # 1x1, groups=1: fan_out = out_channels
    assert abs(head.std().item() / math.sqrt(2.0 / head.shape[0]) - 1) < 0.05
    dw = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    fan_out = dw.kernel_size[0] * dw.kernel_size[1] * dw.out_channels // dw.groups
    assert abs(dw.weight.std().item() / math.sqrt(2.0 / fan_out) - 1) < 0.1
    fc = model.head.classifier
    assert fc.weight.abs().max().item() <= 1 / math.sqrt(fc.out_features)
    assert not fc.bias.any()
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None)
    bn = model.stem[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()

    plain = timm.create_model("prunet_p0", weight_init="torch")
    assert plain.head.classifier.bias.abs().sum() > 0  # PyTorch's default: uniform, non-zero
    with pytest.raises(ValueError, match="weight_init"):
        timm.create_model("prunet_p0", weight_init="xavier")


def test_every_registered_name_builds_with_default_arguments():
    """timm's contract (its own tests loop over timm.list_models()): issue 12, item 6."""
    import prunet.zoo.factory as factory

    registered = [n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("prunet")]
    assert set(registered) == set(ZOO) | {"prunet_arch"}
    model = timm.create_model("prunet_arch")
    assert model.arch == prunet.zoo.get_arch(factory.PRUNET_ARCH_DEFAULT)
    assert timm.models.get_pretrained_cfg("prunet_arch").input_size == (3, 224, 224)
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model("prunet_arch", pretrained=True)


def test_blocks_and_preprocessing_come_from_timm():
    """SE and conv-BN-act are timm's EfficientNet blocks (same parameter names as NVIDIA's), mean/std
    timm's constants (issue 12, item 13). IRB/fused blocks stay ours: timm's round the hidden
    width to a multiple of 8, searched widths are arbitrary."""
    from timm.models._efficientnet_blocks import ConvBnAct, SqueezeExcite

    import prunet.zoo.factory as factory

    model = timm.create_model("gpunet_1")
    assert isinstance(model.stem[0], ConvBnAct)
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert se and all(hasattr(m, "conv_reduce") and hasattr(m, "conv_expand") for m in se)
    assert factory.IMAGENET_MEAN is timm.data.IMAGENET_DEFAULT_MEAN
    assert factory.IMAGENET_STD is timm.data.IMAGENET_DEFAULT_STD

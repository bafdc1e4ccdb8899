"""RepNAS: the re-parameterisable 'rep' block (fusion, export, schema) and the repnas strategy
(backbone chosen by the table, global top-k budget, straight-through gradient, a tiny search).

The cross-strategy contract (CLI, resume after kill, torchrun, ONNX parity, timm/hf-hub) is in
tests/test_search_strategies_contract.py; only RepNAS-specific behaviour is tested here."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from prunet.arch import ArchError, ArchSpec, ConvSpec, HeadSpec, from_dict, to_dict
from prunet.arch.rep import REP_BRANCHES, RepSpec, all_branches
from test_search_fixtures import (TINY_ARGS, mid_target, needs_fashion, run, search_cmd,  # noqa: F401
                                  tiny_lut, tiny_space)

torch.set_num_threads(1)


def _random_bn(module: torch.nn.Module, seed: int = 0) -> None:
    """BN statistics and affine parameters far from their defaults, so fusion errors show."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ----------------------------------------------------------------------------- the block


def _combos() -> list[tuple[int, int, int, str, tuple[str, ...]]]:
    """Each branch alone, all allowed branches together, and a mixed pair, for stride 1 and 2,
    equal and different widths (identity where allowed), both paddings."""
    out = []
    for stride, (i, o), pad in itertools.product((1, 2), ((8, 8), (6, 10)), ("symmetric", "valid")):
        allowed = all_branches(i, o, stride)
        for b in allowed:
            out.append((i, o, stride, pad, (b,)))
        out.append((i, o, stride, pad, allowed))
        out.append((i, o, stride, pad, ("1x1_3x3", "1x1_avg")))
    return out


@pytest.mark.parametrize("act", ["relu", "silu"])
def test_fused_block_matches_branches_for_every_branch_class(act):
    from prunet.nn import RepBlock, inference_form

    worst = 0.0
    for n, (i, o, stride, pad, branches) in enumerate(_combos()):
        block = RepBlock(RepSpec(i, o, stride, act, branches, padding=pad))
        _random_bn(block, n)
        block.eval()
        x = torch.randn(2, i, 9, 10, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            ref = block(x)
            fused = inference_form(block)
            got = fused(x)
        assert list(dict(fused.named_parameters())) == ["reparam_conv.weight", "reparam_conv.bias"]
        assert got.shape == ref.shape
        worst = max(worst, _rel(got, ref))
        assert _rel(got, ref) < 1e-5, (branches, stride, pad, _rel(got, ref))
    assert any("identity" in c[4] for c in _combos()) and any(c[2] == 2 for c in _combos())
    assert worst > 0.0  # the comparison really compared two computations


def _rep_net(branches_per_block: list[tuple[str, ...]] | None = None) -> ArchSpec:
    shapes = [(8, 8, 1), (8, 16, 2), (16, 16, 1)]
    blocks = tuple(RepSpec(i, o, s, "relu", branches_per_block[k] if branches_per_block else all_branches(i, o, s))
                   for k, (i, o, s) in enumerate(shapes))
    return ArchSpec("rep-net", (1, 16, 16), (ConvSpec(1, 8, 3, 2),), blocks, HeadSpec(16, 32, 10, dropout=0.0))


def test_timm_reparameterize_model_fuses_a_whole_net():
    from timm.utils.model import reparameterize_model

    from prunet.nn import PruNet, RepBlock

    net = PruNet(_rep_net())
    _random_bn(net)
    net.eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        ref = net(x)
        fused = reparameterize_model(net)
        got = fused(x)
    blocks = [m for m in fused.modules() if isinstance(m, RepBlock)]
    assert len(blocks) == 3 and all(b.reparam_conv is not None and len(b.branches) == 0 for b in blocks)
    assert all(b.reparam_conv is None for b in net.modules() if isinstance(b, RepBlock))  # a copy was fused
    assert _rel(got, ref) < 1e-5


def test_onnx_export_holds_only_the_fused_convs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from prunet.export.onnx import to_onnx
    from prunet.nn import PruNet

    spec = _rep_net()
    net = PruNet(spec)
    _random_bn(net)
    net.eval()
    path = tmp_path / "rep.onnx"
    report = to_onnx(net, path, batch=2, input_size=(1, 16, 16), images=False, check_tensorrt=False,
                     exporter="torchscript")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == 1 + len(spec.blocks) + 1  # stem, one per rep block, head 1x1
    assert "AveragePool" not in ops and "Pad" not in ops and "Slice" not in ops
    assert ops.count("BatchNormalization") <= 2  # at most the stem's and the head's, never a branch's
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        ref = net(x)  # the unfused net
    assert _rel(got, ref) < 1e-4 and report.max_rel < 1e-4


def test_rep_json_round_trips_and_builds(tmp_path):
    import prunet
    from prunet.arch import save

    spec = _rep_net([("3x3", "identity", "1x1_avg"), ("1x3", "3x1"), ("1x1_3x3",)])
    assert from_dict(json.loads(json.dumps(to_dict(spec)))) == spec
    model = prunet.create_model(str(save(spec, tmp_path / "rep.json")))
    assert [sorted(b.branches) for st in model.stages for b in st] == [
        sorted(["3x3", "identity", "1x1_avg"]), sorted(["1x3", "3x1"]), ["1x1_3x3"]]


@pytest.mark.parametrize("branches, message", [
    (["3x3", "5x5"], "blocks[0].branches: unknown branch '5x5'"),
    ("3x3", "blocks[0].branches: expected a JSON array"),
    ([], "blocks[0].branches: expected at least one branch"),
    (["3x3", 1], "blocks[0].branches[1]: expected a string"),
    (["3x3", "3x3"], "blocks[0].branches: a branch is listed twice"),
])
def test_bad_branches_are_one_line_errors_naming_the_field(branches, message):
    d = to_dict(_rep_net())
    d["blocks"][0]["branches"] = branches
    with pytest.raises(ArchError) as e:
        from_dict(d)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_identity_needs_equal_shapes():
    d = to_dict(_rep_net())
    d["blocks"][1]["branches"] = ["3x3", "identity"]  # 8 -> 16, stride 2
    with pytest.raises(ArchError, match=r"blocks\[1\]\.branches: 'identity' needs stride 1 and in_chs == out_chs"):
        from_dict(d)


def test_latency_key_ignores_branches():
    from prunet.latency.lut import block_key

    a, b = RepSpec(8, 8, 1, "relu", ("3x3",)), RepSpec(8, 8, 1, "relu", REP_BRANCHES)
    assert block_key(a, (8, 8)) == block_key(b, (8, 8)) == "rep:8>8:s1:relu:symmetric@8x8"
    assert block_key(RepSpec(8, 8, 1, "silu"), (8, 8)) != block_key(a, (8, 8))


# ----------------------------------------------------------------------------- the strategy


def _synthetic_table(space, missing_rep: bool = False):
    """A table whose entries are the parts' MACs in millions (deterministic, so the backbone choice
    can be checked exhaustively); a = 1, c = 0."""
    from prunet.arch import HeadSpec as _Head
    from prunet.latency.lut import LatencyTable, space_parts

    entries = {}
    for key, (spec, in_chs, hw) in space_parts(space).items():
        if missing_rep and key.startswith("rep:"):
            continue
        if isinstance(spec, _Head):
            macs = in_chs * spec.conv_chs * hw[0] * hw[1] + spec.conv_chs * spec.num_classes
        else:
            out = spec.out_hw(hw)
            k = getattr(spec, "kernel", 3)
            macs = in_chs * spec.out_chs * k * k * out[0] * out[1] + getattr(spec, "hidden_chs", 0) * hw[0] * hw[1] * 10
        entries[key] = macs / 1e6
    return LatencyTable(space_name=space.name, space_hash=space.hash, backend="torch", statistic="min", threads=1,
                        entries=entries)


def _strategy(space, table, target: float, **cfg):
    from prunet.search.config import LoopConfig
    from prunet.search.strategies.repnas import RepNASStrategy
    from prunet.search.strategy import StrategyContext

    ctx = StrategyContext(space=space, table=table, target_ms=target, seed=3, loop=LoopConfig(steps=4),
                          device=torch.device("cpu"))
    s = RepNASStrategy(ctx, RepNASStrategy.make_config(cfg))
    s.check_target()
    return s


@pytest.fixture
def space(tiny_space):
    from prunet.search.space import load_space

    return load_space(tiny_space)


def test_backbone_is_the_largest_chain_within_the_target(space):
    from prunet.arch.rep import stage_options
    from prunet.search.config import SearchError

    table = _synthetic_table(space)
    s = _strategy(space, table, 1e9)
    preds = {}
    for choice in itertools.product(*stage_options(space)):
        preds[tuple(choice)] = table.predict(s._chain_spec(list(choice), "c"))
    lo, hi = min(preds.values()), max(preds.values())
    for target in (lo, (lo + hi) / 2, hi * 0.9, hi * 2):
        s = _strategy(space, table, target)
        best = max(p for p in preds.values() if p <= target)
        assert s.chain_ms == pytest.approx(best) and s.chain_ms <= target
        assert table.predict(s._chain_spec(s.choice, "c")) == pytest.approx(s.chain_ms)
    with pytest.raises(SearchError, match="below the smallest plain chain"):
        _strategy(space, table, lo * 0.99)
    with pytest.raises(SearchError, match="rebuild it"):
        _strategy(space, _synthetic_table(space, missing_rep=True), hi)


def test_topk_budget_every_layer_and_only_allowed_branches():
    from prunet.search.strategies.repnas import topk_mask

    g = torch.Generator().manual_seed(0)
    allowed = torch.rand(6, len(REP_BRANCHES), generator=g) > 0.3
    allowed[:, 1] = True
    for k in (6, 9, int(allowed.sum())):
        for _ in range(20):
            mask = topk_mask(torch.randn(allowed.shape, generator=g), allowed, k)
            assert int(mask.sum()) == k and bool(mask.any(1).all()) and not bool((mask & ~allowed).any())
    scores = torch.zeros(2, len(REP_BRANCHES))
    scores[0] = 5.0  # layer 0 is better everywhere, yet layer 1 keeps its best branch
    scores[1, 3] = 1.0
    mask = topk_mask(scores, torch.ones_like(scores, dtype=torch.bool), 3)
    assert mask[1].tolist() == [j == 3 for j in range(len(REP_BRANCHES))] and int(mask[0].sum()) == 2


def test_gates_respect_budget_are_rank_identical_and_pass_gradient_to_alphas(space):
    s = _strategy(space, _synthetic_table(space), 1e9, branch_ratio=0.4)
    net = s.build()
    assert s.k == round(0.4 * s.total) and int(net.allowed.sum()) == s.total
    g1, m1 = s.gates(5)
    g2, m2 = s.gates(5)  # another rank, or the same step after a resume: same draw
    assert torch.equal(m1, m2) and torch.equal(g1, g2) and int(m1.sum()) == s.k
    assert any(not torch.equal(m1, s.gates(t)[1]) for t in range(6, 12))  # the noise does move the mask
    assert torch.all(g1.detach()[m1] == 1.0)  # straight-through: the forward value is the hard mask
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    loss = s.weight_loss(x, y, 5)
    loss.backward()
    grad = net.alphas.grad
    assert grad is not None and bool((grad[s._last_mask] != 0).all())  # every kept branch's α learns
    assert bool((grad[~s._last_mask] == 0).all())  # branches that did not run get none


def test_derived_net_keeps_the_noise_free_topk_and_inherits_weights(space):
    s = _strategy(space, _synthetic_table(space), 1e9, branches=9)
    net = s.build()
    with torch.no_grad():
        net.alphas.copy_(torch.randn(net.alphas.shape, generator=torch.Generator().manual_seed(2)))
    d = s.derive()
    mask = s.final_mask()
    assert sum(len(b.branches) for b in d.spec.blocks) == 9 == int(mask.sum())
    for i, b in enumerate(d.spec.blocks):
        assert b.branches == tuple(n for j, n in enumerate(REP_BRANCHES) if mask[i, j])
    src = net.net.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in d.model.state_dict().items())
    assert d.details["repnas"]["branches_kept"] == 9


@needs_fashion
def test_tiny_repnas_search_end_to_end(tiny_space, tiny_lut, tmp_path):
    import prunet
    from safetensors.torch import load_file

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"branch_ratio": 0.5}))
    out = tmp_path / "run"
    target = mid_target(tiny_lut, tiny_space)
    r = run(search_cmd(tiny_space, tiny_lut, cfg, out, target, "--strategy", "repnas", "--steps", "6", "--warmup-steps", "2",
                       "--train-limit", "600", "--eval-images", "100"))
    assert r.returncode == 0, r.stderr
    arch = json.loads((out / "arch.json").read_text())
    assert arch["blocks"] and {b["type"] for b in arch["blocks"]} == {"rep"}
    details = arch["provenance"]["details"]["repnas"]
    assert sum(len(b["branches"]) for b in arch["blocks"]) == details["branch_budget"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "repnas" and summary["within_target"] and summary["predicted_ms"] <= target
    model = prunet.create_model(str(out / "arch.json"))
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(sum(x["kept"].values()) == details["branch_budget"] for x in lines)

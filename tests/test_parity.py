"""Parity with NVIDIA's own GPUNet builder (reference logits in ../shared/fixtures/gpunet/reference).

Follows the fixtures README: build from NVIDIA's JSON, load the recipe weights through our
NVIDIA-key converter, compare logits (relative error ≤ 3e-4), the input-dependent part
(row0 − row1, ≤ 3e-3) and the parameter count (exact).
"""

import numpy as np
import pytest
import torch

import prunet
from nvidia_reference import FIXTURES, manifest, recipe_input, recipe_weights, reference_logits, reference_names

NAMES = reference_names()


def test_fixtures_present():
    assert len(NAMES) >= 3, f"expected the reference fixtures in {FIXTURES}"


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_nvidia_builder(name):
    man = manifest(name)
    spec = prunet.arch.load(FIXTURES / "configs" / man["config"])
    model = prunet.zoo.build(spec)
    model.load_state_dict(prunet.zoo.convert_nvidia_state_dict(recipe_weights(man), spec), strict=True)
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == man["num_params"]
    with torch.no_grad():
        ours = model(recipe_input(man)).numpy().astype(np.float64)
    ref = reference_logits(name).astype(np.float64)
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert rel <= 3e-4, f"relative logit error {rel:.2e}"
    diff_rel = np.linalg.norm((ours[0] - ours[1]) - (ref[0] - ref[1])) / np.linalg.norm(ref[0] - ref[1])
    assert diff_rel <= 3e-3, f"input-dependent part off by {diff_rel:.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_equals_nvidia_config_build(name):
    """The zoo's JSON and NVIDIA's JSON give the same modules and take the same weights."""
    man = manifest(name)
    zoo_name = next(n for n in prunet.zoo.list_models() if prunet.zoo.entry(n).nvidia_config == man["config"])
    from_nvidia = prunet.zoo.build(prunet.arch.load(FIXTURES / "configs" / man["config"]))
    from_zoo = prunet.create_model(zoo_name)
    assert repr(from_nvidia) == repr(from_zoo)
    sd = prunet.zoo.convert_nvidia_state_dict(recipe_weights(man), from_zoo.arch)
    from_zoo.load_state_dict(sd, strict=True)

"""GrowEfficient (``--strategy growefficient``): temperature schedule, sampled binary masks with
gradients to their parameters, the exact expected cost, the budget pull in both directions, the
FLOPs budget, the derived net, and one tiny end-to-end search.

The unit tests use a synthetic latency table (every entry of the tiny space, priced by hidden
width × feature-map area) so that they are fast and their expectations exact; the end-to-end
search uses the real torch-measured table of the shared fixtures."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from test_search_fixtures import (PY, TINY_ARGS, TINY_SPACE, mid_target, needs_fashion, run,  # noqa: F401
                                  tiny_lut, tiny_space)


def _space():
    from prunet.search.space import load_space

    return load_space(TINY_SPACE)


def _table(space, a: float = 1.1, c: float = 0.01):
    from prunet.latency.lut import LatencyTable, space_parts

    entries = {}
    for key, (spec, _, hw) in space_parts(space).items():
        entries[key] = 0.01 + 0.001 * getattr(spec, "hidden_chs", 16) * hw[0] * hw[1] / 64
    return LatencyTable(space.name, space.hash, "torch", "min", 1, entries, a=a, c=c)


def _strategy(target_ms: float = 0.2, steps: int = 20, warmup: int = 2, build: bool = True, **cfg):
    from prunet.search.config import LoopConfig
    from prunet.search.strategy import StrategyContext, get_strategy

    space = _space()
    cls = get_strategy("growefficient")
    ctx = StrategyContext(space=space, table=_table(space), target_ms=target_ms, seed=0,
                          loop=LoopConfig(steps=steps, warmup_steps=warmup), device=torch.device("cpu"))
    s = cls(ctx, cls.make_config(cfg))
    s.check_target()
    if build:
        torch.manual_seed(0)
        s.build()
    return s


def _set_masks(s, value=None, gen=None):
    with torch.no_grad():
        for _, p in s.arch_parameters():
            if value is not None:
                p.fill_(value)
            else:
                p.copy_(torch.randn(p.shape, generator=gen))


def test_registered_with_its_config():
    from prunet.search.strategy import strategies

    cls = strategies()["growefficient"]
    assert cls.joint and cls.config_class.__name__ == "GrowEfficientConfig"


def test_temperature_anneals_towards_a_step_function():
    from prunet.search.growing import mask_probs

    s = _strategy(steps=30, warmup=5, build=False, beta_start=1.0, beta_end=100.0)
    betas = [s.beta(t) for t in range(30)]
    assert betas[:6] == [1.0] * 6  # warm-up and the first searched step
    assert betas[-1] == pytest.approx(100.0)
    assert all(b2 > b1 for b1, b2 in zip(betas[5:], betas[6:]))
    assert betas[17] == pytest.approx(10.0)  # exponential: halfway in steps, the geometric mean
    x = torch.tensor([-0.1, 0.1])
    early, late = mask_probs(x, betas[5]), mask_probs(x, betas[-1])
    assert (early - 0.5).abs().max() < 0.03  # nearly a coin flip at the start ...
    assert late[0] < 1e-4 and late[1] > 1 - 1e-4  # ... nearly the step s > 0 at the end
    assert torch.equal(mask_probs(x, math.inf), torch.tensor([0.0, 1.0]))


def test_sampled_masks_are_binary_and_gradients_reach_s():
    from prunet.search.growing import MaskDraw

    s = _strategy()
    _set_masks(s, 0.0)  # p = 1/2: both values get drawn
    draw = MaskDraw(beta=3.0, sample=True, generator=torch.Generator().manual_seed(1))
    p = torch.zeros(4000, requires_grad=True)
    m = draw(p)
    assert set(m.detach().unique().tolist()) == {0.0, 1.0}
    assert 0.45 < float(m.detach().mean()) < 0.55
    m.sum().backward()
    assert torch.allclose(p.grad, torch.full_like(p, 3.0 * 0.25))  # straight-through: d σ(β s)/ds at 0

    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    loss = s.weight_loss(x, y, step=5)
    loss.backward()
    for name, param in s.arch_parameters():
        if name.endswith("width_s") or float(param.detach()) == 0.0:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_a_layer_sampled_off_is_not_computed_and_off_channels_are_zero():
    from prunet.search.growing import MaskDraw

    s = _strategy()
    _set_masks(s, 1.0)
    skippable = [layer for layer in s.net.layers.values() if layer.depth_s is not None]
    with torch.no_grad():
        skippable[0].depth_s.fill_(-50.0)  # σ(β·s) = 0: always sampled off
        first = s.net.layers["0"]
        first.width_s.fill_(-50.0)
    calls, hidden = [], []
    skippable[0].block.register_forward_hook(lambda *a: calls.append(1))
    from prunet.arch import block_type

    site = getattr(first.block, block_type(first.cand.type).gate_site)
    site.register_forward_hook(lambda mod, args, out: hidden.append(args[0].detach()))
    s.net(torch.randn(4, 1, 16, 16), MaskDraw(beta=1.0, sample=True, generator=torch.Generator().manual_seed(0)))
    assert calls == []
    h = hidden[0]
    assert h[:, first.min_hidden:].abs().sum() == 0 and h[:, :first.min_hidden].abs().sum() > 0


def test_poisson_binomial_is_exact():
    from prunet.search.growing import poisson_binomial

    p = torch.tensor([0.1, 0.7, 0.35, 0.9])
    want = torch.zeros(5)
    for bits in itertools.product([0, 1], repeat=4):
        pr = 1.0
        for b, pi in zip(bits, p.tolist()):
            pr *= pi if b else 1 - pi
        want[sum(bits)] += pr
    assert torch.allclose(poisson_binomial(p), want, atol=1e-6)


def test_expected_latency_at_the_step_limit_is_the_tables_prediction():
    s = _strategy(target_ms=100.0, fill=False)
    _set_masks(s, gen=torch.Generator().manual_seed(3))
    d = s.derive()
    assert d.events == []
    assert float(s.expected_ms(math.inf)) == pytest.approx(s.ctx.table.predict(d.spec), rel=1e-6)
    # at a finite temperature the expectation lies between the all-off and all-on nets
    assert s.ctx.table.predict(d.spec) != pytest.approx(float(s.expected_ms(1.0).detach()))


def test_derived_net_computes_what_the_hard_masks_compute():
    s = _strategy(target_ms=100.0, fill=False)
    _set_masks(s, gen=torch.Generator().manual_seed(4))
    d = s.derive()
    assert any(b.hidden_chs not in (16,) for b in d.spec.blocks)
    x = torch.randn(3, 1, 16, 16)
    s.net.eval()
    model = d.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), s.net(x), atol=1e-5)


@pytest.mark.parametrize("start", ["seed", "full"])
def test_budget_penalty_pulls_expected_latency_to_the_target(start):
    """From the seed (below the target) the penalty switches masks on; from the full net (above)
    it switches them off; either way E[latency] ends at the goal."""
    s = _strategy(target_ms=0.25, arch_lr=0.05)
    if start == "full":
        _set_masks(s, 1.0)
    params = [p for _, p in s.arch_parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    first = float(s.expected_ms(1.0).detach())
    assert (first < s.goal) if start == "seed" else (first > s.goal)
    for _ in range(200):
        opt.zero_grad()
        s.budget_penalty(s.expected_cost(1.0)).backward()
        opt.step()
    last = float(s.expected_ms(1.0).detach())
    assert abs(last - s.goal) < 0.02 * s.goal < abs(first - s.goal)


def test_flops_budget():
    from torch.utils.flop_counter import FlopCounterMode

    from prunet.nn import PruNet
    from prunet.search.config import SearchError

    with pytest.raises(SearchError, match="target_mflops"):
        _strategy(build=False, budget="flops")
    with pytest.raises(SearchError, match="budget"):
        _strategy(build=False, budget="energy")
    # Expected FLOPs at the step limit = FLOPs torch counts on the derived net.
    s = _strategy(target_ms=100.0, fill=False, budget="flops", target_mflops=1000.0)
    _set_masks(s, gen=torch.Generator().manual_seed(5))
    d = s.derive()
    with FlopCounterMode(display=False) as fc:
        PruNet(d.spec).eval()(torch.zeros(1, 1, 16, 16))
    assert float(s.net.expected_raw(math.inf, "mflops")) == pytest.approx(fc.get_total_flops() / 1e6, rel=1e-6)
    assert d.details["growefficient"]["mflops"] == pytest.approx(fc.get_total_flops() / 1e6, rel=1e-6)
    # The FLOPs penalty pulls expected FLOPs from the full net down to a target between the
    # smallest and the full net, and the derived net respects the FLOPs and the latency target.
    _set_masks(s, -5.0)
    lo = float(s.net.expected_raw(math.inf, "mflops"))
    _set_masks(s, 5.0)
    hi = float(s.net.expected_raw(math.inf, "mflops"))
    target = lo + 0.4 * (hi - lo)
    s = _strategy(target_ms=100.0, budget="flops", target_mflops=target)
    _set_masks(s, 1.0)
    first = float(s.expected_cost(1.0).detach())
    opt = torch.optim.Adam([p for _, p in s.arch_parameters()], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        s.budget_penalty(s.expected_cost(1.0)).backward()
        opt.step()
    assert first > target and float(s.expected_cost(1.0).detach()) == pytest.approx(s.goal, rel=0.02)
    d = s.derive()
    assert d.details["growefficient"]["mflops"] <= target and s.ctx.table.predict(d.spec) <= 100.0


def test_trim_and_fill_meet_the_target_by_the_table():
    s = _strategy(target_ms=0.25)
    _set_masks(s, 1.0)  # everything on: far above the target, so derivation trims
    d = s.derive()
    pred = s.ctx.table.predict(d.spec)
    assert pred <= 0.25
    assert any(e["event"].startswith("final_trim") for e in d.events)
    s2 = _strategy(target_ms=0.25)  # the seed: below the target, so derivation fills
    d2 = s2.derive()
    assert any(e["event"].startswith("final_fill") for e in d2.events)
    assert s2.ctx.table.predict(d2.spec) <= 0.25


def test_refuses_unknown_candidate_and_unreachable_target():
    from prunet.search.config import SearchError

    with pytest.raises(SearchError, match="candidate: 'ir_k5_relu' is not a candidate of layer 0"):
        _strategy(build=False, candidate="ir_k5_relu")
    with pytest.raises(SearchError, match="below the smallest net growefficient can derive"):
        _strategy(target_ms=0.05, build=False)


@needs_fashion
def test_tiny_search_end_to_end(tiny_space, tiny_lut, tmp_path):
    from safetensors.torch import load_file

    from prunet.arch import load
    from prunet.latency.lut import load_table
    from prunet.zoo import build

    target = mid_target(tiny_lut, tiny_space)
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({}))
    r = run([PY, "-m", "prunet.cli", "search", "run", "--strategy", "growefficient", "--space", str(tiny_space),
             "--data", "fashion-mnist", "--target-ms", f"{target:.6f}", "--lut", str(tiny_lut), "--config", str(cfg),
             "--out", str(out), "--quiet", *TINY_ARGS])
    assert r.returncode == 0, r.stderr
    spec = load(out / "arch.json")
    model = build(spec)
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    assert model(torch.zeros(2, *spec.input_size)).shape == (2, 10)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "growefficient" and summary["predicted_ms"] <= target
    assert load_table(tiny_lut).predict(spec) <= target
    log = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [r_["step"] for r_ in log] == list(range(40)) and log[-1]["beta"] == pytest.approx(100.0)
    details = spec.provenance.details
    assert details["strategy"] == "growefficient" and "seed_hidden" in details["growefficient"]

"""Prunode and supernet: gating equals the smaller block, commits slice weights and optimizer
state consistently, and the derived net is the same prunet.nn modules with the same weights."""

from __future__ import annotations

import pytest
import torch

from prunet.latency.lut import load_table
from prunet.nn import FusedInvertedResidual, InvertedResidual
from prunet.search.space import from_dict
from prunet.search.supernet import ARGMAX, SKIP, Supernet
from test_search_fixtures import TINY_SPACE, needs_fashion, tiny_lut, tiny_space  # noqa: F401


def _randomise_bn(net: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.fixture()
def net(tiny_lut):
    torch.manual_seed(0)
    n = Supernet(from_dict(TINY_SPACE), load_table(tiny_lut))
    _randomise_bn(n)
    return n.eval()


def test_prunodes_wrap_prunet_nn_blocks(net):
    kinds = {type(p.block) for _, p in net.prunodes()}
    assert kinds == {InvertedResidual, FusedInvertedResidual}


def test_gate_closed_equals_committed_block_and_keeps_most_important(net):
    for _, node in net.prunodes():
        node.commit(node.hidden)  # order by importance only: output unchanged
        x = torch.randn(2, node.slot.in_chs, *node.slot.in_hw)
        before = node.block(x)
        assert torch.allclose(node(x, ARGMAX), before, atol=1e-5)  # β = 0 → big path
        imp = node.importance()
        assert torch.all(imp[:-1] >= imp[1:])  # most important first
        with torch.no_grad():
            node.beta.copy_(torch.tensor([4.0, -4.0]))
        gated = node(x, ARGMAX)
        h = node.hidden
        kept = imp[: h - node.s].clone()
        node.commit()
        assert node.hidden == h - node.s and torch.equal(node.importance(), kept)
        assert torch.allclose(gated, node.block(x), atol=1e-5)
        assert torch.all(node.beta == 0)
        assert type(node.block).__name__ in ("InvertedResidual", "FusedInvertedResidual")


def test_expected_latency_moves_with_gate_and_logits(net):
    node = net.layers["0"].options["ir_k3_relu"]
    node.lut = {w: 0.01 * w for w in node.lut}  # monotone by construction (the measured one is noisy)
    e0 = float(node.expected_latency().detach())
    with torch.no_grad():
        node.beta.copy_(torch.tensor([3.0, -3.0]))
    assert float(node.expected_latency().detach()) < e0
    lat = net.expected_ms()
    lat.backward()
    assert node.beta.grad is not None and net.layers["1"].alpha[SKIP].grad is not None
    assert float(net.layers["1"].alpha[SKIP].grad) < 0  # more Skip → less latency


def _strategy(space, table, target_ms: float, **cfg):
    from prunet.search.config import LoopConfig
    from prunet.search.strategies.prunet import PruNetConfig, PruNetStrategy
    from prunet.search.strategy import StrategyContext

    ctx = StrategyContext(space=space, table=table, target_ms=target_ms, seed=0,
                          loop=LoopConfig(steps=4, warmup_steps=0), device=torch.device("cpu"))
    strategy = PruNetStrategy(ctx, PruNetConfig(**cfg))
    strategy.build()
    return strategy


@needs_fashion
def test_loop_slices_optimizer_state_with_the_tensors(tiny_space, tiny_lut, tmp_path):
    from prunet.latency.lut import min_reachable_ms
    from prunet.search.config import LoopConfig, RunSpec
    from prunet.search.loop import SearchLoop
    from prunet.search.space import load_space

    floor = min_reachable_ms(load_table(tiny_lut), load_space(tiny_space))
    s = SearchLoop(RunSpec(str(tiny_space), "fashion-mnist", floor * 1.001, backend="torch", lut=str(tiny_lut),
                           loop=LoopConfig(steps=4, warmup_steps=0, train_limit=400, batch_size=16)), tmp_path)
    s._build()
    opt = s.w_opt
    for _, p in s.w_named:  # give every weight a recognisable momentum buffer
        opt.state[p] = {"momentum_buffer": p.detach().clone() * 3}
    prefix = "layers.0.options.ir_k3_relu"
    net = s.strategy.net
    node = net.layers["0"].options["ir_k3_relu"]
    with torch.no_grad():
        node.beta.copy_(torch.tensor([5.0, -5.0]))
    s.strategy.counters["g:0.ir_k3_relu"] = s.strategy.cfg.prunode_window - 1
    events = s._structure_step(s.strategy.after_step, 0)
    assert any(e["event"] == "commit" and e["layer"] == 0 for e in events)
    for n, p in s.w_named:
        if n.startswith(prefix):
            assert torch.allclose(s.w_opt.state[p]["momentum_buffer"], p.detach() * 3), n


def test_switched_off_tiers_never_act(tiny_space, tiny_lut):
    """Ablations switch tiers off explicitly: a Skip probability of 1.0 (which a float32 softmax
    reaches) removes no layer and deletes no block when the tiers are off."""
    from prunet.search.space import load_space

    table, space = load_table(tiny_lut), load_space(tiny_space)
    s = _strategy(space, table, 1e-3, prune_blocks=False, prune_layers=False, layer_window=1, block_window=1)
    with torch.no_grad():
        for layer in s.net.layers.values():
            for n, a in layer.alpha.items():
                a.fill_(1e4 if n == SKIP else -1e4)
    assert any(layer.probs().get(SKIP) == 1.0 for layer in s.net.layers.values())
    change = s.after_step(0)
    assert not change or all(e["event"] == "commit" for e in change.events)
    on = _strategy(space, table, 1e-3, layer_window=1, block_window=1)
    with torch.no_grad():
        for layer in on.net.layers.values():
            for n, a in layer.alpha.items():
                a.fill_(1e4 if n == SKIP else -1e4)
    assert any(e["event"] == "remove_layer" for e in on.after_step(0).events)


def test_exported_prunet_matches_collapsed_supernet(net):
    from prunet.search.strategies.prunet import export_model

    for li in list(net.layers):  # collapse: first candidate, or Skip where allowed
        layer = net.layers[li]
        for n in layer.names()[1:]:
            layer.remove_option(n)
    net.layers["0"].options["ir_k3_relu"].commit()
    spec = net.derive("collapsed")
    model = export_model(net, spec).eval()
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(model(x), net(x, ARGMAX), atol=1e-5)
    assert all(type(m).__name__ in ("InvertedResidual", "FusedInvertedResidual") for m in
               [model.stages[s][j] for s in range(len(model.stages)) for j in range(len(model.stages[s]))])


def test_finalize_spends_the_budget_on_the_closest_calls(tiny_space, tiny_lut, tmp_path):
    """Skip winning every skippable layer by a hair must not leave half the budget unused: the
    final net keeps the closest-call layers while it fits, and never exceeds the target."""
    from prunet.latency.lut import min_reachable_ms
    from prunet.search.space import load_space

    table, space = load_table(tiny_lut), load_space(tiny_space)
    floor = min_reachable_ms(table, space)
    s = _strategy(space, table, 1.0)
    skippable = [li for li, layer in s.net.layers.items() if SKIP in layer.names()]
    assert skippable, "the tiny space must have skippable layers"
    with torch.no_grad():
        for i, li in enumerate(skippable):  # Skip wins each by a different small margin
            s.net.layers[li].alpha[SKIP].fill_(0.1 + 0.05 * i)
    argmax_ms = table.predict(s.net.derive("argmax"))
    def runner_up_ms(li: str) -> float:  # block logits tie at 0: the first block, gate undecided
        layer = s.net.layers[li]
        node = layer.options[next(n for n in layer.names() if n != SKIP)]
        return table.a * node.latency(node.hidden)

    extra = {li: runner_up_ms(li) for li in skippable}
    closest = skippable[0]
    s.ctx.target_ms = argmax_ms + extra[closest] * 1.0001
    events = s.derive().events
    final_ms = table.predict(s.net.derive("final"))
    assert final_ms <= s.ctx.target_ms + 1e-9
    kept = [e for e in events if e["event"] == "final_keep_layer"]
    assert [str(e["layer"]) for e in kept] == [closest]
    assert final_ms > argmax_ms and str(closest) in s.net.layers
    assert floor <= final_ms


def test_proportional_shrink_step_stays_on_the_width_grid_and_stops_at_min():
    from prunet.search.supernet import Prunode

    space = from_dict({**TINY_SPACE, "candidates": [{"type": "irb", "kernel": 3, "max_expansion": 6, "min_hidden": 16}]})
    slot = space.layers()[-1]  # 24 → 24 channels: hidden 16..144
    cand = slot.candidates[0]
    node = Prunode(slot, cand, step=8, shrink=8, shrink_fraction=0.3)
    widths = [node.hidden]
    while node.gated:
        node.commit()
        widths.append(node.hidden)
    assert widths[0] == 144 and widths[1] == 144 - 40  # round(0.3·144 / 8)·8 = 40 (fixed step: 8)
    assert widths[-1] == node.min_hidden == 16
    assert all((w - 16) % 8 == 0 for w in widths)
    assert all(a - b >= 8 for a, b in zip(widths, widths[1:]))
    fixed = Prunode(slot, cand, step=8, shrink=8)
    assert fixed.s == 8 and len(widths) < (144 - 16) // 8

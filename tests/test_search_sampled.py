"""Issue 14: sampled-path supernet execution (GDAS), block/layer pruning that does not wait for
the latency gap, and the multiplicative latency loss — each behind a PruNetConfig field whose
default keeps today's behaviour."""

from __future__ import annotations

import json

import pytest
import torch

from prunet.latency.lut import load_table
from prunet.search.config import SearchError
from prunet.search.space import load_space
from prunet.search.supernet import SKIP, GumbelMixture, GumbelSampledPath, Prunode, gumbel_softmax_hard
from test_search_fixtures import (  # noqa: F401
    TINY_CONFIG, needs_fashion, mid_target, run, search_cmd, tiny_lut, tiny_space)


def _strategy(space, table, target_ms: float, **cfg):
    from prunet.search.config import LoopConfig
    from prunet.search.strategies.prunet import PruNetConfig, PruNetStrategy
    from prunet.search.strategy import StrategyContext

    ctx = StrategyContext(space=space, table=table, target_ms=target_ms, seed=0,
                          loop=LoopConfig(steps=4, warmup_steps=0), device=torch.device("cpu"))
    config = PruNetConfig(**cfg)
    config.validate()
    strategy = PruNetStrategy(ctx, config)
    torch.manual_seed(0)
    strategy.build()
    return strategy


def _count_runs(net: torch.nn.Module) -> tuple[dict[str, int], list]:
    """Forward calls per Prunode (by name), via forward hooks."""
    calls: dict[str, int] = {}
    handles = []
    for name, node in net.prunodes():
        calls[name] = 0

        def hook(_m, _a, _o, name=name):
            calls[name] += 1
        handles.append(node.register_forward_hook(hook))
    return calls, handles


def test_hard_gumbel_is_exactly_one_hot_with_the_soft_gradient():
    torch.manual_seed(1)
    logits = torch.randn(5, requires_grad=True)
    w = gumbel_softmax_hard(logits, 1.0)
    assert sorted(w.detach().tolist()) == [0.0, 0.0, 0.0, 0.0, 1.0]  # exact, no float residue
    (w * torch.arange(5.0)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_sampled_mode_runs_one_candidate_per_layer_and_trains_alpha(tiny_space, tiny_lut):
    s = _strategy(load_space(tiny_space), load_table(tiny_lut), 1.0, mode="sampled")
    net = s.net
    calls, handles = _count_runs(net)
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    for step in range(6):
        for k in calls:
            calls[k] = 0
        net.zero_grad()
        loss, _ = s.arch_loss(x, y, step)
        loss.backward()
        for li, layer in net.layers.items():
            ran = sum(calls[f"layers.{li}.options.{n}"] for n in layer.options)
            assert ran <= 1, (step, li, calls)  # never more than the drawn candidate
            assert ran == 1 or SKIP in layer.names()  # none ran only when Skip was drawn
            grads = torch.stack([layer.alpha[n].grad for n in layer.names()])
            assert float(grads.abs().sum()) > 0, (step, li)  # the straight-through weight reaches α
    for h in handles:
        h.remove()
    # The mixture runs every candidate of every layer on every forward.
    mix = _strategy(load_space(tiny_space), load_table(tiny_lut), 1.0)
    calls, handles = _count_runs(mix.net)
    mix.weight_loss(x, y, 0)
    assert set(calls.values()) == {1}
    for h in handles:
        h.remove()


def test_mixture_mode_is_the_default_and_unchanged(tiny_space, tiny_lut):
    """The default strategy's losses are the Gumbel mixture's, draw for draw (the recorded
    searches in test_search_recorded.py check the whole run)."""
    from prunet.search.strategies.prunet import PruNetConfig

    assert PruNetConfig().mode == "mixture" and PruNetConfig().latency_loss == "hinge"
    assert PruNetConfig().prune_waits_for_budget is True
    s = _strategy(load_space(tiny_space), load_table(tiny_lut), 1.0)
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    torch.manual_seed(5)
    got = s.weight_loss(x, y, 2)
    torch.manual_seed(5)
    want = torch.nn.functional.cross_entropy(s.net(x, GumbelMixture(s.tau(2))), y)
    assert torch.equal(got, want)
    torch.manual_seed(5)
    loss, _ = s.arch_loss(x, y, 2)
    torch.manual_seed(5)
    ce = torch.nn.functional.cross_entropy(s.net(x, GumbelMixture(s.tau(2))), y)
    assert torch.equal(loss, ce + 4.0 * torch.relu(s.net.expected_ms() / s.goal_ms - 1.0))


def test_sampled_gate_stays_soft_inside_the_chosen_candidate():
    from prunet.search.space import from_dict
    from test_search_fixtures import TINY_SPACE

    slot = from_dict(TINY_SPACE).layers()[-1]
    node = Prunode(slot, slot.candidates[0], step=8, shrink=8)
    torch.manual_seed(0)
    g = GumbelSampledPath(1.0).gate(node.beta)
    assert 0.0 < float(g.detach()) < 1.0


def _skip_dominates(s, li: str) -> None:
    with torch.no_grad():
        for n, a in s.net.layers[li].alpha.items():
            a.fill_(8.0 if n == SKIP else -8.0)


def test_layer_pruning_without_budget_wait_acts_under_the_goal(tiny_space, tiny_lut):
    table, space = load_table(tiny_lut), load_space(tiny_space)
    for waits, removes in ((True, False), (False, True)):
        s = _strategy(space, table, 1e3, layer_window=1, prunode_window=1, prune_waits_for_budget=waits)
        assert float(s.net.expected_ms().detach()) < s.goal_ms  # far under the goal
        li = next(li for li, layer in s.net.layers.items() if SKIP in layer.names())
        _skip_dominates(s, li)
        node = next(iter(s.net.layers["0"].options.values()))
        with torch.no_grad():
            node.beta.copy_(torch.tensor([8.0, -8.0]))  # the gate wants to commit a smaller width
        change = s.after_step(0)
        events = [e["event"] for e in change.events] if change else []
        assert ("remove_layer" in events) == removes, (waits, events)
        assert (li not in s.net.layers) == removes
        assert "commit" not in events  # width commits still wait for the latency gap


def test_one_layer_per_step_without_budget_wait(tiny_space, tiny_lut):
    s = _strategy(load_space(tiny_space), load_table(tiny_lut), 1e3, layer_window=1, block_window=1,
                  prune_waits_for_budget=False)
    skippable = [li for li, layer in s.net.layers.items() if SKIP in layer.names()]
    assert len(skippable) >= 2
    for li in skippable:
        _skip_dominates(s, li)
    removed = []
    for step in range(len(skippable)):
        change = s.after_step(step)
        gone = [e["layer"] for e in change.events if e["event"] == "remove_layer"]
        assert len(gone) == 1
        removed += gone
    assert sorted(str(i) for i in removed) == sorted(skippable)


def test_multiplicative_loss_pulls_towards_cheaper_choices_under_the_goal(tiny_space, tiny_lut):
    table, space = load_table(tiny_lut), load_space(tiny_space)
    li = None
    for kind in ("hinge", "multiplicative"):
        s = _strategy(space, table, 1e3, latency_loss=kind, latency_beta=0.6)
        li = li or next(li for li, layer in s.net.layers.items() if SKIP in layer.names())
        ce = torch.tensor(2.0)
        pred = s.net.expected_ms()
        assert float(pred.detach()) < s.goal_ms
        s.latency_loss(ce, pred).backward()
        g = s.net.layers[li].alpha[SKIP].grad
        if kind == "hinge":
            assert g is None or float(g) == 0.0  # under the goal the hinge is flat
        else:
            assert float(g) < 0  # more Skip → less latency → less loss, at any latency
            ratio = float(pred.detach()) / s.goal_ms
            assert float(s.latency_loss(ce, pred.detach())) == pytest.approx(2.0 * ratio ** 0.6)


@pytest.mark.parametrize("field,value", [("mode", "full"), ("latency_loss", "product"), ("latency_beta", 0.0)])
def test_bad_new_fields_are_one_line_errors(field, value):
    from prunet.search.strategies.prunet import PruNetConfig

    with pytest.raises(SearchError, match=f"^{field}: "):
        PruNetConfig(**{field: value}).validate()


@needs_fashion
def test_sampled_search_end_to_end_writes_an_arch_under_target(tiny_space, tiny_lut, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY_CONFIG, "mode": "sampled", "prune_waits_for_budget": False}))
    out = tmp_path / "run"
    target = mid_target(tiny_lut, tiny_space)
    r = run(search_cmd(tiny_space, tiny_lut, config, out, target))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["within_target"] and summary["predicted_ms"] <= target
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["strategy_config"]["mode"] == "sampled"
    arch = json.loads((out / "arch.json").read_text())
    assert arch["latency"][0]["value_ms"] <= target


def test_both_modes_derive_the_same_net_with_the_same_weights_from_the_same_probabilities(tiny_space, tiny_lut):
    """The execution mode changes how a step runs the supernet, not what it means: with equal
    architecture logits both modes price the supernet alike (the latency penalty's input) and
    derive the same network with the same inherited weights."""
    from prunet.arch import to_dict

    sp, table = load_space(tiny_space), load_table(tiny_lut)
    target = mid_target(tiny_lut, tiny_space)
    mix, smp = _strategy(sp, table, target), _strategy(sp, table, target, mode="sampled")
    g = torch.Generator().manual_seed(3)  # decided, unequal probabilities, copied into both
    for (name_a, a), (name_b, b) in zip(mix.arch_parameters(), smp.arch_parameters(), strict=True):
        assert name_a == name_b
        with torch.no_grad():
            v = torch.randn(a.shape, generator=g) * 3
            a.copy_(v)
            b.copy_(v)
    assert float(mix.net.expected_ms().detach()) == float(smp.net.expected_ms().detach())
    derived = []
    for strategy in (mix, smp):
        torch.manual_seed(1)  # a block the budget forces in (`final_replace`) starts from fresh weights
        derived.append(strategy.derive())
    got_mix, got_smp = derived
    assert to_dict(got_mix.spec) == to_dict(got_smp.spec)
    assert len(got_mix.spec.blocks) >= 1 and table.predict(got_mix.spec) <= target
    w_mix, w_smp = got_mix.model.state_dict(), got_smp.model.state_dict()
    assert w_mix.keys() == w_smp.keys()
    assert [k for k in w_mix if not torch.equal(w_mix[k], w_smp[k])] == []

"""PR-DARTS: the cell block type (schema, nn, ONNX, latency table) and the ``prdarts`` strategy.

The cross-strategy contract (resume after SIGKILL, torchrun, hf-hub...) is
tests/test_strategies_contract.py; here only what is specific to cells and to PR-DARTS.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from prunet.arch import ArchError, ArchSpec, ConvSpec, HeadSpec, dumps, from_dict
from prunet.arch.cell import CellEdge as E
from prunet.arch.cell import CellSpec, latency_parts
from test_search_fixtures import (PY, mid_target, needs_fashion, run, strategy_target,  # noqa: F401
                                  tiny_lut, tiny_space)
from test_search_fixtures import prdarts_strategy as _strategy

CELL = CellSpec(16, 24, ((E(0, "ir_k3", 16), E(0, "fir_k3", 8)),
                         (E(1, "skip"), E(0, "ir_k5", 24)),
                         (E(2, "max_pool_3x3"), E(1, "avg_pool_3x3"))), stride=2)


def _arch(cell: CellSpec = CELL) -> ArchSpec:
    return ArchSpec("cellnet", (1, 16, 16), (ConvSpec(1, 16, 3, 1),), (cell,), HeadSpec(cell.out_chs, 32, 10))


def test_cell_json_round_trip_and_build():
    from prunet.zoo import build

    spec = _arch()
    text = dumps(spec)
    assert from_dict(json.loads(text)) == spec
    out = build(spec).eval()(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("edit, where, what", [
    (lambda c: c["nodes"][1][0].update(input=5), "blocks[0].nodes[1][0].input", "earlier node"),
    (lambda c: c["nodes"][0][1].update(input=1), "blocks[0].nodes[0][1].input", "expected 0"),
    (lambda c: c["nodes"][2][1].update(op="conv9"), "blocks[0].nodes[2][1].op", "expected one of"),
    (lambda c: c["nodes"][0][0].update(op="skip", width=0), "blocks[0].nodes[0][0].op", "maps 16 to 24"),
    (lambda c: c["nodes"][2][0].update(width=8), "blocks[0].nodes[2][0].width", "parameter-free"),
    (lambda c: c["nodes"][0][0].update(width=0), "blocks[0].nodes[0][0].width", "kept width >= 1"),
    (lambda c: c["nodes"][1].pop(), "blocks[0].nodes[1]", "exactly two edges"),
    (lambda c: c["nodes"][1][1].update(extra=1), "blocks[0].nodes[1][1].extra", "unknown field"),
    (lambda c: c.update(nodes=[]), "blocks[0].nodes", "non-empty"),
])
def test_cell_json_errors_are_one_line_naming_the_field(edit, where, what):
    obj = json.loads(dumps(_arch()))
    edit(obj["blocks"][0])
    with pytest.raises(ArchError) as e:
        from_dict(obj)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(where + ":") and what in msg, msg


def test_skip_cannot_reduce_resolution():
    same = CellSpec(24, 24, ((E(0, "skip"), E(0, "max_pool_3x3")),), stride=2)
    obj = json.loads(dumps(_arch(same)))
    obj["blocks"][0]["in_chs"] = 24
    obj["stem"][0]["out_chs"] = 24
    with pytest.raises(ArchError, match=r"^blocks\[0\]\.nodes\[0\]\[0\]\.op: 'skip' cannot reduce"):
        from_dict(obj)


def test_cell_exports_to_onnx_with_onnxruntime_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from prunet.export import to_onnx
    from prunet.zoo import build

    model = build(_arch()).eval()
    report = to_onnx(model, tmp_path / "cell.onnx", batch=1, exporter="torchscript", images=False,
                     check_tensorrt=False)
    assert report.max_rel < 1e-3, report
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "cell.onnx")).graph.node}
    assert {"Conv", "MaxPool", "AveragePool", "Add"} <= ops, ops


def test_latency_table_times_a_cell_whole_and_prices_an_untimed_one_by_its_edges():
    from prunet.latency.lut import LatencyTable, Measurer, arch_parts, block_key, head_key

    arch = _arch()
    m = Measurer(backend="torch", threads=1, iters=10, warmup=2)
    cell_key = block_key(CELL, (16, 16))
    assert "0/ir_k3/16+0/fir_k3/8;1/skip/0+0/ir_k5/24;2/max_pool_3x3/0+1/avg_pool_3x3/0" in cell_key
    entries = {block_key(arch.stem[0], (16, 16)): m.part(arch.stem[0], 1, (16, 16)),
               cell_key: m.part(CELL, 16, (16, 16)),
               head_key(arch.head, (8, 8)): m.part(arch.head, 24, (8, 8))}
    for _, spec, hw in latency_parts(CELL, (16, 16)):  # its edges, conv and free, and its node sums
        entries[block_key(spec, hw)] = m.part(spec, spec.in_chs, hw)
    assert all(v > 0 for v in entries.values())
    table = LatencyTable("t", "h", "torch", "min", 1, entries)
    whole = arch_parts(arch, table.entries)
    assert [p for p, *_ in whole] == ["stem[0]", "blocks[0]", "head"]
    assert table.predict(arch) == pytest.approx(sum(entries[k] for _, k, _, _ in whole))
    # a different genotype nobody timed: priced by all its parts, the free ones included
    other = replace(CELL, nodes=(CELL.nodes[0], (E(1, "max_pool_3x3"), E(0, "ir_k5", 24)), CELL.nodes[2]))
    parts = arch_parts(_arch(other), table.entries)
    assert [p for p, *_ in parts][1:-1] == [f"blocks[0].{p}" for p in (
        "nodes[0][0]", "nodes[0][1]", "nodes[1][0]", "nodes[1][1]", "nodes[2][0]", "nodes[2][1]", "sum")]
    assert [s.type for _, _, s, _ in parts[1:-1]] == ["irb", "fused_irb", "cell_free", "irb", "cell_free",
                                                    "cell_free", "cell_free"]
    assert table.predict(_arch(other)) == pytest.approx(sum(entries[k] for _, k, _, _ in parts))


def test_free_parts_are_not_blocks_of_a_net():
    obj = json.loads(dumps(_arch()))
    obj["blocks"].append({"type": "cell_free", "in_chs": 24, "out_chs": 24, "op": "max_pool_3x3"})
    with pytest.raises(ArchError, match=r"^blocks\[1\]\.type: expected one of"):
        from_dict(obj)


def test_a_table_built_for_a_space_holds_measured_free_parts(tiny_space, tiny_lut):
    from prunet.arch.cell import table_parts
    from prunet.latency.features import FEATURES
    from prunet.latency.lut import LatencyTable, block_key, load_table
    from prunet.search.space import load_space

    t, space = load_table(tiny_lut), load_space(tiny_space)
    free = {block_key(spec, hw): spec for spec, _, hw in table_parts(space)}
    ops = {(s.op, s.out_chs) for s in free.values()}
    assert {("max_pool_3x3", 16), ("avg_pool_3x3", 16), ("skip", 16), ("sum", 16), ("max_pool_3x3", 24)} <= ops
    assert all(t.entries[k] > 0 and t.lookup(k) == t.entries[k] for k in free), "measured, uncorrected"
    assert all(t.features[k] == dict.fromkeys(FEATURES, 0.0) for k in free)
    # measured, not made up: the node sums of an 8-node cell (15 adds) cost more than one add
    assert t.entries["cell_free:sum:16:n8@8x8"] > t.entries["cell_free:sum:16:n1@8x8"]
    # a table from before the free parts were timed is refused with the entry it lacks
    old = LatencyTable(t.space_name, t.space_hash, t.backend, t.statistic, t.threads,
                       {k: v for k, v in t.entries.items() if k not in free})
    from prunet.latency.lut import LutError

    with pytest.raises(LutError, match=r"layer 0, the cell's node sums: no entry 'cell_free:sum:16:n3@8x8'"):
        _strategy(tiny_space, old, 1e9)


def test_a_cell_of_only_pools_is_priced_like_it_runs(tiny_space, tiny_lut):
    from prunet.latency.lut import Measurer, block_key
    from prunet.search.strategies.prdarts import _cell_spec, _genotype

    s = _strategy(tiny_space, tiny_lut, 1e9)
    cell = s.net.cells[0]  # 16 > 16 at stride 1: every edge offers pooling
    with torch.no_grad():
        for mixed in cell.edges.values():
            mixed.alpha.fill_(-30.0)
            mixed.alpha[mixed.names.index("max_pool_3x3")] = 30.0
    pools = _cell_spec(cell, _genotype(cell))
    assert {e.op for _, e in pools.edges()} == {"max_pool_3x3"}
    t = s.ctx.table
    parts = latency_parts(pools, (8, 8))
    assert len(parts) == 7 and all(spec.type == "cell_free" for _, spec, _ in parts)
    cell_ms = sum(t.lookup(block_key(spec, hw)) for _, spec, hw in parts)
    # the search's differentiable cost of this cell is the derived cell's table price
    assert float(cell.expected_cost().detach()) == pytest.approx(cell_ms, rel=1e-4)
    measured = Measurer(backend="torch", threads=1, iters=30, warmup=3).part(pools, 16, (8, 8))
    assert 0.5 < cell_ms / measured < 2.0, (cell_ms, measured)


# ----------------------------------------------------------------------------- the strategy


def _priced_by_size(table):
    """The table with every entry replaced by its part's parameter + activation size (kB): a
    deterministic price that orders blocks by width, for claims about which keys a net maps to."""
    entries = {k: f["param_kb"] + f["act_kb"] for k, f in table.features.items()}
    return replace(table, entries=entries, weights={}, model="affine", a=1.0, c=0.0)


def test_gradients_reach_alpha_beta_gamma_and_masks(tiny_space, tiny_lut):
    s = _strategy(tiny_space, tiny_lut, mid_target(tiny_lut, tiny_space))
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    loss, metrics = s.arch_loss(x, y, 0)
    loss.backward()
    named = dict(s.arch_parameters())
    kinds = {n.rsplit(".", 1)[-1] if ".beta." not in n else "beta" for n in named}
    assert kinds == {"alpha", "beta", "gamma", "theta"}
    for kind in kinds:
        grads = [p.grad for n, p in named.items() if n.endswith(kind) or (kind == "beta" and ".beta." in n)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), kind
    assert metrics["expected_ms"] > 0 and 0 < metrics["mask_kept"] <= 1
    # weights and architecture are disjoint groups covering every parameter
    w = {n for n, _ in s.weight_parameters()}
    assert not (w & set(named)) and w | set(named) == {n for n, _ in s.net.named_parameters()}


def test_channel_pruning_narrows_the_derived_cell_and_its_table_latency(tiny_space, tiny_lut):
    from prunet.search.strategies.prdarts import PrunedOp, _cell_spec, _genotype

    s = _strategy(tiny_space, tiny_lut, 1e9)
    cell = s.net.cells[2]  # the stride-2 slot: its input edges can only be convs
    for mixed in cell.edges.values():  # every edge prefers its first conv op
        with torch.no_grad():
            mixed.alpha[0] = 5.0
    full = _cell_spec(cell, _genotype(cell))
    pruned_ops = [op for mixed in cell.edges.values() for op in mixed.ops.values() if isinstance(op, PrunedOp)]
    with torch.no_grad():
        for op in pruned_ops:
            op.theta[op.widths[0]:] = -3.0  # keep only the grid's minimum
    narrow = _cell_spec(cell, _genotype(cell))
    fw = [e.width for _, e in full.edges() if e.width]
    nw = [e.width for _, e in narrow.edges() if e.width]
    assert fw and len(fw) == len(nw) and all(n < f for n, f in zip(nw, fw)), (fw, nw)
    # priced by a table whose entries grow with a part's size (its timed entries are 15-run torch
    # timings of 4×4 blocks, where a narrower conv can time slower than a wider one)
    t = _priced_by_size(s.ctx.table)
    assert t.predict(s._arch(s.net, [narrow])) < t.predict(s._arch(s.net, [full]))
    # the masked supernet computes what the narrow derived blocks compute
    op = pruned_ops[0]
    x = torch.randn(2, op.block.spec.in_chs, 8, 8)
    from prunet.nn import build_block
    from prunet.search.supernet import hidden_dims, select_channels

    small = build_block(replace(op.block.spec, hidden_chs=op.widths[0]))
    order = op.order()[:op.widths[0]]
    dims = hidden_dims(op.block)
    small.load_state_dict({k: select_channels(v, dims[k], order) for k, v in op.block.state_dict().items()})
    op.eval(), small.eval()
    assert torch.allclose(op(x), small(x), atol=1e-5)


def test_derivation_fits_a_low_target_by_the_table(tiny_space, tiny_lut):
    from prunet.latency.lut import load_table

    t = load_table(tiny_lut)
    s = _strategy(tiny_space, tiny_lut, 1e9)
    unconstrained = s.derive()
    full_ms = t.predict(unconstrained.spec)
    target = 0.5 * full_ms
    s = _strategy(tiny_space, tiny_lut, target)
    s.check_target()
    d = s.derive()
    assert t.predict(d.spec) <= target < full_ms
    kinds = {e["event"] for e in d.events}
    assert "shrink_edge" in kinds, d.events
    x = torch.randn(2, 1, 16, 16)
    assert d.model.eval()(x).shape == (2, 10)


def test_derivation_reaches_the_checked_floor_by_swapping_ops_and_edges(tiny_space, tiny_lut):
    s = _strategy(tiny_space, tiny_lut, 1e9)
    t = s.ctx.table
    floor = s.floor_ms()
    s = _strategy(tiny_space, tiny_lut, floor * (1 + 1e-9))
    s.check_target()  # accepted: exactly the floor
    d = s.derive()
    assert t.predict(d.spec) <= floor * (1 + 1e-9)
    swaps = [e for e in d.events if e["event"] == "swap_edge"]
    assert swaps and any(e["to_edge"] != e["edge"] for e in swaps), d.events  # edges re-chosen, not only ops
    assert d.model.eval()(torch.randn(1, 1, 16, 16)).shape == (1, 10)


def test_a_target_below_the_cheapest_cell_net_is_refused(tiny_space, tiny_lut):
    from prunet.search.config import SearchError

    s = _strategy(tiny_space, tiny_lut, 1e-6)
    with pytest.raises(SearchError, match=r"^--target-ms 1e-06: below the cheapest cell net"):
        s.check_target()


@needs_fashion
def test_tiny_search_from_the_cli_builds_under_the_target(tiny_space, tiny_lut, tmp_path):
    import prunet
    from safetensors.torch import load_file

    out = tmp_path / "run"
    target = strategy_target("prdarts", tiny_lut, tiny_space)
    r = run([PY, "-m", "prunet.cli", "search", "run", "--strategy", "prdarts", "--space", str(tiny_space),
             "--data", "fashion-mnist", "--target-ms", f"{target:.6f}", "--lut", str(tiny_lut), "--out", str(out),
             "--quiet", "--steps", "6", "--warmup-steps", "2", "--batch-size", "16", "--train-limit", "300",
             "--threads", "1", "--eval-images", "50", "--backend", "torch", "--seed", "1"])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["within_target"] and summary["predicted_ms"] <= target
    arch = json.loads((out / "arch.json").read_text())
    assert arch["blocks"] and all(b["type"] == "cell" for b in arch["blocks"])
    assert arch["provenance"]["details"]["strategy"] == "prdarts"
    model = prunet.create_model(str(out / "arch.json"))
    model.load_state_dict(load_file(out / "model.safetensors"))
    lines = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(6)) and "expected_ms" in lines[-1]

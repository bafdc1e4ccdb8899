"""The end-to-end pipeline (what `make demo` and benchmarks/proxy_pareto.py run) on a tiny space:
search → train → export → interleaved onnxruntime timing, with the ablation, on real
Fashion-MNIST images and a real onnxruntime latency table built into a private cache."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from prunet.arch import save
from prunet.latency.lut import load_table, min_reachable_ms, sample_arch
from prunet.search.space import load_space
from test_search_fixtures import FASHION, tiny_space  # noqa: F401

pytestmark = pytest.mark.skipif(not FASHION.exists(), reason="Debian package dataset-fashion-mnist not installed")


@pytest.fixture(scope="module")
def tiny_run(tiny_space, tmp_path_factory):  # noqa: F811
    from prunet.pipeline import PipelineConfig, run

    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("PRUNET_CACHE", str(cache))
    space = load_space(tiny_space)
    baseline = save(sample_arch(space, random.Random(5), "tiny-baseline"), tmp_path_factory.mktemp("arch") / "b.json")
    cfg = PipelineConfig(
        space=str(tiny_space), baselines=[str(baseline)], target_from=str(baseline),
        search_steps=6, search_overrides=dict(warmup_steps=2, batch_size=16, train_limit=400, eval_images=50,
                                              threads=1, prunode_window=1, block_window=2, layer_window=2),
        ablations=["prunode_only"], train_seeds=[0, 1], train_steps=6, train_batch=16, train_limit=300, eval_limit=100,
        measure_iters=4, measure_burst=3, measure_cold_iters=5)
    out = tmp_path_factory.mktemp("pipeline")
    results = run(cfg, out, quiet=True)
    yield cfg, out, results, cache
    mp.undo()


def test_pipeline_compares_searched_and_baseline_at_measured_latency(tiny_run, tiny_space):  # noqa: F811
    cfg, out, results, cache = tiny_run
    (lut_path,) = (cache / "luts").glob("tiny-*-onnxruntime-1t.json")
    table = load_table(lut_path)
    assert table.backend == "onnxruntime" and table.threads == 1
    (target,) = results["targets_ms"]
    assert target > 0
    nets = results["nets"]
    assert set(nets) == {next(iter(cfg.baselines)), f"searched@{target:g}ms", f"searched@{target:g}ms[prunode_only]"}
    floor = min_reachable_ms(table, load_space(tiny_space))
    for label, n in nets.items():
        assert n["measured_ms"] > 0 and n["measured_cold_ms"] > 0, label
        assert 0 <= n["train"]["top1"] <= 100 and n["params_m"] > 0, label
        runs = n["train"]["runs"]
        assert [r["seed"] for r in runs] == [0, 1] and n["train"]["top1"] == pytest.approx(
            sum(r["top1"] for r in runs) / 2) and n["train"]["top1_sd"] is not None, label
        assert Path(n["export"]["onnx"]).is_file()
        if n["kind"] == "searched":
            assert floor <= n["predicted_ms"] <= max(target, floor) + 1e-9, label
            assert n["search_peak_rss_mb"] > 0 and n["search_wall_s"] > 0
            assert n["search_activation_mb"]["first"] >= n["search_activation_mb"]["last"] > 0
    ablation = json.loads((out / "search" / f"searched_{target:g}ms_prunode_only_" / "summary.json").read_text())
    assert ablation["events"]["delete_block"] == 0 and ablation["events"]["remove_layer"] == 0
    assert (out / "pareto.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "prunode_only" in md and "measured (ms)" in md and "4 interleaved rounds × 3" in md
    assert results["provenance"]["iters"] == 12


def test_rerun_reuses_finished_runs_and_refuses_changed_settings(tiny_run):
    from dataclasses import replace

    from prunet.pipeline import run

    cfg, out, results, _ = tiny_run
    search_dir = next((out / "search").iterdir())
    stamp = (search_dir / "summary.json").stat().st_mtime_ns
    again = run(replace(cfg, targets_ms=results["targets_ms"], ablations=[]), out, quiet=True)
    assert (search_dir / "summary.json").stat().st_mtime_ns == stamp
    for label, n in again["nets"].items():
        assert n["train"]["top1"] == results["nets"][label]["train"]["top1"]
    with pytest.raises(ValueError, match="other settings"):
        run(replace(cfg, targets_ms=results["targets_ms"], search_steps=7), out, quiet=True)
    with pytest.raises(ValueError, match="other settings"):
        run(replace(cfg, targets_ms=results["targets_ms"], train_steps=7), out, quiet=True)
    with pytest.raises(ValueError, match="ablation_target_ms"):
        run(replace(cfg, targets_ms=results["targets_ms"], ablation_target_ms=999.0), out, quiet=True)
    with pytest.raises(ValueError, match="unknown variant 'no_such'"):
        run(replace(cfg, targets_ms=results["targets_ms"], ablations=["no_such"]), out, quiet=True)


def test_searched_rows_report_layers_removed_and_depth():
    """Issue 14: the ablation shows whether layer pruning acted at each target."""
    from prunet.pipeline import ROW_COLUMNS, depth_fields, result_rows

    summary = {"blocks": 7, "events": {"remove_layer": 3, "final_skip": 1, "commit": 9}}
    fields = depth_fields(summary, 11)
    assert fields == {"layers_removed": 3, "layers_skipped_final": 1, "depth": 7, "space_depth": 11}
    net = {"kind": "searched", "params_m": 0.5, "predicted_ms": 1.0, "measured_ms": 1.0, "measured_cold_ms": 1.1,
           "train": {"top1": 80.0}, **fields}
    base = {"kind": "baseline", "params_m": 0.5, "measured_ms": 0.9, "measured_cold_ms": 1.0, "train": {"top1": 79.0}}
    rows = dict((r[0], r) for r in result_rows({"nets": {"s": net, "b": base}}))
    col = ROW_COLUMNS.index("depth (layers removed in search)")
    assert rows["s"][col] == "7/11 (3)" and rows["b"][col] == ""

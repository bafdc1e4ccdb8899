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
from test_search_fixtures import FASHION, tiny_space, widest_arch  # noqa: F401

pytestmark = pytest.mark.skipif(not FASHION.exists(), reason="Debian package dataset-fashion-mnist not installed")


@pytest.fixture(scope="module")
def tiny_run(tiny_space, tmp_path_factory):  # noqa: F811
    from prunet.pipeline import PipelineConfig, run

    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("PRUNET_CACHE", str(cache))
    space = load_space(tiny_space)
    # The target is this baseline's *measured* latency, the floor a *prediction*: a tiny net's
    # timing is overhead-bound and noisy (a random sample once measured below the predicted floor
    # in CI and the search refused its target), so the baseline is the space's widest net.
    baseline = save(widest_arch(space), tmp_path_factory.mktemp("arch") / "b.json")
    cfg = PipelineConfig(
        space=str(tiny_space), baselines=[str(baseline)], target_from=str(baseline),
        search_steps=6, search_overrides=dict(warmup_steps=2, batch_size=16, train_limit=400, eval_images=50,
                                              threads=1, prunode_window=1, block_window=2, layer_window=2),
        ablations=["prunode_only"], train_seeds=[0, 1], train_steps=6, train_batch=16, train_limit=300, eval_limit=100,
        measure_iters=4, measure_burst=3, measure_cold_iters=5, search_seeds=[0, 1], random_nets=1, random_steps=3,
        strategy_overrides={"random": {"tolerance": 0.6}}, workers=2, lut_runs=50)
    out = tmp_path_factory.mktemp("pipeline")
    results = run(cfg, out, quiet=True)
    yield cfg, out, results, cache
    mp.undo()


def test_pipeline_compares_searched_and_baseline_at_measured_latency(tiny_run, tiny_space):  # noqa: F811
    cfg, out, results, cache = tiny_run
    (lut_path,) = (cache / "luts").glob("tiny-*-onnxruntime-1t-50runs.json")  # not the default table's file
    table = load_table(lut_path)
    assert table.backend == "onnxruntime" and table.threads == 1
    assert (table.provenance["iters"], table.provenance["warmup"]) == (50, 10)
    (target,) = results["targets_ms"]
    assert target > 0
    nets = results["nets"]
    assert set(nets) == {"b", f"searched@{target:g}ms", f"searched@{target:g}ms#s1",
                         f"searched@{target:g}ms[prunode_only]", f"random@{target:g}ms#0"}
    assert nets[f"searched@{target:g}ms#s1"]["search_seed"] == 1 and nets[f"random@{target:g}ms#0"]["kind"] == "random"
    for n in nets.values():  # no machine's absolute paths in a results file
        for path in (n["arch"], n["export"]["onnx"], *(r["dir"] for r in n["train"]["runs"])):
            assert not Path(path).is_absolute(), path
    floor = min_reachable_ms(table, load_space(tiny_space))
    for label, n in nets.items():
        assert n["measured_ms"] > 0 and n["measured_cold_ms"] > 0, label
        assert 0 <= n["train"]["top1"] <= 100 and n["params_m"] > 0, label
        runs = n["train"]["runs"]
        if n.get("ablation", "full") != "full":  # diagnostics: the first training seed only
            assert [r["seed"] for r in runs] == [0] and n["train"]["top1_sd"] is None, label
        else:
            assert [r["seed"] for r in runs] == [0, 1] and n["train"]["top1"] == pytest.approx(
                sum(r["top1"] for r in runs) / 2) and n["train"]["top1_sd"] is not None, label
        for r in runs:  # the comparison's recipe reached every training, evaluation batch included
            recorded = json.loads((out / r["dir"] / "train_config.json").read_text())
            assert (recorded["batch_size"], recorded["eval_batch_size"]) == (cfg.train_batch, cfg.eval_batch), label
        assert (out / n["export"]["onnx"]).is_file()
        assert (out / n["arch"]).is_file() if n["kind"] != "baseline" else n["arch"] == "b.json"
        if n["kind"] != "baseline":
            assert n["target_ms"] == target and 0 <= n["inherited_top1"] <= 100, label
        if n["kind"] == "searched":
            assert floor <= n["predicted_ms"] <= max(target, floor) + 1e-9, label
            assert n["search_peak_rss_mb"] > 0 and n["search_wall_s"] > 0
            assert n["search_activation_mb"]["first"] >= n["search_activation_mb"]["last"] > 0
    ablation = json.loads((out / "search" / f"searched_{target:g}ms_prunode_only_" / "summary.json").read_text())
    assert ablation["events"]["delete_block"] == 0 and ablation["events"]["remove_layer"] == 0
    assert (out / "pareto.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "prunode_only" in md and "measured (ms)" in md and "4 interleaved rounds × 3" in md
    assert " (1 seed) |" in md  # the ablation row says it was trained once
    assert results["provenance"]["iters"] == 12
    (goal,) = results["goals"]
    assert goal["searched_runs"] == 4 and goal["random_nets"] == 1  # two search seeds × two training seeds
    assert "Goal per target" in md and "inherited top-1" in md


def test_rerun_reuses_finished_runs_and_refuses_changed_settings(tiny_run):
    from dataclasses import replace

    from prunet.pipeline import run

    cfg, out, results, _ = tiny_run
    search_dir = out / "search" / f"searched_{results['targets_ms'][0]:g}ms"
    stamp = (search_dir / "summary.json").stat().st_mtime_ns
    again = run(replace(cfg, targets_ms=results["targets_ms"], ablations=[]), out, quiet=True)
    assert (search_dir / "summary.json").stat().st_mtime_ns == stamp
    for label, n in again["nets"].items():
        assert n["train"]["top1"] == results["nets"][label]["train"]["top1"]
    with pytest.raises(ValueError, match=r"other settings .*\(loop\.steps: 6 in the folder, 7 asked\)"):
        run(replace(cfg, targets_ms=results["targets_ms"], search_steps=7), out, quiet=True)
    with pytest.raises(ValueError, match="other settings"):
        run(replace(cfg, targets_ms=results["targets_ms"], train_steps=7), out, quiet=True)
    with pytest.raises(ValueError, match="ablation_target_ms"):
        run(replace(cfg, targets_ms=results["targets_ms"], ablation_target_ms=999.0), out, quiet=True)
    with pytest.raises(ValueError, match="unknown variant 'no_such'"):
        run(replace(cfg, targets_ms=results["targets_ms"], ablations=["no_such"]), out, quiet=True)


def test_finished_training_of_another_architecture_is_refused(tiny_run, tmp_path):
    """A search rerun with other settings writes another net under the same folder and file name;
    its old training must not be reused for it."""
    from prunet.arch import load, to_dict
    from prunet.pipeline import train_net

    cfg, out, results, _ = tiny_run
    target = results["targets_ms"][0]
    trained = out / "train" / f"searched_{target:g}ms"
    space = load_space(cfg.space)
    other = next(a for a in (sample_arch(space, random.Random(k), "other") for k in range(100))
                 if to_dict(a) != to_dict(load(trained / "arch.json")))
    renamed = save(other, tmp_path / "arch.json")
    with pytest.raises(ValueError, match="another architecture"):
        train_net(renamed, cfg, trained, quiet=True, seed=cfg.seed)
    same = tmp_path / "same" / "arch.json"
    same.parent.mkdir()
    same.write_text((trained / "arch.json").read_text())
    assert train_net(same, cfg, trained, quiet=True, seed=cfg.seed)["top1"] == json.loads(
        (trained / "summary.json").read_text())["top1"]


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


def test_search_jobs_label_every_seed_strategy_control_and_ablation():
    from prunet.pipeline import PipelineConfig, search_jobs

    cfg = PipelineConfig(search_seeds=[0, 1, 2], strategies=["prunet", "repnas"], random_nets=2, random_steps=5,
                         ablations=["multiplicative"], search_steps=40, search_overrides={"arch_lr": 0.1, "batch_size": 8},
                         strategy_overrides={"repnas": {"branches": 3}})
    jobs = {j.label: j for j in search_jobs(cfg, [0.5, 0.9], ablation_at=0.9)}
    assert sorted(jobs) == sorted(
        [f"searched@{t}ms{s}" for t in ("0.5", "0.9") for s in ("", "#s1", "#s2")]
        + [f"repnas@{t}ms{s}" for t in ("0.5", "0.9") for s in ("", "#s1", "#s2")]
        + [f"random@{t}ms#{i}" for t in ("0.5", "0.9") for i in (0, 1)] + ["searched@0.9ms[multiplicative]"])
    assert jobs["searched@0.9ms#s2"].search_seed == 2 and jobs["searched@0.9ms#s2"].settings["arch_lr"] == 0.1
    # Other strategies get the loop's fields, not PruNet's, plus their own overrides.
    assert jobs["repnas@0.5ms"].settings == {"steps": 40, "batch_size": 8, "branches": 3}
    assert jobs["random@0.5ms#1"].settings["steps"] == 5 and jobs["random@0.5ms#1"].search_seed == 1
    assert jobs["searched@0.9ms[multiplicative]"].settings["latency_loss"] == "multiplicative"
    all_seeds = search_jobs(PipelineConfig(search_seeds=[0, 1], ablations=["mixture"], ablation_all_seeds=True),
                            [0.9], ablation_at=0.9)
    assert {j.label for j in all_seeds} == {"searched@0.9ms", "searched@0.9ms#s1", "searched@0.9ms[mixture]",
                                            "searched@0.9ms[mixture]#s1"}


def test_ablations_train_with_the_first_seed_unless_asked_for_all():
    from prunet.pipeline import PipelineConfig, training_jobs

    nets = {"searched@0.9ms": {"ablation": "full"}, "searched@0.9ms[mixture]": {"ablation": "mixture"},
            "irb_uniform_w050": {}}
    jobs = training_jobs(PipelineConfig(train_seeds=[3, 4]), nets)
    assert jobs == [("searched@0.9ms", 3), ("searched@0.9ms[mixture]", 3), ("irb_uniform_w050", 3),
                    ("searched@0.9ms", 4), ("irb_uniform_w050", 4)]
    every = training_jobs(PipelineConfig(train_seeds=[3, 4], ablation_all_seeds=True), nets)
    assert ("searched@0.9ms[mixture]", 4) in every and len(every) == 6


def _net(kind, top1s, ms, target=None, **kw):
    runs = [{"seed": i, "top1": t} for i, t in enumerate(top1s)]
    return {"kind": kind, "measured_ms": ms, "target_ms": target, "train": {"top1": sum(top1s) / len(top1s),
                                                                            "runs": runs}, **kw}


def test_target_goals_read_the_issue_rule():
    """Baselines count when measured ≤ max(target, searched mean) + 5 %; the searched mean must beat
    each of them and the random median; every searched net must measure ≤ target + 3 %."""
    from prunet.pipeline import target_goals

    nets = {"s0": _net("searched", [86, 87], 1.00, 1.0), "s1": _net("searched", [85, 86], 1.02, 1.0),
            "abl": _net("searched", [99], 1.0, 1.0, ablation="prunode_only"),
            "rep": _net("searched", [99], 1.0, 1.0, strategy="repnas"),
            "near": _net("baseline", [85.5], 1.05), "far": _net("baseline", [95], 1.2),
            "r0": _net("random", [80], 1.0, 1.0), "r1": _net("random", [90], 1.0, 1.0), "r2": _net("random", [84], 1.0, 1.0)}
    (g,) = target_goals({"targets_ms": [1.0], "nets": nets})
    assert g["searched_runs"] == 4 and g["searched_top1_mean"] == 86.0
    assert g["baselines_in_budget"] == {"near": 85.5} and g["random_top1_median"] == 84
    assert g["beats_baselines"] and g["beats_random"] and g["latency_within_3pct"] and g["held"]
    nets["s1"]["measured_ms"] = 1.04  # one searched net 4 % over its target
    (g,) = target_goals({"targets_ms": [1.0], "nets": nets})
    assert not g["latency_within_3pct"] and not g["held"]
    nets["s1"]["measured_ms"] = 1.02
    nets["near"]["train"]["top1"] = 86.5
    (g,) = target_goals({"targets_ms": [1.0], "nets": nets})
    assert not g["beats_baselines"] and not g["held"]


def test_failed_search_is_reported_not_fatal_with_keep_going():
    """benchmarks/strategies.py: a method that cannot reach a target is a result, not a crash."""
    from prunet.pipeline import _in_processes

    out = _in_processes([(int, ("x",)), (int, ("3",))], workers=2, desc="t", quiet=True, keep_going=True)
    assert isinstance(out[0], ValueError) and out[1] == 3
    with pytest.raises(ValueError, match="invalid literal"):
        _in_processes([(int, ("x",))], workers=1, desc="t", quiet=True)


def test_a_task_waits_for_its_prerequisite_only_and_inherits_its_failure(tmp_path):
    """A training starts when its own search is done (baseline trainings fill the other cores);
    a failed search's trainings are not run."""
    import shutil

    from prunet.pipeline import _in_processes

    (tmp_path / "a").write_text("made by the first task")
    tasks = [(shutil.copyfile, (str(tmp_path / "a"), str(tmp_path / "b"))),
             (shutil.copyfile, (str(tmp_path / "b"), str(tmp_path / "c"))),  # needs the first task's file
             (int, ("x",)), (int, ("4",)), (int, ("5",))]
    out = _in_processes(tasks, workers=2, desc="t", quiet=True, keep_going={2}, after=[None, 0, None, 2, None],
                        labels=list("abcde"))
    assert (tmp_path / "c").read_text() == "made by the first task"
    assert isinstance(out[2], ValueError) and out[3] is out[2] and out[4] == 5
    with pytest.raises(ValueError, match="invalid literal"):  # tolerated for task 2 only
        _in_processes([(int, ("x",)), (int, ("y",))], workers=1, desc="t", quiet=True, keep_going={1})
    with pytest.raises(ValueError, match="one prerequisite index"):
        _in_processes(tasks[:2], workers=1, desc="t", quiet=True, after=[None, 5])


def test_a_row_trained_with_fewer_seeds_says_so():
    from prunet.pipeline import result_rows

    full = _net("searched", [84.0, 85.0, 86.0], 2.0, 2.0, params_m=0.5, measured_cold_ms=2.2)
    ablation = _net("searched", [84.5], 1.9, 2.0, params_m=0.4, measured_cold_ms=2.1, ablation="mixture")
    full["train"]["top1_sd"] = 1.0
    rows = result_rows({"config": {"train_seeds": [0, 1, 2]}, "nets": {"s": full, "s[mixture]": ablation}})
    assert [r[6] for r in rows] == ["84.50 (1 seed)", "85.00 ± 1.00"]

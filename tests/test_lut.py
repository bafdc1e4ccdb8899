"""Latency tables: keys, prediction, provenance checks, build-lut / validate-lut commands."""

from __future__ import annotations

import json

import pytest

from prunet.latency.lut import LatencyTable, LutError, arch_parts, fit_calibration, load_table, min_reachable_ms
from prunet.search.space import from_dict, load_space
from test_search_fixtures import PY, TINY_SPACE, run, tiny_lut, tiny_space  # noqa: F401

MICRO_SPACE = {
    "format": "prunet.space/1", "name": "micro", "input_size": [1, 12, 12], "num_classes": 4, "width_step": 8,
    "stem": [{"out_chs": 8, "kernel": 3, "stride": 2}],
    "candidates": [{"type": "irb", "kernel": 3, "max_expansion": 2, "min_hidden": 8}],
    "stages": [{"out_chs": 8, "stride": 1, "depth": 1}], "head": {"conv_chs": 16},
}


def test_predict_is_calibrated_sum_and_names_missing_blocks():
    sp = from_dict(TINY_SPACE)
    arch = sp.arch_from_choices([(s.candidates[0], 16) for s in sp.layers()], "a")
    parts = arch_parts(arch)
    assert [p for p, *_ in parts] == ["stem[0]", "blocks[0]", "blocks[1]", "blocks[2]", "blocks[3]", "head"]
    t = LatencyTable("tiny", sp.hash, "torch", "min", 1, {k: 0.5 for _, k, _, _ in parts}, a=2.0, c=0.25)
    assert t.predict(arch) == pytest.approx(2.0 * 0.5 * 6 + 0.25)
    del t.entries[parts[3][1]]
    with pytest.raises(LutError, match=r"blocks\[2\]"):
        t.predict(arch)


def test_calibration_never_predicts_zero_or_negative_for_the_smallest_net():
    """Three noisy nets far above the space's smallest one can tilt the line below zero there;
    the fit then falls back to a pure scale."""
    sums, measured = [10.0, 10.5, 11.0], [10.0, 13.0, 16.0]  # slope 6: at sum 2 the line says -38 ms
    a, c = fit_calibration(sums, measured)
    assert a * 2.0 + c < 0  # the unconstrained line
    a, c = fit_calibration(sums, measured, floor_sum=2.0)
    assert c == 0.0 and a * 2.0 > 0


def test_fit_calibration_recovers_a_line():
    a, c = fit_calibration([1.0, 2.0, 3.0, 5.0], [1.5, 2.5, 3.5, 5.5])
    assert a == pytest.approx(1.0) and c == pytest.approx(0.5)


def test_table_refuses_other_space_backend_threads_and_bad_files(tiny_lut, tmp_path):
    t = load_table(tiny_lut)
    t.check_for(t.space_hash, "torch", 1)
    with pytest.raises(LutError, match="built for space 'tiny'"):
        t.check_for(load_space("proxy-small").hash)
    with pytest.raises(LutError, match="backend 'torch', not 'onnxruntime'"):
        t.check_for(backend="onnxruntime")
    with pytest.raises(LutError, match="1 thread"):
        t.check_for(threads=2)
    bad = json.loads(tiny_lut.read_text())
    key = next(iter(bad["entries"]))
    bad["entries"][key] = "fast"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(LutError, match=f"entries.{key}"):
        load_table(p)
    with pytest.raises(LutError, match="not found"):
        load_table(tmp_path / "missing.json")


def test_min_reachable_is_below_any_sampled_net(tiny_lut, tiny_space):
    import random

    from prunet.latency.lut import sample_arch

    sp, t = load_space(tiny_space), load_table(tiny_lut)
    lo = min_reachable_ms(t, sp)
    rng = random.Random(0)
    assert all(t.predict(sample_arch(sp, rng)) >= lo - 1e-12 for _ in range(30))


def test_min_reachable_looks_at_every_width_not_only_the_narrowest(tiny_lut, tiny_space):
    """Measured entries of small blocks are not monotone in width; a floor built from the narrowest
    widths alone sat above nets the search reached (and refused targets it could meet)."""
    import random

    from prunet.latency.lut import block_key, sample_arch

    sp, t = load_space(tiny_space), load_table(tiny_lut)
    for slot in sp.layers():
        for cand in slot.candidates:
            narrowest = slot.hidden_widths(cand, sp.width_step)[0]
            t.entries[block_key(slot.block_spec(cand, narrowest), slot.in_hw)] *= 100
    lo = min_reachable_ms(t, sp)
    rng = random.Random(1)
    assert all(t.predict(sample_arch(sp, rng)) >= lo - 1e-12 for _ in range(50))


def test_build_and_validate_lut_commands_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    space = tmp_path / "micro.json"
    space.write_text(json.dumps(MICRO_SPACE))
    lut = tmp_path / "lut.json"
    r = run([PY, "-m", "prunet.cli", "latency", "build-lut", "--space", str(space), "--backend", "onnxruntime",
             "--out", str(lut), "--iters", "20", "--warmup", "3", "--calib-nets", "2", "--quiet"])
    assert r.returncode == 0, r.stderr
    t = load_table(lut)
    assert t.backend == "onnxruntime" and t.threads == 1 and t.statistic == "min"
    # stem, two widths, head, the RepNAS chain's rep block; a cell's pools and skip (3) and node sums (8)
    assert len(t.entries) == 16 and t.reference["ms"] > 0
    prov = t.provenance
    assert prov["exporter"] == "torchscript" and "onnxruntime" in prov["versions"]
    r = run([PY, "-m", "prunet.cli", "latency", "validate-lut", str(lut), "--samples", "3", "--json",
             "--iters", "20", "--warmup", "3", "--plot", str(tmp_path / "v.png")])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["samples"] == 3 and 0.0 <= res["within_10pct"] <= 1.0 and res["mape"] >= 0
    assert "spearman" in res and res["drift"]["ratio"] > 0
    assert (tmp_path / "v.png").stat().st_size > 1000


def test_validate_lut_torch_backend_json(tiny_lut):
    r = run([PY, "-m", "prunet.cli", "latency", "validate-lut", str(tiny_lut), "--samples", "4", "--json",
             "--iters", "10", "--warmup", "2"])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert set(res) >= {"samples", "within_10pct", "mape", "spearman"} and res["backend"] == "torch"
    assert len(res["predicted_ms"]) == len(res["measured_ms"]) == 4


def test_a_table_timed_with_fewer_runs_is_cached_apart_and_rebuilt_when_it_does_not_fit(tmp_path, monkeypatch,
                                                                                      capsys):
    """`make demo`'s table (fewer timed runs per block) has its own cache file, so the benchmark's
    default table is never replaced by it nor read in its place; a cached file whose recorded run
    count differs from what is asked for is measured again, not trusted."""
    import shutil

    from prunet.search.tables import default_lut_path, ensure_table

    monkeypatch.setenv("PRUNET_CACHE", str(tmp_path))
    sp = from_dict(MICRO_SPACE)
    assert default_lut_path(sp, "torch", 1).name.endswith("-torch-1t.json")
    path = ensure_table(sp, "torch", 1, quiet=True, runs=12)
    assert path == default_lut_path(sp, "torch", 1, runs=12) and path.name.endswith("-torch-1t-12runs.json")
    assert (load_table(path).provenance["iters"], load_table(path).provenance["warmup"]) == (12, 10)
    assert ensure_table(sp, "torch", 1, quiet=True, runs=12) == path  # reused
    wrong = default_lut_path(sp, "torch", 1, runs=20)
    shutil.copy(path, wrong)  # a 12-run table under the 20-run name
    assert ensure_table(sp, "torch", 1, runs=20) == wrong
    assert "timed with 12 runs per entry, not 20" in capsys.readouterr().err
    assert load_table(wrong).provenance["iters"] == 20
    with pytest.raises(ValueError, match="lut_runs: expected an integer >= 10"):
        default_lut_path(sp, "torch", 1, runs=5)


def test_calibration_nets_spread_from_the_small_end_of_the_space_to_the_large_end():
    """Uniformly drawn nets sit in the middle of the space's latency range, and an affine fit on
    them extrapolates to the ends (the shallow nets of a low-target search were predicted 12-16 %
    fast); the spread sampler walks from mostly-skipped narrow nets to full-depth wide ones."""
    import random

    from prunet.latency.lut import calibration_nets, net_id, sample_arch

    sp = load_space("proxy-small")
    nets = calibration_nets(sp, 12, seed=0)
    assert [net_id(a) for a in nets] == [net_id(a) for a in calibration_nets(sp, 12, seed=0)]  # reproducible

    def hidden(arch):
        return sum(b.hidden_chs for b in arch.blocks if getattr(b, "hidden_chs", None))

    first, last = nets[:3], nets[-3:]
    assert max(len(a.blocks) for a in first) < min(len(a.blocks) for a in last)
    assert max(hidden(a) for a in first) < min(hidden(a) for a in last)
    rng = random.Random(0)  # "uniform" is the draw tables recorded before the sampler existed
    old = [sample_arch(sp, rng, f"calib{i}") for i in range(12)]
    assert [net_id(a) for a in calibration_nets(sp, 12, 0, "uniform")] == [net_id(a) for a in old]
    with pytest.raises(LutError, match="calibration sampler: expected 'spread' or 'uniform', got 'grid'"):
        calibration_nets(sp, 12, 0, "grid")


def test_a_cached_table_calibrated_on_uniform_nets_is_measured_again(tmp_path, monkeypatch, capsys):
    from prunet.search.tables import default_lut_path, ensure_table

    monkeypatch.setenv("PRUNET_CACHE", str(tmp_path))
    sp = from_dict(MICRO_SPACE)
    path = ensure_table(sp, "torch", 1, quiet=True, runs=12)
    assert load_table(path).calibration["sampler"] == "spread"
    doc = json.loads(path.read_text())
    del doc["calibration"]["sampler"]  # as written before the sampler was recorded
    path.write_text(json.dumps(doc))
    assert load_table(path).calibration.get("sampler") is None
    assert ensure_table(sp, "torch", 1, runs=12) == path == default_lut_path(sp, "torch", 1, runs=12)
    assert "calibrated on 'uniform' nets, not 'spread'" in capsys.readouterr().err
    assert load_table(path).calibration["sampler"] == "spread"

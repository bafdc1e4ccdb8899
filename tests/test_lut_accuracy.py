"""Issue 16: the A/A floor beside every validation, a feature model fitted on nets validation never
sees, its table fields verified on load, and torch CUDA refused clearly without a GPU.

Most tests use a stand-in measurer with a known ground truth (what is tested is the bookkeeping
and the fit, not this machine's timings); one validates a real tiny table measured on torch."""

from __future__ import annotations

import json

import pytest

from functools import lru_cache

from prunet.latency.features import FEATURES, part_features
from prunet.latency.lut import (LatencyTable, LutError, Measurer, agreement, arch_parts, build_table, calibration_ids,
                                load_table, net_id, validate_table, validation_nets)
from prunet.search.space import from_dict
from test_lut import MICRO_SPACE
from test_search_fixtures import PY, TINY_SPACE, run, tiny_lut, tiny_space  # noqa: F401


@lru_cache(maxsize=None)
def _features(spec, in_chs, hw):
    return part_features(spec, in_chs, hw)


class Known(Measurer):
    """Blocks cost their bytes; a whole net costs 1.3 × its blocks, minus a per-part overhead the
    isolated timings each paid, plus a cache term in the weights: the shape a feature model can
    learn and a plain ``a·Σ + c`` cannot."""

    def part(self, spec, in_chs, hw):
        f = _features(spec, in_chs, tuple(hw))
        return 0.05 + 1e-3 * f["param_kb"] + 2e-3 * f["act_kb"]

    def _truth(self, arch):
        total, params, n = 0.0, 0.0, 0
        for _, _, spec, hw in arch_parts(arch):
            in_chs = getattr(spec, "in_chs", 0)
            total += self.part(spec, in_chs, hw)
            params += _features(spec, in_chs, tuple(hw))["param_kb"]
            n += 1
        return 1.3 * total - 0.03 * n + 4e-4 * params + 0.2

    def whole(self, arch):
        return self._truth(arch)

    def whole_pair(self, arch):
        t = self._truth(arch)
        self.pairs = getattr(self, "pairs", 0) + 1
        return t, t * (1.02 if self.pairs % 2 else 0.85)  # every other repeat 15 % off


def test_feature_model_learns_what_the_plain_sum_misses_and_keeps_the_search_api():
    sp = from_dict(TINY_SPACE)
    t = build_table(sp, Known(backend="torch"), calib_nets=16, progress=False)
    assert t.model != "affine" and "parts" in t.weights and t.weights["parts"] < 0
    assert set(t.calibration["cv_mape"]) >= {"affine", "parts"}
    assert t.calibration["cv_mape"][t.model] < t.calibration["cv_mape"]["affine"]
    m = Known(backend="torch")
    for arch in validation_nets(sp, 10, 1, t.calib_net_ids):
        truth = m.whole(arch)
        assert abs(t.predict(arch) - truth) / truth < 0.01
        # predict is a·Σ lookup + c: the per-part form the supernet's expected latency relies on
        assert t.predict(arch) == pytest.approx(t.a * sum(t.lookup(k) for _, k, _, _ in arch_parts(arch)) + t.c)
        tot = t.feature_totals(arch)
        assert t.predict(arch) == pytest.approx(t.a * t.plain_sum(arch) + t.c
                                                + sum(w * tot[f] for f, w in t.weights.items()))


def test_aa_fields_are_the_second_measurement_against_the_first():
    sp = from_dict(TINY_SPACE)
    m = Known(backend="torch")
    t = build_table(sp, m, calib_nets=8, progress=False)
    t.provenance = Measurer(backend="torch").provenance()
    t.reference = {"name": "ref", "ms": 1.0}
    res = validate_table(t, sp, m, samples=6, progress=False)
    assert res["measured_again_ms"] != res["measured_ms"]
    assert res["aa_within_10pct"] == pytest.approx(0.5) and res["aa_mape"] == pytest.approx((0.02 + 0.15) / 2)
    assert res["aa_max_error"] == pytest.approx(0.15)
    assert res["aa_mape"] == pytest.approx(agreement(res["measured_ms"], res["measured_again_ms"])["mape"])
    assert {"samples", "within_10pct", "mape", "spearman", "max_error", "drift"} <= set(res)


def test_validate_lut_json_has_the_floor_from_two_real_measurements(tiny_lut):
    r = run([PY, "-m", "prunet.cli", "latency", "validate-lut", str(tiny_lut), "--samples", "3", "--json",
             "--iters", "10", "--warmup", "2"])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert {"aa_within_10pct", "aa_mape", "aa_max_error", "measured_again_ms"} <= set(res)
    first, again = res["measured_ms"], res["measured_again_ms"]
    assert len(again) == 3 and all(x > 0 for x in again)
    assert first != again  # two separate timings (ns clocks) do not coincide
    assert res["aa_mape"] == pytest.approx(sum(abs(b - a) / a for a, b in zip(first, again)) / 3)
    assert not set(res["net_ids"]) & calibration_ids(load_table(tiny_lut), from_dict(TINY_SPACE))


def test_validation_never_reuses_calibration_nets():
    sp = from_dict(MICRO_SPACE)  # three distinct nets: skip, hidden 8, hidden 16
    t = build_table(sp, Known(backend="torch"), calib_nets=3, progress=False)
    ids = set(t.calib_net_ids)
    assert 1 <= len(ids) <= 2
    nets = validation_nets(sp, 20, 1, ids)
    assert nets and not {net_id(a) for a in nets} & ids
    t.provenance = Measurer(backend="torch").provenance()
    t.reference = {"name": "ref", "ms": 1.0}
    res = validate_table(t, sp, Known(backend="torch"), samples=5, progress=False)
    assert not set(res["net_ids"]) & ids and res["calibration_nets_excluded"] == len(ids)
    every = {net_id(a) for a in validation_nets(sp, 50, 7)}
    with pytest.raises(LutError, match=f"no net outside the {len(every)} calibration net"):
        validation_nets(sp, 1, 1, every)


def test_format_1_tables_exclude_their_calibration_nets_by_seed():
    sp = from_dict(TINY_SPACE)
    old = load_table("tests/data/search_recorded/tiny-lut.json")
    assert old.model == "affine" and not old.features and old.lookup(next(iter(old.entries))) > 0
    ids = calibration_ids(old, sp)
    assert len(ids) == old.calibration["nets"]


@pytest.fixture(scope="module")
def known_table():
    return build_table(from_dict(TINY_SPACE), Known(backend="torch"), calib_nets=16, progress=False)


def _write(tmp_path, doc):
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    return p


def _doc_with_id(tmp_path, t, edit):
    """A /2 table document edited by ``edit`` with its id recomputed, so only the edited field
    can be what load_table refuses."""
    doc = json.loads(json.dumps(t.to_dict()))
    edit(doc)
    t2 = LatencyTable(t.space_name, t.space_hash, t.backend, t.statistic, t.threads, doc["entries"],
                      a=doc["calibration"]["a"], c=doc["calibration"]["c"], model=doc["calibration"]["model"],
                      weights=doc["calibration"]["weights"] if isinstance(doc["calibration"]["weights"], dict) else {},
                      features={k: dict(zip(FEATURES, v)) for k, v in doc.get("features", {}).get("values", {}).items()
                                if isinstance(v, list) and len(v) == len(FEATURES)},
                      calib_net_ids=doc["calibration"]["net_ids"])
    doc["id"] = t2.id
    return _write(tmp_path, doc)


def test_a_written_table_loads_with_its_model(tmp_path, known_table):
    t = known_table
    t2 = load_table(t.save(tmp_path / "ok.json"))
    assert (t2.model, t2.weights, t2.features, t2.calib_net_ids) == (t.model, t.weights, t.features, t.calib_net_ids)
    assert t2.id == t.id and json.loads((tmp_path / "ok.json").read_text())["format"] == "prunet.lut/2"


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["calibration"].update(model="magic"), r"calibration\.model: expected one of"),
    (lambda d: d["calibration"].update(weights={"parts": float("nan"), **{k: 0.0 for k in d["calibration"]["weights"]
                                                                           if k != "parts"}}),
     r"calibration\.weights\.parts: expected a finite number"),
    (lambda d: d["calibration"].update(weights={}), r"calibration\.weights: expected a number for each of"),
    (lambda d: d["calibration"].update(net_ids="all"), r"calibration\.net_ids: expected a list"),
    (lambda d: d["features"].update(names=["parts"]), r"features: expected"),
    (lambda d: d["features"]["values"].pop(next(iter(d["features"]["values"]))), r"features\.values: expected one row"),
    (lambda d: d["features"]["values"].update({k: [1, 2] for k in list(d["features"]["values"])[:1]}),
     r"features\.values\..*: expected 5 non-negative numbers"),
    (lambda d: d["calibration"]["weights"].update(parts=-1e3), r"calibration\.weights: entry .* gets a term of"),
    (lambda d: d.update(format="prunet.lut/1"), r"format: 'prunet\.lut/1' has no features"),
])
def test_model_fields_are_verified_on_load(tmp_path, known_table, edit, message):
    with pytest.raises(LutError, match=message) as e:
        load_table(_doc_with_id(tmp_path, known_table, edit))
    assert "\n" not in str(e.value) and "t.json" in str(e.value)


def test_an_edited_weight_changes_the_id(tmp_path, known_table):
    doc = json.loads(json.dumps(known_table.to_dict()))
    doc["calibration"]["weights"]["parts"] *= 0.5
    with pytest.raises(LutError, match="id: the file says"):
        load_table(_write(tmp_path, doc))


def test_torch_cuda_is_refused_clearly_without_a_gpu(tmp_path, capsys):
    import torch

    from prunet.export.errors import BackendUnavailableError

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present; the refusal is for machines without one")
    sp = from_dict(MICRO_SPACE)
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        build_table(sp, Measurer(backend="torch", device="cuda", iters=2, warmup=1), calib_nets=1, progress=False)
    space = tmp_path / "micro.json"
    space.write_text(json.dumps(MICRO_SPACE))
    from prunet.cli import main

    rc = main(["latency", "build-lut", "--space", str(space), "--backend", "torch", "--device", "cuda",
               "--out", str(tmp_path / "l.json"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0 and "no CUDA GPU" in err
    assert not (tmp_path / "l.json").exists()


def test_bench_reports_the_aa_floor(tmp_path, capsys):
    import argparse

    from prunet._cli_export import add_bench_command

    p = argparse.ArgumentParser(prog="prunet")
    sub = p.add_subparsers(dest="command", required=True)
    add_bench_command(sub)
    out = tmp_path / "b.json"
    args = p.parse_args(["bench", "resnet18", "--backend", "torch", "--iters", "3", "--warmup", "1",
                         "--threads", "1", "--input-size", "3x32x32", "--json", str(out), "--quiet"])
    assert args.func(args) == 0
    assert "A/A floor" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    floor, (res,) = doc["aa_floor"], doc["results"]
    assert floor["pairs"] == 1 and res["settings"]["aa_value"] > 0 and res["settings"]["aa_value"] != res["value"]
    assert floor["mape"] == pytest.approx(abs(res["settings"]["aa_value"] - res["value"]) / res["value"])

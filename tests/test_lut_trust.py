"""Latency tables are verified on load, and a table from another machine is refused unless the
user says so (issue 12, item 7).

The tables here are written with this machine's real provenance (``Measurer.provenance()``) and
made-up entries: what is tested is the checking, not the measuring.
"""

from __future__ import annotations

import json

import pytest

from prunet.latency.lut import LatencyTable, LutError, Measurer, load_table
from prunet.latency.provenance import cpu_name, versions


def write(tmp_path, backend="torch", **changes):
    """A table file with this machine's provenance; ``changes`` edit the document, keeping the
    stored id consistent unless ``id`` is given."""
    t = LatencyTable("s", "hash", backend, "min", 1, {"conv:a": 0.5, "head:b": 0.25}, a=1.2, c=0.1,
                     provenance=Measurer(backend=backend).provenance())
    doc = t.to_dict()
    for key, value in changes.items():
        if key in ("a", "c"):
            doc["calibration"][key] = value
            setattr(t, key, value)
        elif key == "provenance":
            doc["provenance"] = value
        elif key != "id":
            doc[key] = value
    doc["id"] = changes.get("id", t.id)
    p = tmp_path / "lut.json"
    p.write_text(json.dumps(doc))
    return p


def test_this_machines_table_is_accepted(tmp_path):
    t = load_table(write(tmp_path))
    assert t.check_machine() == [] and t.machine_differences() == []
    assert t.provenance["device_name"] == cpu_name()


@pytest.mark.parametrize("value", [float("nan"), 0.0, -0.5, float("inf")])
def test_calibration_a_must_be_finite_and_positive(tmp_path, value):
    with pytest.raises(LutError, match=r"calibration\.a: expected a finite number > 0"):
        load_table(write(tmp_path, a=value))


def test_calibration_c_must_be_finite(tmp_path):
    with pytest.raises(LutError, match=r"calibration\.c: expected a finite number"):
        load_table(write(tmp_path, c=float("nan")))


def test_stored_id_must_match_the_content(tmp_path):
    p = write(tmp_path)
    doc = json.loads(p.read_text())
    doc["entries"]["conv:a"] = 0.05  # a hand-edited entry
    p.write_text(json.dumps(doc))
    with pytest.raises(LutError, match=r"lut\.json: id: the file says '[0-9a-f]{16}' but its entries"):
        load_table(p)
    with pytest.raises(LutError, match=r"id: expected str"):
        load_table(write(tmp_path, id=None))


def test_other_fields_are_checked(tmp_path):
    with pytest.raises(LutError, match=r"statistic: expected one of"):
        load_table(write(tmp_path, statistic="fastest"))
    with pytest.raises(LutError, match=r"threads: expected a positive integer or null"):
        load_table(write(tmp_path, threads=0))
    p = tmp_path / "dup.json"
    p.write_text('{"format": "prunet.lut/1", "format": "prunet.lut/1"}')
    with pytest.raises(LutError, match="appears more than once"):
        load_table(p)


def test_statistic_must_be_the_one_measured():
    t = LatencyTable("s", "hash", "torch", "median", 1, {})
    t.check_for(statistic="median")
    with pytest.raises(LutError, match="holds the 'median' of each measurement, not the 'min'"):
        t.check_for(statistic="min")


def _foreign(tmp_path, **prov_changes):
    prov = Measurer(backend="onnxruntime").provenance()
    for k, v in prov_changes.items():
        if k in ("torch", "onnxruntime"):
            prov["versions"][k] = v
        elif v is None:
            prov.pop(k)
        else:
            prov[k] = v
    return load_table(write(tmp_path, backend="onnxruntime", provenance=prov))


def test_table_from_another_cpu_is_refused_naming_the_difference(tmp_path):
    t = _foreign(tmp_path, device_name="Imaginary CPU 9000", device="Imaginary CPU 9000 (64 CPUs available)")
    with pytest.raises(LutError) as e:
        t.check_machine()
    msg = str(e.value)
    assert "measured on another machine" in msg and "'Imaginary CPU 9000' there" in msg and cpu_name() in msg
    assert "--allow-foreign-lut" in msg
    assert t.check_machine(allow_foreign=True) == [f"device: 'Imaginary CPU 9000' there, {cpu_name()!r} here"]


def test_table_from_other_software_versions_is_refused(tmp_path):
    here = versions()
    t = _foreign(tmp_path, onnxruntime="0.0.1", torch="1.0.0")
    with pytest.raises(LutError, match=rf"onnxruntime: '0\.0\.1' there, '{here['onnxruntime']}' here; "
                                       rf"torch: '1\.0\.0' there, '{here['torch']}' here"):
        t.check_machine()


def test_table_without_a_recorded_device_is_refused(tmp_path):
    t = _foreign(tmp_path, device_name=None, device=None)
    with pytest.raises(LutError, match=r"device: not recorded in the table"):
        t.check_machine()


def test_old_tables_recorded_the_cpu_as_a_description_and_still_match(tmp_path):
    t = _foreign(tmp_path, device_name=None, device_kind=None, device=f"{cpu_name()} (128 CPUs available)")
    assert t.check_machine() == []  # the CPU count is not part of the comparison


def test_gpu_backend_tables_record_the_gpu_not_the_cpu():
    prov = Measurer(backend="tensorrt").provenance()
    assert prov["device_kind"] == "cuda" and "cuda" in prov["versions"]
    assert cpu_name() not in prov["device"] and cpu_name() != prov["device_name"]
    import torch

    if torch.cuda.is_available():
        assert prov["device_name"] == torch.cuda.get_device_name(0)
    else:
        assert prov["device_name"] == "no CUDA GPU"


def test_validate_table_refuses_a_foreign_table_before_measuring(tmp_path):
    """validate-lut measures on this machine; a foreign table is validated only on purpose."""
    from prunet.latency.lut import validate_table

    t = _foreign(tmp_path, device_name="Imaginary CPU 9000")

    class Space:  # validate_table needs only the hash before it refuses
        hash = "hash"

    class NoMeasuring(Measurer):
        def __call__(self, module, input_shape):
            raise AssertionError("measured although the table is foreign")

    with pytest.raises(LutError, match="--allow-foreign-lut"):
        validate_table(t, Space(), NoMeasuring(backend="onnxruntime"), samples=2)


def test_calibration_sampler_must_be_a_known_one(tmp_path):
    p = write(tmp_path)
    doc = json.loads(p.read_text())
    doc["calibration"]["sampler"] = "grid"
    p.write_text(json.dumps(doc))
    with pytest.raises(LutError, match=r"calibration\.sampler: expected 'spread' or 'uniform', got 'grid'"):
        load_table(p)

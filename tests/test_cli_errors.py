"""User errors print one line (``prunet: error: ...``, exit 2), never a traceback (issue 12, item 11).

Each case here used to end in a Python traceback (or, for ``zoo show``, in a misleading "file not
found"). ``--debug`` still shows the traceback for whoever needs it.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from prunet.arch import ArchSpec, ConvSpec, HeadSpec, save
from prunet.cli import main


def one_line_error(capsys, argv: list[str], detail_lines: bool = False) -> str:
    """Run the command in-process; assert exit 2 and exactly one ``prunet: error:`` line
    (``detail_lines``: indented detail lines may follow it, as a key-by-key mismatch has)."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("prunet: error: "), err
    assert len(lines) == 1 or (detail_lines and all(line.startswith("  ") for line in lines[1:])), err
    assert "Traceback" not in err
    return lines[0]


def test_zoo_show_unknown_name_says_unknown_model(capsys):
    line = one_line_error(capsys, ["zoo", "show", "gpunet_9"])
    assert "unknown model 'gpunet_9'" in line and "gpunet_0" in line and "file not found" not in line


def test_deeply_nested_json_is_one_line(capsys, tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    line = one_line_error(capsys, ["zoo", "show", str(p)])
    assert "deep.json" in line and "nested more than" in line


def test_export_to_unwritable_path_is_one_line(capsys, tiny, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        target = "/proc/prunet-test.onnx" if _root() else str(locked / "m.onnx")
        line = one_line_error(capsys, ["export", "onnx", str(tiny[0]), "--out", target, "--no-images",
                                       "--exporter", "torchscript"])
        assert target in line
    finally:
        locked.chmod(0o700)


def _root() -> bool:
    import os

    return os.geteuid() == 0  # root writes into a 0500 folder; /proc refuses everyone


@pytest.mark.parametrize("exporter, opset, words", [
    ("dynamo", 99, ["opset 99", "dynamo exporter writes opsets 18 to"]),
    ("dynamo", 17, ["opset 17", "--exporter torchscript (7 to"]),
    ("torchscript", 5, ["opset 5", "torchscript exporter writes opsets 7 to"]),
])
def test_opset_out_of_range_names_the_valid_range(capsys, tiny, tmp_path, exporter, opset, words):
    line = one_line_error(capsys, ["export", "onnx", str(tiny[0]), "--out", str(tmp_path / "m.onnx"),
                                   "--no-images", "--exporter", exporter, "--opset", str(opset)])
    assert all(w in line for w in words), line
    assert not (tmp_path / "m.onnx").exists()


def test_truncated_safetensors_is_one_line(capsys, tiny, tmp_path):
    data = tiny[1].read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    line = one_line_error(capsys, ["zoo", "convert-ngc", str(bad), "--arch", str(tiny[0]), "--out", str(tmp_path / "o")])
    assert "cut.safetensors: not a readable safetensors file" in line
    assert not (tmp_path / "o").exists()


def test_garbage_member_of_an_ngc_zip_is_one_line(capsys, tiny, tmp_path):
    z = tmp_path / "ngc.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("gpunet_0.pth.tar", b"\x80\x02not a pickle at all" * 10)
    line = one_line_error(capsys, ["zoo", "convert-ngc", str(z), "--arch", str(tiny[0]), "--out", str(tmp_path / "o")])
    assert "ngc.zip:gpunet_0.pth.tar" in line and "not a readable PyTorch checkpoint" in line


@pytest.mark.parametrize("arch, words", [
    ("gpunet_9", ["--arch 'gpunet_9'", "not a zoo model"]),
    ("missing.json", ["missing.json", "file not found"]),
])
def test_convert_ngc_bad_arch_is_one_line(capsys, tiny, tmp_path, arch, words):
    line = one_line_error(capsys, ["zoo", "convert-ngc", str(tiny[1]), "--arch", arch, "--out", str(tmp_path / "o")])
    assert all(w in line for w in words), line


def test_convert_ngc_arch_json_that_does_not_fit_is_one_line(capsys, tiny, tmp_path):
    other = ArchSpec("other", (3, 32, 32), (ConvSpec(3, 16, 3, 2),), (), HeadSpec(16, 16, 10))
    line = one_line_error(capsys, ["zoo", "convert-ngc", str(tiny[1]), "--arch", str(save(other, tmp_path / "o.json")),
                                   "--out", str(tmp_path / "o")], detail_lines=True)
    assert "does not fit" in line
    assert not (tmp_path / "o").exists()


def test_train_errors_are_one_line_on_stderr_and_leave_no_folder(capsys, tiny, tmp_path):
    out = tmp_path / "run"
    line = one_line_error(capsys, ["train", str(tiny[0]), "--data", f"imagefolder:{tmp_path / 'nope'}",
                                   "--out", str(out), "--steps", "1"])
    assert "nope" in line
    assert not out.exists()  # a failed start leaves nothing behind (item 12)
    line = one_line_error(capsys, ["train", str(tiny[0]), "--device", "tpu", "--out", str(out), "--steps", "1"])
    assert "--device: expected cpu, cuda or cuda:N, got 'tpu'" in line and not out.exists()
    line = one_line_error(capsys, ["train", "--resume", str(tmp_path)])
    assert "not a training run folder" in line
    (tmp_path / "train_config.json").write_text("{not json")
    line = one_line_error(capsys, ["train", "--resume", str(tmp_path)])
    assert "train_config.json: not a readable training config" in line


def test_debug_shows_the_traceback_and_still_exits_2():
    r = subprocess.run([sys.executable, "-m", "prunet.cli", "--debug", "zoo", "show", "gpunet_9"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "Traceback" in r.stderr and r.stderr.rstrip().splitlines()[-1].startswith("prunet: error: unknown model")
    r = subprocess.run([sys.executable, "-m", "prunet.cli", "zoo", "show", "gpunet_9"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only the user-error classes are shortened: anything else is a bug and must stay visible."""
    import prunet.cli as cli

    def boom(args):
        raise KeyError("internal")

    monkeypatch.setattr(cli, "cmd_zoo_list", boom)
    with pytest.raises(KeyError):
        main(["zoo", "list"])

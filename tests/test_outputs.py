"""What commands do with existing outputs, and how they write files (issue 12, items 1 and 12).

Rule: an existing output file or non-empty folder is refused unless ``--overwrite``; a folder
given with ``--overwrite`` is never deleted whole, only the files the command writes are replaced.
Files are written atomically and get the mode ``open()`` would give them (mkstemp makes 0600,
mkdtemp 0700).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from prunet.arch import ArchSpec, ConvSpec, HeadSpec, IRBSpec, save
from prunet.cli import main

HUB_FILES = {"model.safetensors", "config.json", "README.md"}
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def umask_022():
    """A fixed umask, so 'normal permissions' are 0644 files and 0755 folders here."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunet: error: ") and "--overwrite" in err, err
    return err


# ----------------------------------------------------------------------------- convert-ngc


def test_convert_ngc_never_deletes_an_existing_folder(capsys, tiny, tmp_path, monkeypatch):
    arch, weights = tiny
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    (out / "config.json").write_text("old")
    convert = ["zoo", "convert-ngc", str(weights), "--arch", str(arch)]
    refused(capsys, [*convert, "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "keep.txt"]
    assert (out / "config.json").read_text() == "old"

    # `--out .` used to empty the current folder, then fail with a traceback.
    monkeypatch.chdir(out)
    refused(capsys, [*convert, "--out", "."])
    assert (out / "keep.txt").read_text() == "the user's"

    inode = out.stat().st_ino
    assert main([*convert, "--out", ".", "--overwrite"]) == 0
    assert {p.name for p in out.iterdir()} == HUB_FILES | {"keep.txt"}
    assert (out / "keep.txt").read_text() == "the user's" and out.stat().st_ino == inode
    assert json.loads((out / "config.json").read_text())["architecture"] == "prunet_arch"
    assert all(mode(out / f) == 0o644 for f in HUB_FILES)


def test_convert_ngc_new_folder_has_normal_permissions_and_empty_folder_is_accepted(tiny, tmp_path):
    arch, weights = tiny
    assert main(["zoo", "convert-ngc", str(weights), "--arch", str(arch), "--out", str(tmp_path / "new")]) == 0
    assert mode(tmp_path / "new") == 0o755  # mkdtemp made it 0700
    assert {p.name: mode(p) for p in (tmp_path / "new").iterdir()} == {f: 0o644 for f in HUB_FILES}
    (tmp_path / "empty").mkdir()
    assert main(["zoo", "convert-ngc", str(weights), "--arch", str(arch), "--out", str(tmp_path / "empty")]) == 0
    assert {p.name for p in (tmp_path / "empty").iterdir()} == HUB_FILES


# ----------------------------------------------------------------------------- export, bench


def test_export_onnx_refuses_an_existing_file(capsys, tiny, tmp_path):
    out, report = tmp_path / "m.onnx", tmp_path / "r.json"
    out.write_bytes(b"the user's")
    args = ["export", "onnx", str(tiny[0]), "--out", str(out), "--no-images", "--exporter", "torchscript"]
    refused(capsys, args)
    assert out.read_bytes() == b"the user's"
    out.unlink()
    report.write_text("keep")
    refused(capsys, [*args, "--json", str(report)])
    assert not out.exists() and report.read_text() == "keep"
    assert main([*args, "--json", str(report), "--overwrite"]) == 0
    assert out.stat().st_size > 1000 and json.loads(report.read_text())["path"] == str(out)
    assert mode(out) == 0o644


def test_bench_refuses_existing_json_and_plot_before_measuring(capsys, tiny, tmp_path):
    for flag in ("--json", "--plot"):
        p = tmp_path / f"out{flag}"
        p.write_text("keep")
        refused(capsys, ["bench", str(tiny[0]), "--backend", "torch", "--iters", "1", "--warmup", "0", flag, str(p)])
        assert p.read_text() == "keep"


def test_triton_overwrite_replaces_only_its_own_files(capsys, tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx_file = tmp_path / "tiny.onnx"
    assert main(["export", "onnx", str(tiny[0]), "--out", str(onnx_file), "--no-images", "--exporter", "torchscript",
                 "--dynamic"]) == 0
    repo = tmp_path / "repo"
    args = ["export", "triton", str(onnx_file), "--repo", str(repo), "--name", "tiny", "--instance-kind", "KIND_CPU"]
    assert main(args) == 0
    model_dir = repo / "tiny"
    assert mode(model_dir) == 0o755 and mode(model_dir / "1" / "model.onnx") == 0o644
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.onnx").write_bytes(b"another version of the user's")
    refused(capsys, args)
    assert main([*args, "--overwrite", "--max-batch-size", "4"]) == 0
    assert (model_dir / "2" / "model.onnx").read_bytes() == b"another version of the user's"
    assert "max_batch_size: 4" in (model_dir / "config.pbtxt").read_text()


# ----------------------------------------------------------------------------- train


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_train_refuses_a_non_empty_out_and_writes_normal_files(capsys, tmp_path):
    arch = save(ArchSpec("t", (1, 28, 28), (ConvSpec(1, 8, 3, 2),), (IRBSpec(8, 8, 16, 3, 2),),
                         HeadSpec(8, 16, 10, dropout=0.0)), tmp_path / "t.json")
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    args = ["train", str(arch), "--out", str(out), "--steps", "2", "--batch-size", "8", "--train-limit", "64",
            "--eval-limit", "16", "--threads", "1", "--quiet"]
    refused(capsys, args)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main([*args, "--overwrite"]) == 0
    capsys.readouterr()
    written = {p.name: mode(p) for p in out.iterdir() if p.name != "notes.txt"}
    assert written == {n: 0o644 for n in ("train_config.json", "checkpoint.pt", "model.safetensors", "arch.json",
                                            "log.jsonl", "summary.json")}, written
    # The same run again: --overwrite replaces the run's files, still leaves the user's alone.
    assert main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "the user's"


# ----------------------------------------------------------------------------- library writers


def test_arch_and_latency_table_files_have_normal_permissions(tmp_path):
    from prunet.latency.lut import LatencyTable

    spec = ArchSpec("t", (1, 28, 28), (ConvSpec(1, 8, 3, 2),), (), HeadSpec(8, 16, 10))
    assert mode(save(spec, tmp_path / "arch.json")) == 0o644
    table = LatencyTable("s", "h", "torch", "min", 1, {"k": 1.0})
    assert mode(table.save(tmp_path / "lut.json")) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json", "lut.json"]  # no temp files left


# ----------------------------------------------------------------------------- demo


def test_demo_refuses_a_folder_with_other_files_before_starting(capsys, tmp_path, monkeypatch):
    """The demo reruns into its own folder (stages are reused); anyone else's folder is refused."""
    import prunet.pipeline
    from prunet.cli import check_demo_out

    def started(*a, **k):
        raise AssertionError("the demo started although --out holds other files")

    monkeypatch.setattr(prunet.pipeline, "run", started)
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("the user's")
    (out / "results.md").write_text("an earlier demo's")
    err = refused(capsys, ["demo", "--out", str(out)])
    assert "thesis.tex" in err and "results.md" not in err
    assert sorted(p.name for p in out.iterdir()) == ["results.md", "thesis.tex"]
    (out / "thesis.tex").unlink()
    for name in ("search", "train", "onnx"):
        (out / name).mkdir()
    check_demo_out(str(out), overwrite=False)  # an earlier demo's folder: rerun into it
    check_demo_out(str(tmp_path / "new"), overwrite=False)

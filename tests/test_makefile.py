"""`make test` under CI=true fails when Fashion-MNIST cannot be installed (issue 12, item 15).

Without the Debian package every search, resume, DDP, train and pipeline test skips, so a CI run
would pass having tested none of them. The Makefile's ``fashion-mnist`` target (a prerequisite of
``setup``, hence of ``make test``) is run here with a stand-in ``apt-get`` that always fails and a
dataset path that does not exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")


def make_fashion(tmp_path: Path, ci: str | None, dataset: Path) -> subprocess.CompletedProcess:
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    apt = stub / "apt-get"
    apt.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'apt-calls'}\nexit 100\n")
    apt.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{stub}{os.pathsep}{env['PATH']}"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(["make", "-s", "-C", str(REPO), "fashion-mnist", f"FASHION_MNIST={dataset}"],
                          capture_output=True, text=True, env=env, timeout=120)


def test_ci_fails_when_the_dataset_cannot_be_installed(tmp_path):
    r = make_fashion(tmp_path, "true", tmp_path / "missing.gz")
    assert r.returncode != 0
    assert "dataset-fashion-mnist could not be installed" in r.stderr
    assert "install -y -q dataset-fashion-mnist" in (tmp_path / "apt-calls").read_text()  # it did try


def test_outside_ci_a_note_is_enough(tmp_path):
    r = make_fashion(tmp_path, None, tmp_path / "missing.gz")
    assert r.returncode == 0, r.stderr
    assert "note: could not install Debian package dataset-fashion-mnist" in r.stdout


def test_an_installed_dataset_passes_without_calling_apt(tmp_path):
    data = tmp_path / "train-images-idx3-ubyte.gz"
    data.write_bytes(b"present")
    r = make_fashion(tmp_path, "true", data)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "apt-calls").exists()

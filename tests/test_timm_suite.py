"""Run timm's *own* model test file (tests/test_models.py of the installed timm release) on the zoo.

The file comes from timm's source distribution on PyPI, matching the installed version, and is
cached under ~/.cache/prunet. ``prunet`` is imported before collection so its models are in
``timm.list_models()``; ``-k`` keeps the run to our models. Tests that download pretrained
weights from the internet are deselected (no network here; weights are covered by
test_weights.py against loopback stand-ins).
"""

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import timm

from prunet._cache import cache_dir

CACHE = cache_dir() / "timm-tests"


def timm_tests_dir() -> Path:
    target = CACHE / f"timm-{timm.__version__}"
    if (target / "tests" / "test_models.py").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            f"timm=={timm.__version__}", "-d", tmp], capture_output=True, text=True, timeout=300)
        sdists = list(Path(tmp).glob("timm-*.tar.gz"))
        if r.returncode != 0 or not sdists:
            pytest.skip(f"timm {timm.__version__} source distribution not downloadable from PyPI: {r.stderr[-300:]}")
        staging = Path(tmp) / "staging"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if re.match(r"^[^/]+/tests/[^/]+\.py$", m.name)]
            tar.extractall(staging, members=members, filter="data")
        os.replace(next(staging.iterdir()), target)
    return target


RUNNER = (
    "import sys, prunet, pytest; "
    "sys.exit(pytest.main(['tests/test_models.py', '-q', '-p', 'no:cacheprovider', '--tb=short', "
    "'-k', '(prunet_p or gpunet_) and not pretrained']))"
)


@pytest.mark.slow
def test_timm_model_suite_passes_on_zoo_models():
    root = timm_tests_dir()
    out = subprocess.run([sys.executable, "-c", RUNNER], cwd=root, capture_output=True, text=True, timeout=1500)
    tail = out.stdout[-4000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    m = re.search(r"(\d+) passed", out.stdout)
    assert m and int(m.group(1)) >= 7 * 6, tail  # forward, backward, cfgs, torchscript, features, fx... × 7 models
    assert "failed" not in out.stdout.splitlines()[-1], tail

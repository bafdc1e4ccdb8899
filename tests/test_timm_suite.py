"""Run timm's *own* model test file (tests/test_models.py of the installed timm release) on the zoo.

The file comes from timm's source distribution on PyPI, matching the installed version, and is
cached under ~/.cache/prunet. ``prunet`` is imported before collection so its models are in
``timm.list_models()``; a plugin keeps the run to every model ``import prunet`` registers. Tests
that download pretrained weights from the internet are deselected (no network here; weights are covered by
test_weights.py against loopback stand-ins).
"""

import json
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


# The child imports prunet before timm's test module is collected, so its models are in
# ``timm.list_models()``; the plugin keeps exactly the tests parametrised by a name that
# ``import prunet`` registered (the set is computed, not listed), minus those that download weights.
RUNNER = r"""
import json, sys
import timm
before = set(timm.list_models())
import prunet  # noqa: F401
ours = sorted(set(timm.list_models()) - before)
import pytest


class OnlyPrunetModels:
    def pytest_collection_modifyitems(self, config, items):
        keep, drop = [], []
        for item in items:
            name = getattr(getattr(item, "callspec", None), "params", {}).get("model_name")
            (keep if name in ours and "pretrained" not in item.originalname else drop).append(item)
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        counts = {n: sum(1 for i in keep if i.callspec.params["model_name"] == n) for n in ours}
        print("PRUNET-MODELS " + json.dumps(counts), flush=True)


sys.exit(pytest.main(["tests/test_models.py", "-q", "-p", "no:cacheprovider", "--tb=short"],
                     plugins=[OnlyPrunetModels()]))
"""


@pytest.mark.slow
def test_timm_model_suite_passes_on_every_registered_model():
    """Every name ``import prunet`` registers passes timm's own model tests (issue 12, item 6)."""
    import prunet  # noqa: F401

    registered = {n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("prunet")}
    root = timm_tests_dir()
    out = subprocess.run([sys.executable, "-c", RUNNER], cwd=root, capture_output=True, text=True, timeout=3000)
    tail = out.stdout[-4000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    m = re.search(r"^PRUNET-MODELS (.*)$", out.stdout, re.M)
    assert m, tail
    counts = json.loads(m.group(1))
    assert set(counts) == registered and "prunet_arch" in counts, counts
    # forward, backward, default cfgs, torchscript, features, fx forward/backward... for each name
    assert min(counts.values()) >= 6, counts
    summary = out.stdout.strip().splitlines()[-1]
    n = {k: int(v) for v, k in re.findall(r"(\d+) (passed|skipped|failed|error)", summary)}
    assert n.get("failed", 0) == n.get("error", 0) == 0, tail
    assert n.get("passed", 0) + n.get("skipped", 0) == sum(counts.values()), tail

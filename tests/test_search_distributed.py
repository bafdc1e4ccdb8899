"""Two CPU processes (torchrun, gloo) keep identical structure, logits and weights throughout."""

from __future__ import annotations

import json
import shutil

import pytest

from test_search_fixtures import (PY, TINY_ARGS, mid_target, needs_fashion, run, tiny_config,  # noqa: F401
                                  tiny_lut, tiny_space)

pytestmark = [needs_fashion, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("torchrun") is None and not __import__("importlib").util.find_spec("torch.distributed.run"),
                    reason="torchrun not available")
def test_two_ranks_agree(tiny_space, tiny_lut, tiny_config, tmp_path):
    out = tmp_path / "ddp"
    target = mid_target(tiny_lut, tiny_space)
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "prunet.search",
           "run", "--space", str(tiny_space), "--data", "fashion-mnist", "--target-ms", f"{target:.6f}",
           "--lut", str(tiny_lut), "--config", str(tiny_config), "--out", str(out), "--quiet",
           *TINY_ARGS, "--batch-size", "16", "--checkpoint-every", "10"]
    r = run(cmd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    traces = [[json.loads(ln) for ln in (out / f"trace.rank{k}.jsonl").read_text().splitlines()] for k in (0, 1)]
    steps0 = [t for t in traces[0] if "hash" in t]
    steps1 = [t for t in traces[1] if "hash" in t]
    assert len(steps0) == len(steps1) == 40
    for a, b in zip(steps0, steps1):
        assert a["step"] == b["step"]
        assert a["structure"] == b["structure"], f"structure differs at step {a['step']}"
        assert a["hash"] == b["hash"], f"weights/logits differ at step {a['step']}"
    final0, final1 = traces[0][-1]["final"], traces[1][-1]["final"]
    assert final0 == final1 == json.loads((out / "arch.json").read_text())
    # Pruning happened (so agreement covered structure changes) and ranks saw different data.
    events = [e for ln in (out / "log.jsonl").read_text().splitlines() for e in json.loads(ln)["events"]]
    assert events
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["within_target"]

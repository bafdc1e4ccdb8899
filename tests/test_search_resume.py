"""A search killed at arbitrary points and resumed ends with the same architecture."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from test_search_fixtures import (PY, env, finished, mid_target, needs_fashion, run, search_cmd,  # noqa: F401
                                  tiny_config, tiny_lut, tiny_space)

pytestmark = [needs_fashion, pytest.mark.slow]


def _steps_logged(out) -> int:
    log = out / "log.jsonl"
    if not log.exists():
        return 0
    return sum(1 for ln in log.read_text().splitlines() if ln.strip())


def _start_and_kill_at(cmd, out, step: int, sig=signal.SIGKILL) -> int:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 240
    while _steps_logged(out) < step and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if p.poll() is None:
        p.send_signal(sig)
    p.communicate(timeout=120)
    return p.returncode


def test_sigkill_and_resume_give_the_same_arch(finished, tiny_space, tiny_lut, tiny_config, tmp_path):
    ref, target = finished  # uninterrupted run (checkpoints every 25 steps: they do not change the result)
    want = json.loads((ref / "arch.json").read_text())

    out = tmp_path / "killed"
    cmd = search_cmd(tiny_space, tiny_lut, tiny_config, out, target, "--checkpoint-every", "5")
    rc = _start_and_kill_at(cmd, out, 13)  # mid-window: the checkpoint is from step 10
    assert rc == -signal.SIGKILL
    assert (out / "ckpt.pt").exists() and not (out / "arch.json").exists()
    # Kill the resumed run too, later on (after pruning has begun), then finish it.
    rc = _start_and_kill_at([PY, "-m", "prunet.cli", "search", "resume", str(out), "--quiet"], out, 27)
    assert rc == -signal.SIGKILL
    r = run([PY, "-m", "prunet.cli", "search", "resume", str(out), "--quiet"])
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "arch.json").read_text()) == want
    # The log reads as one uninterrupted run: one line per step, in order.
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(40))
    ref_log = [json.loads(ln) for ln in (ref / "log.jsonl").read_text().splitlines()]
    got_log = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [r_["widths"] for r_ in got_log] == [r_["widths"] for r_ in ref_log]
    assert sum(len(r_["events"]) for r_ in ref_log) > 0, "the tiny search should prune something"


def test_sigterm_checkpoints_and_exits(tiny_space, tiny_lut, tiny_config, tmp_path):
    target = mid_target(tiny_lut, tiny_space)
    out = tmp_path / "term"
    cmd = search_cmd(tiny_space, tiny_lut, tiny_config, out, target, "--checkpoint-every", "1000")
    rc = _start_and_kill_at(cmd, out, 12, signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM
    import torch

    st = torch.load(out / "ckpt.pt", weights_only=True)
    assert st["step"] >= 12  # saved on the signal, not on the (never reached) schedule
    r = run([PY, "-m", "prunet.cli", "search", "resume", str(out), "--quiet"])
    assert r.returncode == 0, r.stderr
    assert (out / "arch.json").exists()

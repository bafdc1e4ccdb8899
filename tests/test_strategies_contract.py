"""What every registered search strategy owes its users, checked the same way for each one.

PruNet's own runs are covered in depth by test_search_run/resume/distributed; here every *other*
strategy (the parametrisation follows the registry, so a new strategy is checked without a new
test) runs from the CLI, resumes after SIGKILL to the same architecture, runs under a 2-process
torchrun with both ranks agreeing, and its output builds, exports to ONNX with onnxruntime parity
and loads through timm's generic entrypoint and an ``hf-hub:`` reference (a loopback Hub stand-in).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hub_standin import StandIn
from test_search_fixtures import (PY, env, needs_fashion, run, strategy_target,  # noqa: F401
                                  tiny_lut, tiny_space)

pytestmark = [needs_fashion, pytest.mark.slow]


def _other_strategies() -> list[str]:
    from prunet.search.strategy import strategies

    return sorted(set(strategies()) - {"prunet"})


STEPS = 16
ARGS = ["--steps", str(STEPS), "--warmup-steps", "4", "--batch-size", "16", "--train-limit", "800", "--threads", "1",
        "--eval-images", "100", "--backend", "torch", "--seed", "5"]


def _cmd(strategy: str, space, lut, out, target: float, *extra: str) -> list[str]:
    return [PY, "-m", "prunet.cli", "search", "run", "--strategy", strategy, "--space", str(space),
            "--data", "fashion-mnist", "--target-ms", f"{target:.6f}", "--lut", str(lut), "--out", str(out),
            "--quiet", *ARGS, *extra]


def _steps_logged(out) -> int:
    log = out / "log.jsonl"
    return sum(1 for ln in log.read_text().splitlines() if ln.strip()) if log.exists() else 0


def _kill_at(cmd: list[str], out, step: int) -> int:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 240
    while _steps_logged(out) < step and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.communicate(timeout=120)
    return p.returncode


HUB_CHILD = r"""
import sys, torch, timm
import prunet  # noqa: F401  (registers prunet_arch with timm)
model = timm.create_model(sys.argv[1], pretrained=True)
torch.save(model.state_dict(), sys.argv[2])
"""


@pytest.mark.parametrize("strategy", _other_strategies())
def test_runs_resumes_and_ships_like_any_net(strategy, tiny_space, tiny_lut, tmp_path):
    import timm
    import torch
    from safetensors.torch import load_file

    import prunet
    from prunet.export import to_onnx
    from prunet.zoo.hub import save_hub_repo

    target = strategy_target(strategy, tiny_lut, tiny_space)
    ref = tmp_path / "ref"
    r = run(_cmd(strategy, tiny_space, tiny_lut, ref, target), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    want = json.loads((ref / "arch.json").read_text())
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["within_target"], summary

    out = tmp_path / "killed"
    assert _kill_at(_cmd(strategy, tiny_space, tiny_lut, out, target, "--checkpoint-every", "4"), out, 6) \
        == -signal.SIGKILL
    assert (out / "ckpt.pt").exists() and not (out / "arch.json").exists()
    r = run([PY, "-m", "prunet.cli", "search", "resume", str(out), "--quiet"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "arch.json").read_text()) == want
    assert [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()] == list(range(STEPS))

    model = prunet.create_model(str(ref / "arch.json"))
    model.load_state_dict(load_file(ref / "model.safetensors"))
    model.eval()
    report = to_onnx(model, tmp_path / "m.onnx", batch=1, exporter="torchscript", images=False,
                     check_tensorrt=False)
    assert report.max_rel < 1e-3, report

    generic = timm.create_model("prunet_arch", arch=want)
    generic.load_state_dict(model.state_dict())
    x = torch.randn(2, *want["input_size"])
    assert torch.allclose(generic.eval()(x), model(x), atol=1e-5)

    hub = tmp_path / "hub"
    save_hub_repo(model, hub / "me" / strategy, zoo_name=None)
    with StandIn(hub) as server:
        e = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"))
        p = subprocess.run([sys.executable, "-c", HUB_CHILD, f"hf-hub:me/{strategy}", str(tmp_path / "sd.pt")],
                           env=e, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
    loaded = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("strategy", _other_strategies())
def test_two_ranks_agree(strategy, tiny_space, tiny_lut, tmp_path):
    out = tmp_path / "ddp"
    target = strategy_target(strategy, tiny_lut, tiny_space)
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "prunet.search",
           *_cmd(strategy, tiny_space, tiny_lut, out, target)[4:], "--checkpoint-every", "8"]
    r = run(cmd, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    traces = [[json.loads(ln) for ln in (out / f"trace.rank{k}.jsonl").read_text().splitlines()] for k in (0, 1)]
    steps = [[t for t in tr if "hash" in t] for tr in traces]
    assert len(steps[0]) == len(steps[1]) == STEPS
    for a, b in zip(*steps):
        assert (a["step"], a["structure"], a["hash"]) == (b["step"], b["structure"], b["hash"]), a["step"]
    assert traces[0][-1]["final"] == traces[1][-1]["final"] == json.loads((out / "arch.json").read_text())
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2

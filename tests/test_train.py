"""The trainer on real Fashion-MNIST images (Debian package dataset-fashion-mnist)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunet.arch import ConvSpec, HeadSpec, IRBSpec, ArchSpec, save
from prunet.train import TrainConfig, TrainError, train

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                                reason="Debian package dataset-fashion-mnist not installed (make setup installs it)")


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    spec = ArchSpec("tiny", (1, 28, 28), (ConvSpec(1, 8, 3, 2),),
                    (IRBSpec(8, 16, 32, 3, 2), IRBSpec(16, 16, 32, 3, 1)), HeadSpec(16, 32, 10, dropout=0.0))
    return str(save(spec, tmp_path_factory.mktemp("arch") / "tiny.json"))


def cfg(arch, **kw):
    base = dict(model=arch, steps=40, batch_size=32, lr=5e-3, warmup_steps=5, train_limit=1024, eval_limit=500,
                checkpoint_every=1000, threads=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_and_writes_outputs(tiny_arch, tmp_path):
    result = train(cfg(tiny_arch, ema_decay=0.9), tmp_path / "run", quiet=True)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8
    assert result.top1 > 30.0  # chance is 10 %
    assert result.top1_ema is not None
    for name in ("model.safetensors", "arch.json", "summary.json", "log.jsonl", "checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file()
    import prunet

    model = prunet.create_model(str(tmp_path / "run" / "arch.json"))
    model.load_state_dict(load_file(str(tmp_path / "run" / "model.safetensors")))


def test_interrupted_and_resumed_equals_uninterrupted(tiny_arch, tmp_path):
    c = cfg(tiny_arch, steps=16, checkpoint_every=4)
    train(c, tmp_path / "straight", quiet=True)
    part = train(c, tmp_path / "resumed", quiet=True, stop_after=7)
    assert part.steps == 7
    done = train(c, tmp_path / "resumed", resume=True, quiet=True)
    assert done.steps == 16
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_is_refused(tiny_arch, tmp_path):
    with pytest.raises(TrainError, match="steps"):
        train(cfg(tiny_arch, steps=0), tmp_path / "a", quiet=True)
    with pytest.raises(TrainError, match="data"):
        train(cfg(tiny_arch, data="mnist-please"), tmp_path / "b", quiet=True)
    train(cfg(tiny_arch, steps=2), tmp_path / "c", quiet=True)
    with pytest.raises(TrainError, match="already holds"):
        train(cfg(tiny_arch, steps=2), tmp_path / "c", quiet=True)
    with pytest.raises(TrainError, match="different config"):
        train(cfg(tiny_arch, steps=3), tmp_path / "c", resume=True, quiet=True)


class _RunsCode:
    """Unpickling this creates ``path``: a stand-in for a checkpoint that runs code when loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_loads_weights_only_and_refuses_code(tiny_arch, tmp_path):
    """A checkpoint.pt dropped into a run folder must not run code on --resume (issue 12, item 2)."""
    c = cfg(tiny_arch, steps=6, checkpoint_every=2)
    run = tmp_path / "run"
    train(c, run, quiet=True, stop_after=2)
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # what train() saves is plain data
    marker = tmp_path / "code-ran"
    torch.save({**state, "extra": _RunsCode(marker)}, run / "checkpoint.pt")
    with pytest.raises(TrainError, match=r"checkpoint.pt: refused by the weights-only loader"):
        train(c, run, resume=True, quiet=True)
    assert not marker.exists()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match=r"checkpoint.pt: not a readable PyTorch checkpoint"):
        train(c, run, resume=True, quiet=True)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny_arch, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "ddp"
    r = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29517", "-m", "prunet.cli", "train",
                        tiny_arch, "--steps", "10", "--batch-size", "16", "--train-limit", "512", "--eval-limit", "200",
                        "--threads", "1", "--device", "cpu", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["top1"] >= 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert len(state["stream"]) == 2 and state["stream"][0]["rank"] == 0 and state["stream"][1]["rank"] == 1

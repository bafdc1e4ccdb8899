"""Shared helpers for the search tests: a tiny space, a real (torch-backend) latency table.

Imported by the other tests/test_search*.py modules; the two tests here check the helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fashion = pytest.mark.skipif(not FASHION.exists(), reason="Debian package dataset-fashion-mnist not installed")

TINY_SPACE = {
    "format": "prunet.space/1", "name": "tiny", "input_size": [1, 16, 16], "num_classes": 10, "width_step": 8,
    "stem": [{"out_chs": 16, "kernel": 3, "stride": 2}],
    "candidates": [{"type": "irb", "kernel": 3, "max_expansion": 3, "min_hidden": 16},
                   {"type": "fused_irb", "kernel": 3, "max_expansion": 2, "min_hidden": 16}],
    "stages": [{"out_chs": 16, "stride": 1, "depth": 2}, {"out_chs": 24, "stride": 2, "depth": 2}],
    "head": {"conv_chs": 64},
}

# A short schedule with short windows, so every pruning tier acts within 40 steps.
TINY_ARGS = ["--steps", "40", "--warmup-steps", "8", "--batch-size", "32", "--train-limit", "1500",
             "--threads", "1", "--eval-images", "200", "--backend", "torch", "--seed", "3"]
TINY_CONFIG = {"prunode_window": 2, "block_window": 4, "layer_window": 4}


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("space") / "tiny.json"
    p.write_text(json.dumps(TINY_SPACE))
    return p


@pytest.fixture(scope="session")
def tiny_lut(tiny_space, tmp_path_factory) -> Path:
    """Every block of the tiny space measured for real on torch eager (few iterations: the
    tests need a real table, not an accurate one)."""
    from prunet.latency.lut import Measurer, build_table
    from prunet.search.space import load_space

    table = build_table(load_space(tiny_space), Measurer(backend="torch", threads=1, iters=15, warmup=3),
                        calib_nets=3, progress=False)
    return table.save(tmp_path_factory.mktemp("lut") / "tiny-torch.json")


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "config.json"
    p.write_text(json.dumps(TINY_CONFIG))
    return p


@pytest.fixture(scope="session")
def finished(tiny_space, tiny_lut, tiny_config, tmp_path_factory):
    """One uninterrupted tiny search (shared by the run and resume tests)."""
    if not FASHION.exists():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    out = tmp_path_factory.mktemp("run") / "r"
    target = mid_target(tiny_lut, tiny_space)
    r = run(search_cmd(tiny_space, tiny_lut, tiny_config, out, target))
    assert r.returncode == 0, r.stderr
    return out, target


def search_cmd(space: Path, lut: Path, config: Path, out: Path, target: float, *extra: str) -> list[str]:
    return [PY, "-m", "prunet.cli", "search", "run", "--space", str(space), "--data", "fashion-mnist",
            "--target-ms", f"{target:.6f}", "--lut", str(lut), "--config", str(config), "--out", str(out),
            "--quiet", *TINY_ARGS, *extra]


def widest_arch(space):
    """The space's widest net: every layer's first candidate at its largest hidden width."""
    return space.arch_from_choices([(s.candidates[0], s.hidden_widths(s.candidates[0], space.width_step)[-1])
                                    for s in space.layers()], "widest")


def mid_target(lut: Path, space: Path) -> float:
    """A target near the small end (a fifth of the way from the smallest to the largest net): the
    supernet starts far above it, so every tier has to prune."""
    from prunet.latency.lut import load_table, min_reachable_ms
    from prunet.search.space import load_space

    sp, t = load_space(space), load_table(lut)
    lo = min_reachable_ms(t, sp)
    return lo + 0.2 * (t.predict(widest_arch(sp)) - lo)


def prdarts_strategy(space_path, lut_path, target: float, **cfg):
    """A built PR-DARTS strategy on a table (a path or a loaded one), for its floor and derivations."""
    import torch

    from prunet.latency.lut import load_table
    from prunet.search.config import LoopConfig
    from prunet.search.space import load_space
    from prunet.search.strategies.prdarts import PRDartsConfig, PRDartsStrategy
    from prunet.search.strategy import StrategyContext

    table = lut_path if hasattr(lut_path, "entries") else load_table(lut_path)
    ctx = StrategyContext(space=load_space(space_path), table=table, target_ms=target, seed=0,
                          loop=LoopConfig(), device=torch.device("cpu"))
    s = PRDartsStrategy(ctx, PRDartsConfig(**cfg))
    torch.manual_seed(0)
    s.build()
    return s


def strategy_target(strategy: str, lut: Path, space: Path) -> float:
    """:func:`mid_target`, except for PR-DARTS: a fifth of the way from its own floor (the
    cheapest cell net) to its unconstrained net, since mid_target, measured from the space's
    floor, can sit below PR-DARTS's (it did with this machine's table on 2026-12-04)."""
    if strategy != "prdarts":
        return mid_target(lut, space)
    s = prdarts_strategy(space, lut, 1e9)
    floor = s.floor_ms()
    return floor + 0.2 * (s.ctx.table.predict(s.derive().spec) - floor)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout the whole group is killed (torchrun's
    workers included), so a hung test leaves nothing behind."""
    import signal

    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"timed out after {timeout} s: {' '.join(cmd)}\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_tiny_lut_is_real_and_complete(tiny_lut, tiny_space):
    from prunet.latency.lut import load_table, space_parts
    from prunet.search.space import load_space

    t = load_table(tiny_lut)
    assert set(t.entries) == set(space_parts(load_space(tiny_space)))
    assert all(v > 0 for v in t.entries.values())
    assert t.backend == "torch" and t.threads == 1 and t.statistic == "min"
    assert t.a > 0 and t.calibration["nets"] == 3


def test_mid_target_is_between_bounds(tiny_lut, tiny_space):
    from prunet.latency.lut import load_table, min_reachable_ms
    from prunet.search.space import load_space

    tgt = mid_target(tiny_lut, tiny_space)
    assert tgt > min_reachable_ms(load_table(tiny_lut), load_space(tiny_space))

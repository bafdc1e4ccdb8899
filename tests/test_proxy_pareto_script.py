"""benchmarks/proxy_pareto.py's own options: the steps sweep's flags and its results file (the
comparison itself is the pipeline, tested in test_pipeline.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "proxy_pareto.py"


@pytest.fixture
def script(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("proxy_pareto_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    return mod


@pytest.mark.parametrize("flag", ["--sweep-only", "--sweep-train"])
def test_sweep_flags_without_step_counts_are_refused_in_one_line(flag):
    r = subprocess.run([sys.executable, str(SCRIPT), flag], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert flag in last and "--steps-sweep" in last and "Traceback" not in r.stderr


def test_sweep_results_show_training_only_when_the_sweep_trained(script, tmp_path):
    from prunet.pipeline import PipelineConfig

    cfg = PipelineConfig(search_overrides={"mode": "sampled", "batch_size": 16})
    searched = {"steps": 100, "target_ms": 4.2, "inherited_top1": 17.6, "search_wall_s": 80.0, "predicted_ms": 4.1}
    script.write_sweep([searched], cfg, "s")
    assert "Trained by" not in (tmp_path / "s.md").read_text()
    trained = [{**searched, "top1": 83.25, "train_seed": 0, "measured_ms": 3.9},
               {**searched, "steps": 800, "inherited_top1": 33.0, "top1": 84.5, "train_seed": 0, "measured_ms": 4.0}]
    script.write_sweep(trained, cfg, "t")
    md = (tmp_path / "t.md").read_text()
    assert "training seed 0" in md and "| 100 | 83.25 | 3.900 |" in md and "| 800 | 84.50 | 4.000 |" in md
    assert [r["top1"] for r in json.loads((tmp_path / "t.json").read_text())["rows"]] == [83.25, 84.5]

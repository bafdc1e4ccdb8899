"""The `prunet` command as a user runs it."""

import json
import subprocess
import sys

from prunet.cli import main
from nvidia_reference import FIXTURES


def run(*args):
    return subprocess.run([sys.executable, "-m", "prunet.cli", *args], capture_output=True, text=True, timeout=300)


def test_zoo_list_json(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    p0 = next(r for r in rows if r["name"] == "prunet_p0")
    assert round(p0["params_m"], 2) == 22.82 and p0["nvidia_latency_ms"] == 0.63


def test_zoo_show_and_validate(capsys, tmp_path):
    assert main(["zoo", "show", "gpunet_d2"]) == 0
    out = capsys.readouterr().out
    assert "stages.0.0" in out and "feature levels" in out
    assert main(["zoo", "validate", str(FIXTURES / "configs" / "1.75ms.json")]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "prunet.arch/1", "name": "x", "input_size": [3, 32, 32],
                               "stem": [{"in_chs": 3, "out_chs": 8, "stride": 2}],
                               "blocks": [{"type": "irb", "in_chs": 8, "out_chs": 8, "hidden_chs": 16, "kernel": 2}],
                               "head": {"in_chs": 8, "conv_chs": 16}}))
    assert main(["zoo", "validate", str(bad)]) == 2
    assert "blocks[0].kernel" in capsys.readouterr().out


def test_console_script_entry_point():
    r = run("zoo", "summary", "gpunet_0", "--iters", "1", "--warmup", "0", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)[0]
    assert row["name"] == "gpunet_0" and row["gflops"] > 0 and row["latency_ms"] > 0

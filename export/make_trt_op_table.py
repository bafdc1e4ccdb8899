#!/usr/bin/env python3
"""Regenerate prunet/export/tensorrt_onnx_ops.json from onnx-tensorrt's docs/operators.md.

The ONNX-TensorRT parser documents which ONNX operators it supports in a Markdown table
(https://github.com/onnx/onnx-tensorrt/blob/<ref>/docs/operators.md). prunet's TensorRT readiness
check reads a JSON copy of that table so it works without TensorRT installed. To update it for a
newer TensorRT release, save that release's operators.md and run:

    python export/make_trt_op_table.py operators.md --ref release/10.1-GA \
        --commit <sha> --tensorrt-version 10.1

The source URL, commit and TensorRT version are written into the JSON so every report can say
which table it used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "prunet" / "export" / "tensorrt_onnx_ops.json"


def parse(markdown: str) -> dict:
    ops: dict[str, dict] = {}
    for line in markdown.splitlines():
        if not line.startswith("|") or set(line) <= set("|-+ "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("Operator", "ONNX Operator") or cells[1] not in ("Y", "N"):
            continue
        name, supported = cells[0], cells[1] == "Y"
        types = [t.strip() for t in cells[2].split(",") if t.strip()] if len(cells) > 2 else []
        restrictions = cells[3] if len(cells) > 3 else ""
        restrictions = re.sub(r"<br\s*/?>", " ", restrictions).strip()
        ops[name] = {"supported": supported, "types": types, "restrictions": restrictions}
    if not ops:
        raise SystemExit("no operator rows found: is this onnx-tensorrt's docs/operators.md?")
    m = re.search(r"opset (\d+) to opset (\d+)", markdown)
    opset = {"min": int(m.group(1)), "max": int(m.group(2))} if m else None
    if opset is None:
        m = re.search(r"up to [Oo]pset (\d+)", markdown)
        opset = {"min": 1, "max": int(m.group(1))} if m else None
    heading = re.search(r"^(TensorRT [0-9.]+ supports[^\n]*)", markdown, re.M)
    return {"opset": opset, "statement": heading.group(1) if heading else "", "operators": ops}


def dumps(data: dict) -> str:
    """JSON with one operator per line, so updates diff readably."""
    head = {k: v for k, v in data.items() if k != "operators"}
    text = json.dumps(head, indent=1)[:-2] + ',\n "operators": {\n'
    rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in data["operators"].items()]
    return text + ",\n".join(rows) + "\n }\n}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("operators_md", type=Path)
    ap.add_argument("--ref", required=True, help="branch/tag the file came from, e.g. 10.1-GA")
    ap.add_argument("--commit", required=True, help="commit of onnx/onnx-tensorrt the file came from")
    ap.add_argument("--tensorrt-version", required=True)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    table = parse(args.operators_md.read_text(encoding="utf-8"))
    data = {
        "source": {
            "repository": "https://github.com/onnx/onnx-tensorrt",
            "path": "docs/operators.md",
            "ref": args.ref,
            "commit": args.commit,
            "url": f"https://github.com/onnx/onnx-tensorrt/blob/{args.commit}/docs/operators.md",
            "license": "Apache-2.0",
        },
        "tensorrt_version": args.tensorrt_version,
        **table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(dumps(data))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(table['operators'])} operators, opset {table['opset']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

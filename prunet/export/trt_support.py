"""TensorRT readiness of an ONNX graph, checked without TensorRT.

Most machines that export a model have no TensorRT; finding out on the GPU box that the parser
rejects an op wastes a deployment round-trip. This compares the graph against the ONNX-TensorRT
parser's published operator support table (tensorrt_onnx_ops.json, with its source and version)
plus the few structural rules that table states and that can be checked statically: opset range,
tensor element types, `axes` inputs that must be initializers, dynamic dimensions.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import onnx

# ONNX TensorProto element type -> name used by the support table.
_DTYPE_NAMES = {
    onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16", onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64", onnx.TensorProto.INT8: "INT8", onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL", onnx.TensorProto.DOUBLE: "DOUBLE",
}
# I/O element types TensorRT accepts at network boundaries (UINT8 only there, per the table notes).
_IO_TYPES = {"FP32", "FP16", "BF16", "INT32", "INT64", "INT8", "UINT8", "BOOL"}


@lru_cache(maxsize=1)
def support_table() -> dict:
    """The ONNX-TensorRT operator table shipped with prunet (see its "source" entry)."""
    text = resources.files("prunet.export").joinpath("tensorrt_onnx_ops.json").read_text("utf-8")
    return json.loads(text)


@dataclass
class TensorRTSupportReport:
    ok: bool
    opset: int
    ops: dict[str, int]
    unsupported: list[str] = field(default_factory=list)  # ops the table marks N or omits
    restricted: dict[str, str] = field(default_factory=dict)  # op -> restriction text from table
    violations: list[str] = field(default_factory=list)  # concrete rule breaks found in the graph
    notes: list[str] = field(default_factory=list)  # things that work but need care
    table_version: str = ""
    table_source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        head = (f"TensorRT {self.table_version} parser table: "
                f"{'OK' if self.ok else 'NOT READY'} ({sum(self.ops.values())} nodes, "
                f"{len(self.ops)} op types, opset {self.opset})")
        lines = [head]
        lines += [f"  unsupported op: {op}" for op in self.unsupported]
        lines += [f"  violation: {v}" for v in self.violations]
        lines += [f"  restriction ({op}): {text}" for op, text in self.restricted.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _iter_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_nodes(g)


def _value_dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def check_tensorrt_support(model: onnx.ModelProto | str | Path) -> TensorRTSupportReport:
    """Check an ONNX model (or path) against the ONNX-TensorRT support table."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    table = support_table()
    table_ops: dict[str, dict] = table["operators"]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}

    counts: Counter[str] = Counter()
    unsupported: set[str] = set()
    restricted: dict[str, str] = {}
    violations: list[str] = []
    notes: list[str] = []
    for node in _iter_nodes(graph):
        if node.domain not in ("", "ai.onnx"):
            key = f"{node.domain}::{node.op_type}"
            counts[key] += 1
            unsupported.add(key)
            continue
        counts[node.op_type] += 1
        entry = table_ops.get(node.op_type)
        if entry is None or not entry["supported"]:
            unsupported.add(node.op_type)
            continue
        rule = entry["restrictions"]
        if rule:
            restricted[node.op_type] = rule
        if "`axes` must be an initializer" in rule and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in constants:
                violations.append(
                    f"{node.op_type} '{node.name}': `axes` input '{node.input[1]}' is computed, "
                    "the parser needs an initializer"
                )

    lo, hi = (table["opset"] or {}).get("min", 1), (table["opset"] or {}).get("max", 10**6)
    if not lo <= opset <= hi:
        violations.append(f"opset {opset} is outside the parser's supported range {lo}..{hi}")

    for kind, values in (("input", graph.input), ("output", graph.output)):
        for vi in values:
            if vi.name in constants:
                continue
            elem = vi.type.tensor_type.elem_type
            name = _DTYPE_NAMES.get(elem, onnx.TensorProto.DataType.Name(elem))
            if name not in _IO_TYPES:
                violations.append(f"{kind} '{vi.name}' has element type {name}, unsupported at "
                                  "TensorRT network boundaries")
            dims = _value_dims(vi)
            dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
            if kind == "input" and dynamic:
                if dynamic == [0]:
                    notes.append(f"input '{vi.name}' has a dynamic batch dimension: build with an "
                                 "optimization profile (min/opt/max batch)")
                else:
                    notes.append(f"input '{vi.name}' has dynamic dimensions {dynamic}: every one "
                                 "needs a range in the optimization profile")
    if any(i.data_type == onnx.TensorProto.DOUBLE for i in graph.initializer):
        notes.append("DOUBLE initializers: TensorRT casts them to FP32, clamping to +-FLT_MAX")

    return TensorRTSupportReport(
        ok=not unsupported and not violations,
        opset=int(opset),
        ops=dict(sorted(counts.items())),
        unsupported=sorted(unsupported),
        restricted=dict(sorted(restricted.items())),
        violations=violations,
        notes=notes,
        table_version=str(table.get("tensorrt_version", "")),
        table_source=str(table.get("source", {}).get("url", "")),
    )

"""Reading, validating and writing architecture JSON (ours and NVIDIA's GPUNet format).

Every problem in a file is reported as one :class:`ArchError` naming the JSON path
(``blocks[3].hidden_chs``) and what was expected, because a user with a broken file needs the
place to fix, not a ``KeyError`` from deep inside a builder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from prunet._io import atomic_write_text  # re-exported: older callers import it from here
from prunet.arch.cell import read_nodes as read_cell_nodes
from prunet.arch.rep import SpecFieldError
from prunet.arch.registry import block_type, block_types
from prunet.arch.spec import (
    ACTIVATIONS,
    PADDINGS,
    ArchSpec,
    BlockSpec,
    ConvSpec,
    FusedIRBSpec,
    HeadSpec,
    IRBSpec,
    Latency,
    Provenance,
    spec_fields,
)

FORMAT = "prunet.arch/1"
MAX_CHANNELS = 1 << 16
MAX_KERNEL = 15
MAX_RESOLUTION = 8192


class ArchError(ValueError):
    """An architecture file or object is invalid; ``path`` is the JSON path of the problem."""

    def __init__(self, path: str, message: str, source: str | None = None):
        self.path = path or "<root>"
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{self.path}: {message}")

    def with_source(self, source: str | None) -> "ArchError":
        if not source or self.source:
            return self
        return ArchError(self.path, self.message, source)


# ----------------------------------------------------------------------------- field checks


class JsonReader:
    """Typed access to one JSON object, raising ArchError with its path on any mismatch."""

    def __init__(self, obj: Any, path: str):
        if not isinstance(obj, Mapping):
            raise ArchError(path, f"expected a JSON object, got {_kind(obj)}")
        self.obj = obj
        self.path = path
        self.used: set[str] = set()

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.obj

    def raw(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.obj:
            if default is ...:
                raise ArchError(self._at(key), "required field is missing")
            return default
        return self.obj[key]

    def int(self, key: str, default: Any = ..., lo: int = 1, hi: int = MAX_CHANNELS) -> int:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ArchError(self._at(key), f"expected an integer in [{lo}, {hi}], got {_kind(v)}")
        if not lo <= v <= hi:
            raise ArchError(self._at(key), f"expected an integer in [{lo}, {hi}], got {v}")
        return v

    def float(self, key: str, default: Any = ..., lo: float = 0.0, hi: float = math.inf,
              lo_open: bool = False) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ArchError(self._at(key), f"expected a finite number, got {_kind(v)}")
        if v < lo or v > hi or (lo_open and v == lo):
            bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
            raise ArchError(self._at(key), f"expected a number in {bound}, got {v}")
        return float(v)

    def bool(self, key: str, default: Any = ...) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise ArchError(self._at(key), f"expected true or false, got {_kind(v)}")
        return v

    def str(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        v = self.raw(key, default)
        if not isinstance(v, str):
            raise ArchError(self._at(key), f"expected a string, got {_kind(v)}")
        if choices is not None and v not in choices:
            raise ArchError(self._at(key), f"expected one of {list(choices)}, got {v!r}")
        return v

    def list(self, key: str, default: Any = ...) -> list:
        v = self.raw(key, default)
        if not isinstance(v, list):
            raise ArchError(self._at(key), f"expected a JSON array, got {_kind(v)}")
        return v

    def reject_unknown(self, allowed: set[str] | None = None) -> None:
        allowed = self.used if allowed is None else allowed
        extra = sorted(set(map(str, self.obj)) - allowed)
        if extra:
            raise ArchError(self._at(extra[0]), f"unknown field (allowed: {sorted(allowed)})")


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {v}"
    if isinstance(v, (int, float)):
        return f"number {v!r}"
    if isinstance(v, str):
        return f"string {v[:40]!r}"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, Mapping):
        return "an object"
    return type(v).__name__


def _kernel(r: JsonReader, key: str = "kernel", default: Any = ...) -> int:
    k = r.int(key, default, lo=1, hi=MAX_KERNEL)
    if k % 2 == 0:
        raise ArchError(r._at(key), f"expected an odd kernel size, got {k}")
    return k


def _stride(r: JsonReader, key: str = "stride", default: Any = ...) -> int:
    s = r.int(key, default, lo=1, hi=2)
    return s


# ----------------------------------------------------------------------------- our format


# Readers of spec fields that need more than "a positive int": by field name, so a new block
# type's spec is read with the same checks as the old ones without a reader of its own.
_FIELD_READERS: dict[str, Any] = {
    "kernel": lambda r, name, default: _kernel(r, name, default),
    "stride": lambda r, name, default: _stride(r, name, default),
    "act": lambda r, name, default: r.str(name, default, ACTIVATIONS),
    "padding": lambda r, name, default: r.str(name, default, PADDINGS),
    "bn_eps": lambda r, name, default: r.float(name, default, lo=0.0, hi=1.0, lo_open=True),
    "se_chs": lambda r, name, default: r.int(name, default, lo=0),
    "branches": lambda r, name, default: _str_list(r, name, default),  # a rep block's branches
    "nodes": lambda r, name, default: read_cell_nodes(r.raw(name, default), r._at(name)),  # a cell's DAG
}


def _str_list(r: JsonReader, key: str, default: Any) -> tuple[str, ...]:
    if isinstance(r.obj.get(key), tuple):  # to_dict() of a spec, read back without JSON
        v = list(r.raw(key))
    else:
        v = r.list(key, list(default) if isinstance(default, tuple) else default)
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise ArchError(f"{r._at(key)}[{i}]", f"expected a string, got {_kind(item)}")
    return tuple(v)


def _read_spec(r: JsonReader, cls: type) -> Any:
    """Decode one block spec of dataclass ``cls`` field by field (``type`` already checked)."""
    values: dict[str, Any] = {}
    for name, default in spec_fields(cls).items():
        if name == "type":
            continue
        reader = _FIELD_READERS.get(name)
        if reader is not None:
            values[name] = reader(r, name, default)
        elif isinstance(default, bool):
            values[name] = r.bool(name, default)
        elif isinstance(default, float):
            values[name] = r.float(name, default)
        elif isinstance(default, str):
            values[name] = r.str(name, default)
        else:
            values[name] = r.int(name, default)
    r.reject_unknown()
    try:
        return cls(**values)
    except SpecFieldError as e:  # a spec's own check of a field (e.g. an unknown rep branch)
        raise ArchError(r._at(e.field), e.message) from None


def _read_conv(r: JsonReader) -> ConvSpec:
    r.str("type", "conv", ("conv",))
    return _read_spec(r, ConvSpec)


def _read_block(obj: Any, path: str) -> BlockSpec:
    r = JsonReader(obj, path)
    kind = r.str("type", choices=tuple(n for n, t in block_types().items() if not t.part_only))
    return _read_spec(r, block_type(kind).spec)


def _read_head(obj: Any, path: str) -> HeadSpec:
    r = JsonReader(obj, path)
    post = r.raw("post_pool_chs", None)
    head = HeadSpec(
        in_chs=r.int("in_chs"), conv_chs=r.int("conv_chs"),
        num_classes=r.int("num_classes", 1000, lo=0, hi=1 << 20),
        act=r.str("act", "relu", ACTIVATIONS),  # type: ignore[arg-type]
        bn_eps=r.float("bn_eps", 1e-5, lo=0.0, hi=1.0, lo_open=True),
        post_pool_chs=None if post is None else r.int("post_pool_chs"),
        dropout=r.float("dropout", 0.2, lo=0.0, hi=0.99),
    )
    r.reject_unknown()
    return head


def _read_latency(obj: Any, path: str) -> Latency:
    r = JsonReader(obj, path)
    lat = Latency(
        value_ms=r.float("value_ms", lo=0.0, lo_open=True),
        kind=r.str("kind", choices=("measured", "predicted", "published")),  # type: ignore[arg-type]
        protocol=r.str("protocol", ""), source=r.str("source", ""),
    )
    r.reject_unknown()
    return lat


def from_dict(obj: Any, source: str | None = None) -> ArchSpec:
    """Decode our ``prunet.arch/1`` JSON object into a validated :class:`ArchSpec`."""
    try:
        r = JsonReader(obj, "")
        fmt = r.str("format")
        if fmt != FORMAT:
            raise ArchError("format", f"expected {FORMAT!r}, got {fmt!r}")
        name = r.str("name")
        if not name.strip():
            raise ArchError("name", "expected a non-empty name")
        size = r.list("input_size")
        if len(size) != 3:
            raise ArchError("input_size", f"expected [channels, height, width], got {len(size)} items")
        sr = JsonReader({"c": size[0], "h": size[1], "w": size[2]}, "input_size")
        input_size = (sr.int("c", hi=64), sr.int("h", hi=MAX_RESOLUTION), sr.int("w", hi=MAX_RESOLUTION))
        stem_list = r.list("stem")
        if not stem_list:
            raise ArchError("stem", "expected at least one conv")
        stem = []
        for i, item in enumerate(stem_list):
            sr = JsonReader(item, f"stem[{i}]")
            stem.append(_read_conv(sr))
        blocks = tuple(_read_block(b, f"blocks[{i}]") for i, b in enumerate(r.list("blocks")))
        head = _read_head(r.raw("head"), "head")
        dpr = r.float("drop_path_rate", 0.0, lo=0.0, hi=0.99)
        prov_obj = r.raw("provenance", {})
        pr = JsonReader(prov_obj, "provenance")
        details = pr.raw("details", {})
        if not isinstance(details, Mapping):
            raise ArchError("provenance.details", f"expected a JSON object, got {_kind(details)}")
        provenance = Provenance(source=pr.str("source", ""), details=dict(details))
        pr.reject_unknown()
        latency = tuple(_read_latency(x, f"latency[{i}]") for i, x in enumerate(r.list("latency", [])))
        r.reject_unknown()
        spec = ArchSpec(name=name, input_size=input_size, stem=tuple(stem), blocks=blocks, head=head,
                        drop_path_rate=dpr, provenance=provenance, latency=latency)
        validate(spec)
        return spec
    except ArchError as e:
        raise e.with_source(source) from None


def validate(spec: ArchSpec) -> ArchSpec:
    """Check the spec is a buildable network: channels chain, strides, widths, head."""
    if spec.stem[0].in_chs != spec.input_size[0]:
        raise ArchError("stem[0].in_chs", f"expected {spec.input_size[0]} (input channels), got {spec.stem[0].in_chs}")
    prev, prev_path = spec.stem[0].out_chs, "stem[0].out_chs"
    for i, conv in enumerate(spec.stem[1:], start=1):
        if conv.in_chs != prev:
            raise ArchError(f"stem[{i}].in_chs", f"expected {prev} (= {prev_path}), got {conv.in_chs}")
        prev, prev_path = conv.out_chs, f"stem[{i}].out_chs"
    for i, block in enumerate(spec.blocks):
        if block.in_chs != prev:
            raise ArchError(f"blocks[{i}].in_chs", f"expected {prev} (= {prev_path}), got {block.in_chs}")
        for sub, message in getattr(block, "problems", lambda: ())():  # composite blocks (cells)
            raise ArchError(f"blocks[{i}].{sub}", message)
        if getattr(block, "se_chs", 0) > getattr(block, "hidden_chs", float("inf")):
            raise ArchError(f"blocks[{i}].se_chs", f"expected at most hidden_chs={block.hidden_chs}, got {block.se_chs}")
        prev, prev_path = block.out_chs, f"blocks[{i}].out_chs"
    if spec.head.in_chs != prev:
        raise ArchError("head.in_chs", f"expected {prev} (= {prev_path}), got {spec.head.in_chs}")
    total = 1
    for s in spec.stride_after():
        total = s
    h, w = spec.input_size[1:]
    if total > min(h, w) * 2:
        raise ArchError("input_size", f"total stride {total} is far larger than the input {h}x{w}")
    # Spatial sizes must stay positive through 'valid' convs.
    hw = (h, w)
    for path, part in [(f"stem[{i}]", c) for i, c in enumerate(spec.stem)] + [
        (f"blocks[{i}]", b) for i, b in enumerate(spec.blocks)
    ]:
        hw = part.out_hw(hw)
        if min(hw) < 1:
            raise ArchError(path, f"the feature map vanishes here for input {h}x{w}")
    return spec


def to_dict(spec: ArchSpec) -> dict[str, Any]:
    """Encode a spec as our versioned JSON object (defaults written out: files are explicit)."""

    def block(b: BlockSpec) -> dict[str, Any]:
        d = asdict(b)
        d = {"type": d.pop("type"), **d}
        return d

    out: dict[str, Any] = {
        "format": FORMAT,
        "name": spec.name,
        "input_size": list(spec.input_size),
        "stem": [{k: v for k, v in asdict(c).items() if k != "type"} for c in spec.stem],
        "blocks": [block(b) for b in spec.blocks],
        "head": asdict(spec.head),
        "drop_path_rate": spec.drop_path_rate,
        "provenance": asdict(spec.provenance),
    }
    if spec.latency:
        out["latency"] = [asdict(x) for x in spec.latency]
    return out


def dumps(spec: ArchSpec) -> str:
    """JSON text with one line per stem conv / block, so files read (and diff) like a table."""
    d = to_dict(spec)
    lines = ["{"]
    items = list(d.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if key in ("stem", "blocks", "latency") and value:
            rows = ",\n".join(f"  {json.dumps(v)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{rows}\n ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save(spec: ArchSpec, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a JSON file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps(spec))
    return path


# ----------------------------------------------------------------------------- strict JSON text

MAX_JSON_DEPTH = 64  # architecture/space files are < 6 levels deep; anything far deeper is not one


class JsonError(ValueError):
    """JSON text prunet refuses: invalid, a key given twice in one object, or absurdly deep.

    ``path`` is the JSON path of the problem ("" = the whole document), as in :class:`ArchError`.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path or '<root>'}: {message}")


class _PairsWithDuplicate(dict):
    """An object in which ``duplicate`` was given more than once (found after parsing, so that
    the error can name the object's JSON path, which the hook itself cannot know)."""

    duplicate: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            dup = _PairsWithDuplicate(pairs)
            dup.duplicate = key
            return dup
        out[key] = value
    return out


def _check_tree(obj: Any, max_depth: int) -> None:
    """Walk the parsed document (iteratively: no recursion limit) in document order."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (dict, list)) and depth > max_depth:
            raise JsonError(path, f"nested more than {max_depth} levels deep (not an architecture or space file)")
        if isinstance(node, _PairsWithDuplicate):
            raise JsonError(path, f"key {node.duplicate!r} appears more than once in this object "
                                  "(JSON readers would silently keep only the last one)")
        if isinstance(node, dict):
            children = [(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in node.items()]
        elif isinstance(node, list):
            children = [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(children))


def loads_strict(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses duplicate keys and deep nesting, with one clear message.

    Why: with plain ``json.loads`` the last of two equal keys wins silently, so a file that says
    ``"kernel": 3, ..., "kernel": 5`` builds something its author did not read; and a file nested
    100 000 levels deep raises ``RecursionError`` from inside the parser. Raises :class:`JsonError`
    for invalid JSON too, so callers handle one exception type.
    """
    try:
        obj = json.loads(text, object_pairs_hook=_pairs)
    except json.JSONDecodeError as e:
        raise JsonError("", f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise JsonError("", f"nested more than {max_depth} levels deep (not an architecture or space file)") from None
    _check_tree(obj, max_depth)
    return obj


# ----------------------------------------------------------------------------- NVIDIA format


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Channel rounding used by NVIDIA's (timm-derived) GPUNet builder for hidden widths."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


_NV_ACT = {"relu": "relu", "swish": "silu", "silu": "silu"}


def _nv_act(r: JsonReader, key: str = "act", default: Any = ...) -> str:
    v = r.str(key, default, tuple(_NV_ACT))
    return _NV_ACT[v]


def is_nvidia_config(obj: Any) -> bool:
    return isinstance(obj, list) and bool(obj) and isinstance(obj[0], Mapping) and obj[0].get("layer_type") == "data"


def from_nvidia(config: Any, name: str = "gpunet", source: str | None = None) -> ArchSpec:
    """Decode NVIDIA's GPUNet JSON (a list of layer dicts) exactly as NVIDIA's builder reads it.

    Distilled configs (``distill: true``) use NVIDIA's second builder, whose blocks differ in BN
    eps, hidden-width rounding and head; both are resolved into plain numbers here.
    """
    try:
        return _from_nvidia(config, name, source)
    except ArchError as e:
        raise e.with_source(source) from None


def _from_nvidia(config: Any, name: str, source: str | None) -> ArchSpec:
    if not isinstance(config, list) or not config:
        raise ArchError("", f"expected NVIDIA's format: a non-empty JSON array of layer objects, got {_kind(config)}")
    data = JsonReader(config[0], "[0]")
    if data.str("layer_type") != "data":
        raise ArchError("[0].layer_type", "expected 'data' in the first entry")
    res = data.int("img_resolution", hi=MAX_RESOLUTION)
    distill = data.bool("distill")
    stem: list[ConvSpec] = []
    blocks: list[BlockSpec] = []
    head: HeadSpec | None = None
    eps = 1e-5 if distill else 1e-3
    for j, layer in enumerate(config[1:], start=1):
        r = JsonReader(layer, f"[{j}]")
        kind = r.str("layer_type", choices=("head", "head_large", "conv", "irb", "fused_irb", "tail", "data"))
        if head is not None:
            raise ArchError(f"[{j}]", f"expected no layer after the 'tail', got {kind!r}")
        if kind == "data":
            raise ArchError(f"[{j}].layer_type", "expected 'data' only in the first entry")
        if kind in ("head", "head_large"):
            if stem:
                raise ArchError(f"[{j}]", "expected a single 'head' layer")
            if blocks:
                raise ArchError(f"[{j}]", "expected the 'head' before any block")
            cin, cout = r.int("num_in_channels", hi=64), r.int("num_out_channels")
            if kind == "head_large" and not distill:
                raise ArchError(f"[{j}].layer_type", "'head_large' exists only in distilled configs (distill: true)")
            act = "relu" if distill else _nv_act(r, "act", "swish")
            stem.append(ConvSpec(cin, cout, 3, 2, act, eps))  # type: ignore[arg-type]
            if kind == "head_large":
                stem += [ConvSpec(cout, cout, 3, 1, "relu", eps), ConvSpec(cout, cout, 3, 1, "relu", eps)]
            continue
        if not stem:
            raise ArchError(f"[{j}]", f"expected the 'head' layer before {kind!r}")
        if kind == "tail":
            cin, cout = r.int("num_in_channels"), r.int("num_out_channels")
            ncls = r.int("num_classes", lo=1, hi=1 << 20)
            if distill:
                head = HeadSpec(cin, 1152, ncls, "relu", eps, post_pool_chs=cout, dropout=0.2)
            else:
                head = HeadSpec(cin, cout, ncls, "relu", eps, post_pool_chs=None, dropout=0.2)
            continue
        cin, cout = r.int("num_in_channels"), r.int("num_out_channels")
        k = _kernel(r, "kernel_size")
        s = _stride(r, "stride")
        r.raw("stage", None)
        if kind == "conv":
            if distill:
                raise ArchError(f"[{j}].layer_type", "'conv' layers exist only in non-distilled configs")
            blocks.append(ConvSpec(cin, cout, k, s, _nv_act(r), eps))  # type: ignore[arg-type]
            continue
        exp = r.float("expansion", lo=0.0, hi=64.0, lo_open=True)
        if distill:
            groups = r.int("groups", 1, hi=MAX_CHANNELS)
            if groups != 1:
                raise ArchError(f"[{j}].groups", f"expected 1 (grouped IRBs are not in any published config), got {groups}")
            hidden_f = cin * exp
            if not float(hidden_f).is_integer():
                raise ArchError(f"[{j}].expansion", f"expected num_in_channels * expansion to be whole, got {hidden_f}")
            hidden = int(hidden_f)
            if kind == "irb":
                blocks.append(IRBSpec(cin, cout, hidden, k, s, "relu", 0, eps))
            else:  # NVIDIA's distilled Fused_IRB uses eps 1e-3 in both BNs
                blocks.append(FusedIRBSpec(cin, cout, hidden, k, s, "relu", 0, 1e-3))
            continue
        hidden = make_divisible(cin * exp)
        use_se = r.bool("use_se")
        se = round(hidden * (0.25 / exp)) if use_se else 0
        act = _nv_act(r)
        if kind == "irb":
            blocks.append(IRBSpec(cin, cout, hidden, k, s, act, se, eps))  # type: ignore[arg-type]
        else:
            # NVIDIA passes pad_type='same', which its helper resolves to symmetric padding when
            # that is exact and to *no* padding otherwise (the dynamic pad is dropped).
            padding = "symmetric" if s == 1 else "valid"
            blocks.append(FusedIRBSpec(cin, cout, hidden, k, s, act, se, eps, padding))  # type: ignore[arg-type]
    if not stem:
        raise ArchError("", "expected a 'head' layer")
    if head is None:
        raise ArchError("", "expected a 'tail' layer at the end")
    spec = ArchSpec(
        name=name, input_size=(stem[0].in_chs, res, res), stem=tuple(stem), blocks=tuple(blocks), head=head,
        drop_path_rate=0.0 if distill else 0.2,
        provenance=Provenance(source="nvidia-gpunet-json", details={"file": source or "", "distill": distill}),
    )
    return validate(spec)


# ----------------------------------------------------------------------------- entry point


def load(source: str | os.PathLike | Mapping | list, name: str | None = None) -> ArchSpec:
    """Load an architecture from a path or an already-parsed object, in either format."""
    label: str | None = None
    obj: Any = source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ArchError("", "file not found", label) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ArchError("", f"cannot read file ({e})", label) from None
        try:
            obj = loads_strict(text)
        except JsonError as e:
            raise ArchError(e.path, e.message, label) from None
        name = name or path.stem
    if is_nvidia_config(obj):
        return from_nvidia(obj, name=name or "gpunet", source=label)
    if isinstance(obj, Mapping) and "format" in obj:
        return from_dict(obj, source=label)
    raise ArchError("", "expected our format (an object with \"format\": \"prunet.arch/1\") or NVIDIA's "
                        "(an array whose first entry has \"layer_type\": \"data\")", label)

"""Latency lookup tables: per-block latencies of a search space, and a calibrated predictor.

Why a table and a calibration: the search needs the latency of every (candidate, hidden width,
position) it can reach, thousands of times per second, and differentiably — so each is measured
once, in isolation, and summed. A plain sum of isolated blocks misses whole networks by 10–40 %
on these CPUs (per-``run()`` overhead, cache effects; /work/shared/notes/latency-measurement.md),
so the predictor is ``a·Σ + c`` with ``a, c`` fitted by least squares on a few whole networks
sampled from the space and measured whole, exactly as the search's results will be measured.
Tables of format ``prunet.lut/2`` add per-part features (parts, weight and activation bytes,
stride-2, width change; :mod:`prunet.latency.features`) with coefficients chosen by
cross-validation on the calibration nets (:mod:`prunet.latency.model`): still a sum of per-part
terms, so :meth:`LatencyTable.lookup` returns each part's corrected term and every consumer of
the table (the search's differentiable expected latency included) predicts with the same model.

A table records its provenance (space name and content hash, backend, statistic, threads,
versions, exporter, date) and refuses to serve another space or backend. Timings drift on shared
machines, so a fixed reference network is measured when the table is built; :func:`drift`
re-measures it and reports the ratio (``validate-lut`` prints it next to the accuracy figures).

Entries are keyed by the block's shape, not by its place in the space, so identical layers share
one measurement and any architecture JSON made of the space's blocks can be predicted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterable

from prunet.arch import ArchSpec, HeadSpec, block_type, block_types
from prunet._io import atomic_write_text

FORMAT = "prunet.lut/2"
FORMATS_READ = ("prunet.lut/1", FORMAT)  # /1: no features, affine calibration only
DEFAULT_ITERS = 300
DEFAULT_WARMUP = 30
STATISTIC = "min"


class LutError(ValueError):
    """A latency table is missing, malformed or does not fit the space/backend/arch asked about."""


# ----------------------------------------------------------------------------- keys


def _inference_form(module: Any) -> Any:
    """The fused copy of a module with re-parameterisable blocks (what inference runs and is timed)."""
    from prunet.nn import inference_form as fused

    return fused(module)


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def block_key(spec: Any, in_hw: tuple[int, int]) -> str:
    """Table key of one block at one input resolution: its type's registered latency fields.
    An unregistered type raises, rather than borrowing another type's key."""
    return f"{spec.type}:{block_type(spec).latency_key(spec)}@{_hw(in_hw)}"


def head_key(head: HeadSpec, in_hw: tuple[int, int]) -> str:
    post = head.post_pool_chs or 0
    return f"head:{head.in_chs}>{head.conv_chs}:p{post}:n{head.num_classes}:{head.act}@{_hw(in_hw)}"


def arch_parts(arch: ArchSpec, whole: Container[str] = ()) -> list[tuple[str, str, Any, tuple[int, int]]]:
    """``(json_path, key, spec, input_hw)`` for every timed part of a network, in order.

    A composite block (a cell: its type registers ``latency_parts``) is one part when its key is
    in ``whole`` (a table that timed that cell whole), otherwise its timed sub-blocks are: every
    distinct cell can have its own entry, and a cell nobody timed is still priced by its edges."""
    hw = tuple(arch.input_size[1:])
    out = []
    for i, c in enumerate(arch.stem):
        out.append((f"stem[{i}]", block_key(c, hw), c, hw))
        hw = c.out_hw(hw)
    for i, b in enumerate(arch.blocks):
        key, split = block_key(b, hw), block_type(b).latency_parts
        if split is None or key in whole:
            out.append((f"blocks[{i}]", key, b, hw))
        else:
            out += [(f"blocks[{i}].{p}", block_key(s, shw), s, shw) for p, s, shw in split(b, hw)]
        hw = b.out_hw(hw)
    out.append(("head", head_key(arch.head, hw), arch.head, hw))
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- the table


@dataclass
class LatencyTable:
    """Block latencies (ms) with provenance and the ``a·Σ + c`` calibration."""

    space_name: str
    space_hash: str
    backend: str
    statistic: str
    threads: int | None
    entries: dict[str, float]
    a: float = 1.0
    c: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # key → per-part features
    weights: dict[str, float] = field(default_factory=dict)  # feature → ms per unit (empty: affine)
    model: str = "affine"
    calib_net_ids: list[str] = field(default_factory=list)  # nets the calibration was fitted on
    path: str = ""

    @property
    def id(self) -> str:
        """Content id: changes whenever an entry, a feature or the calibration does (a table without
        features keeps the id format /1 gave it)."""
        content: list[Any] = [self.space_hash, self.backend, self.statistic, self.threads,
                              sorted(self.entries.items()), self.a, self.c]
        if self.features or self.weights or self.calib_net_ids:
            content += [self.model, sorted(self.weights.items()),
                        sorted((k, sorted(v.items())) for k, v in self.features.items()), self.calib_net_ids]
        text = json.dumps(content, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def measured(self, key: str, where: str = "") -> float:
        """The entry as measured, in isolation (ms)."""
        try:
            return self.entries[key]
        except KeyError:
            raise LutError(f"{where or key}: no entry {key!r} in the latency table "
                           f"(built for space {self.space_name!r}); rebuild it for this space") from None

    def correction(self, key: str, where: str = "") -> float:
        """What the fitted features add to this part's term, in table ms (before ``a``)."""
        if not self.weights:
            return 0.0
        feats = self.features.get(key)
        if feats is None:
            raise LutError(f"{where or key}: no features for entry {key!r} in the latency table; rebuild it")
        return sum(w * feats[f] for f, w in self.weights.items()) / self.a

    def lookup(self, key: str, where: str = "") -> float:
        """This part's term of the prediction: its measured latency plus the fitted correction,
        so that ``predict = a·Σ lookup + c`` for every model the table may hold."""
        return self.measured(key, where) + self.correction(key, where)

    def plain_sum(self, arch: ArchSpec) -> float:
        """Σ of the measured entries alone (what a table without a model would say)."""
        return sum(self.measured(key, path) for path, key, _, _ in arch_parts(arch, self.entries))

    def raw_sum(self, arch: ArchSpec) -> float:
        return sum(self.lookup(key, path) for path, key, _, _ in arch_parts(arch, self.entries))

    def predict(self, arch: ArchSpec) -> float:
        """Predicted whole-network latency in ms: ``a·Σ(parts) + c`` (parts corrected by the model)."""
        return self.a * self.raw_sum(arch) + self.c

    def feature_totals(self, arch: ArchSpec) -> dict[str, float]:
        """Each feature summed over the net's parts (the model's regressors)."""
        from prunet.latency.features import FEATURES

        out = dict.fromkeys(FEATURES, 0.0)
        for path, key, _, _ in arch_parts(arch, self.entries):
            feats = self.features.get(key)
            if feats is None:
                raise LutError(f"{path}: no features for entry {key!r} in the latency table; rebuild it")
            for f in FEATURES:
                out[f] += feats[f]
        return out

    def check_for(self, space_hash: str | None = None, backend: str | None = None, threads: int | None = None,
                  statistic: str | None = None) -> None:
        """Refuse a table from another space, backend, thread count or statistic (nothing is
        overwritten). ``statistic``: the one the caller's measurements report (search: ``min``),
        since a table of medians predicts other numbers than the minima it is compared with."""
        where = self.path or "latency table"
        if statistic is not None and statistic != self.statistic:
            raise LutError(f"{where}: holds the {self.statistic!r} of each measurement, not the {statistic!r} "
                           "this run measures; rebuild it (prunet latency build-lut)")
        if space_hash is not None and space_hash != self.space_hash:
            raise LutError(f"{where}: built for space {self.space_name!r} (hash {self.space_hash}), "
                           f"not this space (hash {space_hash})")
        if backend is not None and backend != self.backend:
            raise LutError(f"{where}: measured on backend {self.backend!r}, not {backend!r}")
        if threads is not None and self.threads is not None and threads != self.threads:
            raise LutError(f"{where}: measured with {self.threads} thread(s), not {threads}")

    def machine_differences(self) -> list[str]:
        """How the machine this table was measured on differs from this one (device model and the
        latency-relevant software versions); empty when it is this kind of machine."""
        from prunet.latency.provenance import GPU_BACKENDS, latency_fingerprint

        here = latency_fingerprint(self.backend, self.provenance.get("device_kind") or "cpu")
        then = _recorded_fingerprint(self.provenance, self.backend in GPU_BACKENDS)
        diffs = []
        for key, now_value in here.items():
            if key == "device_kind":
                continue
            what = "device" if key == "device_name" else key
            old = then.get(key)
            if old is None:
                diffs.append(f"{what}: not recorded in the table (here {now_value!r})")
            elif old != now_value:
                diffs.append(f"{what}: {old!r} there, {now_value!r} here")
        return diffs

    def check_machine(self, allow_foreign: bool = False) -> list[str]:
        """Refuse a table measured on another machine (other CPU/GPU model, other runtime or torch
        version) unless ``allow_foreign``; returns the differences, for a warning when allowed.

        Why: block latencies and the calibration are properties of one device and software
        stack; on another one the search would meet a latency target that does not exist there,
        and nothing would say so."""
        diffs = self.machine_differences()
        if diffs and not allow_foreign:
            raise LutError(f"{self.path or 'latency table'}: measured on another machine ({'; '.join(diffs)}); "
                           "rebuild it here (prunet latency build-lut), or pass --allow-foreign-lut to use it anyway")
        return diffs

    def to_dict(self) -> dict[str, Any]:
        from prunet.latency.features import FEATURES

        doc = {
            "format": FORMAT, "id": self.id,
            "space": {"name": self.space_name, "hash": self.space_hash},
            "backend": self.backend, "statistic": self.statistic, "threads": self.threads,
            "calibration": {"a": self.a, "c": self.c, **self.calibration, "model": self.model,
                            "weights": dict(self.weights), "net_ids": list(self.calib_net_ids)},
            "reference": self.reference, "provenance": self.provenance,
            "entries": dict(sorted(self.entries.items())),
        }
        if not (self.features or self.weights or self.calib_net_ids):
            # nothing of /2 to store (a table made by hand): the /1 document, whose id this is
            doc["format"] = FORMATS_READ[0]
            doc["calibration"] = {"a": self.a, "c": self.c, **self.calibration}
        if self.features:
            doc["features"] = {"names": list(FEATURES),
                               "values": {k: [v[f] for f in FEATURES] for k, v in sorted(self.features.items())}}
        return doc

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        self.path = str(path)
        return path


def _recorded_fingerprint(prov: dict[str, Any], gpu_backend: bool) -> dict[str, Any]:
    """The fingerprint a table's provenance records. Tables from before ``device_name`` carry
    only the description ("<CPU model> (N CPUs available)"); for a GPU backend that described
    the CPU (the bug of issue 12), so the device counts as not recorded then."""
    import re

    out = {k: v for k, v in (prov.get("versions") or {}).items()}
    if prov.get("device_name"):
        out["device_name"] = prov["device_name"]
    elif isinstance(prov.get("device"), str) and not gpu_backend:
        out["device_name"] = re.sub(r" \(\d+ CPUs available\)$", "", prov["device"])
    return out


def _check_calibration(p: Path, a: float, c: float) -> None:
    """``a`` multiplies every prediction: NaN poisons a whole search, ``a <= 0`` predicts 0 or
    negative milliseconds. Both only come from a hand-edited or corrupt file."""
    if not math.isfinite(a) or a <= 0:
        raise LutError(f"{p}: calibration.a: expected a finite number > 0, got {a!r}")
    if not math.isfinite(c):
        raise LutError(f"{p}: calibration.c: expected a finite number, got {c!r}")


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read and verify a table: format, types, calibration, and that its stored ``id`` matches
    its content (an edited entry or calibration changes the id, so it is refused here instead
    of being predicted from silently). Whether it was measured on this machine is a separate
    check, :meth:`LatencyTable.check_machine`, because ``--allow-foreign-lut`` may waive it."""
    from prunet.arch.io import JsonError, loads_strict
    from prunet.latency.stats import HEADLINES

    p = Path(path)
    try:
        obj = loads_strict(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LutError(f"{p}: latency table not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LutError(f"{p}: not a readable JSON latency table ({e})") from None
    except JsonError as e:
        raise LutError(f"{p}: not a readable JSON latency table ({e})") from None

    def need(obj: Any, key: str, kind: type | tuple, where: str) -> Any:
        if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind):
            raise LutError(f"{p}: {where}{key}: expected {getattr(kind, '__name__', kind)}")
        return obj[key]

    if not isinstance(obj, dict) or obj.get("format") not in FORMATS_READ:
        raise LutError(f"{p}: format: expected one of {list(FORMATS_READ)}")
    space = need(obj, "space", dict, "")
    entries = need(obj, "entries", dict, "")
    for k, v in entries.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise LutError(f"{p}: entries.{k}: expected a non-negative number of ms, got {v!r}")
    cal = need(obj, "calibration", dict, "")
    threads = obj.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise LutError(f"{p}: threads: expected a positive integer or null, got {threads!r}")
    statistic = need(obj, "statistic", str, "")
    if statistic not in HEADLINES:
        raise LutError(f"{p}: statistic: expected one of {list(HEADLINES)}, got {statistic!r}")
    for key in ("reference", "provenance"):
        if not isinstance(obj.get(key) or {}, dict):
            raise LutError(f"{p}: {key}: expected a JSON object")
    table = LatencyTable(
        space_name=need(space, "name", str, "space."), space_hash=need(space, "hash", str, "space."),
        backend=need(obj, "backend", str, ""), statistic=statistic,
        threads=threads, entries={k: float(v) for k, v in entries.items()},
        a=float(need(cal, "a", (int, float), "calibration.")), c=float(need(cal, "c", (int, float), "calibration.")),
        calibration={k: v for k, v in cal.items() if k not in ("a", "c", "model", "weights", "net_ids")},
        reference=obj.get("reference") or {}, provenance=obj.get("provenance") or {}, path=str(p),
    )
    _check_calibration(p, table.a, table.c)
    if cal.get("sampler", "uniform") not in ("spread", "uniform"):
        raise LutError(f"{p}: calibration.sampler: expected 'spread' or 'uniform', got {cal['sampler']!r}")
    if obj["format"] == FORMAT:
        _read_model(p, obj, table)
    elif "features" in obj or "weights" in cal:
        raise LutError(f"{p}: format: {obj['format']!r} has no features or model weights; expected {FORMAT!r}")
    stored = need(obj, "id", str, "")
    if stored != table.id:
        raise LutError(f"{p}: id: the file says {stored!r} but its entries and calibration give {table.id!r}: "
                       "it was changed after it was built; rebuild it (prunet latency build-lut)")
    return table


def _read_model(p: Path, obj: dict[str, Any], table: LatencyTable) -> None:
    """Verify a /2 table's model: features for exactly the entries, known feature names, finite
    weights of stored features, and every part's corrected term positive (a negative term would
    make a block cheaper than skipping it)."""
    from prunet.latency.features import CANDIDATE_MODELS, FEATURES

    cal = obj["calibration"]
    model = cal.get("model")
    if model not in CANDIDATE_MODELS:
        raise LutError(f"{p}: calibration.model: expected one of {list(CANDIDATE_MODELS)}, got {model!r}")
    weights = cal.get("weights")
    if not isinstance(weights, dict) or set(weights) != set(CANDIDATE_MODELS[model]):
        raise LutError(f"{p}: calibration.weights: expected a number for each of {list(CANDIDATE_MODELS[model])}")
    for f, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise LutError(f"{p}: calibration.weights.{f}: expected a finite number, got {w!r}")
    ids = cal.get("net_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise LutError(f"{p}: calibration.net_ids: expected a list of net ids (strings)")
    feats = obj.get("features")
    if not isinstance(feats, dict) or feats.get("names") != list(FEATURES) or not isinstance(feats.get("values"), dict):
        raise LutError(f"{p}: features: expected {{'names': {list(FEATURES)}, 'values': {{entry: [numbers]}}}}")
    values = feats["values"]
    if set(values) != set(table.entries):
        odd = sorted(set(values) ^ set(table.entries))[0]
        raise LutError(f"{p}: features.values: expected one row per entry, {odd!r} is in one and not the other")
    for k, row in values.items():
        if (not isinstance(row, list) or len(row) != len(FEATURES)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
                       for v in row)):
            raise LutError(f"{p}: features.values.{k}: expected {len(FEATURES)} non-negative numbers")
    table.model, table.weights = model, {f: float(w) for f, w in weights.items()}
    table.calib_net_ids = list(ids)
    table.features = {k: dict(zip(FEATURES, map(float, row))) for k, row in values.items()}
    bad = [k for k in table.entries if table.lookup(k) <= 0]
    if bad:
        raise LutError(f"{p}: calibration.weights: entry {bad[0]!r} gets a term of {table.lookup(bad[0]):.4g} ms; "
                       "expected every part > 0; rebuild the table")


def net_id(arch: ArchSpec) -> str:
    """Identity of a net for the table: the sequence of its parts' keys (two nets with the same
    sequence are the same net to every measurement and prediction)."""
    text = "|".join(key for _, key, _, _ in arch_parts(arch))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- measuring


@dataclass
class Measurer:
    """Times one module, exported the same way for blocks and whole networks (TorchScript ONNX
    exporter: the dynamo exporter takes ~2× longer per block and the table holds thousands; no
    onnxscript optimizer pass, see :func:`prunet.export.onnx.to_onnx`'s ``optimize``)."""

    backend: str = "onnxruntime"
    threads: int | None = 1
    iters: int = DEFAULT_ITERS
    warmup: int = DEFAULT_WARMUP
    statistic: str = STATISTIC
    exporter: str = "torchscript"
    device: str = "cpu"  # "cuda": torch eager timed with CUDA events (refused where torch sees no GPU)
    burst: int = 10  # back-to-back runs per round when two measurements are interleaved (see pair)

    def __call__(self, module: Any, input_shape: tuple[int, ...]) -> float:
        from prunet.latency import measure

        from prunet.latency.backends import get_backend

        module = _inference_form(module.eval())  # what inference runs: rep blocks fused
        if get_backend(self.backend).takes == "module":
            return measure(module, input_shape, backend=self.backend, warmup=self.warmup, iters=self.iters,
                           threads=self.threads, headline=self.statistic, device=self.device).value
        from prunet.export.onnx import to_onnx

        tmp = tempfile.mkdtemp(prefix="prunet-lut-")
        try:
            path = Path(tmp) / "m.onnx"
            to_onnx(module, path, batch=input_shape[0], input_size=tuple(input_shape[1:]), images=False,
                    check_tensorrt=False, exporter=self.exporter, parity=False, optimize=False)
            return measure(str(path), input_shape, backend=self.backend, warmup=self.warmup, iters=self.iters,
                           threads=self.threads, headline=self.statistic, device=self.device).value
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # our own mkdtemp folder for the exported ONNX, never a user path

    def pair(self, module: Any, input_shape: tuple[int, ...]) -> tuple[float, float]:
        """Two independent measurements of one module (two sessions/runners), interleaved round
        by round in bursts of :attr:`burst` back-to-back runs, each reporting its own statistic.

        Why two: how far two timings of the *same* net disagree here and now (the A/A floor) is
        the accuracy no predictor can beat; interleaving gives both the same machine state."""
        from prunet.latency import Candidate, measure_interleaved

        from prunet.latency.backends import get_backend

        module = _inference_form(module.eval())  # what inference runs: rep blocks fused
        rounds = max(1, -(-self.iters // self.burst))
        tmp = None
        try:
            target: Any = module
            if get_backend(self.backend).takes != "module":
                from prunet.export.onnx import to_onnx

                tmp = tempfile.mkdtemp(prefix="prunet-lut-")
                target = str(Path(tmp) / "m.onnx")
                to_onnx(module, target, batch=input_shape[0], input_size=tuple(input_shape[1:]), images=False,
                        check_tensorrt=False, exporter=self.exporter, parity=False, optimize=False)
            cands = [Candidate(label=lab, target=target, input_shape=tuple(input_shape), backend=self.backend,
                               device=self.device) for lab in ("A", "B")]
            res = measure_interleaved(cands, warmup=self.warmup, iters=rounds, threads=self.threads,
                                      headline=self.statistic, burst=self.burst)
            return res["A"].value, res["B"].value
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)  # our own mkdtemp folder for the exported ONNX, never a user path

    def whole_pair(self, arch: ArchSpec) -> tuple[float, float]:
        from prunet.nn import PruNet

        return self.pair(PruNet(arch), (1, *arch.input_size))

    def part(self, spec: Any, in_chs: int, hw: tuple[int, int]) -> float:
        from prunet.nn import ClassifierHead, build_block

        mod = ClassifierHead(spec) if isinstance(spec, HeadSpec) else build_block(spec)
        return self(mod, (1, in_chs, *hw))

    def whole(self, arch: ArchSpec) -> float:
        from prunet.nn import PruNet

        return self(PruNet(arch), (1, *arch.input_size))

    def provenance(self) -> dict[str, Any]:
        """Where the table is measured: the GPU for GPU-only backends (TensorRT), the CPU otherwise,
        plus the fingerprint :meth:`LatencyTable.check_machine` compares on load."""
        from prunet.latency.provenance import GPU_BACKENDS, device_description, latency_fingerprint, now, versions

        device = "cuda" if self.backend in GPU_BACKENDS else self.device
        found = versions()
        fingerprint = latency_fingerprint(self.backend, device)
        if "cuda" in fingerprint:
            found["cuda"] = fingerprint["cuda"]
        return {"iters": self.iters, "warmup": self.warmup, "exporter": self.exporter, "onnxscript_optimizer": False,
                "batch": 1, "device": device_description(device), "device_kind": fingerprint["device_kind"],
                "device_name": fingerprint["device_name"], "versions": found, "date": now()}


def space_parts(space: Any) -> dict[str, tuple[Any, int, tuple[int, int]]]:
    """Every key a search over ``space`` can ask for → (spec, in_chs, in_hw).

    ``space`` is a :class:`prunet.search.space.SearchSpace` (duck-typed: latency never imports
    search)."""
    parts: dict[str, tuple[Any, int, tuple[int, int]]] = {}
    hw = tuple(space.input_size[1:])
    for c in space.stem:
        parts.setdefault(block_key(c, hw), (c, c.in_chs, hw))
        hw = c.out_hw(hw)
    for slot in space.layers():
        for cand in slot.candidates:
            for h in slot.hidden_widths(cand, space.width_step):
                spec = slot.block_spec(cand, h)
                parts.setdefault(block_key(spec, slot.in_hw), (spec, slot.in_chs, slot.in_hw))
    head = space.head
    fh = space.final_hw()
    parts.setdefault(head_key(head, fh), (head, head.in_chs, fh))
    for bt in block_types().values():  # types a search derives beside the candidates (RepNAS's chains)
        for spec, in_chs, phw in (bt.table_parts(space) if bt.table_parts else ()):
            key = head_key(spec, phw) if isinstance(spec, HeadSpec) else block_key(spec, phw)
            parts.setdefault(key, (spec, in_chs, phw))
    return parts


def sample_arch(space: Any, rng: random.Random, name: str = "sample", skip_prob: float = 0.25,
                size: float | None = None) -> ArchSpec:
    """A random architecture of the space: candidate, width and skip drawn uniformly per layer.

    ``size`` in [0, 1] draws each width from the three nearest that share of the way up the
    candidate's widths instead (0: narrowest, 1: widest)."""
    choices = []
    for slot in space.layers():
        if slot.skippable and rng.random() < skip_prob:
            choices.append(None)
            continue
        cand = rng.choice(slot.candidates)
        widths = slot.hidden_widths(cand, space.width_step)
        if size is not None:
            mid = round(size * (len(widths) - 1))
            widths = widths[max(0, mid - 1):mid + 2]
        choices.append((cand, rng.choice(widths)))
    return space.arch_from_choices(choices, name)


def reference_arch(space: Any) -> ArchSpec:
    """The fixed drift reference: the first candidate of every layer at its middle width."""
    choices = []
    for slot in space.layers():
        cand = slot.candidates[0]
        w = slot.hidden_widths(cand, space.width_step)
        choices.append((cand, w[len(w) // 2]))
    return space.arch_from_choices(choices, f"{space.name}-reference")


def fit_calibration(sums: list[float], measured: list[float], floor_sum: float | None = None) -> tuple[float, float]:
    """Least-squares ``measured ≈ a·sum + c``; a pure scale for < 2 distinct sums, or when the
    line would predict ≤ 0 ms for the smallest net of the space (raw sum ``floor_sum``): a few
    noisy calibration nets can tilt the line that far, and a search would then chase a target
    below zero."""
    import numpy as np

    x, y = np.asarray(sums, float), np.asarray(measured, float)
    if len(x) >= 2 and np.ptp(x) > 1e-9:
        a, c = np.polyfit(x, y, 1)
        if a > 0 and (floor_sum is None or a * floor_sum + c > 0):
            return float(a), float(c)
    return float(y.sum() / max(x.sum(), 1e-12)), 0.0


CALIBRATION_SAMPLER = "spread"
"""How :func:`calibration_nets` draws (stored in each table's calibration): ``"uniform"`` tables,
recorded before the key existed, were fitted on nets drawn like :func:`sample_arch`'s defaults."""


def calibration_nets(space: Any, count: int, seed: int = 0, sampler: str = CALIBRATION_SAMPLER) -> list[ArchSpec]:
    """The nets a table of ``space`` is calibrated on (reproducible from ``seed``).

    ``"spread"`` walks net ``i`` from the space's small end to its large end: the skip
    probability falls from 0.75 to 0 and widths rise from the narrowest to the widest. Nets drawn
    uniformly (``"uniform"``) all land in the middle of the space's latency range, and an affine
    fit on them extrapolates to its ends: a proxy-small table fitted on nets of 1.4–6.1 ms had a
    negative intercept and predicted the shallow nets a 1.05 ms search returned 12–16 % fast
    (benchmarks/results/proxy_pareto_v3.json)."""
    rng = random.Random(seed)
    if sampler == "uniform":
        return [sample_arch(space, rng, f"calib{i}") for i in range(count)]
    if sampler != "spread":
        raise LutError(f"calibration sampler: expected 'spread' or 'uniform', got {sampler!r}")
    sizes = [i / max(count - 1, 1) for i in range(count)]
    return [sample_arch(space, rng, f"calib{i}", skip_prob=0.75 * (1 - u), size=u) for i, u in enumerate(sizes)]


def validation_nets(space: Any, count: int, seed: int = 1, exclude: Iterable[str] = ()) -> list[ArchSpec]:
    """``count`` random nets of ``space`` none of which is a net in ``exclude`` (net ids of the
    calibration): a validation that measured a net the model was fitted on would report the fit,
    not the prediction. Repeats among the validation nets are allowed (tiny spaces have few
    nets); a space with no net outside ``exclude`` is refused."""
    banned = set(exclude)
    rng = random.Random(seed)
    out: list[ArchSpec] = []
    tries = 0
    while len(out) < count:
        arch = sample_arch(space, rng, f"val{len(out)}")
        tries += 1
        if net_id(arch) not in banned:
            out.append(arch)
        elif tries > 200 * max(count, 1):
            raise LutError(f"space {space.name!r}: no net outside the {len(banned)} calibration net(s) found in "
                           f"{tries} draws; nothing left to validate on")
    return out


def needed_keys(space: Any, nets: Iterable[ArchSpec]) -> set[str]:
    """Table keys a partial table needs to predict ``nets`` and to calibrate: their parts, the
    drift reference's and every candidate's smallest width (the cheapest net is checked)."""
    keys = {key for arch in [*nets, reference_arch(space)] for _, key, _, _ in arch_parts(arch)}
    for slot in space.layers():
        for cand in slot.candidates:
            keys.add(block_key(slot.block_spec(cand, slot.hidden_widths(cand, space.width_step)[0]), slot.in_hw))
    hw = tuple(space.input_size[1:])
    for c in space.stem:
        keys.add(block_key(c, hw))
        hw = c.out_hw(hw)
    keys.add(head_key(space.head, space.final_hw()))
    return keys


def _mape(pred: list[float], meas: list[float]) -> float:
    return float(sum(abs(p - m) / m for p, m in zip(pred, meas)) / max(len(meas), 1))


def build_table(space: Any, measurer: Measurer, calib_nets: int = 24, seed: int = 0,
                progress: bool = True, keys: Iterable[str] | None = None) -> LatencyTable:
    """Measure every reachable block of ``space`` (or only ``keys`` plus what calibration needs),
    then fit the whole-net model on ``calib_nets`` whole nets (:func:`calibrate`)."""
    from tqdm.auto import tqdm

    from prunet.latency.features import part_features

    parts = space_parts(space)
    nets = calibration_nets(space, calib_nets, seed)
    todo = list(parts) if keys is None else sorted(set(keys) | needed_keys(space, nets))
    entries: dict[str, float] = {}
    features: dict[str, dict[str, float]] = {}
    t0 = time.time()
    for key in tqdm(todo, desc=f"LUT {space.name} [{measurer.backend}]", disable=not progress, unit="block"):
        spec, in_chs, hw = parts[key]
        entries[key] = measurer.part(spec, in_chs, hw)
        features[key] = part_features(spec, in_chs, hw)
    table = LatencyTable(space_name=space.name, space_hash=space.hash, backend=measurer.backend,
                         statistic=measurer.statistic, threads=measurer.threads, entries=entries, features=features)
    meas = [measurer.whole(arch) for arch in tqdm(nets, desc="calibration nets", disable=not progress, unit="net")]
    calibrate(table, space, nets, meas)
    table.calibration["seed"] = seed
    table.calibration["sampler"] = CALIBRATION_SAMPLER
    ref = reference_arch(space)
    table.reference = {"name": ref.name, "ms": measurer.whole(ref)}
    table.provenance = {**measurer.provenance(), "build_seconds": round(time.time() - t0, 1),
                        "space_source": getattr(space, "source", ""), "partial": keys is not None}
    return table


def calibrate(table: LatencyTable, space: Any, nets: list[ArchSpec], measured: list[float]) -> None:
    """Fit the table's model on ``nets`` measured whole (:func:`prunet.latency.model.fit_model`):
    the candidate with the best leave-one-out MAPE among those that keep every part's term and the
    space's cheapest net positive."""
    from prunet.latency.features import FEATURES
    from prunet.latency.model import Fit, fit_model

    table.weights, table.model = {}, "affine"
    sums = [table.plain_sum(a) for a in nets]
    totals_per_net = [table.feature_totals(a) for a in nets]
    totals = {f: [t[f] for t in totals_per_net] for f in FEATURES}
    floor = table.plain_sum(cheapest_arch(table, space))

    def acceptable(fit: Fit) -> bool:
        trial = LatencyTable(table.space_name, table.space_hash, table.backend, table.statistic, table.threads,
                             table.entries, a=fit.a, c=fit.c, features=table.features, weights=fit.weights)
        if any(trial.lookup(k) <= 0 for k in trial.entries):
            return False
        return trial.predict(cheapest_arch(trial, space)) > 0

    fit = fit_model(sums, totals, measured, acceptable, lambda: fit_calibration(sums, measured, floor))
    table.a, table.c, table.weights, table.model = fit.a, fit.c, fit.weights, fit.model
    table.calib_net_ids = [net_id(a) for a in nets]
    pred = [table.predict(a) for a in nets]
    affine = fit_calibration(sums, measured, floor)
    table.calibration = {"nets": len(nets), "fit_mape": _mape(pred, measured),
                         "raw_sum_mape": _mape(sums, measured),
                         "affine_fit_mape": _mape([affine[0] * s + affine[1] for s in sums], measured),
                         "cv_mape": fit.cv_mape, "measured_ms": [float(m) for m in measured]}


def drift(table: LatencyTable, space: Any, measurer: Measurer) -> dict[str, float]:
    """Re-measure the reference network: ``ratio`` = now / when the table was built."""
    if not table.reference.get("ms"):
        raise LutError(f"{table.path or 'latency table'}: has no reference measurement")
    now_ms = measurer.whole(reference_arch(space))
    return {"reference_ms_then": float(table.reference["ms"]), "reference_ms_now": now_ms,
            "ratio": now_ms / float(table.reference["ms"])}


def spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def agreement(reference: list[float], other: list[float]) -> dict[str, float]:
    """Share within ±10 %, MAPE and worst relative error of ``other`` against ``reference``."""
    errs = [abs(o - r) / r for r, o in zip(reference, other)]
    n = max(len(errs), 1)
    return {"within_10pct": sum(e <= 0.10 for e in errs) / n, "mape": sum(errs) / n,
            "max_error": max(errs, default=float("nan"))}


def validate_table(table: LatencyTable, space: Any, measurer: Measurer, samples: int = 20, seed: int = 1,
                   progress: bool = True, plot: str | os.PathLike | None = None,
                   correct_drift: bool = False, allow_foreign: bool = False) -> dict[str, Any]:
    """Sample random nets the calibration never saw, predict them and measure each twice
    (interleaved, :meth:`Measurer.whole_pair`); report the prediction against the first
    measurement and, beside it, the second measurement against the first: the A/A floor.

    A table from another machine is refused unless ``allow_foreign`` (``--allow-foreign-lut``):
    validating it here says how well it transfers, which is a question to ask on purpose."""
    from tqdm.auto import tqdm

    table.check_for(space.hash, measurer.backend, measurer.threads, measurer.statistic)
    foreign = table.check_machine(allow_foreign)
    excluded = calibration_ids(table, space)
    nets = validation_nets(space, samples, seed, excluded)
    for arch in nets:  # a missing entry is refused before anything is measured
        table.predict(arch)
    d = drift(table, space, measurer)
    scale = d["ratio"] if correct_drift else 1.0
    preds, meas, again = [], [], []
    for arch in tqdm(nets, desc="validate-lut", disable=not progress, unit="net"):
        preds.append(table.predict(arch) * scale)
        first, second = measurer.whole_pair(arch)
        meas.append(first)
        again.append(second)
    acc, aa = agreement(meas, preds), agreement(meas, again)
    out = {
        "samples": samples, "within_10pct": acc["within_10pct"],
        "mape": acc["mape"], "spearman": spearman(preds, meas) if samples >= 3 else float("nan"),
        "max_error": acc["max_error"], "drift": d, "drift_corrected": correct_drift,
        "aa_within_10pct": aa["within_10pct"], "aa_mape": aa["mape"], "aa_max_error": aa["max_error"],
        "backend": table.backend, "threads": table.threads, "statistic": table.statistic, "lut_id": table.id,
        "model": table.model, "foreign_machine": foreign, "calibration_nets_excluded": len(excluded),
        "predicted_ms": preds, "measured_ms": meas, "measured_again_ms": again,
        "net_ids": [net_id(a) for a in nets],
    }
    if plot:
        plot_validation(preds, meas, plot, title=f"{space.name} [{table.backend}, {table.threads} thr]")
        out["plot"] = str(plot)
    return out


def calibration_ids(table: LatencyTable, space: Any) -> set[str]:
    """Ids of the nets the table's calibration was fitted on: stored (format /2), or re-drawn from
    the recorded seed and count (format /1 tables, which stored neither ids nor features)."""
    if table.calib_net_ids:
        return set(table.calib_net_ids)
    n, seed = table.calibration.get("nets"), table.calibration.get("seed")
    if isinstance(n, int) and isinstance(seed, int) and not isinstance(n, bool):
        return {net_id(a) for a in calibration_nets(space, n, seed, table.calibration.get("sampler", "uniform"))}
    return set()


def plot_validation(preds: list[float], meas: list[float], path: str | os.PathLike, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    lo, hi = min(preds + meas) * 0.9, max(preds + meas) * 1.1
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10 %")
    ax.scatter(meas, preds, s=14)
    ax.set_xlabel("measured whole net (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def min_reachable_ms(table: LatencyTable, space: Any) -> float:
    """Predicted latency of the cheapest net the space allows (skippable layers skipped)."""
    return table.predict(cheapest_arch(table, space))


def cheapest_arch(table: LatencyTable, space: Any) -> ArchSpec:
    """The net of the space with the smallest table entries per layer, skippable layers skipped.

    Every width is looked at, not just the narrowest: measured entries of small blocks are not
    monotone in width (a 16-wide block measured slower than a 32-wide one in a tiny table), and a
    floor above a net the search can reach would refuse reachable targets."""
    choices = []
    for slot in space.layers():
        if slot.skippable:
            choices.append(None)
            continue
        best = min(((c, w) for c in slot.candidates for w in slot.hidden_widths(c, space.width_step)),
                   key=lambda ch: table.lookup(block_key(slot.block_spec(*ch), slot.in_hw)))
        choices.append(best)
    return space.arch_from_choices(choices, "min")


Predictor = Callable[[ArchSpec], float]

"""Export a model to one self-contained ONNX file and prove it computes what torch computes.

Every export is followed by the ONNX checker (full check) and an onnxruntime-vs-torch comparison
on random input and on real ImageNet photos; the file only appears at its destination once all of
that passed, so a file at `path` is always a verified one (and an interrupted export leaves none).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import BackendUnavailableError, InputShapeError, InvalidOnnxError, ParityError, \
    PrunetExportError
from .parity import WEAK_SENSITIVITY, ParityFigures, check
from .resolve import ModelSpec, check_input_size, model_name, native_input_size, probe_forward, \
    resolve_module

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTERS = ("dynamo", "torchscript")
TORCHSCRIPT_DEFAULT_OPSET = 17
DEFAULT_RTOL = 1e-4
# Batch used to trace a dynamic-batch export: torch.export specialises sizes 0 and 1.
_DYNAMIC_TRACE_BATCH = 2

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    """What was exported and how well it agrees with torch."""

    path: str
    model: str
    exporter: str
    opset: int
    batch: int | None  # None = dynamic batch dimension
    input_name: str
    output_names: list[str]
    input_shape: list[int | str]  # as declared in the graph ("batch" when dynamic)
    file_bytes: int
    export_seconds: float
    ops: dict[str, int]
    parity: list[ParityFigures] = field(default_factory=list)
    rtol: float = DEFAULT_RTOL
    notes: list[str] = field(default_factory=list)
    tensorrt: dict | None = None  # TensorRTSupportReport.to_dict()

    @property
    def max_abs(self) -> float:
        return max((p.max_abs for p in self.parity), default=float("nan"))

    @property
    def max_rel(self) -> float:
        return max((p.max_rel for p in self.parity), default=float("nan"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["max_abs"], d["max_rel"] = self.max_abs, self.max_rel
        return d

    def summary(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        lines = [f"{self.model} -> {self.path} ({self.file_bytes / 1e6:.1f} MB, {self.exporter} "
                 f"exporter, opset {self.opset}, input '{self.input_name}' {shape}, "
                 f"{sum(self.ops.values())} nodes, {self.export_seconds:.1f} s)"]
        for p in self.parity:
            top1 = f", top-1 agreement {p.top1_agree:.0%}" if p.top1_agree is not None else ""
            lines.append(f"  parity vs torch on {p.n} {p.inputs} inputs: max abs {p.max_abs:.2e}, "
                         f"max rel {p.max_rel:.2e} (tolerance {self.rtol:.0e}){top1}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"ONNX export needs onnx and onnxruntime ({exc.name} missing): "
            "pip install 'prunet[export]'"
        ) from exc


def load_onnx(path: str | os.PathLike, *, full_check: bool = True):
    """Load and validate an ONNX file, turning every failure into InvalidOnnxError."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise InvalidOnnxError(f"{p}: ONNX file not found")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf DecodeError and friends
        raise InvalidOnnxError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node:
        raise InvalidOnnxError(f"{p}: ONNX model has an empty graph")
    try:
        onnx.checker.check_model(model, full_check=full_check)
    except Exception as exc:
        raise InvalidOnnxError(f"{p}: fails the ONNX checker: {exc}") from exc
    return model


def onnx_input_shape(path: str | os.PathLike) -> tuple[str, list[int | str]]:
    """(name, dims) of the graph's first input; symbolic dims are returned as strings."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InvalidOnnxError(f"{path}: not a readable ONNX model ({exc})") from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise InvalidOnnxError(f"{path}: graph has no inputs")
    dims: list[int | str] = []
    for d in inputs[0].type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return inputs[0].name, dims


def ort_session(path: str | os.PathLike, *, threads: int | None = None, spinning: bool = True,
                providers: list[str] | None = None):
    """An onnxruntime session with full graph optimisation (what deployment uses)."""
    _require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidOnnxError(f"{path}: onnxruntime cannot load it: {exc}") from exc


def _export_file(model: nn.Module, sample: torch.Tensor, tmp: str, *, exporter: str,
                 opset: int | None, dynamic: bool, verbose: bool) -> None:
    if exporter == "dynamo":
        kwargs: dict = dict(dynamo=True, external_data=False, optimize=True, verbose=False,
                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        if opset is not None:
            kwargs["opset_version"] = opset
        if dynamic:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=65536)},)
        sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (sample,), None, **kwargs)
            program.save(tmp, external_data=False)
    else:
        kwargs = dict(dynamo=False, opset_version=opset or TORCHSCRIPT_DEFAULT_OPSET,
                      do_constant_folding=True, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME])
        if dynamic:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (sample,), tmp, **kwargs)


def _clean(tmp: str, *, slim: bool, notes: list[str], meta: dict[str, str], optimize: bool = True) -> None:
    """Constant folding / dead-node removal with onnxscript's optimizer (``optimize``), onnxslim
    when asked, and prunet's metadata: one load and one save of the file."""
    import onnx

    model = onnx.load(tmp)
    if optimize:
        import onnxscript.optimizer

        model = onnxscript.optimizer.optimize(model)
    if slim:
        try:
            import onnxslim
        except ImportError:
            notes.append("onnxslim not installed: --slim skipped (pip install onnxslim)")
        else:
            model = onnxslim.slim(model)
    existing = {p.key for p in model.metadata_props}
    for k, v in meta.items():
        if k not in existing:
            model.metadata_props.add(key=k, value=str(v))
    model.producer_name = model.producer_name or "prunet"
    onnx.save(model, tmp)


def to_onnx(model: ModelSpec, path: str | os.PathLike, *, batch: int | None = 1,
            opset: int | None = None, exporter: str = "dynamo",
            input_size: tuple[int, int, int] | None = None, rtol: float = DEFAULT_RTOL,
            images: bool | int = True, slim: bool = False, check_tensorrt: bool = True,
            verbose: bool = False, parity: bool = True, optimize: bool = True, **create_kwargs) -> ExportReport:
    """Export `model` (nn.Module, zoo/timm name or architecture JSON) to a single ONNX file.

    batch: fixed batch size, or None for a dynamic batch dimension. opset: None takes the
    exporter's default (TorchScript: 17). exporter: 'dynamo' (torch.export based) or
    'torchscript' (needed for opsets below 18). The result is checked with onnx.checker and
    compared with torch through onnxruntime on random inputs and on the 20 ImageNet photos
    (images=False skips them, an int uses that many); relative error above `rtol` raises
    ParityError and nothing is written. Returns an ExportReport with the parity figures.
    parity=False skips the comparison (only for graphs exported purely to be timed, e.g. the
    thousands of blocks of a latency table; the report then says so). optimize=False skips
    onnxscript's optimizer, which takes longer than the export itself on a small block: for graphs
    exported only to be timed, since onnxruntime's own ORT_ENABLE_ALL passes leave the same ops
    (on 50 proxy-small blocks both forms timed alike: median ratio 1.002).
    """
    _require_onnx()
    if exporter not in EXPORTERS:
        raise PrunetExportError(f"exporter: expected one of {EXPORTERS}, got {exporter!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise InputShapeError(f"batch: expected a positive integer or None (dynamic), got {batch!r}")
    if opset is not None:
        check_opset(opset, exporter)
    dest = Path(path)
    if dest.suffix.lower() != ".onnx":
        raise PrunetExportError(f"{dest}: output path must end in .onnx")
    if dest.exists() and dest.is_dir():
        raise PrunetExportError(f"{dest}: is a directory")
    _check_writable(dest)

    module = resolve_module(model, **create_kwargs)
    name = model_name(model, module)
    size = check_input_size(input_size) if input_size is not None else native_input_size(module)
    trace_batch = batch if batch is not None else _DYNAMIC_TRACE_BATCH
    probe_forward(module, (trace_batch, *size))
    sample = torch.randn(trace_batch, *size, generator=torch.Generator().manual_seed(0))
    # Re-parameterisable blocks (prunet's rep, timm's RepVGG/MobileOne...) are exported fused, as
    # inference runs them; parity below still compares against the unfused module.
    from prunet.nn import inference_form

    exported = inference_form(module)

    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=".onnx.tmp")
    except OSError as exc:
        raise PrunetExportError(f"{dest}: cannot write there ({exc.strerror})") from None
    os.close(fd)
    notes: list[str] = []
    try:
        t0 = time.perf_counter()
        try:
            with _quiet_onnxscript(verbose):
                _export_file(exported, sample, tmp, exporter=exporter, opset=opset,
                             dynamic=batch is None, verbose=verbose)
        except PrunetExportError:
            raise
        except Exception as exc:
            hint = (" (try exporter='torchscript')" if exporter == "dynamo" else
                    " (try exporter='dynamo')")
            raise PrunetExportError(f"{name}: {exporter} export failed: {exc}{hint}") from exc
        _clean(tmp, slim=slim, notes=notes, optimize=optimize,
               meta={"prunet.source": name, "prunet.exporter": exporter, "prunet.input_size": "x".join(map(str, size))})
        export_seconds = time.perf_counter() - t0
        onnx_model = load_onnx(tmp, full_check=True)
        got_opset = next(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx"))
        if opset is not None and got_opset != opset:
            raise PrunetExportError(
                f"{name}: asked for opset {opset} but the {exporter} exporter produced opset "
                f"{got_opset}" + (" (use exporter='torchscript' for opsets below 18)"
                                  if exporter == "dynamo" else "")
            )
        in_name, in_dims = onnx_input_shape(tmp)

        report = ExportReport(
            path=str(dest), model=name, exporter=exporter, opset=int(got_opset), batch=batch,
            input_name=in_name, output_names=[o.name for o in onnx_model.graph.output],
            input_shape=in_dims, file_bytes=os.path.getsize(tmp),
            export_seconds=round(export_seconds, 3),
            ops=_op_counts(onnx_model), rtol=rtol, notes=notes,
        )
        if parity:
            _parity(report, module, ort_session(tmp), size, batch, images)
        else:
            report.notes.append("parity with torch not checked (parity=False)")
        if check_tensorrt:
            from .trt_support import check_tensorrt_support

            report.tensorrt = check_tensorrt_support(onnx_model).to_dict()
        weak = [p for p in report.parity
                if p.input_sensitivity is not None and p.input_sensitivity < WEAK_SENSITIVITY]
        if weak:
            report.notes.append(
                f"the torch output barely depends on the input (relative spread "
                f"{weak[0].input_sensitivity:.1e}; untrained weights?): parity figures test "
                "little of the graph; use trained weights or calibrate_batchnorm() to check it")
        worst = report.max_rel
        if parity and (worst > rtol or worst != worst):
            raise ParityError(
                f"{name}: onnxruntime disagrees with torch: max relative error {worst:.2e} > "
                f"tolerance {rtol:.0e} (max abs {report.max_abs:.2e}); nothing written to {dest}",
                report,
            )
        _publish(tmp, dest)
        return report
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def opset_range(exporter: str) -> tuple[int, int]:
    """Opsets the installed exporter can write: TorchScript 7..torch's TorchScript maximum;
    dynamo from 18 (its own minimum) to the newest opset the installed onnx package knows
    (onnx's version converter gets it there; measured up to 28 with onnx 1.23)."""
    import onnx

    try:
        from torch.onnx import _constants

        ts_max = int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - private module moved
        ts_max = 20
    if exporter == "torchscript":
        return 7, ts_max
    return 18, int(onnx.defs.onnx_opset_version())


def check_opset(opset: object, exporter: str) -> None:
    """Refuse an opset the exporter cannot write before spending minutes on an export (the
    version converter would otherwise fail deep inside onnxscript and log a long traceback)."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise PrunetExportError(f"opset: expected an integer, got {opset!r}")
    lo, hi = opset_range(exporter)
    if lo <= opset <= hi:
        return
    hint = ""
    if exporter == "dynamo" and opset < lo:
        ts_lo, ts_hi = opset_range("torchscript")
        hint = f"; for opset {opset} use --exporter torchscript ({ts_lo} to {ts_hi})" if ts_lo <= opset <= ts_hi else ""
    elif exporter == "torchscript" and opset > hi:
        d_lo, d_hi = opset_range("dynamo")
        hint = f"; for opset {opset} use --exporter dynamo ({d_lo} to {d_hi})" if d_lo <= opset <= d_hi else ""
    raise PrunetExportError(f"opset {opset}: the {exporter} exporter writes opsets {lo} to {hi} here{hint}")


def _check_writable(dest: Path) -> None:
    """Fail before the export (not after it) when the destination folder cannot be written."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrunetExportError(f"{dest}: cannot create its folder ({exc.strerror})") from None
    if not os.access(dest.parent, os.W_OK | os.X_OK):
        raise PrunetExportError(f"{dest}: folder {dest.parent} is not writable")


@contextlib.contextmanager
def _quiet_onnxscript(verbose: bool):
    """onnxscript logs a full traceback (logger.exception) when its version converter falls back
    or fails; prunet reports the outcome itself (the opset check after the export)."""
    if verbose:
        yield
        return
    logger = logging.getLogger("onnxscript")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _publish(tmp: str, dest: Path) -> None:
    """Give the temp file normal permissions (mkstemp makes it 0600) and move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def _op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _parity(report: ExportReport, module: nn.Module, session, size: tuple[int, int, int],
            batch: int | None, images: bool | int) -> None:
    gen = torch.Generator().manual_seed(1234)
    if batch is None:
        # Dynamic batch: check several batch sizes, including 1, against one reference.
        x = torch.randn(3, *size, generator=gen)
        report.parity.append(check(module, session, x, chunk=1, inputs="random"))
        report.parity.append(check(module, session, x, chunk=3, inputs="random"))
    else:
        x = torch.randn(batch * 2, *size, generator=gen)
        report.parity.append(check(module, session, x, chunk=batch, inputs="random"))
    if images is False or images == 0:
        report.notes.append("real-image parity skipped (images=False)")
        return
    if size[0] != 3:
        report.notes.append(f"real-image parity skipped: model takes {size[0]} channels, the "
                            "ImageNet photos have 3")
        return
    from .images import ImagesUnavailableError, load_batch

    try:
        imgs = load_batch(module, size, limit=None if images is True else int(images))
    except ImagesUnavailableError as exc:
        report.notes.append(f"real-image parity skipped: {exc}")
        log.warning("real-image parity skipped: %s", exc)
        return
    chunk = batch if batch is not None else len(imgs)
    if batch is not None and len(imgs) % batch:
        # A fixed batch must divide the sample count: cycle through the photos to fill it.
        n = max(batch, len(imgs) - len(imgs) % batch)
        imgs = imgs[torch.arange(n) % len(imgs)]
    report.parity.append(check(module, session, imgs, chunk=chunk, inputs="imagenet"))


def to_fp16_onnx(src: str | os.PathLike, dst: str | os.PathLike, *, keep_io_types: bool = True):
    """Write an FP16 copy of an FP32 ONNX file (FP32 inputs/outputs kept by default).

    TensorRT 11 builds strongly typed networks only (no FP16 builder flag, no trtexec --fp16):
    the FP16 precision of the paper's protocol then comes from FP16 weights and activations in
    the ONNX graph itself. Uses onnxconverter-common's float16 pass.
    """
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise BackendUnavailableError(
            "FP16 ONNX conversion needs onnxconverter-common: pip install 'prunet[export]'"
        ) from exc
    model = load_onnx(src, full_check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per clamped tiny weight
        half = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        onnx.save(half, tmp)
        onnx.checker.check_model(tmp, full_check=True)
        _publish(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst

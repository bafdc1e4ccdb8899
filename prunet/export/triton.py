"""Fill the Triton Inference Server model-repository template in export/triton/.

Triton wants `<repo>/<name>/config.pbtxt` plus `<repo>/<name>/<version>/model.onnx` (onnxruntime
backend) or `model.plan` (TensorRT backend). Writing the config by hand is where deployments
usually break (batch dimension in `dims` or not, input names, data types), so the values are read
from the exported graph itself.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from prunet._io import default_dir_mode

from .errors import InputShapeError, PrunetExportError
from .resolve import ModelSpec, is_onnx_path, model_name

BACKENDS = {"onnxruntime": ("onnxruntime_onnx", "model.onnx"),
            "tensorrt": ("tensorrt_plan", "model.plan")}
TEMPLATE_ENV = "PRUNET_TRITON_TEMPLATE"
_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 6: "TYPE_INT32",
                 7: "TYPE_INT64", 2: "TYPE_UINT8", 3: "TYPE_INT8", 9: "TYPE_BOOL"}


@dataclass
class TritonReport:
    model_dir: str
    config: str
    model_file: str
    backend: str
    max_batch_size: int
    input_dims: list[int]
    output_dims: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def template_path() -> Path:
    """The config.pbtxt template: $PRUNET_TRITON_TEMPLATE, else export/triton/ (shipped in the
    wheel as the package ``prunet.export_recipes``)."""
    from importlib import resources

    env = os.environ.get(TEMPLATE_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(Path(str(resources.files("prunet.export_recipes").joinpath("triton", "config.pbtxt.template"))))
    for c in candidates:
        if c.is_file():
            return c
    raise PrunetExportError(
        f"Triton template not found (looked at {', '.join(map(str, candidates))}); set {TEMPLATE_ENV} to its path"
    )


def _io(onnx_path: Path):
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    outs = list(model.graph.output)
    if len(ins) != 1 or len(outs) != 1:
        raise PrunetExportError(f"{onnx_path}: the template covers one input and one output, "
                                f"graph has {len(ins)} and {len(outs)}")

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else -1
                for d in vi.type.tensor_type.shape.dim]

    def ttype(vi):
        elem = vi.type.tensor_type.elem_type
        if elem not in _TRITON_TYPES:
            raise PrunetExportError(f"{onnx_path}: tensor '{vi.name}' has ONNX type {elem}, which "
                                    "the template does not map")
        return _TRITON_TYPES[elem]

    return (ins[0].name, ttype(ins[0]), dims(ins[0])), (outs[0].name, ttype(outs[0]), dims(outs[0]))


def render_config(*, name: str, backend: str, input_io, output_io, max_batch_size: int,
                  instance_kind: str = "KIND_GPU", instance_count: int = 1) -> str:
    platform, _ = BACKENDS[backend]
    (in_name, in_type, in_dims), (out_name, out_type, out_dims) = input_io, output_io
    if max_batch_size > 0:
        in_dims, out_dims = in_dims[1:], out_dims[1:]  # Triton adds the batch dimension itself
    batching = "dynamic_batching { }" if max_batch_size > 0 else ""
    tpl = string.Template(template_path().read_text(encoding="utf-8"))
    return tpl.substitute(
        name=name, platform=platform, max_batch_size=max_batch_size, version=1,
        model_file=BACKENDS[backend][1], input_name=in_name, input_type=in_type,
        input_dims=", ".join(map(str, in_dims)), output_name=out_name, output_type=out_type,
        output_dims=", ".join(map(str, out_dims)), instance_kind=instance_kind,
        instance_count=instance_count, dynamic_batching=batching,
    ).rstrip() + "\n"


def _publish_dir(work: Path, final: Path) -> None:
    """Move the finished model folder into place. A new one appears whole (one rename); into an
    existing one (``overwrite``) only the files written here are moved, each atomically: the
    folder may hold other versions or files of the user's, and is never deleted whole."""
    if not final.exists():
        os.chmod(work, default_dir_mode())  # mkdtemp makes 0700
        os.rename(work, final)
        return
    for src in sorted(p for p in work.rglob("*") if p.is_file()):
        dst = final / src.relative_to(work)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def export_triton(source: ModelSpec, repository: str | os.PathLike, *, name: str | None = None,
                  backend: str = "onnxruntime", max_batch_size: int = 8, version: int = 1,
                  instance_kind: str = "KIND_GPU", instance_count: int = 1,
                  plan: str | os.PathLike | None = None, precision: str = "fp16",
                  overwrite: bool = False, **onnx_kwargs) -> TritonReport:
    """Write a Triton model directory for `source` (model spec or ONNX file) into `repository`.

    max_batch_size > 0 exports a dynamic-batch graph and enables Triton's dynamic batcher;
    0 keeps a fixed batch of 1. backend 'tensorrt' uses `plan` when given, else builds one with
    build_engine (TensorRT and a GPU needed; the plan only runs on the GPU model it was built on).
    """
    if backend not in BACKENDS:
        raise PrunetExportError(f"backend: expected one of {tuple(BACKENDS)}, got {backend!r}")
    if max_batch_size < 0:
        raise InputShapeError(f"max_batch_size: expected >= 0, got {max_batch_size}")
    if instance_kind not in ("KIND_GPU", "KIND_CPU", "KIND_AUTO"):
        raise PrunetExportError(f"instance_kind: expected KIND_GPU, KIND_CPU or KIND_AUTO, "
                                f"got {instance_kind!r}")
    name = name or model_name(source)
    repo = Path(repository)
    final = repo / name
    if final.exists() and not final.is_dir():
        raise PrunetExportError(f"{final}: exists and is not a folder")
    if final.exists() and not overwrite:
        raise PrunetExportError(f"{final}: already exists (pass overwrite=True / --overwrite to replace the files "
                                "this command writes there; nothing else in it is touched)")
    repo.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=repo, prefix=f".{name}."))
    try:
        vdir = work / str(version)
        vdir.mkdir()
        onnx_file = vdir / "model.onnx"
        if isinstance(source, (str, os.PathLike)) and is_onnx_path(source):
            from .onnx import load_onnx

            load_onnx(source)
            shutil.copyfile(source, onnx_file)
        else:
            from .onnx import to_onnx

            to_onnx(source, onnx_file, batch=None if max_batch_size > 0 else 1, **onnx_kwargs)
        input_io, output_io = _io(onnx_file)
        dynamic = input_io[2][0] == -1
        if max_batch_size > 0 and not dynamic:
            raise InputShapeError(f"{source}: graph has a fixed batch of {input_io[2][0]}; "
                                  "use max_batch_size=0 or export with a dynamic batch")
        if max_batch_size == 0 and dynamic:
            raise InputShapeError(f"{source}: graph has a dynamic batch; use max_batch_size > 0")
        model_file = onnx_file
        if backend == "tensorrt":
            model_file = vdir / "model.plan"
            if plan is not None:
                shutil.copyfile(plan, model_file)
            else:
                from .tensorrt import build_engine

                batch = (1, max(1, max_batch_size // 2), max_batch_size) if dynamic else 1
                build_engine(onnx_file, model_file, precision=precision, batch=batch)
            onnx_file.unlink()
        config = render_config(name=name, backend=backend, input_io=input_io,
                               output_io=output_io, max_batch_size=max_batch_size,
                               instance_kind=instance_kind, instance_count=instance_count)
        (work / "config.pbtxt").write_text(config, encoding="utf-8")
        _publish_dir(work, final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    in_dims = input_io[2][1:] if max_batch_size > 0 else input_io[2]
    out_dims = output_io[2][1:] if max_batch_size > 0 else output_io[2]
    return TritonReport(model_dir=str(final), config=str(final / "config.pbtxt"),
                        model_file=str(final / str(version) / model_file.name), backend=backend,
                        max_batch_size=max_batch_size, input_dims=in_dims, output_dims=out_dims)

#!/usr/bin/env bash
# Reproduce the latency protocol of the PruNet/GPUNet papers on your own NVIDIA GPU:
#   ONNX (batch 1) -> trtexec FP16 -> median "GPU Compute Time" from trtexec's performance summary.
# (The papers report TensorRT FP16, batch-1 latencies measured on a V100; arXiv 2209.11785.)
#
# Usage:  export/paper_protocol.sh MODEL [MODEL ...]
#         MODEL = zoo name (prunet_p0, gpunet_0, ...), timm name, architecture JSON or .onnx file
# Env:    OUT_DIR   output folder (default runs/trt)
#         TRTEXEC   trtexec binary (default: trtexec on PATH)
#         PRECISION fp16 (default, the papers' setting) or fp32
#         PRUNET    how to call prunet (default: prunet)
#
# Per model it writes OUT_DIR/NAME.onnx, NAME.plan, NAME.trtexec.log and NAME.trtexec.json (command,
# parsed summary, TensorRT version) and reuses OUT_DIR/timing.cache across models. The trtexec
# command is the papers' one: `trtexec --onnx=NAME.onnx --fp16 --shapes=input:1x3xHxW`
# (TensorRT >= 11 has no --fp16: prunet feeds it an FP16 copy of the graph instead).
set -euo pipefail

if [[ $# -lt 1 ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT_DIR=${OUT_DIR:-runs/trt}
TRTEXEC=${TRTEXEC:-trtexec}
PRECISION=${PRECISION:-fp16}
PRUNET=${PRUNET:-prunet}
mkdir -p "$OUT_DIR"

if ! command -v "$TRTEXEC" >/dev/null 2>&1; then
  echo "error: $TRTEXEC not found (it ships with TensorRT: the tarball's bin/ or NVIDIA's TensorRT containers)" >&2
  exit 2
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | sed 's/^/GPU: /'
fi

for model in "$@"; do
  name=$(basename "$model"); name=${name%.onnx}; name=${name%.json}
  if [[ "$model" == *.onnx ]]; then
    onnx="$model"
  else
    onnx="$OUT_DIR/$name.onnx"
    $PRUNET export onnx "$model" --out "$onnx" --batch 1 --json "$OUT_DIR/$name.export.json"
  fi
  $PRUNET export tensorrt "$onnx" --out "$OUT_DIR/$name.plan" --batch 1 --precision "$PRECISION" \
    --trtexec --trtexec-path "$TRTEXEC" --timing-cache "$OUT_DIR/timing.cache" \
    --json "$OUT_DIR/$name.trtexec.json"
done

# Summary table of every model measured so far in OUT_DIR.
python3 - "$OUT_DIR" <<'PY'
import json, pathlib, sys
rows = []
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.trtexec.json")):
    d = json.loads(f.read_text())
    g = d["summary"]["metrics"]["GPU Compute Time"]
    rows.append((f.name[: -len(".trtexec.json")], g["median"], g["min"], g["max"],
                 d["summary"]["tensorrt_version"]))
print(f"{'model':24s} {'median GPU compute (ms)':>24s} {'min':>8s} {'max':>8s}  TensorRT")
for r in rows:
    print(f"{r[0]:24s} {r[1]:24.4f} {r[2]:8.4f} {r[3]:8.4f}  {r[4]}")
PY

#!/usr/bin/env bash
# Install MMDetection 3.3.0 + mmengine 0.10.7 + mmcv 2.1.0 (with compiled CPU ops) into a venv.
#
# Usage: bash detection/install_mmcv.sh VENV_PYTHON
#
# Why a script: PyPI ships mmcv 2.1.0 only as a source distribution, and its setup.py asks for
# -std=c++14/17, which no longer compiles against torch >= 2.6 headers. We build it once with the
# flag raised to C++20 and cache the wheel outside the clone, keyed by torch and Python version,
# so CI's fresh clones reuse it. The first build takes about 15 minutes on 2 cores.
#
# Environment:
#   PRUNET_CACHE       cache root (default: $HOME/.cache/prunet); wheels go to $PRUNET_CACHE/wheels/
#   MAX_JOBS           parallel compile jobs (default: 2)
set -euo pipefail

MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0

log() { printf '[install_mmcv] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] || die "expected one argument: the venv's python (e.g. ~/.cache/prunet/venv-py311/bin/python)"
PY=$1
[ -x "$PY" ] || die "'$PY' is not an executable python interpreter"
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")

CACHE_ROOT=${PRUNET_CACHE:-$HOME/.cache/prunet}

# Run python checks from a neutral folder: an unpacked mmcv source tree (or this repo) in the
# working directory would shadow the installed packages.
pycheck() { (cd / && "$PY" -c "$1"); }

# mmengine 0.10.7 resolves `mmdet::` config paths with pkg_resources, which recent setuptools
# releases no longer ship (and `make setup` upgrades setuptools when the dependencies change).
SETUPTOOLS_PIN="setuptools==80.9.0"

stack_ok() {
  pycheck "
import mmcv, mmengine, mmdet, pycocotools
from mmcv.ops import nms
assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__
assert mmengine.__version__ == '$MMENGINE_VERSION', mmengine.__version__
assert mmdet.__version__ == '$MMDET_VERSION', mmdet.__version__
" >/dev/null 2>&1
}
installed_ok() { stack_ok && pycheck "import pkg_resources" >/dev/null 2>&1; }

if installed_ok; then
  log "mmcv $MMCV_VERSION (with ops), mmengine $MMENGINE_VERSION, mmdet $MMDET_VERSION already installed in $PY"
  exit 0
fi
if stack_ok; then
  log "mmdet stack installed but pkg_resources is missing (setuptools was upgraded); installing $SETUPTOOLS_PIN"
  "$PY" -m pip install -q "$SETUPTOOLS_PIN"
  installed_ok || die "still no pkg_resources after installing $SETUPTOOLS_PIN"
  log "ok"
  exit 0
fi

TORCH_VERSION=$(pycheck 'import torch; print(torch.__version__)') \
  || die "torch is not importable from $PY; run 'make setup' first"
PY_TAG=$(pycheck 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
KEY="torch${TORCH_VERSION//+/_}-${PY_TAG}"
WHEEL_DIR="$CACHE_ROOT/wheels/$KEY"
mkdir -p "$WHEEL_DIR"

find_wheel() { ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1; }

# One build at a time per cache key (several sessions may share the cache).
exec 9>"$WHEEL_DIR/.lock"
if ! flock -n 9; then
  log "another process is building or installing mmcv for $KEY; waiting for it"
  flock 9
fi

WHEEL=$(find_wheel || true)
if [ -n "$WHEEL" ]; then
  log "using cached wheel $WHEEL"
else
  log "no cached mmcv wheel for $KEY; building mmcv $MMCV_VERSION from source (about 15 min on 2 cores)"
  log "step 1/4: build tools ($SETUPTOOLS_PIN wheel ninja psutil) into the venv"
  "$PY" -m pip install -q "$SETUPTOOLS_PIN" wheel ninja psutil

  BUILD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/prunet-mmcv-build.XXXXXX")
  trap 'rm -rf "$BUILD_DIR"' EXIT

  log "step 2/4: download the mmcv $MMCV_VERSION source distribution"
  (cd "$BUILD_DIR" && "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$BUILD_DIR/sdist")
  SDIST=$(ls "$BUILD_DIR"/sdist/mmcv-"$MMCV_VERSION".tar.gz 2>/dev/null) \
    || die "pip download did not produce mmcv-$MMCV_VERSION.tar.gz"
  tar -xzf "$SDIST" -C "$BUILD_DIR"
  SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
  [ -f "$SRC/setup.py" ] || die "unexpected sdist layout: $SRC/setup.py missing"

  log "step 3/4: patch setup.py for C++20 (torch >= 2.6 headers need it)"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  grep -q -- '-std=c++20' "$SRC/setup.py" || die "patching $SRC/setup.py failed: no -std=c++20 flag found"

  log "step 4/4: compile mmcv ops (MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2}); log: $BUILD_DIR/build.log"
  START=$(date +%s)
  if ! (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
        "$PY" -m pip wheel --no-build-isolation --no-deps -w "$BUILD_DIR/dist" . >"$BUILD_DIR/build.log" 2>&1); then
    tail -n 40 "$BUILD_DIR/build.log" >&2
    die "building the mmcv wheel failed (last 40 lines above)"
  fi
  BUILT=$(ls "$BUILD_DIR"/dist/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1)
  [ -n "$BUILT" ] || die "pip wheel finished but no mmcv wheel was written to $BUILD_DIR/dist"
  log "built $(basename "$BUILT") in $(( $(date +%s) - START )) s"

  # Atomic publish: copy next to the destination, then rename.
  TMP_DEST="$WHEEL_DIR/.$(basename "$BUILT").partial.$$"
  cp "$BUILT" "$TMP_DEST"
  mv -f "$TMP_DEST" "$WHEEL_DIR/$(basename "$BUILT")"
  WHEEL="$WHEEL_DIR/$(basename "$BUILT")"
  log "cached wheel at $WHEEL"
fi

log "installing $(basename "$WHEEL") mmengine==$MMENGINE_VERSION mmdet==$MMDET_VERSION pycocotools $SETUPTOOLS_PIN"
"$PY" -m pip install -q "$WHEEL" "mmengine==$MMENGINE_VERSION" "mmdet==$MMDET_VERSION" pycocotools "$SETUPTOOLS_PIN"

if ! installed_ok; then
  pycheck "import mmcv, mmdet; from mmcv.ops import nms" || true
  die "installed, but 'import mmcv.ops, mmdet' fails (see the traceback above)"
fi
log "ok: mmcv $MMCV_VERSION with ops, mmengine $MMENGINE_VERSION, mmdet $MMDET_VERSION importable from $PY"

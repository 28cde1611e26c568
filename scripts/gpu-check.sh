#!/usr/bin/env bash
# One-call GPU check (about 8 minutes on one GPU): `bench perf train` at the paper profile for
# unet, swinunet, mlnnet and sadn, then time-capped paper-profile trainings of swinunet and
# mlnnet on the synthetic ffdm -> dbt from scratch, printed as one table
# (benchmark/perf/gpu_check.py). See docs/guide/gpu.md.
#
# On the GPU machine (no registry): a venv over the system Python 3.12 (which brings torch,
# timm, pandas, ...) gets every missing module from wheels/ (prepare it with
# scripts/gpu-wheels.sh on a connected machine), then the project with `pip install --no-deps`.
#
# Usage: scripts/gpu-check.sh [--dry-run] [options of benchmark/perf/gpu_check.py]
#   --dry-run   CPU, smoke profile, a few steps, this checkout's .venv: checks every step here.
# Environment: WHEELS (default wheels), GPU_VENV (default .gpu-venv), OUT (default: $OUT or
# gpu-check-out), CHECK_TIMEOUT seconds (default 470: the whole check stays under 8 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
OUT_DIR=${OUT:-gpu-check-out}
mkdir -p "$OUT_DIR"

if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python}
  [ -x "$PY" ] || PY=python3
else
  WHEELS=${WHEELS:-wheels}
  GPU_VENV=${GPU_VENV:-.gpu-venv}
  if [ ! -x "$GPU_VENV/bin/python" ]; then
    python3 -m venv --system-site-packages "$GPU_VENV"
  fi
  PY="$GPU_VENV/bin/python"
  # import name -> wheel name of each module calcbench needs beyond the machine's Python
  missing=$("$PY" - <<'PYEOF'
import importlib.util
need = {"segmentation_models_pytorch": "segmentation_models_pytorch", "torchvision": "torchvision",
        "medpy": "medpy", "pydicom": "pydicom", "pylibjpeg": "pylibjpeg",
        "openjpeg": "pylibjpeg_openjpeg", "libjpeg": "pylibjpeg_libjpeg",
        "submitit": "submitit", "cloudpickle": "cloudpickle", "tifffile": "tifffile"}
print(" ".join(w for m, w in need.items() if importlib.util.find_spec(m) is None))
PYEOF
)
  if [ -n "$missing" ]; then
    [ -d "$WHEELS" ] || { echo "error: $WHEELS/ is missing; run scripts/gpu-wheels.sh on a connected machine and bring it along" >&2; exit 2; }
    files=()
    for w in $missing; do
      f=$(ls "$WHEELS"/"$w"-*.whl 2>/dev/null | head -1 || true)
      [ -n "$f" ] || { echo "error: no $w wheel in $WHEELS/ (rerun scripts/gpu-wheels.sh)" >&2; exit 2; }
      files+=("$f")
    done
    "$PY" -m pip install --quiet --no-index --no-deps "${files[@]}"
  fi
  if ! "$PY" -c "import benchmark.cli" 2>/dev/null || [ ! -x "$GPU_VENV/bin/bench" ]; then
    "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" -e .
  fi
  export HF_HUB_OFFLINE=1
fi
timeout "${CHECK_TIMEOUT:-470}" "$PY" -m benchmark.perf.gpu_check --out "$OUT_DIR" "$@"

#!/usr/bin/env bash
# Download, on a connected machine, the wheels scripts/gpu-check.sh installs on the GPU machine.
#
# That machine reaches no registry; its Python 3.12 already has torch 2.11, timm, pandas,
# pyarrow, rich, typer, scipy, seaborn and scikit-image. Everything else calcbench imports is
# fetched here for CPython 3.12 on manylinux x86_64 into wheels/ (git-ignored, carried with the
# working tree). medpy publishes only a source archive; it is pure Python, so it is built into
# a py3-none-any wheel here. setuptools comes along because pip builds the project with it.
#
# Usage: scripts/gpu-wheels.sh [DIR]   (default DIR: wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-wheels}
PIP=${PIP:-.venv/bin/pip}
[ -x "$PIP" ] || PIP="python3 -m pip"
mkdir -p "$DIR"
# torchvision must be the build that matches the GPU machine's torch 2.11 (0.26); it is taken
# without its dependencies (torch is already there).
BINARY=(
  "segmentation-models-pytorch>=0.3" "torchvision==0.26.*"
  "pydicom>=3.0" "pylibjpeg>=2.0" "pylibjpeg-openjpeg>=2.0" "pylibjpeg-libjpeg>=2.1"
  "submitit>=1.5" "cloudpickle" "tifffile>=2023.1" "setuptools>=77"
)
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -d "$DIR" "${BINARY[@]}"
$PIP wheel --quiet --no-deps -w "$DIR" "medpy>=0.5.2"
ls -1 "$DIR"
du -sh "$DIR"

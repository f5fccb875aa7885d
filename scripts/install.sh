#!/usr/bin/env bash
# Installs Fewface's dependencies into the current Python environment.
# Used verbatim by the Dockerfile (both images), scripts/serve.sh, scripts/test.sh and CI.
#   bash scripts/install.sh                  runtime only, torch from PyPI (CUDA build on Linux x86_64)
#   bash scripts/install.sh --dev            plus test and lint tools
#   bash scripts/install.sh --torch=cpu      torch and torchvision from PyTorch's CPU-only wheel index
#                                            (same versions as requirements.txt, no CUDA libraries)
# TORCH_VARIANT=cpu|cuda in the environment does the same as --torch (the Dockerfile's build argument).
# PIP overrides the pip command (tests run the script with PIP=echo to check what it would install).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python -m pip}"
TORCH_VARIANT="${TORCH_VARIANT:-cuda}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --torch=*) TORCH_VARIANT="${arg#--torch=}" ;;
    *) echo "install.sh: unknown argument $arg (expected --dev, --torch=cpu or --torch=cuda)" >&2; exit 2 ;;
  esac
done
case "$TORCH_VARIANT" in cpu | cuda) ;; *) echo "install.sh: TORCH_VARIANT must be cpu or cuda, not $TORCH_VARIANT" >&2; exit 2 ;; esac
$PIP install --upgrade pip
case "$TORCH_VARIANT" in
  cpu)
    # The pins come from requirements.txt; "torch==X" is satisfied by the index's "X+cpu" build,
    # so the install of requirements.txt below keeps it.
    # shellcheck disable=SC2046
    $PIP install --index-url "$CPU_INDEX" $(grep -E '^(torch|torchvision)==' requirements.txt)
    ;;
  cuda) ;;  # PyPI's own torch wheels for Linux x86_64 are CUDA builds (CUDA libraries as nvidia-* wheels)
esac
$PIP install -r requirements.txt
$PIP install --no-deps -r requirements-nodeps.txt
if [ "$DEV" = 1 ]; then
  $PIP install -r requirements-dev.txt
  $PIP install --no-deps -r requirements-dev-nodeps.txt
fi
$PIP check || true  # facenet-pytorch's stale pins are expected to be reported here

#!/usr/bin/env bash
# Installs Fewface's dependencies into the current Python environment.
# Used verbatim by the Dockerfile, scripts/serve.sh, scripts/test.sh and CI.
#   bash scripts/install.sh          runtime only
#   bash scripts/install.sh --dev    plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip
python -m pip install -r requirements.txt
python -m pip install --no-deps -r requirements-nodeps.txt
if [ "${1:-}" = "--dev" ]; then
  python -m pip install -r requirements-dev.txt
fi
python -m pip check || true  # facenet-pytorch's stale pins are expected to be reported here

#!/usr/bin/env bash
# Creates .venv (if missing) and installs into it; pass --dev for test tools. Source-free: prints nothing on success.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed${1:-}"
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] || [ requirements-nodeps.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip --version >/dev/null
  PATH="$PWD/.venv/bin:$PATH" bash scripts/install.sh "$@"
  touch "$stamp"
fi

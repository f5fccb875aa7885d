#!/usr/bin/env bash
# One command: set up .venv and run the service (settings from FEWFACE_* environment variables).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/python -m service

#!/usr/bin/env bash
# Run every performance benchmark, one after the other, printing their figures (about 20 minutes
# on a 2-core CPU machine). FEWFACE_* settings apply (model, device, batching, index).
# Extra arguments are ignored; run a single benchmark for its own options (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
for bench in embed_throughput detection_quality identify_latency http_overhead vs_face_recognition teach_throughput search gpu; do
  echo
  echo "=== bench.$bench"
  "$PY" -m "bench.$bench"
done

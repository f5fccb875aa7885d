"""Frozen, pretrained face pipeline: detection, alignment and embedding.

Nothing here knows about HTTP or storage; ``service`` composes these pieces. Names are imported
lazily so that ``python -m models.weights`` runs without importing torch-heavy modules first.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EMBEDDERS": "models.embedders",
    "Embedder": "models.embedders",
    "EmbedderSpec": "models.embedders",
    "create_embedder": "models.embedders",
    "FaceDetector": "models.detector",
    "DetectedFace": "models.types",
    "resolve_device": "models.types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

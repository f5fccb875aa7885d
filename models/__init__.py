"""Frozen, pretrained face pipeline: detection, alignment and embedding.

Nothing here knows about HTTP or storage; ``service`` composes these pieces.
"""

from models.detector import FaceDetector
from models.embedders import EMBEDDERS, Embedder, EmbedderSpec, create_embedder
from models.types import DetectedFace, resolve_device

__all__ = [
    "EMBEDDERS",
    "DetectedFace",
    "Embedder",
    "EmbedderSpec",
    "FaceDetector",
    "create_embedder",
    "resolve_device",
]

"""Face detection with facenet-pytorch's MTCNN (its weights ship inside the wheel)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from models.types import DetectedFace

log = logging.getLogger(__name__)


class FaceDetector:
    """Finds every face in an RGB image: box, detection probability and 5 landmarks.

    ``detect`` always returns a list (``[]`` when there is no face), largest face first.
    Faces whose probability is below ``min_prob`` are dropped.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        min_face_size: int = 20,
        min_prob: float = 0.9,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    ) -> None:
        self.device = torch.device(device)
        self.min_prob = float(min_prob)
        self.min_face_size = int(min_face_size)
        self._mtcnn = MTCNN(
            keep_all=True,
            min_face_size=int(min_face_size),
            thresholds=list(thresholds),
            device=self.device,
        ).eval()

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """Faces in one RGB image."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[DetectedFace]]:
        """Faces in each image; images of equal size run through MTCNN together."""
        results: list[list[DetectedFace]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if image.mode != "RGB":
                raise ValueError(f"detector expects RGB images, got mode {image.mode!r}")
            if min(image.size) < self.min_face_size:
                continue  # no face of the smallest size fits (and MTCNN's image pyramid would be empty)
            by_size.setdefault(image.size, []).append(index)
        for indices in by_size.values():
            group = [images[i] for i in indices]
            with torch.inference_mode():
                boxes, probs, points = self._mtcnn.detect(group, landmarks=True)
            for i, b, p, lm in zip(indices, boxes, probs, points, strict=True):
                results[i] = self._to_faces(b, p, lm)
        return results

    def _to_faces(self, boxes: np.ndarray | None, probs: np.ndarray | None, points: np.ndarray | None) -> list[DetectedFace]:
        if boxes is None or probs is None or points is None:
            return []
        faces = [
            DetectedFace(
                box=tuple(float(v) for v in box),
                prob=float(prob),
                landmarks=tuple((float(x), float(y)) for x, y in pts),
            )
            for box, prob, pts in zip(boxes, probs, points, strict=True)
            if prob is not None and float(prob) >= self.min_prob
        ]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

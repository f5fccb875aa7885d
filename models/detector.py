"""Face detection: MTCNN (facenet-pytorch's networks and weights, our cascade in models/mtcnn.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from PIL import Image

from models.mtcnn import Cascade, CascadeLimits, RawFaces
from models.types import DetectedFace

log = logging.getLogger(__name__)

CANDIDATES_PER_FACE = 10  # R-Net's candidate cap per face the caller keeps (docs/performance.md)


class FaceDetector:
    """Finds every face in an RGB image: box, detection probability and 5 landmarks.

    ``detect`` always returns a list (``[]`` when there is no face), largest face first.
    Faces whose probability is below ``min_prob`` are dropped. Coordinates are in the given
    image's pixels.

    ``detect_side``: P-Net scans the image as if its longer side were at most this many pixels,
    so in a bigger image the smallest face looked for is ``min_face_size * longer side /
    detect_side`` (0: ``min_face_size`` at any size, the stock MTCNN pyramid); R-Net and O-Net
    always work on the full-resolution image. ``max_faces``: at most ``CANDIDATES_PER_FACE`` x
    this many P-Net candidates per image enter R-Net (best first) and 2 x this many O-Net, which
    bounds the work on an image crowded with faces (the service keeps ``max_faces`` faces anyway).
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        min_face_size: int = 20,
        min_prob: float = 0.9,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        detect_side: int = 640,
        max_faces: int = 100,
    ) -> None:
        if min_face_size < 12 or detect_side < 0 or max_faces < 1:
            raise ValueError("min_face_size must be >= 12, detect_side >= 0 and max_faces >= 1")
        self.device = torch.device(device)
        self.min_prob = float(min_prob)
        self.min_face_size = int(min_face_size)
        rnet, onet = CANDIDATES_PER_FACE * int(max_faces), 2 * int(max_faces)
        self.limits = CascadeLimits(min_face_size=int(min_face_size), detect_side=int(detect_side), max_rnet=rnet, max_onet=onet)
        self._cascade = Cascade(self.device, tuple(float(t) for t in thresholds), self.limits)  # type: ignore[arg-type]
        self.capped_images = 0  # images on which a candidate cap dropped candidates (since start)

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """Faces in one RGB image."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[DetectedFace]]:
        """Faces in each image; images of equal size run through the cascade together."""
        results: list[list[DetectedFace]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if image.mode != "RGB":
                raise ValueError(f"detector expects RGB images, got mode {image.mode!r}")
            if min(image.size) < self.min_face_size:
                continue  # no face of the smallest size fits (and the image pyramid would be empty)
            by_size.setdefault(image.size, []).append(index)
        for indices in by_size.values():
            raw = self._cascade([images[i] for i in indices])
            for i, faces in zip(indices, raw, strict=True):
                if faces.capped:
                    self.capped_images += 1
                    log.info("detection capped at %d candidates on a %dx%d image", self.limits.max_rnet, *images[i].size)
                results[i] = self._to_faces(faces)
        return results

    def _to_faces(self, raw: RawFaces) -> list[DetectedFace]:
        faces = [
            DetectedFace(
                box=tuple(float(v) for v in box),
                prob=float(prob),
                landmarks=tuple((float(x), float(y)) for x, y in pts),
            )
            for box, prob, pts in zip(raw.boxes, raw.probs, raw.landmarks, strict=True)
            if float(prob) >= self.min_prob
        ]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

"""Face quality figures, from the detection and the pixels around it (no network, ~1 ms a face).

- ``eye_distance``: pixels between the eye centres in the working image (the resolution the
  embedding network's crop is taken from).
- ``sharpness``: variance of the Laplacian of the face region resized to 64x64 grey, divided by
  the region's own grey variance, so contrast and lighting cancel out; blur drives it towards 0.
- ``visible``: share of the face's box inside the image (models.ranking).
- ``yaw``: how far the head is turned, from the 5 landmarks: the nose tip's offset from the eyes'
  midpoint along the eye line, over half the eye distance; 0 frontal, about 1 when the nose tip
  is in line with an eye (a profile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.ranking import visible_fraction
from models.types import DetectedFace

_SHARPNESS_SIDE = 64


@dataclass(frozen=True)
class FaceQuality:
    eye_distance: float
    sharpness: float
    visible: float
    yaw: float


def eye_distance(face: DetectedFace) -> float:
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    return math.hypot(rx - lx, ry - ly)


def yaw(face: DetectedFace) -> float:
    """Signed head turn from the landmarks (see the module docstring); 0 when the eyes coincide."""
    (lx, ly), (rx, ry), (nx, ny) = face.landmarks[0], face.landmarks[1], face.landmarks[2]
    ex, ey = rx - lx, ry - ly
    half = math.hypot(ex, ey) / 2
    if half == 0:
        return 0.0
    mx, my = (lx + rx) / 2, (ly + ry) / 2
    along = ((nx - mx) * ex + (ny - my) * ey) / (2 * half)  # projection on the unit eye line
    return along / half


def sharpness(image: Image.Image, face: DetectedFace) -> float:
    """Laplacian variance over grey variance of the face's box (clipped to the image)."""
    width, height = image.size
    x1, y1, x2, y2 = face.clipped(width, height).box
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    region = image.crop((int(x1), int(y1), math.ceil(x2), math.ceil(y2))).convert("L")
    grey = np.asarray(region.resize((_SHARPNESS_SIDE, _SHARPNESS_SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    spread = grey.var()
    return float(lap.var() / spread) if spread > 0 else 0.0


def assess(image: Image.Image, face: DetectedFace) -> FaceQuality:
    """Quality figures of ``face`` found in ``image`` (both in the same pixel coordinates)."""
    return FaceQuality(
        eye_distance=eye_distance(face),
        sharpness=sharpness(image, face),
        visible=visible_fraction(face, *image.size),
        yaw=yaw(face),
    )

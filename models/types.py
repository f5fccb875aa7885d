"""Plain value types shared by the detector and the embedders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class DetectedFace:
    """One face found by the detector, in the pixel coordinates of the image it was found in.

    ``box`` is (x1, y1, x2, y2); ``landmarks`` holds five (x, y) points in the order of
    ``LANDMARK_NAMES`` (left/right as seen in the image).
    """

    box: tuple[float, float, float, float]
    prob: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def clipped(self, width: float, height: float) -> DetectedFace:
        """The same face with its box clipped to a ``width`` x ``height`` image (MTCNN boxes may
        stick out of the image when a face is cut by its edge); landmarks are left as they are."""
        x1, y1, x2, y2 = self.box
        box = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
        return DetectedFace(box=box, prob=self.prob, landmarks=self.landmarks)

    def scaled(self, factor: float) -> DetectedFace:
        """The same face with every coordinate multiplied by ``factor``."""
        x1, y1, x2, y2 = self.box
        return DetectedFace(
            box=(x1 * factor, y1 * factor, x2 * factor, y2 * factor),
            prob=self.prob,
            landmarks=tuple((x * factor, y * factor) for x, y in self.landmarks),
        )


def resolve_device(name: str) -> torch.device:
    """Map the ``device`` setting (auto / cpu / cuda / cuda:N) to a torch device."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    if name == "cpu" or name.startswith("cuda"):
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}: expected auto, cpu, cuda or cuda:N")

"""Which face a photo is about: faces ranked by what is visible.

MTCNN's boxes are regressed from the part of the face it sees, so a face cut by the image border
gets a box that reaches far outside the image: ranked by that raw box, a half-visible face at the
edge (or one in the background) beats the whole face in the middle. Here a face is *clear* when
at least ``MIN_VISIBLE`` of its box lies inside the image, its detection probability is at least
``SURE_PROB`` and its visible area is not tiny next to the largest one (``TINY`` of it or more).
Clear faces come first, largest visible area first; then the others, by visible area. This order
is "largest face" everywhere in the service (verify, teach with pick=largest, Facebox teach, the
order of faces in every answer).
"""

from __future__ import annotations

from collections.abc import Sequence

from models.types import DetectedFace

MIN_VISIBLE = 0.9  # share of the box inside the image
SURE_PROB = 0.99  # MTCNN gives a clear face ~0.999
TINY = 1 / 16  # of the largest visible area (a quarter of its width)


def visible_area(face: DetectedFace, width: float, height: float) -> float:
    return face.clipped(width, height).area


def visible_fraction(face: DetectedFace, width: float, height: float) -> float:
    """Share of the face's box that lies inside a ``width`` x ``height`` image (1.0 when whole)."""
    full = face.area
    return visible_area(face, width, height) / full if full > 0 else 0.0


def rank_faces(faces: Sequence[DetectedFace], width: float, height: float) -> list[DetectedFace]:
    """``faces`` clearest first (see the module docstring); ties keep the detector's order."""
    if not faces:
        return []
    largest = max(visible_area(f, width, height) for f in faces)

    def key(face: DetectedFace) -> tuple[bool, float]:
        area = visible_area(face, width, height)
        clear = visible_fraction(face, width, height) >= MIN_VISIBLE and face.prob >= SURE_PROB and area >= TINY * largest
        return clear, area

    return sorted(faces, key=key, reverse=True)

"""Face thumbnails: a small JPEG of each taught face, so people can be recognised at a glance in
the console (``GET /v1/people/<id>/faces/<face_id>/thumbnail``) and travel with state files.

``FEWFACE_THUMBNAILS=false`` (privacy) stores none, serves none and exports none. Encoding is
here; storage goes through the gallery (one call each way: ``save`` and ``load``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from PIL import Image

from service.imaging import DecodedImage

log = logging.getLogger(__name__)

SIZE = 96  # longer side of a thumbnail, pixels
QUALITY = 80  # JPEG quality: about 3-4 KB for a 96 px face
MARGIN = 1.4  # the square crop is this many times the face box's longer side
MAX_BYTES = 64 * 1024  # a thumbnail (from a state file) larger than this is refused
JPEG_MAGIC = b"\xff\xd8\xff"


def face_jpeg(decoded: DecodedImage, box: tuple[float, float, float, float]) -> bytes:
    """A JPEG of the face at ``box`` (original-image pixels), cut square with some margin from the
    working image and shrunk so its longer side is at most SIZE pixels."""
    x1, y1, x2, y2 = (v / decoded.scale for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * MARGIN
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    width, height = decoded.image.size
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    crop = decoded.image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))
    crop.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    crop.convert("RGB").save(buffer, "JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()


def valid_jpeg(data: bytes) -> bool:
    """Cheap check for thumbnails that come from outside (state files): a small JPEG."""
    return 0 < len(data) <= MAX_BYTES and data.startswith(JPEG_MAGIC)


def faces_with_thumbnails(records: Sequence[tuple[int, bytes | None]]) -> list[tuple[int, bytes]]:
    return [(face_id, jpeg) for face_id, jpeg in records if jpeg is not None]

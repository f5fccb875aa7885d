"""Bytes -> RGB PIL image, safely, under budgets a single upload cannot exceed:

- format allow-list: ``Image.open`` only tries the allowed plugins, so a file in another format
  (EPS, PSD, ...) is refused after a few header bytes instead of being parsed first;
- pixel limit (``max_pixels``) from the header, before a pixel is decoded (decompression bombs);
- memory budget (``max_bytes``): the decoder's own buffers are estimated from the header before
  decoding -- the image at its real bytes per pixel (Pillow keeps 3-band images as 4 bytes a
  pixel, 16-bit gray as 2, float as 4), a progressive JPEG's coefficient buffer, a TIFF's
  largest tile or strip -- plus the one full-size conversion copy that palette and bilevel
  images need; above the budget the image is refused before decoding;
- CPU budget: progressive JPEGs with more than ``max_jpeg_scans`` scans are refused (each scan
  is a pass over the whole image; real cameras and encoders write about 10), and the decoder
  is fed 16 KiB at a time, checking ``timeout`` and ``cancelled`` (the client hung up) between
  chunks;
- big images are downscaled in their own mode before any conversion (so 16-bit, float, alpha
  and CMYK images never get a second full-size copy), EXIF orientation applied, odd modes
  converted to RGB; coordinates are mapped back with ``scale``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import ApiError

log = logging.getLogger(__name__)

ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"})
_OPEN_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # Pillow's JPEG plugin also answers MPO
DECODE_CHUNK = 16 * 1024  # bytes fed to the decoder between two budget checks
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_JPEG_SCANS = 100
DEFAULT_TIMEOUT = 5.0
BAND_PIXELS = 1 << 20  # pixels converted at a time when shrinking a big image

# Bytes per pixel Pillow stores for each mode (every multi-band mode uses 4).
_ONE_BYTE = frozenset({"1", "L", "P"})
_TWO_BYTES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# Modes resized after a full-size conversion (their own resize is nearest-neighbour only).
_CONVERT_FIRST = {"1": "L", "P": "RGBA"}
# EXIF orientation -> the transpose that shows the image upright
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB working image, longer side <= max_side
    width: int  # size of the original (after EXIF rotation)
    height: int
    scale: float  # original pixels per working pixel (>= 1)
    sha256: str  # of the uploaded bytes


class _Abandoned(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


class _GuardedBytes(io.BytesIO):
    """The upload as a file whose every read checks the time budget and the client."""

    def __init__(self, data: bytes, deadline: float, timeout: float, cancelled: Callable[[], bool] | None) -> None:
        super().__init__(data)
        self.deadline = deadline
        self.timeout = timeout
        self.cancelled = cancelled

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise _Abandoned(
                ApiError(422, "image_too_complex", f"decoding the image took longer than {self.timeout:g} s (FEWFACE_DECODE_TIMEOUT)")
            )
        if self.cancelled is not None and self.cancelled():
            log.info("the client hung up: image decoding abandoned")
            raise _Abandoned(ApiError(400, "client_disconnected", "the client closed the connection; the request was abandoned"))
        return super().read(size)


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    max_side: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS,
    timeout: float = DEFAULT_TIMEOUT,
    cancelled: Callable[[], bool] | None = None,
) -> DecodedImage:
    if not data:
        raise ApiError(400, "missing_image", "the image is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    source = _GuardedBytes(data, time.monotonic() + timeout, timeout, cancelled)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source, formats=_OPEN_FORMATS)
            if img.format not in ALLOWED_FORMATS:
                raise ApiError(422, "invalid_image", f"unsupported image format {img.format!r}")
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ApiError(422, "invalid_image", "the image has no pixels")
            if width * height > max_pixels:
                raise ApiError(
                    422,
                    "image_too_large",
                    f"image is {width}x{height} pixels; the limit is {max_pixels} pixels (FEWFACE_MAX_IMAGE_PIXELS)",
                )
            img.seek(0)  # first frame of animated / multi-frame images
            scans = data.count(b"\xff\xda") if img.format in ("JPEG", "MPO") else 0  # SOS markers (an upper bound)
            if scans > max_jpeg_scans:
                raise ApiError(
                    422, "image_too_complex", f"the JPEG has {scans} scans; the limit is {max_jpeg_scans} (FEWFACE_MAX_JPEG_SCANS)"
                )
            if img.format in ("JPEG", "MPO") and max(width, height) > 2 * max_side:
                # decode big JPEGs at 1/2, 1/4 or 1/8 scale (DCT scaling): a fraction of the memory and time
                shrink = max(width, height) / max_side
                img.draft(img.mode, (max(1, int(width / shrink)), max(1, int(height / shrink))))
            cost = decode_cost(img, len(data), scans, (width, height))
            if cost > max_bytes:
                raise ApiError(
                    422,
                    "image_too_complex",
                    f"decoding the image would take about {cost >> 20} MiB; the budget is {max_bytes >> 20} MiB (FEWFACE_MAX_DECODE_BYTES)",
                )
            img.decodermaxblock = DECODE_CHUNK
            img.load()
            orientation = _orientation(img)  # after load(): a PNG's eXIf chunk may follow its pixels
            rgb, width, height, scale = _working_image(img, width, height, orientation, max_side)
    except ApiError:
        raise
    except _Abandoned as exc:
        raise exc.error from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(
            422, "image_too_large", f"image declares too many pixels; the limit is {max_pixels} (FEWFACE_MAX_IMAGE_PIXELS)"
        ) from None
    except UnidentifiedImageError:
        raise ApiError(422, "invalid_image", "the data is not a supported image (JPEG, PNG, GIF, BMP, WebP, TIFF)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError) as exc:
        raise ApiError(422, "invalid_image", f"the image could not be decoded: {exc}") from None
    return DecodedImage(image=rgb, width=width, height=height, scale=scale, sha256=digest)


# -- budgets ---------------------------------------------------------------------------------
def bytes_per_pixel(mode: str) -> int:
    return 1 if mode in _ONE_BYTE else 2 if mode in _TWO_BYTES else 4


def decode_cost(img: Image.Image, data_size: int, scans: int, header_size: tuple[int, int]) -> int:
    """Bytes the decode and the conversion to a working image will hold at their peak, from the
    header alone: the decoded image (at its drafted size for JPEGs), the decoder's own buffers,
    and a full-size conversion copy where one is needed."""
    width, height = img.size
    cost = width * height * bytes_per_pixel(img.mode)
    if img.mode in _CONVERT_FIRST:
        cost += width * height * bytes_per_pixel(_CONVERT_FIRST[img.mode])
    if img.format in ("JPEG", "MPO"):
        cost += _jpeg_buffers(img, scans, header_size)
    elif img.format == "TIFF":
        cost += _tiff_buffers(img, data_size)
    elif img.format == "WEBP":
        cost += width * height * 4  # libwebp decodes into its own buffer, then Pillow copies it
    return cost


def _jpeg_buffers(img: Image.Image, scans: int, header_size: tuple[int, int]) -> int:
    """A progressive (or multi-scan) JPEG keeps every DCT coefficient of the full-size image
    (2 bytes each, whatever the draft scale) until the last scan is read."""
    if not (img.info.get("progressive") or scans > 1):
        return 0
    layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * 3
    width, height = header_size
    h_max = max(h for _, h, _, _ in layers) or 1
    v_max = max(v for _, _, v, _ in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        blocks_x = math.ceil(math.ceil(width * h / h_max) / 8)
        blocks_y = math.ceil(math.ceil(height * v / v_max) / 8)
        total += blocks_x * blocks_y * 64 * 2
    return total


def _tiff_buffers(img: Image.Image, data_size: int) -> int:
    """libtiff decodes a whole tile or strip into one buffer: a 100 x 100 image may declare one
    65,536 x 65,536 tile. Byte counts beyond the file are truncation, refused here."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return 0
    width, height = img.size
    bits = tags.get(258, (8,))
    bits_max = max(bits) if isinstance(bits, tuple) and bits else int(bits) if isinstance(bits, int) else 8
    samples = int(tags.get(277, 1) or 1)
    pixel = max(4, math.ceil(samples * bits_max / 8))  # the RGBA path (JPEG / YCbCr TIFFs) uses 4 bytes
    if 322 in tags or 323 in tags:
        block = int(tags.get(322, 0) or 0) * int(tags.get(323, 0) or 0)
    else:
        rows = int(tags.get(278, height) or height)
        block = width * min(max(rows, 1), height)
    counts = tags.get(325, tags.get(279, ()))
    counts = counts if isinstance(counts, tuple) else (counts,)
    if any(isinstance(c, int) and c > data_size for c in counts):
        raise ApiError(422, "invalid_image", "the TIFF declares strips or tiles larger than the file (truncated)")
    if tags.get(259, 1) == 1:
        return 0  # uncompressed: Pillow copies the rows straight into the image, no libtiff buffer
    return block * pixel


# -- conversion ------------------------------------------------------------------------------
def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION else 1


def _working_image(img: Image.Image, width: int, height: int, orientation: int, max_side: int) -> tuple[Image.Image, int, int, float]:
    """(RGB working image, original width, original height, scale), both sizes upright."""
    if orientation in (5, 6, 7, 8):  # turned by 90 degrees
        width, height = height, width
    scale = max(width, height) / max_side if max(width, height) > max_side else 1.0
    if img.mode in _CONVERT_FIRST:
        img = img.convert(_CONVERT_FIRST[img.mode] if img.mode == "1" or "transparency" in img.info else "RGB")
    top = _top(img)
    target = (max(1, round(width / scale)), max(1, round(height / scale)))
    if orientation in (5, 6, 7, 8):
        target = (target[1], target[0])  # in the stored (not yet turned) orientation
    factor = min(img.width // target[0], img.height // target[1]) // 2
    rgb = _reduce_in_bands(img, factor, top) if factor >= 2 else _to_rgb(img, top)
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BILINEAR)
    if orientation != 1:
        rgb = rgb.transpose(_ORIENTATION[orientation])
    return rgb, width, height, scale


def _reduce_in_bands(img: Image.Image, factor: int, top: float) -> Image.Image:
    """``img`` shrunk ``factor`` times and converted to RGB a band of rows at a time, so no
    full-size copy (16-bit to 8-bit, alpha composited, CMYK to RGB...) is ever made."""
    width, height = img.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = factor * max(1, BAND_PIXELS // (width * factor))
    for y in range(0, height, rows):
        band = _to_rgb(img.crop((0, y, width, min(height, y + rows))), top)
        out.paste(band.reduce(factor), (0, y // factor))
    return out


def _top(img: Image.Image) -> float:
    """The white level of 16-bit, integer and float gray images (255 for 8-bit data in them)."""
    if img.mode.startswith("I;16"):
        return 65535.0
    if img.mode in ("I", "F"):
        _low, high = img.getextrema()
        return 65535.0 if float(high) > 255 else 255.0
    return 255.0


def _to_rgb(img: Image.Image, top: float) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        gray = np.clip(arr * np.float32(255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")

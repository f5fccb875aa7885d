"""Bytes -> RGB PIL image, safely: format allow-list, pixel limit before decoding (decompression
bombs), truncated files refused, EXIF orientation applied, odd modes converted, big images
downscaled for detection (coordinates are mapped back with ``scale``)."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ApiError

ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"})


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB working image, longer side <= max_side
    width: int  # size of the original (after EXIF rotation)
    height: int
    scale: float  # original pixels per working pixel (>= 1)
    sha256: str  # of the uploaded bytes


def decode_image(data: bytes, *, max_pixels: int, max_side: int) -> DecodedImage:
    if not data:
        raise ApiError(400, "missing_image", "the image is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
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
            if img.format in ("JPEG", "MPO") and max(width, height) > 2 * max_side:
                # decode big JPEGs at 1/2, 1/4 or 1/8 scale (DCT scaling): a fraction of the memory and time
                shrink = max(width, height) / max_side
                img.draft(img.mode, (max(1, int(width / shrink)), max(1, int(height / shrink))))
            drafted = img.size
            img.load()
            img = _orient(img)
            rgb = _to_rgb(img)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(
            422, "image_too_large", f"image declares too many pixels; the limit is {max_pixels} (FEWFACE_MAX_IMAGE_PIXELS)"
        ) from None
    except UnidentifiedImageError:
        raise ApiError(422, "invalid_image", "the data is not a supported image (JPEG, PNG, GIF, BMP, WebP, TIFF)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise ApiError(422, "invalid_image", f"the image could not be decoded: {exc}") from None
    if rgb.size != drafted:  # EXIF rotated by 90 degrees
        width, height = height, width
    scale = 1.0
    if max(width, height) > max_side:
        scale = max(width, height) / max_side
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return DecodedImage(image=rgb, width=width, height=height, scale=scale, sha256=digest)


def _orient(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")

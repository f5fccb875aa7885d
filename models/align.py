"""Face crops for the embedders: landmark similarity alignment and box crops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

Points = Sequence[tuple[float, float]]


def similarity_transform(src: Points, dst: Points) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's method; returns a 2x3 matrix ``M`` with ``dst ~= M @ [x, y, 1]``.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or len(s) < 2:
        raise ValueError("similarity_transform needs two equal-length lists of at least 2 points")
    s_mean, d_mean = s.mean(axis=0), d.mean(axis=0)
    s_c, d_c = s - s_mean, d - d_mean
    cov = d_c.T @ s_c / len(s)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var = (s_c**2).sum() / len(s)
    scale = float(np.trace(np.diag(sig) @ sign) / var) if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = d_mean - scale * rot @ s_mean
    return m


def warp_to_template(image: Image.Image, landmarks: Points, template: Points, size: int) -> Image.Image:
    """Crop a ``size`` x ``size`` chip whose landmarks land on ``template`` (bilinear)."""
    m = similarity_transform(landmarks, template)
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    return image.transform((size, size), Image.Transform.AFFINE, tuple(inv.ravel()), resample=Image.Resampling.BILINEAR)


def crop_box(image: Image.Image, box: tuple[float, float, float, float], size: int, margin: float = 0.0) -> Image.Image:
    """Square-resize the box (plus ``margin`` pixels at ``size`` scale), as facenet-pytorch crops faces."""
    x1, y1, x2, y2 = box
    pad_x = margin * (x2 - x1) / (size - margin) / 2 if margin else 0.0
    pad_y = margin * (y2 - y1) / (size - margin) / 2 if margin else 0.0
    w, h = image.size
    left, top = int(max(x1 - pad_x, 0)), int(max(y1 - pad_y, 0))
    right, bottom = int(min(x2 + pad_x, w)), int(min(y2 + pad_y, h))
    if right <= left or bottom <= top:
        raise ValueError("face box lies outside the image")
    return image.crop((left, top, right, bottom)).resize((size, size), Image.Resampling.BILINEAR)


# ---------------------------------------------------------------------------------------
# dlib's face chips (dlib/image_transforms/interpolation.h: get_face_chip_details,
# extract_image_chip), the crop dlib's face ResNet was trained on.

# Where get_face_chip_details puts the five parts of dlib's 5-point shape predictor (image-right
# eye outer and inner corner, image-left eye outer and inner corner, base of the nose), as
# fractions of an unpadded chip.
DLIB_CHIP_PARTS_5: tuple[tuple[float, float], ...] = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)

# The padding of the chips dlib's face ResNet takes (dlib.get_face_chip(img, shape, 150, 0.25)).
DLIB_CHIP_PADDING = 0.25

Rect = tuple[float, float, float, float]  # dlib drectangle: left, top, right, bottom (inclusive)


@dataclass(frozen=True)
class ChipDetails:
    """dlib's ``chip_details``: the rectangle of the image that becomes the chip, rotated by
    ``angle`` (radians) about its centre, sampled onto ``rows`` x ``cols`` pixels."""

    rect: Rect
    angle: float
    rows: int
    cols: int


def face_chip_details(parts: Points, size: int = 150, padding: float = 0.25) -> ChipDetails:
    """dlib's ``get_face_chip_details`` for the five parts of its 5-point shape predictor."""
    if len(parts) != 5:
        raise ValueError("face_chip_details needs the 5 parts of dlib's 5-point shape predictor")
    chip_points = [((padding + x) / (2 * padding + 1) * size, (padding + y) / (2 * padding + 1) * size) for x, y in DLIB_CHIP_PARTS_5]
    m = similarity_transform(chip_points, parts)
    angle = math.atan2(m[1, 0], m[0, 0])
    scale = math.hypot(m[0, 0], m[1, 0])
    cx, cy = m @ np.array([size / 2, size / 2, 1.0])
    # dlib's centered_drect: a drectangle's width counts both end pixels.
    half_w, half_h = (size * scale - 1) / 2, (size * scale - 1) / 2
    return ChipDetails(rect=(cx - half_w, cy - half_h, cx + half_w, cy + half_h), angle=angle, rows=size, cols=size)


def extract_image_chip(image: np.ndarray, details: ChipDetails) -> np.ndarray:
    """dlib's ``extract_image_chip`` (bilinear) of an (H, W, C) or (H, W) uint8 array.

    As dlib does, a chip much smaller than its rectangle is sampled from a level of an image
    pyramid (``pyramid_down<2>``) of the region around the rectangle rather than from the image
    itself; pixels that fall outside the image are black.
    """
    size = details.rows * details.cols
    height, width = image.shape[:2]
    rect = details.rect
    grow = 2.0
    smaller = _rect_down(rect)
    depth = 0
    while _area(smaller) > size:
        smaller = _rect_down(smaller)
        depth += 1
        grow = grow * 2 + 2
    corners = _rotated_corners(rect, details.angle)
    xs, ys = corners[:, 0], corners[:, 1]
    # The region the pyramid is built from: the rotated rectangle grown by a border, clipped to
    # the image, rounded to whole pixels (dlib's drectangle -> rectangle conversion).
    region = [
        _round(max(xs.min() - grow, 0.0)),
        _round(max(ys.min() - grow, 0.0)),
        _round(min(xs.max() + grow, width - 1.0)),
        _round(min(ys.max() + grow, height - 1.0)),
    ]
    if region[2] < region[0] or region[3] < region[1]:
        return np.zeros((details.rows, details.cols, *image.shape[2:]), dtype=np.uint8)
    source = image[region[1] : region[3] + 1, region[0] : region[2] + 1]
    local = (rect[0] - region[0], rect[1] - region[1], rect[2] - region[0], rect[3] - region[1])
    for _ in range(depth):
        source = pyramid_down_2(source)
        local = _rect_down(local)
    # Chip pixel (c, r) -> source point: (0, 0), (cols - 1, 0) and (0, rows - 1) go to the
    # rotated top-left, top-right and bottom-left corners of the rectangle.
    tl, tr, bl = _rotated_corners(local, details.angle)[:3]
    c = np.arange(details.cols, dtype=np.float64) / max(details.cols - 1, 1)
    r = np.arange(details.rows, dtype=np.float64) / max(details.rows - 1, 1)
    x = tl[0] + c[None, :] * (tr[0] - tl[0]) + r[:, None] * (bl[0] - tl[0])
    y = tl[1] + c[None, :] * (tr[1] - tl[1]) + r[:, None] * (bl[1] - tl[1])
    return _bilinear(source, x, y)


def pyramid_down_2(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>``: a [1 4 6 4 1]^2 / 256 filter (integer, rounding down) keeping
    every other row and column; output pixel (i, j) is centred on input pixel (2i + 2, 2j + 2)."""
    height, width = image.shape[:2]
    out_h, out_w = (height - 3) // 2, (width - 3) // 2
    if height <= 8 or width <= 8:
        return np.zeros((0, 0, *image.shape[2:]), dtype=np.uint8)
    # Down the columns first (whole rows at a time, contiguous), then along the rows of the half
    # as many rows that are left; integer sums, so the order changes nothing.
    end = 2 * out_h
    cols = np.add(image[0:end:2], image[4 : end + 4 : 2], dtype=np.uint16)
    cols += 4 * np.add(image[1 : end + 1 : 2], image[3 : end + 3 : 2], dtype=np.uint16)
    cols += 6 * image[2 : end + 2 : 2].astype(np.uint16)
    end = 2 * out_w
    both = cols[:, 0:end:2] + cols[:, 4 : end + 4 : 2]
    both += 4 * (cols[:, 1 : end + 1 : 2] + cols[:, 3 : end + 3 : 2])
    both += 6 * cols[:, 2 : end + 2 : 2]
    return (both >> 8).astype(np.uint8)


def _rect_down(rect: Rect) -> Rect:
    """pyramid_down<2>'s ``rect_down``: where a rectangle lands one pyramid level down."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _area(rect: Rect) -> float:
    left, top, right, bottom = rect
    return 0.0 if left > right or top > bottom else (right - left + 1) * (bottom - top + 1)


def _round(v: float) -> int:
    return math.floor(v + 0.5)


def _rotated_corners(rect: Rect, angle: float) -> np.ndarray:
    """Top-left, top-right, bottom-left, bottom-right corners rotated by ``angle`` about the centre."""
    left, top, right, bottom = rect
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    corners = np.array([(left, top), (right, top), (left, bottom), (right, bottom)], dtype=np.float64) - centre
    cos, sin = math.cos(angle), math.sin(angle)
    return corners @ np.array([[cos, sin], [-sin, cos]]) + centre


def _bilinear(source: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dlib's ``interpolate_bilinear`` at every (x, y); black where the 2x2 neighbourhood leaves the image."""
    height, width = source.shape[:2]
    left, top = np.floor(x), np.floor(y)
    fx, fy = x - left, y - top
    left, top = left.astype(np.int64), top.astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    left, top = np.where(inside, left, 0), np.where(inside, top, 0)
    # Gather the four neighbours through flat indices (inside pixels always have all four).
    flat = source.reshape(height * width, -1)
    top_left = (top * width + left).ravel()
    if source.ndim == 3:
        fx, fy, inside = fx[..., None], fy[..., None], inside[..., None]
    shape = (*x.shape, flat.shape[1]) if source.ndim == 3 else x.shape

    def at(offset: int) -> np.ndarray:
        return np.take(flat, top_left + offset, axis=0, mode="clip").reshape(shape).astype(np.float64)

    tl, tr, bl, br = at(0), at(1), at(width), at(width + 1)
    value = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    # dlib assigns the double to an unsigned char by truncation.
    return np.where(inside, value, 0).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Where dlib's HOG face detector would put its box, from MTCNN's landmarks and box.


def box_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (N, 2) and scale (N,) of the frame the box mapping works in: the mean of the five
    landmarks (N, 5, 2) and their RMS distance from it."""
    centre = landmarks.mean(axis=1)
    scale = np.sqrt(((landmarks - centre[:, None, :]) ** 2).sum(axis=2).mean(axis=1))
    return centre, scale


def box_features(landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 15): the five landmarks (N, 5, 2) and the box (N, 4) in their frame, and a 1."""
    centre, scale = box_frame(landmarks)
    points = (landmarks - centre[:, None, :]) / scale[:, None, None]
    corners = (boxes.reshape(-1, 2, 2) - centre[:, None, :]) / scale[:, None, None]
    return np.hstack([points.reshape(-1, 10), corners.reshape(-1, 4), np.ones((len(landmarks), 1))])


# dlib's box (left, top, right, bottom) = centre + scale * (box_features(landmarks, box) @ this),
# in the frame of box_frame(landmarks) (centre and RMS spread of MTCNN's five landmarks). Fitted
# by tools/fit_dlib_box.py (least squares) on the lfw-dev photos of every other person whose name
# starts with A-M where dlib.get_frontal_face_detector() (upsampled once) and MTCNN each find the
# face (1,245 photos). On 570 held-out photos (N-Z) the box corners are off by a median 2.9 px
# (2.7 % of the box width; p95 10.5 px), and dlib's shape predictor from this box puts every
# landmark within 1 px of where it puts it from dlib's own box on 95 % of them.
DLIB_BOX_FROM_MTCNN: tuple[tuple[float, float, float, float], ...] = (
    (0.038375, -0.871947, 0.412706, -0.429301),
    (0.215357, -0.226779, 0.138109, -0.280733),
    (-0.229083, 0.768321, -0.309310, 0.629063),
    (-0.044698, -0.469322, 0.322790, -0.032089),
    (0.004141, -0.038004, -0.005052, -0.074167),
    (0.021692, 0.120910, -0.062913, 0.051461),
    (0.121128, -0.266489, 0.153825, -0.159537),
    (-0.345529, 0.316361, -0.261326, 0.358997),
    (0.065440, 0.408118, -0.252170, 0.033941),
    (0.153178, 0.258831, -0.136660, -0.097636),
    (0.419971, 0.284559, -0.176199, -0.308188),
    (0.063559, 0.263500, -0.071641, 0.136580),
    (-0.222809, -0.297802, 0.325967, 0.233706),
    (-0.145200, 0.117849, -0.003440, 0.260052),
    (0.013299, -3.406399, 2.309438, -0.722631),
)


def dlib_box_from_mtcnn(landmarks: Points, box: tuple[float, float, float, float]) -> Rect:
    """Where dlib's HOG frontal face detector would put its box (left, top, right, bottom, dlib's
    inclusive convention) for a face MTCNN found with these five landmarks and this box."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(1, 5, 2)
    centre, scale = box_frame(points)
    unit = box_features(points, np.asarray(box, dtype=np.float64).reshape(1, 4)) @ np.asarray(DLIB_BOX_FROM_MTCNN)
    left, top, right, bottom = (unit.reshape(2, 2) * scale[0] + centre[0]).ravel()
    return (float(left), float(top), float(right), float(bottom))

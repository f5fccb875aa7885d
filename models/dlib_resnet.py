"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The weights are read straight from dlib's binary serialisation format, so dlib itself is
not needed at run time.  The network is the ``anet_type`` of dlib's
``examples/dnn_face_recognition_ex.cpp``::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2,
        input_rgb_image_sized<150>>>>>>>>>>>>>

where every ``alevelN`` is a stack of residual units
``relu(affine(con3x3(relu(affine(con3x3(x))))) + shortcut(x))``.  The first unit of
levels 3..0 is a ``residual_down`` unit: its first convolution has stride 2 and the
shortcut is ``avg_pool<2,2,2,2>(x)``.

Facts about dlib's format and semantics that this module relies on:

* Integers use a variable-length encoding: one control byte (low nibble = number of
  payload bytes, bit 7 = negative) followed by the little-endian magnitude.
* Scalar floats are two such integers, an int64 mantissa and an int16 exponent, with
  value ``mantissa * 2**exponent``; exponents 32000/32001/32002 mean +inf/-inf/NaN.
* Strings are an integer length followed by the raw bytes; bools are the ASCII bytes
  ``'0'``/``'1'``.
* ``resizable_tensor`` (version 2) is ``n, k, nr, nc`` followed by ``n*k*nr*nc``
  little-endian IEEE float32 values (version 1 used the slow scalar float encoding and
  a different dimension order; it is not supported because this model does not use it).
* A network is written from the loss layer inwards: ``add_loss_layer`` writes its
  version and the loss details first, then every wrapper writes only its version on
  the way down, the input layer is written, and the layer details follow on the way
  back up, i.e. in input-to-output order.  Tag and skip layers contribute nothing but
  their version number, so the residual wiring comes from the architecture above, not
  from the file.
* The inference net stores ``affine_`` layers (batch norm already folded into a
  per-channel ``gamma * x + beta``), which we fold further into the preceding
  convolution.
* Convolutions and pools with stride 2 have no padding in this net; the two branches
  of a ``residual_down`` unit can therefore differ in spatial size (e.g. 3x3 vs 4x4),
  and dlib's ``add_prev`` then zero-extends the smaller tensor (channels too) to the
  larger one before adding.  :func:`_dlib_add` reproduces that.
* The input layer maps a pixel ``p`` of channel ``c`` to ``(p - avg[c]) / 256``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

DAT_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
DESCRIPTOR_DIM = 128

# Where facenet_pytorch.MTCNN's five landmarks (left eye, right eye, nose, left mouth
# corner, right mouth corner; x, y in pixels) fall on average in a 150x150 chip made by
# dlib.get_face_chip(img, shape_5pt, size=150, padding=0.25).  Produced by
# tools/derive_dlib_template.py: dlib chips (HOG detector + 5-point shape predictor) of
# all 62 shared/faces/deepface/img*.jpg photos, MTCNN(keep_all=True) run on each chip
# set on a 75 px grey border (most probable face), landmark coordinates averaged; the
# spread across photos is ~1 px for the eyes, 3-4 px for nose and mouth.  A chip made
# by a similarity transform from a face's MTCNN landmarks (on the original photo) onto
# these points (PIL affine, bilinear) gives a descriptor with cosine similarity
# 0.986-0.999 (mean 0.996; Euclidean distance mean 0.14) to that of dlib's own chip.
MTCNN_TEMPLATE_150: tuple[tuple[float, float], ...] = (
    (47.23, 45.32),  # left eye
    (102.07, 45.13),  # right eye
    (74.11, 77.38),  # nose
    (49.75, 100.95),  # mouth left
    (100.17, 100.67),  # mouth right
)

_FLOAT_IS_INF = 32000
_FLOAT_IS_NINF = 32001
_FLOAT_IS_NAN = 32002


def default_dat_path() -> pathlib.Path:
    """Return the path of the model file shipped by the ``face_recognition_models`` package."""
    return face_recognition_models_file(DAT_FILENAME)


def face_recognition_models_file(filename: str) -> pathlib.Path:
    """Return the path of ``filename`` in the ``face_recognition_models`` package's models folder.

    The package is located without being imported (its ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer ship).
    """
    fix = "install it with `pip install face_recognition_models`"
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Package face_recognition_models is not installed; {fix}.")
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location) / "models" / filename
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{filename} not found in the face_recognition_models package; reinstall it "
        f"with `pip install --force-reinstall face_recognition_models`."
    )


# ---------------------------------------------------------------------------------------
# Reading dlib's serialisation format


class DlibFormatError(ValueError):
    """The file does not contain the network this module knows how to read."""


class _Reader:
    """Sequential reader for dlib's ``serialize()`` output."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise DlibFormatError(f"unexpected end of file at byte {self._pos}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def peek(self, n: int) -> bytes:
        return self._data[self._pos : self._pos + n]

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte {control:#04x} at {self._pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if exponent == _FLOAT_IS_INF:
            return float("inf")
        if exponent == _FLOAT_IS_NINF:
            return float("-inf")
        if exponent == _FLOAT_IS_NAN:
            return float("nan")
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {byte!r} at {self._pos - 1}")
        return byte == b"1"

    def string(self) -> str:
        return self._take(self.int()).decode("ascii")

    def expect_string(self, *allowed: str) -> str:
        value = self.string()
        if value not in allowed:
            raise DlibFormatError(f"expected one of {allowed}, found {value!r}")
        return value

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: returned as a float32 array of shape (n, k, nr, nc)."""
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"unsupported dlib tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4")
        return values.astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: only its shape (n, k, nr, nc) is stored."""
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"unsupported dlib alias_tensor version {version}")
        n, k, nr, nc = (self.int() for _ in range(4))
        return n, k, nr, nc


@dataclass
class _Layer:
    """One computational layer, in input-to-output order."""

    kind: str
    params: dict[str, object] = field(default_factory=dict)


def _read_input_layer(reader: _Reader) -> tuple[float, float, float]:
    reader.expect_string("input_rgb_image_sized")
    avg = (reader.float(), reader.float(), reader.float())
    nr, nc = reader.int(), reader.int()
    if (nr, nc) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} input layer, got {nr}x{nc}")
    return avg


def _read_con(reader: _Reader, version: str) -> _Layer:
    params = reader.tensor().reshape(-1)
    num_filters = reader.int()
    nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
    filters_shape = reader.alias_tensor()
    biases_shape = reader.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.float()
    use_bias = reader.bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and reader.bool():
        raise DlibFormatError("con_ with a fused relu is not supported")
    n_weights = int(np.prod(filters_shape))
    weight = params[:n_weights].reshape(filters_shape)
    if weight.shape[0] != num_filters or weight.shape[2:] != (nr, nc):
        raise DlibFormatError(f"inconsistent con_ filter shape {weight.shape}")
    bias = params[n_weights : n_weights + num_filters] if use_bias else None
    if use_bias and int(np.prod(biases_shape)) != num_filters:
        raise DlibFormatError(f"inconsistent con_ bias shape {biases_shape}")
    return _Layer(
        "con",
        {"weight": weight, "bias": bias, "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)},
    )


def _read_affine(reader: _Reader) -> _Layer:
    params = reader.tensor().reshape(-1)
    gamma_shape = reader.alias_tensor()
    reader.alias_tensor()  # beta has the same shape
    mode = reader.int()
    if mode != 0:  # dlib::CONV_MODE
        raise DlibFormatError(f"expected a per-channel (CONV_MODE) affine_, got mode {mode}")
    n = int(np.prod(gamma_shape))
    return _Layer("affine", {"gamma": params[:n], "beta": params[n : 2 * n]})


def _read_pool(reader: _Reader, kind: str) -> _Layer:
    nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
    return _Layer(
        kind,
        {"window": (nr, nc), "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)},
    )


def _read_fc(reader: _Reader) -> _Layer:
    num_outputs = reader.int()
    num_inputs = reader.int()
    params = reader.tensor().reshape(-1)
    weights_shape = reader.alias_tensor()
    reader.alias_tensor()  # biases
    bias_mode = reader.int()  # dlib::FC_HAS_BIAS == 0, FC_NO_BIAS == 1
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.float()
    if weights_shape[:2] != (num_inputs, num_outputs):
        raise DlibFormatError(f"inconsistent fc_ weight shape {weights_shape}")
    # dlib computes output = input @ W with W stored as (num_inputs, num_outputs).
    weight = params[: num_inputs * num_outputs].reshape(num_inputs, num_outputs)
    bias = params[num_inputs * num_outputs :][:num_outputs] if bias_mode == 0 else None
    return _Layer("fc", {"weight": weight, "bias": bias})


def _read_layer_details(reader: _Reader) -> _Layer:
    name = reader.string()
    if name in ("con_4", "con_5", "con_6"):
        return _read_con(reader, name)
    if name == "affine_":
        return _read_affine(reader)
    if name == "relu_":
        return _Layer("relu")
    if name == "add_prev_":
        return _Layer("add_prev")
    if name == "max_pool_2":
        return _read_pool(reader, "max_pool")
    if name == "avg_pool_2":
        return _read_pool(reader, "avg_pool")
    if name == "fc_2":
        return _read_fc(reader)
    raise DlibFormatError(f"unsupported dlib layer {name!r}")


def _skip_add_layer_state(reader: _Reader, version: int, bottom: bool) -> None:
    """Skip what ``add_layer`` writes after its details: three flags, three scratch tensors."""
    for _ in range(3):  # setup called, gradient input stale, output and gradient disabled
        reader.bool()
    for _ in range(3):  # x_grad, cached_output, params_grad (grad_final above the input)
        reader.tensor()
    if bottom and version == 3:
        reader.int()  # _sample_expansion_factor


def _parse_dat(data: bytes) -> tuple[tuple[float, float, float], list[_Layer]]:
    """Return the input layer's channel means and the layers in input-to-output order."""
    reader = _Reader(data)
    loss_version = reader.int()
    if loss_version != 1:
        raise DlibFormatError(f"unexpected add_loss_layer version {loss_version}")
    reader.expect_string("loss_metric_", "loss_metric_2")
    reader.float()  # margin
    reader.float()  # distance threshold

    # On the way down every wrapper writes only its version: 2 for add_layer, 1 for
    # tag/skip layers, 2 or 3 for the add_layer sitting on the input layer.  The input
    # layer's name string (whose length, 21, is written as 01 15) ends the run.
    wrapper_versions: list[int] = []
    while reader.peek(2) in (b"\x01\x01", b"\x01\x02", b"\x01\x03"):
        wrapper_versions.append(reader.int())
    if not wrapper_versions or wrapper_versions[-1] not in (2, 3):
        raise DlibFormatError(f"unsupported layer stack versions {wrapper_versions[-3:]}")
    means = _read_input_layer(reader)

    # On the way back up, each add_layer writes its details and state; tag and skip
    # layers (version 1) write nothing more.
    layers = []
    for depth, version in enumerate(reversed(wrapper_versions)):
        bottom = depth == 0
        if not bottom and version == 1:
            continue
        if not bottom and version != 2:
            raise DlibFormatError(f"unsupported add_layer version {version}")
        layers.append(_read_layer_details(reader))
        _skip_add_layer_state(reader, version, bottom)
    if not reader.at_end:
        raise DlibFormatError("unread bytes at the end of the file")
    return means, layers


# ---------------------------------------------------------------------------------------
# The PyTorch network


def _conv_folded(con: _Layer, affine: _Layer) -> nn.Conv2d:
    """A ``Conv2d`` computing ``affine(con(x))``, with the affine folded into the conv."""
    weight = np.asarray(con.params["weight"], dtype=np.float64)
    bias = con.params["bias"]
    gamma = np.asarray(affine.params["gamma"], dtype=np.float64)
    beta = np.asarray(affine.params["beta"], dtype=np.float64)
    if gamma.shape[0] != weight.shape[0]:
        raise DlibFormatError("affine_ channel count does not match the preceding con_")
    bias = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    conv = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        kernel_size=weight.shape[2:],
        stride=con.params["stride"],
        padding=con.params["padding"],
        bias=True,
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight * gamma[:, None, None, None]))
        conv.bias.copy_(torch.from_numpy(bias * gamma + beta))
    return conv


def _dlib_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: zero-extend both tensors to the larger (k, nr, nc), then add."""
    if a.shape == b.shape:
        return a + b
    channels = max(a.shape[1], b.shape[1])
    rows = max(a.shape[2], b.shape[2])
    cols = max(a.shape[3], b.shape[3])

    def extend(t: torch.Tensor) -> torch.Tensor:
        pad = (0, cols - t.shape[3], 0, rows - t.shape[2], 0, channels - t.shape[1])
        return F.pad(t, pad)

    return extend(a) + extend(b)


def _avg_pool(pool: _Layer) -> nn.Module:
    window = pool.params["window"]
    if window == (0, 0):  # avg_pool_everything
        return nn.AdaptiveAvgPool2d(1)
    # The pools of this net are unpadded; were they padded, dlib (like cuDNN's
    # EXCLUDE_PADDING mode it uses) would average over in-image cells only.
    return nn.AvgPool2d(window, stride=pool.params["stride"], padding=pool.params["padding"], count_include_pad=False)


class _ResidualUnit(nn.Module):
    """``relu(affine(con(relu(affine(con(x))))) + shortcut(x))`` with dlib's add."""

    def __init__(self, conv_a: nn.Conv2d, conv_b: nn.Conv2d, shortcut: nn.Module) -> None:
        super().__init__()
        self.conv_a = conv_a
        self.conv_b = conv_b
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_b(F.relu(self.conv_a(x)))
        return F.relu(_dlib_add(y, self.shortcut(x)))


class DlibFaceResNet(nn.Module):
    """dlib's 29-conv face-recognition ResNet.

    ``forward`` takes float32 (N, 3, 150, 150) RGB pixel values in [0, 255] and returns
    the raw (not L2-normalised) (N, 128) descriptor, as dlib's
    ``face_recognition_model_v1.compute_face_descriptor`` does for a 150x150 chip.
    """

    def __init__(
        self,
        channel_means: tuple[float, float, float],
        stem: nn.Sequential,
        units: list[_ResidualUnit],
        pool: nn.Module,
        fc: nn.Linear,
    ) -> None:
        super().__init__()
        self.register_buffer("channel_means", torch.tensor(channel_means).view(1, 3, 1, 1))
        self.stem = stem
        self.units = nn.Sequential(*units)
        self.pool = pool
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected (N, 3, {CHIP_SIZE}, {CHIP_SIZE}) input, got {tuple(x.shape)}")
        x = (x.to(self.channel_means.dtype) - self.channel_means) / 256.0
        x = self.units(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _build(means: tuple[float, float, float], layers: list[_Layer]) -> DlibFaceResNet:
    kinds = [layer.kind for layer in layers]

    def expect(index: int, *pattern: str) -> None:
        if tuple(kinds[index : index + len(pattern)]) != pattern:
            raise DlibFormatError(f"unexpected layer sequence at {index}: {kinds[index : index + len(pattern)]}, expected {list(pattern)}")

    expect(0, "con", "affine", "relu", "max_pool")
    max_pool = layers[3].params
    stem = nn.Sequential(
        _conv_folded(layers[0], layers[1]),
        nn.ReLU(),
        # torch pads max pooling with -inf, i.e. padded cells are ignored, as in dlib.
        nn.MaxPool2d(max_pool["window"], stride=max_pool["stride"], padding=max_pool["padding"]),
    )

    units: list[_ResidualUnit] = []
    i = 4
    while kinds[i] == "con":
        expect(i, "con", "affine", "relu", "con", "affine")
        conv_a = _conv_folded(layers[i], layers[i + 1])
        conv_b = _conv_folded(layers[i + 3], layers[i + 4])
        i += 5
        shortcut: nn.Module = nn.Identity()
        if kinds[i] == "avg_pool":  # residual_down: add_prev2<avg_pool<skip1<...>>>
            shortcut = _avg_pool(layers[i])
            i += 1
        expect(i, "add_prev", "relu")
        i += 2
        units.append(_ResidualUnit(conv_a, conv_b, shortcut))

    expect(i, "avg_pool", "fc")
    if i + 2 != len(layers):
        raise DlibFormatError(f"unexpected trailing layers {kinds[i + 2 :]}")
    pool = _avg_pool(layers[i])
    fc_weight = np.asarray(layers[i + 1].params["weight"])
    fc_bias = layers[i + 1].params["bias"]
    fc = nn.Linear(fc_weight.shape[0], fc_weight.shape[1], bias=fc_bias is not None)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc_weight.T)))
        if fc_bias is not None:
            fc.bias.copy_(torch.from_numpy(np.asarray(fc_bias)))

    return DlibFaceResNet(means, stem, units, pool, fc)


def load_dlib_resnet(dat_path: str | os.PathLike[str] | None = None) -> torch.nn.Module:
    """Load dlib's face-recognition ResNet from its ``.dat`` file as an eval-mode module.

    ``dat_path`` defaults to the copy in the ``face_recognition_models`` package (see
    :func:`default_dat_path`).  The module maps float32 (N, 3, 150, 150) RGB pixels in
    [0, 255] to raw (N, 128) descriptors.
    """
    path = pathlib.Path(dat_path) if dat_path is not None else default_dat_path()
    started = time.perf_counter()
    means, layers = _parse_dat(path.read_bytes())
    model = _build(means, layers)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    logger.info(
        "Loaded dlib face ResNet from %s (%d layers, %d residual units) in %.2f s",
        path,
        len(layers),
        len(model.units),
        time.perf_counter() - started,
    )
    return model

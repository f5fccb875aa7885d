"""Registry of frozen face-embedding networks, chosen by model id.

Every embedder turns aligned face crops into L2-normalised float32 vectors. The model id
is recorded with every stored embedding so galleries built with different networks never mix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.align import DLIB_CHIP_PADDING, crop_box, dlib_box_from_mtcnn, extract_image_chip, face_chip_details, warp_to_template
from models.types import DetectedFace
from models.weights import FACENET_CHECKPOINTS, resolve_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderSpec:
    """What a model id stands for. ``default_threshold`` is the fixed cosine similarity at or above
    which two faces are called the same person where the pipeline has no measured score tables
    (models/score_model.py; with tables the service's rule is calibrated instead)."""

    model_id: str
    dim: int
    input_size: int
    default_threshold: float
    description: str
    alignments: tuple[str, ...]  # the face crops this model can take; the first is the default


def pipeline_id(spec: EmbedderSpec, *, flip: bool, alignment: str = "") -> str:
    """What makes two vectors of this model comparable: the crop and the test-time flip.
    Galleries record it; vectors from another pipeline are refused, never mixed."""
    return f"{alignment or spec.alignments[0]}{'+flip' if flip else ''}"


# An image and its faces -> one (3, S, S) float32 network input per face (on the CPU).
CropFn = Callable[[Image.Image, Sequence[DetectedFace]], list[np.ndarray]]


def per_face(crop: Callable[[Image.Image, DetectedFace], np.ndarray]) -> CropFn:
    """A ``CropFn`` from a crop of one face."""
    return lambda image, faces: [crop(image, face) for face in faces]


class Embedder:
    """A frozen network plus the crop it expects. ``crops`` runs on the CPU (all the faces of
    one image in one call, so the image is read once); ``embed`` runs a batch on ``device``
    and returns (N, dim) unit vectors.

    The network runs in channels_last (NHWC) memory format: on CPU, oneDNN then takes every
    convolution without reordering between layers. Measured on a 2-core x86 VM, the dlib
    ResNet went from 10.0 to 7.8 ms per face at batch 1 and from 5.5 to 3.9 at batch 16, the
    facenet InceptionResnetV1 from 75 to 60 and from 43 to 34 (docs/performance.md); results
    agree with NCHW within 1e-6.
    """

    def __init__(
        self,
        spec: EmbedderSpec,
        network: torch.nn.Module,
        crop_fn: CropFn,
        device: torch.device,
        *,
        half: bool = False,
        flip: bool = False,
        alignment: str = "",
    ) -> None:
        self.spec = spec
        self.device = device
        self.flip = bool(flip)
        self.alignment = alignment
        self.half = bool(half and device.type == "cuda")
        if device.type == "cuda" and not self.half:
            # PyTorch runs fp32 cuDNN convolutions as TF32 by default (10-bit mantissa), which
            # moves embeddings by ~1e-3; fp32 here means IEEE fp32, equal to the CPU within 1e-4.
            # Process-wide: the service holds one embedder. FEWFACE_HALF=true is the fast mode.
            torch.backends.cudnn.conv.fp32_precision = "ieee"
        network = network.eval().to(device).to(memory_format=torch.channels_last)
        for p in network.parameters():
            p.requires_grad_(False)
        self._network = network.half() if self.half else network
        self._crop_fn = crop_fn

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def pipeline(self) -> str:
        """This embedder's ``pipeline_id``."""
        return pipeline_id(self.spec, flip=self.flip, alignment=self.alignment)

    def crop(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        """The (3, S, S) float32 network input for one detected face."""
        return self._crop_fn(image, [face])[0]

    def crops(self, image: Image.Image, faces: Sequence[DetectedFace]) -> list[np.ndarray]:
        """The network inputs for several faces of one image."""
        return self._crop_fn(image, faces) if faces else []

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(N, 3, S, S) crops -> (N, dim) L2-normalised float32; N == 0 gives (0, dim)."""
        batch = np.asarray(crops, dtype=np.float32)
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = self.spec.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected crops of shape (N, 3, {size}, {size}), got {batch.shape}")
        x = torch.from_numpy(batch).to(self.device)
        if self.flip:  # the face and its mirror image in one batch; their embeddings are summed
            x = torch.cat([x, x.flip(3)])
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self._network(x.half() if self.half else x).float()
        if self.flip:
            out = out[: len(batch)] + out[len(batch) :]
        out = torch.nn.functional.normalize(out, dim=1)
        return out.cpu().numpy().astype(np.float32, copy=False)


def _chw(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1).copy()


def _build_dlib(device: torch.device, weights_path: str | None, half: bool, flip: bool, alignment: str | None) -> Embedder:
    """dlib's ResNet with one of two crops (``alignment``):

    * ``dlib5`` (default): dlib's own chip, without dlib: a box placed where dlib's HOG detector
      would put it (``dlib_box_from_mtcnn``), dlib's 5-point shape predictor
      (``models.shape_predictor``), then dlib's chip geometry (``get_face_chip_details(size=150,
      padding=0.25)`` and ``extract_image_chip``), the crop the network was trained on. On lfw-dev
      with flip: equal error rate 1.27 % against 1.47 % for ``template`` (docs/accuracy.md).
    * ``template``: a similarity warp of MTCNN's five landmarks onto where they fall, on average,
      in dlib's chips (``MTCNN_TEMPLATE_150``); galleries taught before the pipeline was recorded.
    """
    from models.dlib_resnet import MTCNN_TEMPLATE_150, load_dlib_resnet

    spec = EMBEDDERS["dlib-resnet-v1"]
    alignment = alignment or spec.alignments[0]
    if alignment not in spec.alignments:
        raise ValueError(f"unknown alignment {alignment!r} for dlib-resnet-v1; known: {', '.join(spec.alignments)}")
    network = load_dlib_resnet(resolve_weights("dlib-resnet-v1", weights_path))

    def template_crop(image: Image.Image, face: DetectedFace) -> np.ndarray:
        return _chw(warp_to_template(image, face.landmarks, MTCNN_TEMPLATE_150, spec.input_size))

    if alignment == "template":
        return Embedder(spec, network, per_face(template_crop), device, half=half, flip=flip, alignment=alignment)

    from models.shape_predictor import load_shape_predictor

    predictor = load_shape_predictor()

    def dlib5_crops(image: Image.Image, faces: Sequence[DetectedFace]) -> list[np.ndarray]:
        pixels = np.asarray(image)  # a copy of the whole image: once per image, not per face
        chips = []
        for face in faces:
            parts = predictor(pixels, dlib_box_from_mtcnn(face.landmarks, face.box))
            chips.append(_chw(extract_image_chip(pixels, face_chip_details(parts, spec.input_size, DLIB_CHIP_PADDING))))
        return chips

    return Embedder(spec, network, dlib5_crops, device, half=half, flip=flip, alignment=alignment)


# (device, weights path, half, flip, alignment or None for the model's default)
Builder = Callable[[torch.device, str | None, bool, bool, str | None], Embedder]


def _build_facenet(model_id: str) -> Builder:
    def build(device: torch.device, weights_path: str | None, half: bool, flip: bool, alignment: str | None) -> Embedder:
        if alignment not in (None, "box"):
            raise ValueError(f"unknown alignment {alignment!r} for {model_id}: it takes MTCNN's box crop ('box')")
        from facenet_pytorch import InceptionResnetV1

        path = resolve_weights(model_id, weights_path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        network = InceptionResnetV1(pretrained=None, classify=False)
        network.load_state_dict(state, strict=True)
        spec = EMBEDDERS[model_id]

        def crop(image: Image.Image, face: DetectedFace) -> np.ndarray:
            # facenet-pytorch's own preprocessing: box crop, resize, (x - 127.5) / 128.
            return (_chw(crop_box(image, face.box, spec.input_size)) - 127.5) / 128.0

        return Embedder(spec, network, per_face(crop), device, half=half, flip=flip, alignment="box")

    return build


EMBEDDERS: dict[str, EmbedderSpec] = {
    "dlib-resnet-v1": EmbedderSpec(
        "dlib-resnet-v1",
        128,
        150,
        0.91,  # lfw-dev, LFW pairs, template crop without flip: FAR 0.6 %, FRR 2.8 % (docs/accuracy.md)
        "dlib's 29-layer ResNet (face_recognition_models, PyPI) ported to PyTorch; dlib's own 5-point face chip",
        ("dlib5", "template"),
    ),
    "facenet-vggface2": EmbedderSpec(
        "facenet-vggface2",
        512,
        160,
        0.6,
        "facenet-pytorch InceptionResnetV1 trained on VGGFace2; MTCNN box crop",
        ("box",),
    ),
    "facenet-casia": EmbedderSpec(
        "facenet-casia",
        512,
        160,
        0.6,
        "facenet-pytorch InceptionResnetV1 trained on CASIA-WebFace; MTCNN box crop",
        ("box",),
    ),
}

_BUILDERS: dict[str, Builder] = {
    "dlib-resnet-v1": _build_dlib,
    **{model_id: _build_facenet(model_id) for model_id in FACENET_CHECKPOINTS},
}


def create_embedder(
    model_id: str,
    device: torch.device | str = "cpu",
    *,
    weights_path: str | os.PathLike[str] | None = None,
    half: bool = False,
    flip: bool = False,
    alignment: str | None = None,
) -> Embedder:
    """Build the frozen embedder for ``model_id`` on ``device``; raises WeightsNotFoundError
    (with the fix in its message) when the weights are not on this machine. ``flip`` averages
    each face's embedding with its mirror image's (test-time flip: twice the network time).
    ``alignment`` picks the crop where a model has several (``EmbedderSpec.alignments``; None is
    the model's default, the first)."""
    if model_id not in _BUILDERS:
        raise ValueError(f"unknown model id {model_id!r}; known: {', '.join(sorted(_BUILDERS))}")
    log.info("loading embedder %s on %s", model_id, device)
    return _BUILDERS[model_id](torch.device(device), str(weights_path) if weights_path else None, half, flip, alignment)

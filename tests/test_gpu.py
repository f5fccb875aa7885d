"""GPU against CPU on real faces: embeddings (fp32 and fp16), detection boxes, and the batcher on
the device. Runs only where CUDA is present (marker ``gpu``); skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import FaceDetector, create_embedder
from service.batcher import MicroBatcher
from service.imaging import decode_image
from tests.conftest import photo

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

MODEL = "dlib-resnet-v1"
PHOTOS = ("img1.jpg", "img26.jpg", "couple.jpg", "selfie-many-people.jpg")


@pytest.fixture(scope="module")
def cpu_detector() -> FaceDetector:
    return FaceDetector("cpu")


@pytest.fixture(scope="module")
def images() -> list:
    return [decode_image(photo(n), max_pixels=40_000_000, max_side=1600).image for n in PHOTOS]


@pytest.fixture(scope="module")
def crops(cpu_detector: FaceDetector, images: list) -> np.ndarray:
    embedder = create_embedder(MODEL, "cpu")
    out = [embedder.crop(img, f) for img in images for f in cpu_detector.detect(img)]
    return np.stack(out)


def test_gpu_fp32_embeddings_equal_cpu(crops: np.ndarray) -> None:
    cpu = create_embedder(MODEL, "cpu").embed(crops)
    gpu = create_embedder(MODEL, "cuda").embed(crops)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_gpu_fp16_embeddings_close_to_cpu(crops: np.ndarray) -> None:
    cpu = create_embedder(MODEL, "cpu").embed(crops)
    half = create_embedder(MODEL, "cuda", half=True)
    assert half.half
    gpu = half.embed(crops)
    assert gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, atol=5e-3)
    assert np.min(np.sum(gpu * cpu, axis=1)) > 0.999  # cosine to the fp32 CPU vector


def test_gpu_detection_agrees_with_cpu(cpu_detector: FaceDetector, images: list) -> None:
    gpu_detector = FaceDetector("cuda")
    for image in images:
        cpu_faces, gpu_faces = cpu_detector.detect(image), gpu_detector.detect(image)
        assert len(cpu_faces) == len(gpu_faces)
        for a, b in zip(cpu_faces, gpu_faces, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1.0)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1.0)


def test_batcher_on_gpu_equals_unbatched(crops: np.ndarray) -> None:
    embedder = create_embedder(MODEL, "cuda")
    with MicroBatcher(embedder, max_size=64, max_wait_ms=50) as batcher:
        futures = [batcher.submit_embed(crops[i : i + 1]) for i in range(len(crops))]
        got = np.concatenate([f.result(60) for f in futures])
        assert batcher.stats().embed_batches < len(crops)
    np.testing.assert_allclose(got, embedder.embed(crops), atol=1e-4)


def test_detection_batches_on_gpu(images: list) -> None:
    """Same-size images of concurrent requests share one MTCNN pass on the GPU too, with the
    faces a single-image call finds."""
    detector = FaceDetector("cuda")
    same = [images[0]] * 4
    with MicroBatcher(create_embedder(MODEL, "cuda"), detector, max_wait_ms=200, skip_wait_when_alone=False) as batcher:
        futures = [batcher.submit_detect(img) for img in same]
        found = [f.result(60) for f in futures]
        assert batcher.stats().detect_batches < len(same)
    alone = detector.detect(images[0])
    for faces in found:
        assert len(faces) == len(alone)
        for a, b in zip(faces, alone, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=0.5)

"""The frozen pipeline in ``models``: detection contract, embedding contract, weights lookup."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from models import FaceDetector, create_embedder
from models.align import similarity_transform
from models.weights import WeightsNotFoundError, resolve_weights
from service.imaging import decode_image
from service.recognizer import Engine
from tests.conftest import no_face_image, photo

LIMITS = {"max_pixels": 40_000_000, "max_side": 1600}


def largest_face_crop(engine: Engine, name: str) -> np.ndarray:
    decoded = decode_image(photo(name), **LIMITS)
    face = engine.detector.detect(decoded.image)[0]
    return engine.embedder.crop(decoded.image, face)


def test_detector_returns_list_with_landmarks(engine: Engine) -> None:
    image = decode_image(photo("couple.jpg"), **LIMITS).image
    faces = engine.detector.detect(image)
    assert isinstance(faces, list) and len(faces) >= 2
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    for f in faces:
        assert len(f.landmarks) == 5 and 0.9 <= f.prob <= 1.0
        x1, y1, x2, y2 = f.box
        assert all(x1 - 5 <= x <= x2 + 5 and y1 - 5 <= y <= y2 + 5 for x, y in f.landmarks)


def test_detector_empty_list_without_face(engine: Engine) -> None:
    image = decode_image(no_face_image(), **LIMITS).image
    assert engine.detector.detect(image) == []
    assert engine.detector.detect_batch([image, image]) == [[], []]


def test_detector_batch_equals_single(engine: Engine) -> None:
    images = [decode_image(photo(n), **LIMITS).image for n in ("img26.jpg", "couple.jpg", "img27.jpg")]
    batched = engine.detector.detect_batch(images)
    for image, faces in zip(images, batched, strict=True):
        single = engine.detector.detect(image)
        assert len(single) == len(faces)
        for a, b in zip(single, faces, strict=True):
            assert np.allclose(a.box, b.box, atol=1.0)


def test_detector_same_size_batch_is_one_pass_equal_to_single(engine: Engine) -> None:
    """Same-size images go through the cascade together (one P-Net call per pyramid level for all
    of them, one R-Net and one O-Net call): the faces and landmarks of each are its own."""
    names = ("img27.jpg", "img28.jpg")  # both 745 x 465
    images = [decode_image(photo(n), **LIMITS).image for n in names]
    images.append(images[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert len({image.size for image in images}) == 1
    batched = engine.detector.detect_batch(images)
    for image, faces in zip(images, batched, strict=True):
        single = engine.detector.detect(image)
        assert len(single) == len(faces) >= 1
        for a, b in zip(single, faces, strict=True):
            assert np.allclose(a.box, b.box, atol=1e-3) and np.allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_exif_rotation_is_applied_before_detection(engine: Engine) -> None:
    upright = Image.open(io.BytesIO(photo("img26.jpg")))
    rotated = upright.rotate(90, expand=True)  # pixels turned 90 degrees counter-clockwise...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and EXIF orientation 6: "turn 90 degrees clockwise to display"
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", exif=exif.tobytes())
    decoded = decode_image(buf.getvalue(), **LIMITS)
    assert decoded.image.size[0] < decoded.image.size[1] or upright.size[0] >= upright.size[1]
    assert (decoded.width, decoded.height) == upright.size
    assert len(engine.detector.detect(decoded.image)) == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_any_colour_mode_detects(engine: Engine, mode: str) -> None:
    img = Image.open(io.BytesIO(photo("img26.jpg"))).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG" if mode in ("L", "CMYK") else "PNG")
    decoded = decode_image(buf.getvalue(), **LIMITS)
    assert decoded.image.mode == "RGB"
    assert len(engine.detector.detect(decoded.image)) == 1


def test_embeddings_unit_float32_and_batch_equals_single(engine: Engine) -> None:
    crops = [largest_face_crop(engine, n) for n in ("img26.jpg", "img27.jpg", "img1.jpg", "img2.jpg")]
    batch = engine.embedder.embed(crops)
    assert batch.dtype == np.float32 and batch.shape == (4, engine.embedder.dim)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    single = np.concatenate([engine.embedder.embed([c]) for c in crops])
    assert np.abs(batch - single).max() <= 1e-5
    assert engine.embedder.embed([]).shape == (0, engine.embedder.dim)


def test_similarity_transform_recovers_known_transform() -> None:
    src = np.array([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]])
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (scale * rot @ src.T).T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], scale * rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)


def test_facenet_weights_missing_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # environment only, not our code
    with pytest.raises(WeightsNotFoundError, match=re.escape("python -m models.weights fetch facenet-vggface2")):
        resolve_weights("facenet-vggface2")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights("facenet-vggface2", tmp_path / "nope.pt")


def test_facenet_plumbing_with_random_weights(tmp_path) -> None:
    """Shape/plumbing only: RANDOM weights saved as a checkpoint file, loaded by path. This says
    nothing about recognition quality (the real VGGFace2 weights cannot be downloaded here)."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    path = tmp_path / "random-facenet.pt"
    torch.save(InceptionResnetV1(pretrained=None, classify=False).state_dict(), path)
    embedder = create_embedder("facenet-vggface2", "cpu", weights_path=path)
    detector = FaceDetector("cpu")
    decoded = decode_image(photo("img26.jpg"), **LIMITS)
    face = detector.detect(decoded.image)[0]
    crop = embedder.crop(decoded.image, face)
    assert crop.shape == (3, 160, 160)
    out = embedder.embed([crop, crop])
    assert out.shape == (2, 512) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_unknown_model_id_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model id"):
        create_embedder("no-such-model")

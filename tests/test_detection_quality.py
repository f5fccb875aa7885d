"""The detector against today's reference: facenet-pytorch's stock MTCNN outputs on the group
photos, the 1-face target photo, the other deepface studio photos and a fixed LFW sample, frozen once into
tests/reference/detection_mtcnn.json by tools/freeze_detection_reference.py. Every reference
face must be found again and its landmarks (which feed the alignment) stay within 2 px.
``python -m bench.detection_quality`` runs the same check live against stock MTCNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch.models.mtcnn import PNet
from PIL import Image

from bench.detection_quality import LANDMARK_TOLERANCE_PX, Comparison, compare, load
from models import FaceDetector
from models.mtcnn import CascadeLimits, FastPNet, _integral, pyramid_scales
from service.recognizer import Engine

REFERENCE = Path(__file__).parent / "reference" / "detection_mtcnn.json"


def test_every_reference_face_found_with_landmarks_within_2px(engine: Engine, faces_dir: Path) -> None:
    photos = json.loads(REFERENCE.read_text())["photos"]
    if not all((faces_dir.parent / name).is_file() for name in photos):
        pytest.skip("the reference photos (../shared/faces) are not all present")
    result = Comparison()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 76 photos: on a shared 2-core machine two OpenMP threads made this 15x slower
    try:
        for name, faces in photos.items():
            reference = [(np.array(f["box"]), np.array(f["landmarks"])) for f in faces]
            compare(name, reference, engine.detector.detect(load(faces_dir.parent / name)), result)
    finally:
        torch.set_num_threads(threads)
    assert result.reference_faces >= 80  # 4 + 2 + 1 in the target photos, 65 in the other deepface photos, 12 in the LFW sample
    assert result.missed == []
    assert result.max_drift <= LANDMARK_TOLERANCE_PX, result.drifts


def test_pyramid_is_the_stock_pyramid_without_its_largest_levels() -> None:
    full = pyramid_scales(1152, 1536, CascadeLimits(detect_side=0))
    kept = pyramid_scales(1152, 1536, CascadeLimits(detect_side=640))
    assert kept == full[len(full) - len(kept) :] and 0 < len(kept) < len(full)
    assert max(kept) * 1536 <= 640 * 12 / 20 + 1e-6  # the largest level scanned: a 640 px image at a 20 px face
    assert pyramid_scales(604, 600, CascadeLimits(detect_side=640)) == pyramid_scales(604, 600, CascadeLimits(detect_side=0))


def test_detect_side_trades_the_smallest_faces_of_big_images(faces_dir: Path) -> None:
    """A face 18 px wide in a 1600 x 1200 image is well below the smallest face scanned at the default
    detect_side (20 x 1600 / 640 = 50 px) and found when the full resolution is scanned (0)."""
    face = load(faces_dir / "img1.jpg")
    found = FaceDetector("cpu", detect_side=0).detect(face)[0]
    x1, y1, x2, y2 = found.box
    pad = (x2 - x1) * 0.4
    crop = face.crop((int(x1 - pad), int(y1 - pad), int(x2 + pad), int(y2 + pad)))
    scale = 18 / (x2 - x1)
    canvas = Image.new("RGB", (1600, 1200), (120, 120, 120))
    canvas.paste(crop.resize((round(crop.width * scale), round(crop.height * scale))), (700, 500))
    assert FaceDetector("cpu", detect_side=640).detect(canvas) == []
    assert len(FaceDetector("cpu", detect_side=0).detect(canvas)) == 1


def test_detector_settings_are_checked() -> None:
    for bad in ({"min_face_size": 8}, {"detect_side": -1}, {"max_faces": 0}):
        with pytest.raises(ValueError):
            FaceDetector("cpu", **bad)  # type: ignore[arg-type]


def test_fast_pnet_is_facenet_pnet() -> None:
    """The rearranged P-Net (padded first layer, fused heads) computes what facenet-pytorch's does,
    on even and odd sizes (odd ones end in a partial pooling window)."""
    stock = PNet().eval()
    fast = FastPNet(PNet()).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for height, width in ((12, 12), (31, 46), (64, 65)):
            x = (torch.rand(2, 3, height, width, generator=generator) * 2 - 1).contiguous(memory_format=torch.channels_last)
            reg, probs = stock(x)
            fast_reg, fast_probs = fast(x)
            assert fast_reg.shape == reg.shape and fast_probs.shape == probs[:, 1].shape
            assert torch.allclose(fast_reg, reg, atol=1e-5) and torch.allclose(fast_probs, probs[:, 1], atol=1e-6)


def test_summed_area_table_is_exact() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    sums = _integral([Image.fromarray(pixels)])[0]
    expected = np.zeros((38, 54, 3), np.int64)
    expected[1:, 1:] = pixels.astype(np.int64).cumsum(axis=0).cumsum(axis=1)
    assert sums.shape == expected.shape and np.array_equal(sums, expected)


def test_levels_scanned_side_by_side_find_the_same_faces(faces_dir: Path) -> None:
    """With several intra-op threads the pyramid's levels run side by side (models/mtcnn.py):
    the faces are those of the one-thread scan, level by level in the same order."""
    image = load(faces_dir / "selfie-many-people.jpg")
    detector = FaceDetector("cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = detector.detect(image)
        assert detector._cascade._pool is None  # one thread: no level scanned elsewhere
        torch.set_num_threads(2)
        side_by_side = detector.detect(image)
        assert detector._cascade._pool is not None
    finally:
        torch.set_num_threads(threads)
    assert len(side_by_side) == len(alone) == 4
    for a, b in zip(alone, side_by_side, strict=True):
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)

"""The detector against today's reference: facenet-pytorch's stock MTCNN outputs on the group
photos, the 1-face target photo and a fixed LFW sample, frozen once into
tests/reference/detection_mtcnn.json by tools/freeze_detection_reference.py. Every reference
face must be found again and its landmarks (which feed the alignment) stay within 2 px.
``python -m bench.detection_quality`` runs the same check live against stock MTCNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.detection_quality import LANDMARK_TOLERANCE_PX, Comparison, compare, load
from models import FaceDetector
from models.mtcnn import CascadeLimits, pyramid_scales
from service.recognizer import Engine

REFERENCE = Path(__file__).parent / "reference" / "detection_mtcnn.json"


def test_every_reference_face_found_with_landmarks_within_2px(engine: Engine, faces_dir: Path) -> None:
    photos = json.loads(REFERENCE.read_text())["photos"]
    if not all((faces_dir.parent / name).is_file() for name in photos):
        pytest.skip("the reference photos (../shared/faces) are not all present")
    result = Comparison()
    for name, faces in photos.items():
        reference = [(np.array(f["box"]), np.array(f["landmarks"])) for f in faces]
        compare(name, reference, engine.detector.detect(load(faces_dir.parent / name)), result)
    assert result.reference_faces >= 15  # 4 + 2 + 1 in the deepface photos, at least one per LFW photo
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

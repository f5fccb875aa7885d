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

from bench.detection_quality import LANDMARK_TOLERANCE_PX, Comparison, compare, load
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

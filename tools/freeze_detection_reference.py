"""Freeze today's detections (facenet-pytorch's stock MTCNN, full-resolution pyramid from a 20 px
face, probability >= 0.9) on the quality-check sample into tests/reference/detection_mtcnn.json,
which tests/test_detection_quality.py compares the detector against. Run once; rerun only to
re-derive the reference on purpose.

    .venv/bin/python -m tools.freeze_detection_reference
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.detection_quality import FACES, TEST_SAMPLE_LFW, load, reference_faces, sample_paths, stock_mtcnn

OUT = Path(__file__).resolve().parents[1] / "tests" / "reference" / "detection_mtcnn.json"


def main() -> None:
    stock = stock_mtcnn()
    photos = {}
    for path in sample_paths(TEST_SAMPLE_LFW):
        faces = reference_faces(stock, load(path))
        photos[path.relative_to(FACES.parent).as_posix()] = [
            {"box": [round(float(v), 3) for v in box], "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in lm]}
            for box, lm in faces
        ]
    doc = {"detector": "facenet-pytorch 2.6.0 MTCNN(min_face_size=20, thresholds 0.6/0.7/0.7), faces with prob >= 0.9", "photos": photos}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"  {json.dumps(name)}: {json.dumps(faces)}" for name, faces in photos.items()]  # one photo per line
    OUT.write_text("{\n" + f' "detector": {json.dumps(doc["detector"])},\n "photos": {{\n' + ",\n".join(lines) + "\n }\n}\n")
    print(f"{sum(len(v) for v in photos.values())} faces in {len(photos)} photos -> {OUT}")


if __name__ == "__main__":
    main()

"""Fit where dlib's HOG face detector puts its box, from MTCNN's box and landmarks.

dlib's 5-point shape predictor was trained on boxes from dlib's own frontal face detector
(``dlib.get_frontal_face_detector()``), which sit differently on the face than MTCNN's.  To run
the predictor without dlib, ``models.align.dlib_box_from_mtcnn`` places a box the way dlib's
detector would, from MTCNN's output.  This script fits that mapping and prints the constants
``models.align.DLIB_BOX_FROM_MTCNN`` holds.

The model: in a frame centred on the mean of MTCNN's five landmarks and scaled by their RMS
distance from it (no rotation: dlib's boxes are upright), dlib's (left, top, right, bottom) is
a linear function (least squares) of MTCNN's five landmarks and box in that frame.

Data: lfw-dev photos (``../shared/faces/lfw-dev/people``) where dlib's detector (upsampled
once, as face_recognition does) finds exactly one face and exactly one MTCNN face
(``models.detector.FaceDetector`` with its defaults) has its landmarks' mean inside that box.
People whose name starts with A-M fit the model; N-Z are held out, and the script reports the
box error there, and how far the shape predictor's landmarks from the mapped box land from
those from dlib's box (what matters for the face chip).

Needs dlib (``pip install dlib-bin``).  Run from the repository root:
``python tools/fit_dlib_box.py [--every N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dlib
import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models.align import box_features, box_frame  # noqa: E402  (needs the repository root on sys.path)
from models.detector import FaceDetector  # noqa: E402
from models.shape_predictor import load_shape_predictor  # noqa: E402

PEOPLE = REPO_ROOT.parent / "shared" / "faces" / "lfw-dev" / "people"


def collect(paths: list[Path], detector: FaceDetector, hog: object) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """(photos, MTCNN landmarks (N, 5, 2), MTCNN boxes (N, 4), dlib boxes (N, 4)) where both find the face."""
    kept, landmarks, boxes, targets = [], [], [], []
    for i, path in enumerate(paths):
        if i % 200 == 0:
            print(f"  {i} of {len(paths)} photos", flush=True)
        image = Image.open(path).convert("RGB")
        rects = hog(np.asarray(image), 1)
        if len(rects) != 1:
            continue
        rect = rects[0]
        target = (rect.left(), rect.top(), rect.right(), rect.bottom())
        inside = []
        for face in detector.detect(image):
            x, y = np.mean(face.landmarks, axis=0)
            if target[0] <= x <= target[2] and target[1] <= y <= target[3]:
                inside.append(face)
        if len(inside) != 1:
            continue
        kept.append(path)
        landmarks.append(inside[0].landmarks)
        boxes.append(inside[0].box)
        targets.append(target)
    return kept, np.asarray(landmarks, float), np.asarray(boxes, float), np.asarray(targets, float)


def normalised_targets(landmarks: np.ndarray, targets: np.ndarray) -> np.ndarray:
    centre, scale = box_frame(landmarks)
    return (targets.reshape(-1, 2, 2) - centre[:, None, :]).reshape(-1, 4) / scale[:, None]


def predict(coefficients: np.ndarray, landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    centre, scale = box_frame(landmarks)
    unit = box_features(landmarks, boxes) @ coefficients
    return (unit.reshape(-1, 2, 2) * scale[:, None, None] + centre[:, None, :]).reshape(-1, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=1, help="use every Nth person (faster, fewer photos)")
    args = parser.parse_args(argv)

    people = sorted(PEOPLE.iterdir())[:: args.every]
    fit_paths = [p for person in people if person.name[0] <= "M" for p in sorted(person.glob("*.jpg"))]
    check_paths = [p for person in people if person.name[0] > "M" for p in sorted(person.glob("*.jpg"))]
    torch.set_num_threads(1)  # MTCNN on small photos: one thread uses a fraction of the CPU time of two
    detector = FaceDetector("cpu")
    hog = dlib.get_frontal_face_detector()
    started = time.perf_counter()
    fit = collect(fit_paths, detector, hog)
    check = collect(check_paths, detector, hog)
    print(f"photos: fit {len(fit[0])} of {len(fit_paths)} (A-M), held out {len(check[0])} of {len(check_paths)} (N-Z)")
    print(f"detection took {time.perf_counter() - started:.0f} s")

    features = box_features(fit[1], fit[2])
    coefficients, *_ = np.linalg.lstsq(features, normalised_targets(fit[1], fit[3]), rcond=None)
    constant = np.linalg.lstsq(features[:, -1:], normalised_targets(fit[1], fit[3]), rcond=None)[0]

    predictor = load_shape_predictor()
    for name, coef in [("linear", coefficients), ("constant offsets only", np.vstack([np.zeros((features.shape[1] - 1, 4)), constant]))]:
        error = predict(coef, check[1], check[2]) - check[3]
        width = check[3][:, 2] - check[3][:, 0]
        print(
            f"{name}: held-out box corner error |px| median {np.median(np.abs(error)):.2f}, p95 {np.percentile(np.abs(error), 95):.2f}; "
            f"relative to dlib's box width median {np.median(np.abs(error) / width[:, None]):.3f}"
        )
        shifts = []
        for path, box, target in zip(check[0], predict(coef, check[1], check[2]), check[3], strict=True):
            image = np.asarray(Image.open(path).convert("RGB"))
            ours, theirs = predictor(image, tuple(box)), predictor(image, tuple(target))
            eyes = np.linalg.norm(theirs[[0, 1]].mean(axis=0) - theirs[[2, 3]].mean(axis=0))
            shifts.append((np.abs(ours - theirs).max(), np.linalg.norm(ours - theirs, axis=1).max() / eyes))
        shifts = np.asarray(shifts)
        print(
            f"  shape predictor from mapped box vs from dlib's box: worst landmark |dx|,|dy| median {np.median(shifts[:, 0]):.1f} px, "
            f"p95 {np.percentile(shifts[:, 0], 95):.1f} px; worst landmark distance / eye distance median {np.median(shifts[:, 1]):.3f}, "
            f"p95 {np.percentile(shifts[:, 1], 95):.3f}"
        )

    print("\nDLIB_BOX_FROM_MTCNN: tuple[tuple[float, float, float, float], ...] = (")
    for row in coefficients:
        print("    (" + ", ".join(f"{v:.6f}" for v in row) + "),")
    print(")")
    return 0


if __name__ == "__main__":
    sys.exit(main())

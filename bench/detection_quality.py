"""Detection quality against today's reference, facenet-pytorch's stock MTCNN (full-resolution
pyramid from a 20 px face): on the group photos, the 1-face target photo, the other deepface
studio photos (mostly 1000-4600 px: the big images a detection shortcut would hurt first) and a
fixed sample of LFW news photos, every reference face (probability >= 0.9) must be found again
(IoU >= 0.5) with its 5 landmarks within 2 px, in the pixels of the image the detector is given
(decoded as the service does: longer side at most 1600). Also prints time per image for both,
same run, overall and for the photos bench.identify_latency uses.

    .venv/bin/python -m bench.detection_quality [--lfw 16] [--detect-side 640] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import FACES, machine
from models import DetectedFace, FaceDetector
from service.imaging import decode_image

LFW = FACES.parent / "lfw-dev" / "people"
DEEPFACE_SAMPLE = ("selfie-many-people.jpg", "couple.jpg", "img2.jpg")
LANDMARK_TOLERANCE_PX = 2.0
TEST_SAMPLE_LFW = 12  # LFW photos in the frozen reference the test uses (tools/freeze_detection_reference.py)
TIMED = {  # the photos timed one by one: bench.identify_latency's, and the 2-face group photo
    "img2 (1536x1152, 1 face)": "img2.jpg",
    "couple (1600x1114, 2 faces)": "couple.jpg",
    "selfie (600x604, 4 faces)": "selfie-many-people.jpg",
    "LFW 250x250": "../lfw-dev/people/Aaron_Sorkin/Aaron_Sorkin_0001.jpg",
}


def sample_paths(lfw: int) -> list[Path]:
    """The group photos and img2.jpg, the other deepface photos, then ``lfw`` LFW photos evenly
    spread over the sorted list."""
    photos = sorted(LFW.glob("*/*.jpg"))
    step = max(1, len(photos) // max(1, lfw))
    first = [FACES / n for n in DEEPFACE_SAMPLE]
    studio = [p for p in sorted(FACES.glob("*.jpg")) if p not in first]
    return first + studio + photos[::step][:lfw]


def load(path: Path) -> Image.Image:
    return decode_image(path.read_bytes(), max_pixels=40_000_000, max_side=1600).image


@dataclass
class Comparison:
    reference_faces: int = 0
    found: int = 0
    extra: int = 0  # faces the new detector reports that the reference does not
    drifts: list[float] = field(default_factory=list)  # largest landmark distance per matched face (px)
    missed: list[str] = field(default_factory=list)

    @property
    def max_drift(self) -> float:
        return max(self.drifts, default=0.0)


def reference_faces(stock: object, image: Image.Image, min_prob: float = 0.9) -> list[tuple[np.ndarray, np.ndarray]]:
    """(box (4,), landmarks (5, 2)) of every face stock MTCNN finds with probability >= min_prob."""
    boxes, probs, points = stock.detect(image, landmarks=True)  # type: ignore[attr-defined]
    if boxes is None:
        return []
    return [(np.asarray(b, float), np.asarray(lm, float)) for b, p, lm in zip(boxes, probs, points, strict=True) if float(p) >= min_prob]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compare(name: str, reference: list[tuple[np.ndarray, np.ndarray]], faces: list, out: Comparison) -> None:
    """Match each reference face to the detector's best-overlapping face; record drift or a miss."""
    matched = set()
    for box, landmarks in reference:
        out.reference_faces += 1
        scores = [iou(box, np.asarray(f.box)) for f in faces]
        best = int(np.argmax(scores)) if scores else -1
        if best < 0 or scores[best] < 0.5:
            out.missed.append(f"{name} face at {np.round(box).astype(int).tolist()}")
            continue
        matched.add(best)
        out.found += 1
        out.drifts.append(float(np.linalg.norm(np.asarray(faces[best].landmarks) - landmarks, axis=1).max()))
    out.extra += len(faces) - len(matched)


def stock_mtcnn() -> object:
    """facenet-pytorch's own MTCNN, as the reference was made."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, min_face_size=20, device="cpu").eval()


def side_by_side(
    stock: object, detector: FaceDetector, image: Image.Image, clock: Callable[[], float]
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[DetectedFace], float, float]:
    """(reference faces, ``detector``'s faces, stock's seconds, ``detector``'s seconds) on one image,
    both timed by ``clock``."""
    t = clock()
    reference = reference_faces(stock, image)
    t_stock = clock() - t
    t = clock()
    faces = detector.detect(image)
    return reference, faces, t_stock, clock() - t


def run(detector: FaceDetector, paths: list[Path]) -> tuple[Comparison, float, float]:
    """The comparison over ``paths``, and the median seconds per image of stock MTCNN and ``detector``."""
    stock = stock_mtcnn()
    result, t_stock, t_new = Comparison(), [], []
    for path in paths:
        reference, faces, a, b = side_by_side(stock, detector, load(path), time.perf_counter)
        t_stock.append(a)
        t_new.append(b)
        compare(path.name, reference, faces, result)
    return result, float(np.median(t_stock)), float(np.median(t_new))


def timed(detector: FaceDetector, repeats: int = 5) -> None:
    """Median CPU ms per image (this process, all its threads) of stock MTCNN and ``detector`` on
    each TIMED photo, interleaved: on a shared machine the wall clock mostly measures the others."""
    stock = stock_mtcnn()
    print(f"{'CPU time per photo':30s} {'stock ms':>9s} {'Fewface ms':>11s} {'faces':>7s}")
    for label, name in TIMED.items():
        image = load(FACES / name)
        t_stock, t_new = [], []
        for _ in range(repeats):
            reference, faces, a, b = side_by_side(stock, detector, image, time.process_time)
            t_stock.append(a)
            t_new.append(b)
        found = f"{len(reference)}/{len(faces)}"
        print(f"{label:30s} {statistics.median(t_stock) * 1000:9.1f} {statistics.median(t_new) * 1000:11.1f} {found:>7s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=int, default=40, help="LFW photos in the sample")
    parser.add_argument("--detect-side", type=int, default=640, help="FEWFACE_DETECT_SIDE of the detector under test")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# detection quality vs stock facenet-pytorch MTCNN; detect_side {args.detect_side}")
    print(f"# {machine()}")
    paths = sample_paths(args.lfw)
    detector = FaceDetector("cpu", detect_side=args.detect_side)
    detector.detect(load(paths[0]))  # warm-up
    result, stock_s, new_s = run(detector, paths)
    print(
        f"{len(paths)} photos: reference faces {result.reference_faces}, found {result.found}, extra {result.extra}, "
        f"largest landmark drift {result.max_drift:.3f} px (tolerance {LANDMARK_TOLERANCE_PX} px)"
    )
    for miss in result.missed:
        print(f"  MISSED {miss}")
    print(f"median per image: stock {stock_s * 1000:.1f} ms, Fewface {new_s * 1000:.1f} ms, ratio {stock_s / new_s:.2f}x")
    timed(detector)
    print(f"# {machine()}")


if __name__ == "__main__":
    main()

"""LFW verification accuracy and crop cost of dlib-resnet-v1's two alignments on the same faces.

``template``: MTCNN's landmarks warped onto a fixed template; ``dlib5``: dlib's own chip (box
placed as dlib's detector would, dlib's 5-point shape predictor, dlib's chip geometry; see
``models.embedders._build_dlib``).  Every photo of ``../shared/faces/lfw-dev/pairs.txt`` is
detected once (MTCNN, the face nearest the photo's centre); both crops embed that same face.
Accuracy follows LFW's protocol: the cosine threshold is chosen on four folds and applied to the
fifth, averaged over the five folds.  A pair whose photo has no face counts as "different".

``--dlib-boxes`` adds a row where the dlib5 crop starts from dlib's own HOG detector box (where
it finds the face), i.e. with a perfect box mapping.

Run from the repository root: ``python -m bench.dlib_alignment [--pairs N] [--faces cache.json]``.
Measured on lfw-dev (3,000 pairs, 2-core VM under load ~4): template 98.43 %, dlib5 98.43 %,
dlib5 from dlib's HOG boxes 98.67 % (dlib finds 3,783 of the 3,810 faces).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import machine
from models.detector import FaceDetector
from models.embedders import Embedder, create_embedder
from models.shape_predictor import load_shape_predictor
from models.types import DetectedFace

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "lfw-dev"


def read_pairs(limit: int | None) -> list[tuple[int, Path, Path, bool]]:
    """(fold, photo a, photo b, same person) for the pairs of pairs.txt."""
    lines = (LFW / "pairs.txt").read_text().split("\n")
    per_half = int(lines[0].split()[1])
    pairs = []

    def photo(name: str, n: str) -> Path:
        return LFW / "people" / name / f"{name}_{int(n):04d}.jpg"

    for i, line in enumerate(line for line in lines[1:] if line.strip()):
        fields = line.split("\t")
        fold = i // (2 * per_half)
        if len(fields) == 3:
            pairs.append((fold, photo(fields[0], fields[1]), photo(fields[0], fields[2]), True))
        else:
            pairs.append((fold, photo(fields[0], fields[1]), photo(fields[2], fields[3]), False))
    if limit:
        step = max(1, len(pairs) // limit)
        pairs = pairs[::step]
    return pairs


def central_face(faces: list[DetectedFace], width: int, height: int) -> DetectedFace | None:
    if not faces:
        return None

    def distance(face: DetectedFace) -> float:
        x1, y1, x2, y2 = face.box
        return (x1 + x2 - width) ** 2 + (y1 + y2 - height) ** 2

    return min(faces, key=distance)


def detect(images: dict[Path, Image.Image], cache: Path | None) -> dict[Path, DetectedFace | None]:
    """The central MTCNN face of every photo, read from / written to ``cache`` when given."""
    stored = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    detector, threads = None, torch.get_num_threads()
    faces: dict[Path, DetectedFace | None] = {}
    for path, image in images.items():
        key = str(path.relative_to(LFW))
        if key not in stored:
            if detector is None:
                torch.set_num_threads(1)  # MTCNN on 250x250 photos: one thread costs far less CPU than two
                detector = FaceDetector("cpu")
            face = central_face(detector.detect(image), *image.size)
            stored[key] = None if face is None else {"box": face.box, "prob": face.prob, "landmarks": face.landmarks}
        entry = stored[key]
        faces[path] = None if entry is None else DetectedFace(tuple(entry["box"]), entry["prob"], tuple(map(tuple, entry["landmarks"])))
    if cache is not None:
        cache.write_text(json.dumps(stored))
    torch.set_num_threads(threads)
    return faces


def accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> float:
    """Mean over folds of the accuracy at the threshold that is best on the other folds."""
    results = []
    candidates = np.unique(scores)
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        correct = [((scores[train] >= t) == same[train]).mean() for t in candidates]
        threshold = candidates[int(np.argmax(correct))]
        results.append(((scores[test] >= threshold) == same[test]).mean())
    return float(np.mean(results))


def hog_box_embedder(embedder: Embedder) -> Embedder:
    """The dlib5 crop, but from the box of dlib's HOG detector (upsampled once) that holds MTCNN's
    landmarks, where there is one: what the box mapping would give if it were perfect."""
    import dlib

    from models.align import DLIB_CHIP_PADDING, extract_image_chip, face_chip_details

    hog, predictor, dlib5_crop = dlib.get_frontal_face_detector(), load_shape_predictor(), embedder.crop

    def crop(image: Image.Image, face: DetectedFace) -> np.ndarray:
        pixels = np.asarray(image)
        x, y = np.mean(face.landmarks, axis=0)
        for r in hog(pixels, 1):
            if r.left() <= x <= r.right() and r.top() <= y <= r.bottom():
                parts = predictor(pixels, (r.left(), r.top(), r.right(), r.bottom()))
                chip = extract_image_chip(pixels, face_chip_details(parts, 150, DLIB_CHIP_PADDING))
                return chip.astype(np.float32).transpose(2, 0, 1).copy()
        return dlib5_crop(image, face)

    return Embedder(embedder.spec, embedder._network, crop, embedder.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=None, help="use about this many pairs (evenly spread); default all 3,000")
    parser.add_argument("--faces", type=Path, default=None, help="JSON file of detections to reuse (written when missing)")
    parser.add_argument(
        "--dlib-boxes", action="store_true", help="also dlib5 from dlib's own HOG detector box where it finds the face (needs dlib)"
    )
    parser.add_argument("--detect-only", action="store_true", help="stop after detection (with --faces: fill the cache)")
    args = parser.parse_args(argv)
    print(machine())

    pairs = read_pairs(args.pairs)
    photos = sorted({p for _, a, b, _ in pairs for p in (a, b)})
    started = time.perf_counter()
    images = {path: Image.open(path).convert("RGB") for path in photos}
    faces = detect(images, args.faces)
    found = [p for p in photos if faces[p] is not None]
    print(f"{len(pairs)} pairs, {len(photos)} photos, a face in {len(found)}; detection {time.perf_counter() - started:.0f} s")
    if args.detect_only:
        return 0

    same = np.array([s for *_, s in pairs])
    folds = np.array([f for f, *_ in pairs])
    vectors: dict[str, dict[Path, np.ndarray]] = {}
    rows = [(alignment, create_embedder("dlib-resnet-v1", "cpu", alignment=alignment)) for alignment in ("template", "dlib5")]
    if args.dlib_boxes:
        rows.append(("dlib5 from dlib's HOG box", hog_box_embedder(create_embedder("dlib-resnet-v1", "cpu", alignment="dlib5"))))
    for name, embedder in rows:
        crop_times, crops = [], []
        for path in found:
            t = time.perf_counter()
            crops.append(embedder.crop(images[path], faces[path]))
            crop_times.append(time.perf_counter() - t)
        embedded = np.concatenate([embedder.embed(crops[i : i + 32]) for i in range(0, len(crops), 32)])
        v = vectors[name] = dict(zip(found, embedded, strict=True))
        scores = np.array([float(v[a] @ v[b]) if a in v and b in v else -1.0 for _, a, b, _ in pairs])
        times = np.asarray(crop_times) * 1000
        print(
            f"{name:8s}: accuracy {100 * accuracy(scores, same, folds):.2f} % (threshold from the other folds); "
            f"crop p50 {np.median(times):.2f} ms, p95 {np.percentile(times, 95):.2f} ms per face"
        )
    # The dlib5 crop's parts alone, on the same faces.
    from models.align import DLIB_CHIP_PADDING, dlib_box_from_mtcnn, extract_image_chip, face_chip_details

    predictor = load_shape_predictor()
    steps: dict[str, list[float]] = {"box mapping": [], "shape predictor": [], "chip": []}
    for path in found[:300]:
        pixels, face = np.asarray(images[path]), faces[path]
        t0 = time.perf_counter()
        box = dlib_box_from_mtcnn(face.landmarks, face.box)
        t1 = time.perf_counter()
        parts = predictor(pixels, box)
        t2 = time.perf_counter()
        extract_image_chip(pixels, face_chip_details(parts, 150, DLIB_CHIP_PADDING))
        t3 = time.perf_counter()
        for name, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            steps[name].append(seconds * 1000)
    print("dlib5 crop steps: " + "; ".join(f"{name} p50 {np.median(v):.2f} ms" for name, v in steps.items()))
    both = [float(vectors["template"][p] @ vectors["dlib5"][p]) for p in found]
    print(f"cosine between the two alignments' descriptors of the same face: median {np.median(both):.3f}, p5 {np.percentile(both, 5):.3f}")
    print(machine())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What each step of issue 9's recognition pipeline costs per face, in one run on the same photos:

    .venv/bin/python -m bench.pipeline_cost [--photos 60]

face ranking, quality figures, each alignment's crop, and the embedding network with and without
test-time flip (batch 1, as a lone request runs it), beside detection for scale. Times are
medians per face on the CPU; compare them as ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.common import machine
from models.embedders import EMBEDDERS, create_embedder
from models.quality import assess
from models.ranking import rank_faces
from service.config import Settings
from service.imaging import decode_image
from service.recognizer import Engine

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "lfw-dev" / "people"


def per_call(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=60)
    args = parser.parse_args()
    print(machine())
    settings = Settings.from_env({})
    engine = Engine.from_settings(settings)
    photos = sorted(LFW.glob("*/*.jpg"))[:: max(1, 3811 // args.photos)][: args.photos]
    images = [decode_image(p.read_bytes(), max_pixels=settings.max_image_pixels, max_side=settings.max_image_side).image for p in photos]
    detections = [engine.detector.detect(img) for img in images]
    pairs = [(img, rank_faces(faces, *img.size)[0]) for img, faces in zip(images, detections, strict=True) if faces]
    spec = EMBEDDERS[settings.model]
    rows: dict[str, list[float]] = {name: [] for name in ("detect (image)", "rank", "quality")}
    embedders = {
        (alignment, flip): create_embedder(
            settings.model, "cpu", flip=flip, **({"alignment": alignment} if len(spec.alignments) > 1 else {})
        )
        for alignment in spec.alignments
        for flip in (False, True)
    }
    for img, faces in zip(images, detections, strict=True):
        rows["detect (image)"].append(per_call(lambda img=img: engine.detector.detect(img), 1))
        rows["rank"].append(per_call(lambda img=img, faces=faces: rank_faces(faces, *img.size)))
    for img, face in pairs:
        rows["quality"].append(per_call(lambda img=img, face=face: assess(img, face)))
        for (alignment, flip), embedder in embedders.items():
            crop = embedder.crop(img, face)
            if not flip:
                rows.setdefault(f"crop {alignment}", []).append(per_call(lambda e=embedder, img=img, face=face: e.crop(img, face)))
            name = f"embed {'with' if flip else 'without'} flip"
            with torch.inference_mode():
                rows.setdefault(name, []).append(per_call(lambda e=embedder, c=crop: e.embed(np.stack([c]))))
    engine.close()
    print(f"\n{len(photos)} lfw-dev photos, {len(pairs)} faces; median per face (detection: per image)")
    for name, values in rows.items():
        print(f"  {name:22s} {statistics.median(values) * 1000:8.3f} ms")
    whole_identify(settings, embedders, images)
    print(f"\n{machine()}")


def whole_identify(settings: Settings, embedders: dict, lfw_images: list) -> None:
    """In-process identify work per photo (detect, choose, crop, embed; search is negligible),
    interleaved: before issue 9 (faces by raw box area, template crop, no flip) and after it
    (ranking, quality figures, the default crop, flip), each with the stock detector from before
    issue 12 and with today's."""
    from bench.stock_detector import StockMTCNNDetector
    from models.detector import FaceDetector

    detectors = {
        "stock MTCNN": StockMTCNNDetector(min_face_size=settings.min_face_size, min_prob=settings.min_detection_prob),
        "today's detector": FaceDetector(
            "cpu",
            min_face_size=settings.min_face_size,
            min_prob=settings.min_detection_prob,
            detect_side=settings.detect_side,
            max_faces=settings.max_faces,
        ),
    }
    default = EMBEDDERS[settings.model].alignments[0]
    old, new = embedders[(EMBEDDERS[settings.model].alignments[-1], False)], embedders[(default, True)]

    def before(detector: object, img: object) -> None:
        faces = sorted(detector.detect(img), key=lambda f: f.area, reverse=True)  # type: ignore[attr-defined]
        if faces:
            old.embed(np.stack([old.crop(img, f) for f in faces]))

    def after(detector: object, img: object) -> None:
        faces = rank_faces(detector.detect(img), *img.size)  # type: ignore[attr-defined, union-attr]
        if faces:
            new.embed(np.stack([new.crop(img, f) for f in faces]))
            [assess(img, f) for f in faces]  # type: ignore[arg-type]

    deepface = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "deepface"
    sets = {
        "img2.jpg (1536x1152, 1 face)": [decode_image((deepface / "img2.jpg").read_bytes(), max_pixels=10**8, max_side=1600).image],
        "couple.jpg": [decode_image((deepface / "couple.jpg").read_bytes(), max_pixels=10**8, max_side=1600).image],
        f"{min(20, len(lfw_images))} lfw-dev photos": lfw_images[:20],
    }
    print("\nwhole in-process identify per photo, median ms (interleaved; ratios within this run)")
    print(f"{'photos':32s} {'detector':18s} {'before':>8s} {'after':>8s}  after/before")
    for label, imgs in sets.items():
        for dname, detector in detectors.items():
            b, a = [], []
            for _ in range(3 if len(imgs) == 1 else 1):
                for img in imgs:
                    b.append(per_call(lambda d=detector, i=img: before(d, i), 1))
                    a.append(per_call(lambda d=detector, i=img: after(d, i), 1))
            mb, ma = statistics.median(b) * 1000, statistics.median(a) * 1000
            print(f"{label:32s} {dname:18s} {mb:8.1f} {ma:8.1f}  {ma / mb:5.2f}")


if __name__ == "__main__":
    main()

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
    print(f"\n{machine()}")


if __name__ == "__main__":
    main()

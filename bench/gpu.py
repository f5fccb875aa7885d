"""The GPU path's figures (issue 12), one command: embedding faces/s in fp32 and fp16 for batch
1..256, detection images/s (one image per call, and same-size images batched per call), and
identify requests/s over HTTP (waitress on 127.0.0.1, one process) under 16 and 64 concurrent
clients, with the micro-batcher's mean embedding and detection batch sizes.

Without CUDA it prints "no CUDA" and exits 0; ``--cpu`` runs a small version on the CPU instead
(batch 1..16, fp32 only, 4 and 8 clients), which checks the benchmark itself.

    .venv/bin/python -m bench.gpu [--cpu] [--seconds 20] [--clients 16,64]

FEWFACE_* settings apply (model, FEWFACE_BATCH_MAX_SIZE: raise it on a GPU, e.g. 128).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import threading
import time

import numpy as np
import requests
import torch
from PIL import Image

from bench.common import FACES, load, machine, waitress_server
from models import FaceDetector, create_embedder
from service import create_app
from service.batcher import BatcherStats
from service.config import Settings
from service.imaging import decode_image
from service.recognizer import Engine

PHOTOS = ("couple.jpg", "img1.jpg", "img2.jpg", "img26.jpg", "img27.jpg", "img3.jpg", "img4.jpg", "selfie-many-people.jpg")
TEACH = {"person00": "img26.jpg", "person01": "img1.jpg", "person02": "img17.jpg"}
PROBES = ("img2.jpg", "img28.jpg", "img16.jpg", "selfie-many-people.jpg", "couple.jpg", "img11.jpg")


def images(max_side: int) -> list[Image.Image]:
    return [decode_image((FACES / n).read_bytes(), max_pixels=40_000_000, max_side=max_side).image for n in PHOTOS]


def rate(fn: object, items: int, min_seconds: float) -> float:
    """Items per second of ``fn()`` (each call handles ``items``), repeated for at least ``min_seconds``."""
    fn()  # type: ignore[operator]  # warm-up (cuDNN picks its algorithms per shape)
    calls, started = 0, time.perf_counter()
    while True:
        fn()  # type: ignore[operator]
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and calls >= 3:
            return calls * items / elapsed


def embedding(settings: Settings, device: torch.device, batches: list[int], halves: list[bool], seconds: float) -> None:
    detector = FaceDetector(device)
    fp32 = create_embedder(settings.model, device, flip=settings.flip, alignment=settings.alignment or None)
    crops = np.stack([fp32.crop(img, f) for img in images(800) for f in detector.detect(img)])
    print(f"## embedding, {settings.model}{' with flip (2 passes per face)' if settings.flip else ''}: faces/s by batch size")
    for half in halves:
        embedder = (
            fp32
            if not half
            else create_embedder(settings.model, device, half=True, flip=settings.flip, alignment=settings.alignment or None)
        )
        cells = []
        for size in batches:
            batch = crops[np.arange(size) % len(crops)]
            cells.append(f"{size}: {rate(lambda e=embedder, b=batch: e.embed(b), size, seconds):.1f}")
        print(f"{'fp16' if half else 'fp32'}  " + "   ".join(cells))


def detection(settings: Settings, device: torch.device, seconds: float, batch: int) -> None:
    detector = FaceDetector(device, min_face_size=settings.min_face_size, detect_side=settings.detect_side, max_faces=settings.max_faces)
    photos = images(settings.max_image_side)
    print(f"## detection, FEWFACE_DETECT_SIDE={settings.detect_side}: images/s")
    for img in (photos[2], photos[-1]):
        one = rate(lambda img=img: detector.detect(img), 1, seconds)
        same = [img] * batch
        batched = rate(lambda same=same: detector.detect_batch(same), batch, seconds)
        print(f"{img.width}x{img.height}: one per call {one:.1f} images/s, {batch} same-size per call {batched:.1f} images/s")


def closed_loop(base: str, blobs: dict[str, bytes], clients: int, seconds: float, engine: Engine) -> tuple[BatcherStats, int, float, int]:
    """``clients`` threads post identify requests back to back; after a warm-up, counts those
    answered within ``seconds``. Returns (batcher stats at the start, answered, seconds, errors)."""
    done, errors, stop, lock = [0], [0], threading.Event(), threading.Lock()

    def client(seed: int) -> None:
        rng, http = random.Random(seed), requests.Session()
        while not stop.is_set():
            name = rng.choice(PROBES)
            r = http.post(f"{base}/v1/identify", files={"file": (name, blobs[name])}, timeout=300)
            with lock:
                done[0] += r.status_code == 200
                errors[0] += r.status_code != 200

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(min(5.0, seconds / 4))  # warm-up under the same load
    before, started, first = engine.batcher.stats(), time.perf_counter(), done[0]
    time.sleep(seconds)
    count, elapsed = done[0] - first, time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join(300)
    return before, count, elapsed, errors[0]


def identify(settings: Settings, clients_list: list[int], seconds: float) -> None:
    engine = Engine.from_settings(settings)
    blobs = {n: (FACES / n).read_bytes() for n in {*PROBES, *TEACH.values()}}
    print(f"## identify over HTTP, FEWFACE_BATCH_MAX_SIZE={settings.batch_max_size}, FEWFACE_DETECT_WORKERS={settings.detect_workers}")
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(dataclasses.replace(settings, data_dir=data_dir), engine)
        with waitress_server(app, threads=max(clients_list)) as base:
            for person, name in TEACH.items():
                requests.post(f"{base}/v1/people/{person}/faces", files={"file": (name, blobs[name])}, timeout=120).raise_for_status()
            for clients in clients_list:
                before, count, elapsed, errors = closed_loop(base, blobs, clients, seconds, engine)
                after = engine.batcher.stats()
                embeds, detects = after.embed_batches - before.embed_batches, after.detect_batches - before.detect_batches
                print(
                    f"{clients:3d} clients: {count / elapsed:6.1f} requests/s ({count} in {elapsed:.0f} s, {errors} errors);"
                    f" mean embedding batch {(after.faces_embedded - before.faces_embedded) / max(1, embeds):.1f} faces,"
                    f" mean detection batch {(after.images_detected - before.images_detected) / max(1, detects):.1f} images"
                )
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="without CUDA, run a small version on the CPU")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per identify load (default 20)")
    parser.add_argument("--clients", default="", help="concurrent identify clients (default 16,64 on CUDA, 4,8 on CPU)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        print(f"# no CUDA on this machine (torch {torch.__version__}): nothing measured; --cpu runs a small version on the CPU")
        return
    device = torch.device("cuda" if cuda else "cpu")
    settings = Settings.from_env(device=str(device))
    print(f"# GPU path, {settings.model} on {torch.cuda.get_device_name(0) if cuda else 'CPU (small version)'}")
    print(f"# {machine()}")
    embedding(
        settings,
        device,
        [1, 2, 4, 8, 16, 32, 64, 128, 256] if cuda else [1, 4, 16],
        [False, True] if cuda else [False],
        2.0 if cuda else 0.5,
    )
    detection(settings, device, 2.0 if cuda else 0.5, 8 if cuda else 4)
    clients = [int(c) for c in args.clients.split(",")] if args.clients else ([16, 64] if cuda else [4, 8])
    identify(settings, clients, args.seconds if cuda else min(args.seconds, 10.0))
    print(f"# at the end: {load()}")


if __name__ == "__main__":
    main()

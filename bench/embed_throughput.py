"""Embedding throughput (faces/s): one face per call without the batcher, against the
micro-batcher under 1, 4 and 16 concurrent clients (threads, one face per request). Real
aligned face crops from ../shared/faces; the model and device come from FEWFACE_* settings.

    .venv/bin/python -m bench.embed_throughput [--faces 128] [--repeats 3] [--clients 1,4,16] [--torch-threads N]

Every figure is the median of ``--repeats`` rounds, all in this one process; each round runs
every configuration once, and each ratio is the median of the per-round ratios to that round's
baseline, so a change in machine load hits both sides alike. Besides wall-clock throughput it
prints the process's CPU time per face (all threads), which other jobs on the machine disturb
less: on a dedicated machine whose cores are kept busy, throughput follows it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.common import FACES, machine, median, run_clients
from service.config import Settings
from service.imaging import decode_image
from service.recognizer import Engine

PHOTOS = ("couple.jpg", "img1.jpg", "img2.jpg", "img26.jpg", "img27.jpg", "img3.jpg", "img4.jpg", "img5.jpg")


def real_crops(engine: Engine, n: int) -> np.ndarray:
    crops = []
    for name in PHOTOS:
        image = decode_image((FACES / name).read_bytes(), max_pixels=40_000_000, max_side=800).image
        crops += [engine.embedder.crop(image, f) for f in engine.detector.detect(image)]
    return np.stack([crops[i % len(crops)] for i in range(n)])


def measure(engine: Engine, crops: np.ndarray, clients: int, *, batched: bool) -> tuple[float, float, float]:
    """(faces/s, CPU ms per face, mean faces per forward pass), one face per request."""
    per = len(crops) // clients
    embed: Callable[[np.ndarray], np.ndarray] = engine.embed if batched else engine.embed_unbatched
    before = engine.batcher.stats()
    cpu = time.process_time()
    elapsed = run_clients(clients, per, lambda c, i: embed(crops[c * per + i][None]))
    cpu = time.process_time() - cpu
    after = engine.batcher.stats()
    faces = clients * per
    passes = after.embed_batches - before.embed_batches if batched else faces
    return faces / elapsed, cpu * 1000 / faces, faces / max(1, passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=128, help="faces per run (default 128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0 = leave torch's default)")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    settings = Settings.from_env()
    engine = Engine.from_settings(settings)
    crops = real_crops(engine, args.faces)
    clients = [int(c) for c in args.clients.split(",")]
    print(f"# embedding throughput, {settings.model} on {engine.embedder.device}{' fp16' if engine.embedder.half else ''}")
    print(f"# {machine()}")
    print(f"# {args.faces} real face crops per run, median of {args.repeats} interleaved rounds")
    print(f"# batcher: FEWFACE_BATCH_MAX_SIZE={settings.batch_max_size}, FEWFACE_BATCH_MAX_WAIT_MS={settings.batch_max_wait_ms}")

    engine.embed_unbatched(crops[:2])  # warm-up
    engine.embed(crops[:2])
    configs = [("unbatched, batch 1, one request at a time", 1, False)]
    configs.append((f"unbatched, batch 1, {max(clients):2d} concurrent callers", max(clients), False))
    configs += [(f"batched,   {n:2d} concurrent client(s)", n, True) for n in clients]
    runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in configs}
    for _ in range(args.repeats):
        for label, n, use_batcher in configs:
            runs[label].append(measure(engine, crops, n, batched=use_batcher))
    base = runs[configs[0][0]]
    for label, rows in runs.items():
        ratio = median([r[0] / b[0] for r, b in zip(rows, base, strict=True)])
        cpu_ratio = median([b[1] / r[1] for r, b in zip(rows, base, strict=True)])
        print(
            f"{label:<42}: {median([r[0] for r in rows]):6.1f} faces/s ({ratio:4.2f}x)"
            f"   CPU {median([r[1] for r in rows]):5.1f} ms/face ({cpu_ratio:4.2f}x less)   mean batch {median([r[2] for r in rows]):4.1f}"
        )
    for size in (1, 4, 16, 32):
        x = crops[:size]
        wall, cpu = [], []
        for _ in range(max(2, args.repeats) * max(1, 8 // size)):
            started, cpu_started = time.perf_counter(), time.process_time()
            engine.embed_unbatched(x)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        wall_ms, cpu_ms = median(wall) * 1000 / size, median(cpu) * 1000 / size
        print(f"network alone, batch {size:2d}: {wall_ms:6.1f} ms per face, CPU {cpu_ms:5.1f} ms per face")
    engine.close()


if __name__ == "__main__":
    main()

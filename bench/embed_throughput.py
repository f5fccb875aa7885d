"""Embedding throughput (faces/s) with and without the micro-batcher, under 1, 4 and 16
concurrent clients (threads, one face per request). Unbatched, each client thread runs the
network on its own face, as a server without the batcher would on its request threads; with
1 client that is one request at a time. Real aligned face crops from ../shared/faces; the
model and device come from FEWFACE_* settings.

    .venv/bin/python -m bench.embed_throughput [--faces 512] [--repeats 5] [--clients 1,4,16] [--torch-threads N]

Every figure is the median of ``--repeats`` rounds, all in this one process; each round runs
every configuration once, and each ratio is the median of the per-round ratios, so a change in
machine load hits both sides alike. "batched/unbatched" compares the same number of clients;
the last column compares with one unbatched request at a time. Besides wall-clock throughput
it prints the process's CPU time per face (all threads), which other jobs on the machine
disturb less: on a dedicated machine whose cores are kept busy, throughput follows it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.common import FACES, load, machine, median, run_clients
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
    """(faces/s, CPU ms per face, mean faces per forward pass), one face per request. Unbatched,
    each client thread runs the network itself on its one face, as a server without the
    batcher would on its request threads."""
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


def network_alone(engine: Engine, crops: np.ndarray, size: int) -> tuple[float, float, float]:
    """The same faces through the network in back-to-back batches of ``size`` on this thread:
    what batching could give at most, with no batcher, no clients and no waiting."""
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(0, len(crops), size):
        engine.embed_unbatched(crops[i : i + size])
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return len(crops) / elapsed, cpu * 1000 / len(crops), float(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=512, help="faces per run (default 512)")
    parser.add_argument("--repeats", type=int, default=5)
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
    print(f"# {args.faces} real face crops per run (one per request), median of {args.repeats} interleaved rounds")
    print(f"# batcher: FEWFACE_BATCH_MAX_SIZE={settings.batch_max_size}, FEWFACE_BATCH_MAX_WAIT_MS={settings.batch_max_wait_ms}")

    engine.embed_unbatched(crops[:2])  # warm-up
    engine.embed(crops[:2])
    runs: dict[tuple[int, bool], list[tuple[float, float, float]]] = {(n, b): [] for n in clients for b in (False, True)}
    ceiling: list[tuple[float, float, float]] = []
    for _ in range(args.repeats):
        for n, use_batcher in runs:
            runs[(n, use_batcher)].append(measure(engine, crops, n, batched=use_batcher))
        ceiling.append(network_alone(engine, crops, max(clients)))

    def med(rows: list[tuple[float, float, float]], column: int) -> float:
        return median([r[column] for r in rows])

    def ratio(a: list[tuple[float, float, float]], b: list[tuple[float, float, float]]) -> float:
        return median([x[0] / y[0] for x, y in zip(a, b, strict=True)])

    serial = runs.get((1, False))
    header = "clients | unbatched faces/s  CPU/face | batched faces/s  CPU/face  mean batch | batched/unbatched"
    print(header + (" | vs 1 client unbatched" if serial else ""))
    for n in clients:
        plain, batched = runs[(n, False)], runs[(n, True)]
        line = (
            f"{n:7d} | {med(plain, 0):17.1f} {med(plain, 1):6.1f} ms"
            f" | {med(batched, 0):15.1f} {med(batched, 1):6.1f} ms {med(batched, 2):11.1f} | {ratio(batched, plain):16.2f}x"
        )
        print(line + (f" | {ratio(batched, serial):20.2f}x" if serial else ""))
    top, most = runs[(max(clients), True)], max(clients)
    print(
        f"network alone, back-to-back batches of {most}: {med(ceiling, 0):.1f} faces/s, CPU {med(ceiling, 1):.1f} ms/face"
        + (f" ({ratio(ceiling, serial):.2f}x one request at a time: the most batching can give here)" if serial else "")
        + f"; the batcher with {most} clients reached {100 * ratio(top, ceiling):.0f} % of it"
    )
    print(f"ACCEPTANCE {most} clients: batched/unbatched = {ratio(top, runs[(most, False)]):.2f}x (target >= 2)")
    for size in (1, 4, 16, 32):
        rate, cpu_ms, _ = network_alone(engine, crops, size)
        print(f"network alone, batch {size:2d}: {1000 / rate:6.1f} ms per face, CPU {cpu_ms:5.1f} ms per face")
    print(f"# at the end: {load()}")
    engine.close()


if __name__ == "__main__":
    main()

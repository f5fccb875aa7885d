"""Helpers shared by the benchmarks: real photos, statistics, a real waitress server."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "deepface"


def machine() -> str:
    """One line naming the machine and the load on it (figures taken under load are noisy)."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()} {os.cpu_count()} CPUs, {mem:.0f} GiB, {gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average {load:.1f}"
    )


def ms(seconds: Sequence[float]) -> str:
    """'p50 x ms, p95 y ms' of a list of durations in seconds."""
    a = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(a, 50):8.2f} ms   p95 {np.percentile(a, 95):8.2f} ms   (n={len(a)})"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run_clients(clients: int, per_client: int, work: Callable[[int, int], Any]) -> float:
    """``clients`` threads each call ``work(client, i)`` ``per_client`` times, started together;
    returns the wall time from start to the last one finishing. Errors are re-raised."""
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def loop(client: int) -> None:
        barrier.wait()
        try:
            for i in range(per_client):
                work(client, i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


@contextmanager
def waitress_server(app: Any, threads: int = 8) -> Iterator[str]:
    """Serve ``app`` with waitress on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=threads, ident="fewface-bench")
    port = server.effective_port  # type: ignore[union-attr]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        thread.join(5)

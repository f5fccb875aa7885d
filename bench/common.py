"""Helpers shared by the benchmarks: real photos, statistics, a real waitress server."""

from __future__ import annotations

import io
import os
import platform
import statistics
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces" / "deepface"
# The last commit before issue 12's work (stock facenet-pytorch MTCNN, the service as the issue
# measured it): the "today" the issue's enrolment target is a multiple of.
BEFORE_ISSUE_12 = "bd88b05"


def machine() -> str:
    """One line naming the machine and the load on it (figures taken under load are noisy)."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()} {os.cpu_count()} CPUs, {mem:.0f} GiB, {gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); {load()}"
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
    """Serve ``app`` as the service does (``service.http.serving.DrainingServer``, waitress) on
    127.0.0.1 (a free port) in a thread; yields the base URL; stops it gracefully."""
    from service.http.serving import DrainingServer

    server = DrainingServer(app, shutdown_timeout=5.0, host="127.0.0.1", port=0, threads=threads, ident="fewface-bench")
    port = server.addresses[0][1]
    thread = threading.Thread(target=server.serve, name="bench-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(10)


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes), for every benchmark's output."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, {os.cpu_count()} CPUs)"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checkout(commit: str, into: Path) -> Path:
    """The tree of ``commit`` of this repository, extracted under ``into`` (``git archive``: no
    worktree or other git state is created). Returns the folder."""
    folder = into / f"fewface-{commit}"
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder

"""Bulk enrolment throughput: concurrent clients teach photos of ../shared/faces/deepface (one
face each, ``pick=largest``, to their identity from identities.csv) over HTTP to real
``python -m service`` servers on 127.0.0.1, one child process per code version:

* **fewface**: this checkout; more of it with other settings by ``--variant "label:K=V,..."``;
* **before**: the code of ``--baseline`` (default ``bench.common.BEFORE_ISSUE_12``, the last
  commit before issue 12's work: facenet-pytorch's stock MTCNN and the service as the issue
  measured "today's" 3-4 faces/s), extracted with ``git archive`` and served the same way;
  more commits with ``--baseline A --baseline B`` (labelled by commit).

Rounds alternate between the servers (each round teaches every photo to each server, under
fresh person ids), so a change in the machine's load hits all alike; each ratio is the median
of the per-round ratios. Also prints each server's CPU time per face (from /proc: load from
other processes disturbs it less than wall time) and the machine's load.

    .venv/bin/python -m bench.teach_throughput [--photos 48] [--clients 8] [--rounds 3] [--baseline COMMIT]
        [--variant "1-thread:FEWFACE_TORCH_THREADS=1"]

FEWFACE_* settings in the environment apply to every server.
"""

from __future__ import annotations

import argparse
import csv
import re
import tempfile
import threading
from pathlib import Path

import numpy as np
import requests

from bench.common import BEFORE_ISSUE_12, FACES, ROOT, checkout, cpu_seconds, load, machine, run_clients
from tests.serverproc import ServerProcess


def photos(n: int) -> list[tuple[str, str]]:
    """(file, identity) of the first ``n`` img*.jpg, in numeric order."""
    with open(FACES / "identities.csv", newline="") as fh:
        rows = [(r["file"], r["identity"]) for r in csv.DictReader(fh) if re.fullmatch(r"img\d+\.jpg", r["file"])]
    rows.sort(key=lambda r: int(r[0][3:-4]))
    return rows[:n]


def teach_all(server: ServerProcess, items: list[tuple[str, str]], blobs: list[bytes], clients: int, tag: str) -> tuple[float, float, int]:
    """(seconds, server CPU seconds, faces stored) for teaching ``items`` with ``clients``
    concurrent keep-alive clients, to person ids suffixed with ``tag``."""
    local = threading.local()
    stored = [0]
    lock = threading.Lock()

    def work(client: int, i: int) -> None:
        k = i * clients + client
        if k >= len(items):
            return
        if not hasattr(local, "http"):
            local.http = requests.Session()
        file, identity = items[k]
        r = local.http.post(
            server.url(f"/v1/people/{identity}-{tag}/faces"),
            files={"file": (file, blobs[k], "image/jpeg")},
            data={"pick": "largest"},
            timeout=600,
        )
        assert r.status_code in (200, 201), r.text
        with lock:
            stored[0] += len(r.json()["faces"])

    cpu = cpu_seconds(server.pid)
    elapsed = run_clients(clients, -(-len(items) // clients), work)
    return elapsed, cpu_seconds(server.pid) - cpu, stored[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--clients", default="8", help="concurrent clients, comma-separated (e.g. 1,8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each teaching every photo to every server")
    parser.add_argument("--baseline", action="append", default=[], help=f"commit to compare with (default {BEFORE_ISSUE_12})")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="LABEL:K=V,...", help="this checkout again with these environment variables"
    )
    args = parser.parse_args()
    items = photos(args.photos)
    blobs = [(FACES / f).read_bytes() for f, _ in items]
    baselines = args.baseline or [BEFORE_ISSUE_12]
    client_counts = [int(c) for c in args.clients.split(",")]
    print(f"# teach throughput: {len(items)} deepface photos over HTTP, {args.rounds} alternating rounds, a child server per version")
    print(f"# fewface = this checkout; {', '.join(baselines)} = git archive of that commit ({BEFORE_ISSUE_12}: before issue 12)")
    print(f"# {machine()}")
    with tempfile.TemporaryDirectory(prefix="fewface-teach-") as tmp:
        folder = Path(tmp)
        setups: dict[str, tuple[Path, dict[str, str]]] = {"fewface": (ROOT, {})}
        for spec in args.variant:
            label, _, env = spec.partition(":")
            setups[label] = (ROOT, dict(kv.split("=", 1) for kv in env.split(",") if kv))
        setups |= {commit: (checkout(commit, folder), {}) for commit in baselines}
        servers = {
            label: ServerProcess(folder / f"data-{i}", folder / f"{i}.log", root=root, PYTHONPATH="", **env)
            for i, (label, (root, env)) in enumerate(setups.items())
        }
        for label, (_, env) in setups.items():
            if env:
                print(f"# {label}: {' '.join(f'{k}={v}' for k, v in env.items())}")
        try:
            for server in servers.values():
                server.start(timeout=180.0)
            for server in servers.values():  # warm-up: first calls allocate buffers
                teach_all(server, items[:4], blobs[:4], 2, "warmup")
            rates: dict[tuple[str, int], list[float]] = {}
            cpu: dict[tuple[str, int], list[float]] = {}
            for r in range(args.rounds):
                for clients in client_counts:
                    for label, server in servers.items():
                        elapsed, used, faces = teach_all(server, items, blobs, clients, f"r{r}c{clients}")
                        rates.setdefault((label, clients), []).append(faces / elapsed)
                        cpu.setdefault((label, clients), []).append(used / faces)
                        print(
                            f"round {r + 1} {label:<8} {clients:2d} client(s): {faces} faces in {elapsed:6.1f} s ="
                            f" {faces / elapsed:5.2f} faces/s; server CPU {used / faces * 1000:4.0f} ms/face,"
                            f" {used / elapsed:.2f} cores; {load()}"
                        )
        finally:
            for server in servers.values():
                server.kill()
    print("# medians over rounds")
    for clients in client_counts:
        ours = rates["fewface", clients]
        for label in servers:
            mine = rates[label, clients]
            line = (
                f"{label:<8} {clients:2d} client(s): {np.median(mine):5.2f} faces/s (rounds: {', '.join(f'{x:.2f}' for x in mine)});"
                f" server CPU {np.median(cpu[label, clients]) * 1000:5.0f} ms/face"
            )
            if label != "fewface" and label in baselines:
                ratios = [a / b for a, b in zip(ours, mine, strict=True)]
                cpu_ratio = np.median([b / a for a, b in zip(cpu["fewface", clients], cpu[label, clients], strict=True)])
                line += f"   fewface / {label} = {np.median(ratios):.2f}x faces/s, {cpu_ratio:.2f}x less CPU per face"
            elif label != "fewface":
                ratios = [a / b for a, b in zip(mine, ours, strict=True)]
                cpu_ratio = np.median([b / a for a, b in zip(cpu[label, clients], cpu["fewface", clients], strict=True)])
                line += f"   {label} / fewface = {np.median(ratios):.2f}x faces/s, {cpu_ratio:.2f}x less CPU per face"
            print(line)
    print(f"# at the end: {load()}")


if __name__ == "__main__":
    main()

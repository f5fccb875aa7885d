"""Teach and identify throughput through nginx with 1 and 2 replicas on one PostgreSQL
(tools/cluster.py: Debian's postgresql and nginx on loopback), with the CPU each request cost.

Concurrent clients send real photos (../shared/faces/deepface, one face each) through the proxy:
teach (each to a new person) then identify. CPU per request is the CPU time (user + system, from
/proc) the replicas, nginx and PostgreSQL spent during the phase, divided by its requests. On a
machine with few cores the second replica competes with the first for the same cores: the gain
is what the cores allow, not 2x.

    .venv/bin/python -m bench.replicas_throughput [--replicas 1,2] [--clients 4] [--requests 48]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import FACES  # noqa: E402
from tools.cluster import Cluster  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def photos(n: int) -> list[bytes]:
    with open(FACES / "identities.csv", newline="") as fh:
        files = [r["file"] for r in csv.DictReader(fh) if re.fullmatch(r"img\d+\.jpg", r["file"])]
    files.sort(key=lambda f: int(f[3:-4]))
    return [(FACES / f).read_bytes() for f in files[:n]]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its living descendants, plus the children it has reaped."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents[int(entry)] = int(fields[1])
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or (fields := _stat(pid)) is None:
            continue
        seen.add(pid)
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        if pid == root:
            total += (int(fields[13]) + int(fields[14])) / TICK  # cutime, cstime
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def cluster_cpu(cluster: Cluster) -> dict[str, float]:
    out = {"replicas": sum(tree_cpu(r.pid) for r in cluster.replicas)}
    assert cluster.nginx is not None and cluster.nginx.proc is not None
    out["nginx"] = tree_cpu(cluster.nginx.proc.pid)
    pid_file = cluster.pg.data / "postmaster.pid" if cluster.pg is not None else None
    out["postgresql"] = tree_cpu(int(pid_file.read_text().split()[0])) if pid_file and pid_file.is_file() else 0.0
    return out


Send = Callable[[requests.Session, int], requests.Response]


def phase(cluster: Cluster, clients: int, total: int, send: Send) -> tuple[float, dict[str, float]]:
    """Run ``total`` requests over ``clients`` threads; (requests/s, CPU ms per request by part)."""
    counter = iter(range(total))
    lock = threading.Lock()
    errors: list[str] = []

    def loop() -> None:
        session = requests.Session()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            r = send(session, i)
            if r.status_code >= 300:
                errors.append(f"{r.status_code} {r.text[:200]}")

    before = cluster_cpu(cluster)
    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    after = cluster_cpu(cluster)
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return total / wall, {k: (after[k] - before[k]) * 1000 / total for k in after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=48, help="per phase")
    parser.add_argument("--photos", type=int, default=12)
    args = parser.parse_args()
    blobs = photos(args.photos)
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.clients} clients, {args.requests} requests per phase, through nginx round robin")
    for n in [int(x) for x in args.replicas.split(",")]:
        with tempfile.TemporaryDirectory() as work:
            with Cluster(Path(work), replicas=n, FEWFACE_THREADS="8") as cluster:
                url = cluster.url
                for i in range(2 * n):  # warm every replica once
                    requests.post(f"{url}/v1/identify", data=blobs[i % len(blobs)], headers={"Content-Type": "image/jpeg"}, timeout=60)

                def teach(s: requests.Session, i: int, url: str = url) -> requests.Response:
                    return s.post(f"{url}/v1/people/t{i}/faces?quality=off", files={"file": ("p.jpg", blobs[i % len(blobs)])}, timeout=120)

                def identify(s: requests.Session, i: int, url: str = url) -> requests.Response:
                    return s.post(f"{url}/v1/identify", data=blobs[i % len(blobs)], headers={"Content-Type": "image/jpeg"}, timeout=120)

                for label, send in (("teach", teach), ("identify", identify)):
                    rate, cpu = phase(cluster, args.clients, args.requests, send)
                    parts = "  ".join(f"{k} {v:6.1f}" for k, v in cpu.items())
                    print(f"{n} replica(s)  {label:<8}  {rate:6.2f} req/s   CPU ms/request: total {sum(cpu.values()):6.1f} ({parts})")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

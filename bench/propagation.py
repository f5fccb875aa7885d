"""Change-propagation delay between replicas: two ``python -m service`` replicas on one PostgreSQL
(tools/cluster.py, Debian's postgresql on loopback); a client teaches a new person through replica
A, and the moment A acknowledges, polls replica B's ``/readyz?index=digest`` (``index.faces``: its in-memory index) every ~2 ms until
B's in-memory index holds the face. The delay is acknowledgement -> visible on B (the poll's own
granularity included). A notification that is lost (or a feed reconnecting) is caught by the next
poll: the delay is then bounded by FEWFACE_FEED_POLL_INTERVAL plus one poll, by construction.

    .venv/bin/python -m bench.propagation [--samples 100] [--poll-interval 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import FACES  # noqa: E402
from tools.cluster import Cluster  # noqa: E402

PHOTO = "img27.jpg"


def faces_on(session: requests.Session, base: str) -> int:
    return int(session.get(f"{base}/readyz?index=digest", timeout=10).json()["index"]["faces"])


def measure(cluster: Cluster, samples: int, prefix: str) -> list[float]:
    a, b = cluster.replicas[0].base, cluster.replicas[1].base
    blob = (FACES / PHOTO).read_bytes()
    teacher, watcher = requests.Session(), requests.Session()
    delays = []
    for i in range(samples):
        before = faces_on(watcher, b)
        r = teacher.post(f"{a}/v1/people/{prefix}-{i}/faces", files={"file": (PHOTO, blob)}, timeout=60)
        acked = time.perf_counter()
        assert r.status_code == 201, r.text
        while faces_on(watcher, b) <= before:
            if time.perf_counter() - acked > 30:
                raise RuntimeError("replica B never saw the write")
            time.sleep(0.002)
        delays.append(time.perf_counter() - acked)
    return delays


def report(label: str, delays: list[float]) -> None:
    a = np.asarray(delays) * 1000
    print(f"{label:<34} p50 {np.percentile(a, 50):7.1f} ms   p99 {np.percentile(a, 99):7.1f} ms   max {a.max():7.1f} ms   (n={len(a)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="FEWFACE_FEED_POLL_INTERVAL of the replicas")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    with tempfile.TemporaryDirectory() as work:
        env = {"FEWFACE_FEED_POLL_INTERVAL": str(args.poll_interval), "FEWFACE_THREADS": "4"}
        with Cluster(Path(work), replicas=2, **env) as cluster:
            measure(cluster, 3, "warm")  # first requests load lazily-initialised paths
            report("teach on A -> in B's index", measure(cluster, args.samples, "p"))
    print(f"load average after: {os.getloadavg()[0]:.2f}; poll interval {args.poll_interval} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

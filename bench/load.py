"""Sustained load on a real ``python -m service`` over loopback: client threads mix identify (real
photos) and list requests for a bounded time. Prints requests/s, latency p50/p95/p99 per kind,
errors, 5xx (must be 0), and the server's resident memory (VmRSS) from start to end, sampled
every second, to show whether memory stays flat.

    .venv/bin/python -m bench.load [--seconds 60] [--warmup 15] [--clients 4] [--identify-share 0.7]

FEWFACE_* settings in the environment apply to the server (model, device, threads, ...).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import requests

from tests.serverproc import ServerProcess

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "deepface"
GALLERY = ["img27.jpg", "img12.jpg", "img25.jpg", "img5.jpg", "img62.jpg", "img21.jpg", "img10.jpg", "img50.jpg"]
PROBES = ["img28.jpg", "img46.jpg", "img16.jpg", "img51.jpg", "selfie-many-people.jpg", "img11.jpg"]


def percentiles(values: list[float]) -> str:
    if not values:
        return "n=0"
    a = np.asarray(values) * 1000
    return f"p50 {np.percentile(a, 50):7.1f} ms  p95 {np.percentile(a, 95):7.1f} ms  p99 {np.percentile(a, 99):7.1f} ms  (n={len(a)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured load (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="client threads, each with a keep-alive session (default 4)")
    parser.add_argument("--identify-share", type=float, default=0.7, help="fraction of requests that are identify (default 0.7)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of the same load before measuring (default 15)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop a phase after this many requests")
    parser.add_argument("--faces", type=Path, default=FACES)
    args = parser.parse_args()

    photos = {name: (args.faces / name).read_bytes() for name in GALLERY + PROBES}
    with tempfile.TemporaryDirectory(prefix="fewface-load-") as tmp:
        server = ServerProcess(Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            started = time.monotonic()
            server.start()
            print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; server up in {time.monotonic() - started:.1f} s")
            rss_ready = server.rss_kb()
            for i, name in enumerate(GALLERY):
                r = requests.post(server.url(f"/v1/people/person{i}/faces"), files={"file": (name, photos[name])}, timeout=120)
                r.raise_for_status()
            # warm-up under the same concurrency: every worker thread allocates its buffers once
            warmup = run_load(server, photos, args, args.warmup)
            rss_start = server.rss_kb()
            report = run_load(server, photos, args, args.seconds)
            rss_end = server.rss_kb()
        finally:
            server.kill()

    total = sum(len(v) for v in report["latency"].values())
    seconds = report["seconds"]
    print(f"load: {args.clients} client threads for {seconds:.1f} s, {args.identify_share:.0%} identify / rest GET /v1/people")
    print(f"  requests       {total} ({total / seconds:.1f} req/s)")
    for kind, values in sorted(report["latency"].items()):
        print(f"  {kind:<14} {len(values) / seconds:6.1f} req/s   {percentiles(values)}")
    print(f"  all            {percentiles([v for vs in report['latency'].values() for v in vs])}")
    statuses = report["statuses"]
    print(f"  statuses       {dict(sorted(statuses.items()))}")
    errors = sum(n for s, n in statuses.items() if not 200 <= s < 300) + report["failures"]
    print(f"  errors         {errors} (connection failures: {report['failures']})")
    server_errors = sum(n for s, n in (statuses + warmup["statuses"]).items() if s >= 500)
    print(f"  5xx            {server_errors} (warm-up included)")
    samples = report["rss"]
    half = samples[len(samples) // 2 :] or samples
    print(
        f"server RSS: ready {rss_ready / 1024:.0f} MiB, after {args.warmup:.0f} s warm-up {rss_start / 1024:.0f} MiB, "
        f"end {rss_end / 1024:.0f} MiB; "
        f"during load min {min(samples) / 1024:.0f} / max {max(samples) / 1024:.0f} MiB; "
        f"second half {min(half) / 1024:.0f}..{max(half) / 1024:.0f} MiB ({len(samples)} samples, 1/s)"
    )
    print(f"  growth over the measured load: {(rss_end - rss_start) / 1024:+.0f} MiB")
    step = max(1, len(samples) // 10)
    print("  timeline (s: MiB): " + ", ".join(f"{i}: {samples[i] / 1024:.0f}" for i in range(0, len(samples), step)))
    print(f"machine at the end: load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min)")


def run_load(server: ServerProcess, photos: dict[str, bytes], args: argparse.Namespace, duration: float) -> dict:
    latency: dict[str, list[float]] = defaultdict(list)
    statuses: Counter[int] = Counter()
    failures = 0
    lock = threading.Lock()
    stop = threading.Event()
    sent = 0

    def client(seed: int) -> None:
        nonlocal failures, sent
        rng = random.Random(seed)
        session = requests.Session()
        while not stop.is_set():
            with lock:
                if sent >= args.max_requests:
                    return
                sent += 1
            identify = rng.random() < args.identify_share
            kind = "identify" if identify else "list"
            t = time.perf_counter()
            try:
                if identify:
                    name = rng.choice(PROBES + GALLERY)
                    r = session.post(server.url("/v1/identify"), data=photos[name], headers={"Content-Type": "image/jpeg"}, timeout=120)
                else:
                    r = session.get(server.url("/v1/people"), timeout=120)
                r.content  # noqa: B018 - read the whole answer
            except requests.RequestException:
                with lock:
                    failures += 1
                continue
            elapsed = time.perf_counter() - t
            with lock:
                latency[kind].append(elapsed)
                statuses[r.status_code] += 1

    rss: list[int] = []  # VmRSS samples (KiB), one a second
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    deadline = started + duration
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        rss.append(server.rss_kb())
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    stop.set()
    for t in threads:
        t.join(timeout=180)
    seconds = time.monotonic() - started
    rss.append(server.rss_kb())
    return {"latency": latency, "statuses": statuses, "failures": failures, "rss": rss, "seconds": seconds}


if __name__ == "__main__":
    main()

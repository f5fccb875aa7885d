"""What recording Prometheus metrics costs per request, and what one scrape costs.

    .venv/bin/python -m bench.metrics_overhead [--requests 2000] [--identifies 20]

Two apps share one engine, one with FEWFACE_METRICS=true and one with false; rounds alternate
between them (so drift in the machine's load hits both). Figures: per-request time of a cheap
route (GET /v1/people, through Flask's test client: the hooks' cost is all that differs) and of
identify on a real photo, then the time of GET /metrics itself. Compare the two columns of one
run, never figures across machines.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

from bench.common import FACES, machine, median, ms
from service import create_app
from service.config import Settings
from service.recognizer import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="GET /v1/people per app")
    parser.add_argument("--identifies", type=int, default=20, help="identify requests per app")
    args = parser.parse_args()
    print(machine())
    engine = Engine.from_settings(Settings.from_env({}))
    with tempfile.TemporaryDirectory() as tmp:
        apps = {on: create_app(Settings.from_env({}, data_dir=f"{tmp}/{on}", metrics=on), engine) for on in (True, False)}
        clients = {on: app.test_client() for on, app in apps.items()}
        jpeg = (FACES / "img26.jpg").read_bytes()
        for c in clients.values():  # warm-up, and one person so identify searches something
            assert c.post("/v1/people/p/faces", data={"file": (io.BytesIO(jpeg), "a.jpg")}).status_code == 201
        cheap: dict[bool, list[float]] = {True: [], False: []}
        heavy: dict[bool, list[float]] = {True: [], False: []}
        rounds = 10
        for _ in range(rounds):
            for on, c in clients.items():
                started = time.perf_counter()
                for _ in range(args.requests // rounds):
                    c.get("/v1/people")
                cheap[on].append((time.perf_counter() - started) / (args.requests // rounds))
        for _ in range(args.identifies):
            for on, c in clients.items():
                started = time.perf_counter()
                assert c.post("/v1/identify", data={"file": (io.BytesIO(jpeg), "a.jpg")}).status_code == 200
                heavy[on].append(time.perf_counter() - started)
        scrapes = []
        for _ in range(50):
            started = time.perf_counter()
            body = clients[True].get("/metrics").data
            scrapes.append(time.perf_counter() - started)
    for on in (True, False):
        print(f"metrics {'on ' if on else 'off'}: GET /v1/people {median(cheap[on]) * 1e6:8.1f} us/request (median of {rounds} rounds)")
    extra = median(cheap[True]) - median(cheap[False])
    print(f"  recording costs {extra * 1e6:+.1f} us per request ({median(cheap[True]) / median(cheap[False]):.3f}x a cheap route)")
    for on in (True, False):
        print(f"metrics {'on ' if on else 'off'}: identify  {ms(heavy[on])}")
    print(f"GET /metrics: {ms(scrapes)}, {len(body)} bytes")
    print(machine())


if __name__ == "__main__":
    main()

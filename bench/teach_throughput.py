"""Bulk enrolment throughput: teach 48 photos of ../shared/faces (one face each, pick=largest,
to their identity from identities.csv) over HTTP to a real waitress server on 127.0.0.1,
by one client one photo at a time, then by several concurrent clients; a fresh gallery each.

Each configuration runs with Fewface's detector and, in the same run, with the detector it
replaced (facenet-pytorch's stock MTCNN, ``--detectors fewface,stock``), for the ratio.

    .venv/bin/python -m bench.teach_throughput [--photos 48] [--clients 1,8] [--detectors fewface,stock]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import tempfile
import threading

import requests

from bench.common import FACES, machine, run_clients, waitress_server
from bench.stock_detector import engine_with
from service import create_app
from service.config import Settings
from service.recognizer import Engine


def photos(n: int) -> list[tuple[str, str]]:
    """(file, identity) of the first ``n`` img*.jpg, in numeric order."""
    with open(FACES / "identities.csv", newline="") as fh:
        rows = [(r["file"], r["identity"]) for r in csv.DictReader(fh) if re.fullmatch(r"img\d+\.jpg", r["file"])]
    rows.sort(key=lambda r: int(r[0][3:-4]))
    return rows[:n]


def teach_all(engine: Engine, settings: Settings, items: list[tuple[str, str]], clients: int) -> tuple[float, int]:
    """(seconds, faces stored) for teaching ``items`` with ``clients`` concurrent clients."""
    blobs = [(FACES / f).read_bytes() for f, _ in items]
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings.from_env(data_dir=data_dir), engine)
        local = threading.local()
        with waitress_server(app, settings.threads) as base:

            def work(client: int, i: int) -> None:
                k = i * clients + client
                if k >= len(items):
                    return
                if not hasattr(local, "http"):
                    local.http = requests.Session()
                file, identity = items[k]
                r = local.http.post(
                    f"{base}/v1/people/{identity}/faces",
                    files={"file": (file, blobs[k], "image/jpeg")},
                    data={"pick": "largest"},
                    timeout=600,
                )
                assert r.status_code in (200, 201), r.text

            elapsed = run_clients(clients, -(-len(items) // clients), work)
            faces = app.extensions["fewface"].gallery.counts()[1]
    return elapsed, faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--detectors", default="fewface,stock", help="fewface and/or stock (today's facenet-pytorch MTCNN)")
    args = parser.parse_args()
    settings = Settings.from_env()
    items = photos(args.photos)
    via = f"HTTP (waitress, {settings.threads} threads)"
    print(f"# teach throughput, {len(items)} photos over {via}; {settings.model}")
    print(
        f"# FEWFACE_DETECT_WORKERS={settings.detect_workers}, FEWFACE_BATCH_MAX_WAIT_MS={settings.batch_max_wait_ms},"
        f" FEWFACE_DETECT_SIDE={settings.detect_side}"
    )
    print(f"# {machine()}")
    rates: dict[tuple[str, int], float] = {}
    for name in args.detectors.split(","):
        engine: Engine = engine_with(name, settings)  # type: ignore[assignment]
        teach_all(engine, settings, items[:2], 1)  # warm-up
        for clients in (int(c) for c in args.clients.split(",")):
            before = engine.batcher.stats()
            elapsed, faces = teach_all(engine, settings, items, clients)
            after = engine.batcher.stats()
            rate = rates[name, clients] = faces / elapsed
            batches = after.detect_batches - before.detect_batches
            print(
                f"{name:<8} {clients:2d} client(s): {faces} faces in {elapsed:6.1f} s = {rate:5.2f} faces/s;"
                f" {after.detect_requests - before.detect_requests} detections in {batches} detector calls,"
                f" {after.faces_embedded - before.faces_embedded} faces in {after.embed_batches - before.embed_batches} forward passes"
            )
        engine.close()
    for clients in (int(c) for c in args.clients.split(",")):
        if ("fewface", clients) in rates and ("stock", clients) in rates:
            print(f"{clients:2d} client(s): fewface / stock = {rates['fewface', clients] / rates['stock', clients]:.2f}x faces/s")
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

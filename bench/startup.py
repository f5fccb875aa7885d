"""Start-up time and memory of one replica over a PostgreSQL gallery of 100k and 1M faces.

A throwaway PostgreSQL (tests/pgserver.py, Debian's server on loopback) gets one database per
size: the schema is made by opening it as Fewface does (service.store.open_gallery), then the rows
go in with COPY (synthetic unit embeddings of the model's size, 5 faces per person). A real
``python -m service`` then starts on it; the figure is the time until ``/readyz`` answers 200
(models load in that time too, so the same start on an empty gallery is measured as the
baseline) and the process's resident memory once ready. RAM per million faces is the
difference from the empty gallery, scaled.

    .venv/bin/python -m bench.startup [--sizes 0,100000,1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.config import Settings  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402
from tests.serverproc import ServerProcess  # noqa: E402

FACES_PER_PERSON = 5
CHUNK = 50_000


def make_schema(url: str) -> tuple[str, int]:
    """Open the database as the service would (creates the schema and the default collection)."""
    from service.store import open_gallery

    gallery = open_gallery(Settings.from_env({}, database_url=url))
    try:
        return gallery.model_id, gallery.dim
    finally:
        gallery.close()


def fill(url: str, faces: int, model_id: str, dim: int, seed: int = 1) -> float:
    """COPY ``faces`` synthetic faces (and their people) into the default collection; seconds."""
    import psycopg

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    box = json.dumps([10.0, 10.0, 110.0, 130.0])
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            people = (faces + FACES_PER_PERSON - 1) // FACES_PER_PERSON
            with cur.copy("COPY people (collection, id, name, created_at) FROM STDIN") as copy:
                for p in range(people):
                    copy.write_row(("default", f"p{p}", f"Person {p}", 1.7e9))
            with cur.copy(
                "COPY faces (id, collection, person_id, model_id, embedding, image_sha256, box, detection_prob, created_at) FROM STDIN"
            ) as copy:
                for start in range(0, faces, CHUNK):
                    n = min(CHUNK, faces - start)
                    vectors = rng.standard_normal((n, dim), dtype=np.float32)
                    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                    for j in range(n):
                        i = start + j
                        sha = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
                        copy.write_row(
                            (i + 1, "default", f"p{i // FACES_PER_PERSON}", model_id, vectors[j].tobytes(), sha, box, 0.99, 1.7e9)
                        )
            cur.execute("SELECT setval(pg_get_serial_sequence('faces', 'id'), GREATEST((SELECT MAX(id) FROM faces), 1))")
            cur.execute("ANALYZE")
        conn.commit()
    return time.perf_counter() - started


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_in_process(url: str) -> tuple[float, int, str]:
    """(seconds, RSS growth KiB, index kind) for opening the gallery here: what a replica does at
    start apart from loading its models (read every row, build the index)."""
    import gc

    from service.store import open_gallery

    gc.collect()
    before = rss_kb()
    started = time.perf_counter()
    gallery = open_gallery(Settings.from_env({}, database_url=url))
    took = time.perf_counter() - started
    gc.collect()
    grown = rss_kb() - before
    kind = gallery.index_kind
    gallery.close()
    del gallery
    gc.collect()
    return took, grown, kind


def start_replica(url: str, work: Path, name: str) -> tuple[float, int]:
    """(seconds to ready, RSS KiB once ready)."""
    server = ServerProcess(work / name, work / f"{name}.log", FEWFACE_DATABASE_URL=url)
    started = time.perf_counter()
    server.start(timeout=900)
    took = time.perf_counter() - started
    try:
        time.sleep(1.0)  # memory trimmed back after start
        return took, server.rss_kb()
    finally:
        server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0,100000,1000000")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[int, tuple[float, int]] = {}
    with PgServer() as pg, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in sizes:
            url = pg.create_database(f"g{size}")
            model_id, dim = make_schema(url)
            copy_s = fill(url, size, model_id, dim) if size else 0.0
            db_mb = float(pg.psql(f"SELECT pg_database_size('g{size}')")) / 2**20
            open_s, grown, kind = open_in_process(url) if size else (0.0, 0, "-")
            took, rss = start_replica(url, work, f"r{size}")
            results[size] = (took, rss)
            print(
                f"{size:>9} faces ({dim}-D): COPY {copy_s:6.1f} s, database {db_mb:7.0f} MiB; gallery open (rows + {kind} index) "
                f"{open_s:6.1f} s, +{grown / 1024:6.0f} MiB; replica ready in {took:6.1f} s, RSS {rss / 1024:7.0f} MiB "
                f"(load {os.getloadavg()[0]:.2f})"
            )
            pg.drop_database(f"g{size}")
    if 0 in results:
        base_t, base_rss = results[0]
        for size, (took, rss) in results.items():
            if size:
                print(
                    f"{size:>9} faces: +{took - base_t:6.1f} s over the empty gallery's start, "
                    f"+{(rss - base_rss) / 1024:6.0f} MiB = {(rss - base_rss) / 1024 / (size / 1e6):6.0f} MiB per million faces"
                )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

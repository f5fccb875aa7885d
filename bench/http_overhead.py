"""What HTTP adds to a small photo. The same LFW news photos (250x250, one face each, evenly
spread over lfw-dev) go, interleaved photo by photo in one run, through

* **direct**: the identify pipeline on this thread with no service threading (decode, detect,
  rank, crop, embed, quality, search), the reference: "the same pipeline in-process";
* **Recognizer.identify**: the route's own calls in this process (through the micro-batcher);
* **HTTP**: ``POST /facebox/check`` (multipart upload, keep-alive session) to a real
  ``python -m service`` on 127.0.0.1;

after teaching the same three people to both. Prints each side's median over photos of each
photo's median time, HTTP / direct (issue 12's target: <= 1.20), the CPU time per call (the
server's from /proc; this process's for the in-process sides and the HTTP client: steadier than
wall time on a shared machine) and the machine's load before and after. The order of the sides
rotates from one run to the next.

    .venv/bin/python -m bench.http_overhead [--photos 30] [--rounds 3] [--route /facebox/check]

FEWFACE_* settings in the environment apply to both processes (model, threads, workers, ...).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

from bench.common import FACES, machine
from bench.vs_face_recognition import sample
from models.quality import assess
from models.ranking import rank_faces
from service import create_app
from service.config import Settings
from service.imaging import decode_image
from service.recognizer import Recognizer
from service.store.gallery import Match
from tests.serverproc import ServerProcess

TEACH = {"person00": "img26.jpg", "person01": "img1.jpg", "person02": "img17.jpg"}


def server_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_identify(recognizer: Recognizer, data: bytes) -> list[list[Match]]:
    """The identify pipeline on this thread with no service threading at all (no batcher):
    decode, detect, rank, crop, embed, quality, search, threshold."""
    s, engine = recognizer.settings, recognizer.engine
    decoded = decode_image(data, max_pixels=s.max_image_pixels, max_side=s.max_image_side)
    faces = rank_faces(engine.detector.detect(decoded.image), *decoded.image.size)[: s.max_faces]
    if not faces:
        return []
    vectors = engine.embedder.embed([engine.embedder.crop(decoded.image, f) for f in faces])
    for f in faces:
        assess(decoded.image, f)
    matches, gallery_faces = recognizer.gallery.search_sized(vectors, 1)
    recognizer.rule.identify_threshold(gallery_faces)
    return matches


def parse_servers(specs: list[str]) -> dict[str, dict[str, str]]:
    """``--server "label:K=V,K=V"`` options -> {label: extra environment}; none: one plain server."""
    servers: dict[str, dict[str, str]] = {}
    for spec in specs or ["HTTP:"]:
        label, _, env = spec.partition(":")
        servers[label] = dict(kv.split("=", 1) for kv in env.split(",") if kv)
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=30, help="LFW news photos (evenly spread over lfw-dev)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per photo and side (after one warm-up of each)")
    parser.add_argument("--route", default="/facebox/check", help="POST route taking a multipart 'file' (or /v1/identify)")
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="LABEL:K=V,...",
        help="a server with these extra environment variables (repeat to compare settings in one run; default: one plain server)",
    )
    args = parser.parse_args()
    paths = sample(0, args.photos)
    blobs = [p.read_bytes() for p in paths]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fewface-http-") as tmp:
        servers = {
            label: ServerProcess(Path(tmp) / f"server-{i}", Path(tmp) / f"server-{i}.log", **env)
            for i, (label, env) in enumerate(parse_servers(args.server).items())
        }
        settings = Settings.from_env(data_dir=str(Path(tmp) / "local-data"))
        app = create_app(settings)
        recognizer = app.extensions["fewface"]
        try:
            for server in servers.values():
                server.start()
            print(f"# HTTP overhead on small photos: {len(paths)} LFW photos, {args.rounds} timed runs each, interleaved")
            print(f"# {settings.model}, FEWFACE_THREADS={settings.threads}, FEWFACE_DETECT_WORKERS={settings.detect_workers}")
            for label, server in servers.items():
                if server.extra_env:
                    print(f"# server {label!r}: {' '.join(f'{k}={v}' for k, v in server.extra_env.items())}")
            print(f"# {machine()}")
            with requests.Session() as http, app.test_client() as client:
                for person, filename in TEACH.items():
                    data = (FACES / filename).read_bytes()
                    for server in servers.values():
                        r = http.post(server.url(f"/v1/people/{person}/faces"), files={"file": (filename, data, "image/jpeg")}, timeout=120)
                        assert r.status_code in (200, 201), r.text
                    r = client.post(f"/v1/people/{person}/faces", data={"file": (io.BytesIO(data), filename)})
                    assert r.status_code in (200, 201), r.json

                def over_http(server: ServerProcess) -> Callable[[bytes], int]:
                    def run(data: bytes) -> int:
                        r = http.post(server.url(args.route), files={"file": ("photo.jpg", data, "image/jpeg")}, timeout=120)
                        assert r.status_code == 200, r.text
                        body = r.json()
                        return int(body.get("facesCount", body.get("face_count", 0)))

                    return run

                def in_process(data: bytes) -> int:
                    s = recognizer.settings
                    decoded = decode_image(data, max_pixels=s.max_image_pixels, max_side=s.max_image_side)
                    return len(recognizer.identify(decoded, top_k=1))

                def direct(data: bytes) -> int:
                    return len(direct_identify(recognizer, data))

                sides: dict[str, Callable[[bytes], int]] = {"direct": direct, "in-process": in_process}
                sides.update({label: over_http(server) for label, server in servers.items()})
                for data in blobs[:3]:  # warm-up: first calls allocate buffers, fill caches
                    for fn in sides.values():
                        fn(data)
                per_photo: dict[str, list[float]] = {name: [] for name in sides}
                cpu = dict.fromkeys(sides, 0.0)
                server_cpu = dict.fromkeys(servers, 0.0)
                faces = dict.fromkeys(sides, 0)
                calls = 0
                for data in blobs:
                    times: dict[str, list[float]] = {name: [] for name in sides}
                    found: dict[str, int] = {}
                    for r in range(args.rounds):
                        order = list(sides.items())
                        shift = (r + calls) % len(order)  # each side takes its turn first: no order bias
                        for name, fn in order[shift:] + order[:shift]:
                            pid = servers[name].proc.pid if name in servers else None  # type: ignore[union-attr]
                            other, own, t = server_cpu_seconds(pid) if pid else 0.0, time.process_time(), time.perf_counter()
                            found[name] = fn(data)
                            times[name].append(time.perf_counter() - t)
                            cpu[name] += time.process_time() - own
                            if pid:
                                server_cpu[name] += server_cpu_seconds(pid) - other
                    calls += args.rounds
                    for name in sides:
                        per_photo[name].append(float(np.median(times[name])))
                        faces[name] += found[name]
        finally:
            for server in servers.values():
                server.kill()
            recognizer.engine.close()
            recognizer.gallery.close()
    direct_p50 = float(np.median(per_photo["direct"]))
    labels = {"direct": "in-process, direct (no batcher)", "in-process": "in-process, Recognizer.identify"}
    labels.update({label: f"{label}: POST {args.route}" for label in servers})
    for name, label in labels.items():
        p50 = float(np.median(per_photo[name]))
        mine = "client" if name in servers else "this process"
        extra = f"; server CPU {server_cpu[name] * 1000 / calls:5.1f} ms/request" if name in servers else ""
        print(
            f"{label:<40} {p50 * 1000:7.1f} ms/photo (mean {np.mean(per_photo[name]) * 1000:6.1f}), {faces[name]} faces;"
            f" {mine} CPU {cpu[name] * 1000 / calls:5.1f} ms/call{extra}   / direct {p50 / direct_p50:.2f}"
        )
    for name in servers:
        ratio = float(np.median(per_photo[name])) / direct_p50
        print(f"{name}: HTTP / in-process (direct) = {ratio:.2f}  (issue 12 target <= 1.20: {'met' if ratio <= 1.2 else 'NOT met'})")
    print(f"# load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1-minute)")


if __name__ == "__main__":
    main()

"""Identify latency, one client: a one-face photo, a group photo and a small LFW news photo, end
to end over HTTP (a real waitress server on 127.0.0.1, or Flask's test client with
--test-client), after teaching three people. In the same run, for each photo: the same
identify in-process (decode + ``Recognizer.identify``, no HTTP) and face_recognition's
pipeline (dlib HOG + encodings, when installed), so the ratios compare like with like. Then
where the time goes: decode, detect, crop, embed, search.

    .venv/bin/python -m bench.identify_latency [--requests 10] [--test-client]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import requests

from bench.common import FACES, load, machine, ms, waitress_server
from bench.vs_face_recognition import face_recognition_pipeline
from service import create_app
from service.config import Settings
from service.imaging import decode_image
from service.recognizer import Engine

TEACH = {"person00": "img26.jpg", "person01": "img1.jpg", "person02": "img17.jpg"}
PHOTOS = {
    "one face (img2.jpg)": "img2.jpg",
    "group (selfie-many-people.jpg)": "selfie-many-people.jpg",
    "small (LFW 250x250)": "../lfw-dev/people/Aaron_Sorkin/Aaron_Sorkin_0001.jpg",
}


def once(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def stages(engine: Engine, settings: Settings, data: bytes, n: int) -> str:
    decoded = decode_image(data, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
    faces = engine.detect(decoded.image)
    crops = [engine.embedder.crop(decoded.image, f) for f in faces]
    parts = {
        "decode": timed(lambda: decode_image(data, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side), n),
        "detect": timed(lambda: engine.detect(decoded.image), n),
        "crop": timed(lambda: [engine.embedder.crop(decoded.image, f) for f in faces], n),
        "embed": timed(lambda: engine.embed(crops), n),
    }
    size = f"{decoded.image.width}x{decoded.image.height}"
    return f"working size {size}, {len(faces)} faces; " + ", ".join(f"{k} {np.median(v) * 1000:.0f} ms" for k, v in parts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10, help="timed requests per photo (after one warm-up)")
    parser.add_argument("--test-client", action="store_true", help="Flask's test client instead of waitress over TCP")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings.from_env(data_dir=data_dir)
        engine = Engine.from_settings(settings)
        app = create_app(settings, engine)
        via = "Flask test client" if args.test_client else "waitress on 127.0.0.1"
        print(f"# identify latency, single client, {via}; {settings.model} on {engine.embedder.device}")
        print(f"# {machine()}")
        server = nullcontext("") if args.test_client else waitress_server(app, settings.threads)
        with server as base, requests.Session() as http, app.test_client() as client:

            def post(path: str, filename: str) -> dict:
                data = (FACES / filename).read_bytes()
                if args.test_client:
                    r = client.post(path, data={"file": (io.BytesIO(data), filename)})
                    assert r.status_code in (200, 201), r.json
                    return r.json  # type: ignore[return-value]
                resp = http.post(base + path, files={"file": (filename, data, "image/jpeg")}, timeout=300)
                assert resp.status_code in (200, 201), resp.text
                return resp.json()

            for person, filename in TEACH.items():
                post(f"/v1/people/{person}/faces", filename)
            recognizer = app.extensions["fewface"]
            fr = face_recognition_pipeline()
            if fr is None:
                print("# face_recognition is NOT installed (pip install --no-deps -r requirements-dev-nodeps.txt): no peer column")
            for label, filename in PHOTOS.items():
                data = (FACES / filename).read_bytes()

                def in_process(data: bytes = data) -> None:
                    decoded = decode_image(data, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
                    recognizer.identify(decoded)

                result = post("/v1/identify", filename)  # warm-up
                in_process()
                if fr is not None:
                    fr(data)
                runs: dict[str, list[float]] = {"http": [], "in-process": [], "face_recognition": []}
                for _ in range(args.requests):  # interleaved, so the machine's load hits all alike
                    runs["http"].append(once(lambda filename=filename: post("/v1/identify", filename)))
                    runs["in-process"].append(once(in_process))
                    if fr is not None:
                        runs["face_recognition"].append(once(lambda data=data: fr(data)))
                http_p50, local_p50 = np.median(runs["http"]), np.median(runs["in-process"])
                line = f"{label:<32} {result['face_count']:3d} faces   HTTP {ms(runs['http'])}   in-process p50 {local_p50 * 1000:.1f} ms"
                line += f" (HTTP / in-process {http_p50 / local_p50:.2f})"
                if fr is not None:
                    theirs = np.median(runs["face_recognition"])
                    line += f"   face_recognition p50 {theirs * 1000:.1f} ms (HTTP / face_recognition {http_p50 / theirs:.2f})"
                print(line)
        print(f"# where the time goes (medians, direct calls); {load()}")
        for label, filename in PHOTOS.items():
            print(f"{label:<32} {stages(engine, settings, (FACES / filename).read_bytes(), max(3, args.requests // 2))}")
        t = timed(lambda: app.extensions["fewface"].gallery.search(np.ones((1, engine.embedder.dim), np.float32), 3), 20)
        print(f"{'gallery search (3 people)':<32} {np.median(t) * 1000:.2f} ms")
        print(f"# at the end: {load()}")
        engine.close()


if __name__ == "__main__":
    main()

"""What identify's face tokens add per face: the thumbnail JPEG each token keeps (service/thumbnails.py)
and the token itself (service/facetokens.py), beside detection + embedding of the same photos:

    .venv/bin/python -m bench.face_tokens [--photos 30]

Medians per face on this machine; compare them as ratios within one run. Also the JPEG's size
(what each token and each stored thumbnail holds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.common import machine
from service.config import Settings
from service.facetokens import FaceCapture, FaceTokens
from service.imaging import decode_image
from service.recognizer import Engine
from service.thumbnails import face_jpeg

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "deepface"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=30)
    args = parser.parse_args()
    settings = Settings.from_env({})
    engine = Engine.from_settings(settings)
    tokens = FaceTokens(settings.face_token_ttl, settings.face_token_max)
    analyze, jpeg, issue, sizes = [], [], [], []
    for path in sorted(FACES.glob("*.jpg"))[: args.photos]:
        decoded = decode_image(
            path.read_bytes(),
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
            max_bytes=settings.max_decode_bytes,
            max_jpeg_scans=settings.max_jpeg_scans,
            timeout=settings.decode_timeout,
        )
        start = time.perf_counter()
        faces = engine.analyze(decoded, settings.max_faces)
        if not faces:
            continue
        analyze.append((time.perf_counter() - start) / len(faces))
        for f in faces:
            start = time.perf_counter()
            data = face_jpeg(decoded, f.face.box)
            jpeg.append(time.perf_counter() - start)
            sizes.append(len(data))
            start = time.perf_counter()
            tokens.issue(FaceCapture(f.face, f.embedding, f.quality, decoded.sha256, engine.model_id, engine.embedder.pipeline, data))
            issue.append(time.perf_counter() - start)
    engine.close()
    a, j, i = statistics.median(analyze), statistics.median(jpeg), statistics.median(issue)
    print(machine())
    print(f"{len(jpeg)} faces in {len(analyze)} photos")
    print(f"detect + embed per face: {a * 1e3:8.2f} ms")
    print(f"thumbnail JPEG per face: {j * 1e3:8.2f} ms  ({j / a:.2%} of detect + embed)")
    print(f"token issue per face:    {i * 1e3:8.3f} ms")
    print(f"thumbnail size: median {statistics.median(sizes) / 1024:.1f} KiB, max {max(sizes) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()

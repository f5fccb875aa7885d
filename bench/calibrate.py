"""Measure the match threshold on ../shared/faces: genuine vs impostor cosine similarities of
every photo pair, false-accept / false-reject rates per threshold, and the one-shot protocol
(teach one photo per identity, identify the rest; leave-one-identity-out for strangers).

    .venv/bin/python -m bench.calibrate [--model dlib-resnet-v1]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import numpy as np

from service.config import Settings
from service.imaging import decode_image
from service.matching import MatchRule
from service.recognizer import Engine

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "deepface"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="dlib-resnet-v1")
    parser.add_argument("--faces", type=Path, default=FACES)
    args = parser.parse_args()
    settings = Settings.from_env({}, model=args.model)
    engine = Engine.from_settings(settings)
    with open(args.faces / "identities.csv", newline="") as fh:
        rows = [(r["file"], r["identity"]) for r in csv.DictReader(fh)]
    vectors, labels, times = [], [], []
    for file, identity in rows:
        decoded = decode_image((args.faces / file).read_bytes(), max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
        t = time.perf_counter()
        faces = engine.analyze(decoded, settings.max_faces)
        times.append(time.perf_counter() - t)
        if not faces:
            print(f"no face in {file}")
            continue
        vectors.append(faces[0].embedding)
        labels.append(identity)
    v = np.stack(vectors)
    sims = v @ v.T
    genuine = np.array([sims[i, j] for i, j in itertools.combinations(range(len(v)), 2) if labels[i] == labels[j]])
    impostor = np.array([sims[i, j] for i, j in itertools.combinations(range(len(v)), 2) if labels[i] != labels[j]])
    print(f"model {args.model}: {len(v)} photos, {len(genuine)} genuine and {len(impostor)} impostor pairs")
    print(f"genuine  similarity min/median: {genuine.min():.3f} / {np.median(genuine):.3f}")
    print(f"impostor similarity median/max: {np.median(impostor):.3f} / {impostor.max():.3f}")
    print(f"analyze (detect+embed) per photo on {engine.embedder.device}: median {np.median(times) * 1000:.0f} ms")

    # one-shot protocol: first photo of each identity is the gallery
    ids = sorted(set(labels))
    rule = MatchRule.from_settings(settings, engine.model_id, engine.embedder.pipeline)
    verify_t, identify_t = rule.verify_threshold(), rule.identify_threshold(len(ids))
    print(f"pipeline {engine.embedder.pipeline}: default verify threshold {verify_t:.4f}: ", end="")
    print(f"pair FAR {float((impostor >= verify_t).mean()):.4f}, FRR {float((genuine < verify_t).mean()):.4f}")
    print(f"default identify threshold for a gallery of {len(ids)}: {identify_t:.4f} (rows marked * below)")
    first = {i: labels.index(i) for i in ids}
    gallery = np.stack([v[first[i]] for i in ids])
    probes = [k for k in range(len(v)) if k not in first.values()]
    print("\nthreshold  pair-FAR  pair-FRR | one-shot: top1  accepted-correct  false-accepts  strangers-rejected")
    grid = np.arange(0.80, 0.98, 0.01) if args.model.startswith("dlib") else np.arange(0.30, 0.80, 0.05)
    for threshold in sorted([*grid, verify_t, identify_t]):
        far = float((impostor >= threshold).mean())
        frr = float((genuine < threshold).mean())
        top1 = accepted = false_acc = rejected = 0
        for k in probes:
            s = gallery @ v[k]
            best = int(np.argmax(s))
            top1 += ids[best] == labels[k]
            accepted += ids[best] == labels[k] and s[best] >= threshold
            false_acc += ids[best] != labels[k] and s[best] >= threshold
            others = [j for j, name in enumerate(ids) if name != labels[k]]  # the probe's identity left out
            rejected += float(s[others].max()) < threshold
        n = len(probes)
        mark = "*" if threshold == identify_t else "v" if threshold == verify_t else " "
        print(
            f" {mark}{threshold:.4f}   {far:6.3f}   {frr:6.3f}  |  {top1 / n:.3f}  {accepted / n:.3f}"
            f"  {false_acc:3d}/{n}  {rejected / n:.3f}"
        )


if __name__ == "__main__":
    main()

"""Calibration report from the command line, over the service's gallery (read-only) or over a
folder of labelled photos (``DIR/<person>/<photo>``, run through the real pipeline):

    python -m service.calibrate --data-dir ./data --json report.json --plot report.png
    python -m service.calibrate --folder photos/ --target 0.01 --gallery-size 500 --plot report.png

Prints a short summary. Exit status: 0 done, 2 bad arguments or not enough data (fewer than two
people with two or more faces), 1 anything else (e.g. the model's weights are missing).
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from models.embedders import EMBEDDERS, pipeline_id
from service.calibration_report import DEFAULT_TARGETS, MIN_PEOPLE, NotEnoughExamplesError, build_report, plot_report, summary_lines
from service.config import ConfigError, Settings
from service.store import GALLERY_FILE
from service.store.gallery import LEGACY_PIPELINE, LEGACY_PIPELINES

log = logging.getLogger("service.calibrate")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


class UsageError(Exception):
    """Bad arguments or not enough data: exit status 2."""


def configured_threshold(settings: Settings, model_id: str, pipeline: str, gallery_faces: int) -> float:
    """The threshold a service with ``settings`` would apply to identify in a gallery of
    ``gallery_faces`` faces (service/matching.py): the reference line of the report."""
    from service.matching import MatchRule

    if model_id not in EMBEDDERS:
        raise UsageError(f"unknown model {model_id!r}: pass --threshold")
    return MatchRule.from_settings(settings, model_id, pipeline).identify_threshold(gallery_faces)


# -- sources --------------------------------------------------------------------------------
def _connect_read_only(path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        return db
    except sqlite3.OperationalError:
        if Path(f"{path}-wal").exists():
            raise
        # a read-only folder without the WAL side files: nothing is in flight, read the file as is
        db = sqlite3.connect(uri + "&immutable=1", uri=True)
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        return db


def read_gallery(data_dir: Path) -> tuple[str, str, dict[str, np.ndarray], int]:
    """(model id, pipeline, {person id: embeddings}, number of people) from the SQLite gallery in
    ``data_dir``, opened read-only: nothing is written to it."""
    path = data_dir / GALLERY_FILE
    if not path.is_file():
        raise UsageError(f"no gallery at {path}")
    try:
        db = _connect_read_only(path)
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"cannot read the gallery {path}: {exc}") from None
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        model_id, dim = meta.get("model_id", ""), int(meta.get("dim", 0))
        pipeline = meta.get("pipeline") or LEGACY_PIPELINES.get(model_id, LEGACY_PIPELINE)
        where, args = "", ()
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'collections'").fetchone():
            # schema v2+: each collection records its model and pipeline; the report is over `default`
            model_id, dim, recorded = db.execute("SELECT model_id, dim, pipeline FROM collections WHERE id = 'default'").fetchone()
            dim, pipeline = int(dim), recorded or LEGACY_PIPELINES.get(model_id, LEGACY_PIPELINE)
            where, args = " AND collection = ?", ("default",)
        people = int(db.execute("SELECT COUNT(*) FROM people" + where.replace(" AND", " WHERE"), args).fetchone()[0])
        grouped: dict[str, list[np.ndarray]] = defaultdict(list)
        for person_id, blob in db.execute(
            f"SELECT person_id, embedding FROM faces WHERE model_id = ?{where} ORDER BY id", (model_id, *args)
        ):
            vector = np.frombuffer(blob, dtype=np.float32)
            if len(vector) == dim:
                grouped[person_id].append(vector)
    finally:
        db.close()
    return model_id, pipeline, {p: np.stack(v) for p, v in grouped.items()}, people


def _folder_photos(folder: Path) -> dict[str, list[Path]]:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    photos = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in person.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            photos[person.name] = files
    return photos


def _enough(sizes: dict[str, int], what: str) -> None:
    with_pairs = sum(1 for n in sizes.values() if n >= 2)
    if with_pairs < MIN_PEOPLE:
        raise UsageError(
            f"{with_pairs} people have 2 or more {what}; a calibration report needs at least {MIN_PEOPLE}: "
            "add 2-3 photos each of several people"
        )


def embed_folder(folder: Path, settings: Settings, progress: bool = True) -> tuple[str, dict[str, np.ndarray]]:
    """(model id, {person: embeddings of the largest face of each photo}) over ``folder``.
    Photos without a face, or that cannot be decoded, are skipped with a warning."""
    photos = _folder_photos(folder)
    _enough({p: len(f) for p, f in photos.items()}, "photos")
    from tqdm import tqdm

    from service.errors import ApiError
    from service.imaging import decode_image
    from service.recognizer import Engine

    engine = Engine.from_settings(settings)
    grouped: dict[str, list[np.ndarray]] = defaultdict(list)
    skipped = 0
    try:
        jobs = [(person, f) for person, files in photos.items() for f in files]
        for person, file in tqdm(jobs, desc="photos", unit="photo", disable=not progress, file=sys.stderr):
            try:
                decoded = decode_image(file.read_bytes(), max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
            except (ApiError, OSError) as exc:
                log.warning("skipped %s: %s", file, getattr(exc, "message", exc))
                skipped += 1
                continue
            faces = engine.analyze(decoded, 1)
            if not faces:
                log.warning("skipped %s: no face found", file)
                skipped += 1
                continue
            grouped[person].append(faces[0].embedding)
    finally:
        engine.close()
    if skipped:
        log.warning("%d of %d photos skipped", skipped, len(jobs))
    embeddings = {p: np.stack(v) for p, v in grouped.items()}
    _enough({p: len(v) for p, v in embeddings.items()}, "photos with a face")
    return engine.model_id, embeddings


# -- command ---------------------------------------------------------------------------------
def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("a target is a chance between 0 and 1 (exclusive), e.g. 0.01")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service.calibrate",
        description="Calibration report: same-person / different-person score distributions, FAR/FRR by threshold, "
        "and the threshold for a target chance of naming a stranger at a gallery size.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=Path, help="the service's data folder (its gallery.sqlite3 is opened read-only)")
    source.add_argument("--folder", type=Path, help="labelled photos: FOLDER/<person>/<photo>; the largest face of each photo is used")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--plot", type=Path, help="write the PNG plot here")
    p.add_argument("--target", type=_target, action="append", help="chance of naming a stranger (repeatable; default 0.01 0.05 0.1)")
    p.add_argument("--gallery-size", type=_positive, help="people a stranger is compared with (default: the people in the data)")
    p.add_argument("--threshold", type=float, help="current threshold to report on (default: FEWFACE_MATCH_THRESHOLD or the model's)")
    p.add_argument("--model", help="--folder: embedding model id (default: FEWFACE_MODEL)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    overrides = {"model": args.model} if args.model else {}
    try:
        settings = Settings.from_env(**overrides)
    except (ConfigError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.data_dir is not None:
        if args.model:
            raise UsageError("--model goes with --folder; a gallery records its own model")
        model_id, pipeline, embeddings, people = read_gallery(args.data_dir)
        _enough({p: len(v) for p, v in embeddings.items()}, "face examples")
        source = str(args.data_dir)
    else:
        model_id, embeddings = embed_folder(args.folder, settings, progress=not args.quiet)
        people = len(embeddings)
        pipeline = pipeline_id(EMBEDDERS[model_id], flip=settings.flip, alignment=settings.alignment)
        source = str(args.folder)
    faces = sum(len(v) for v in embeddings.values())
    threshold = args.threshold if args.threshold is not None else configured_threshold(settings, model_id, pipeline, faces)
    try:
        report = build_report(
            embeddings,
            gallery_size=args.gallery_size or max(1, people),
            targets=args.target or DEFAULT_TARGETS,
            current_threshold=threshold,
        )
    except NotEnoughExamplesError as exc:
        raise UsageError(str(exc)) from None
    report = {"model": model_id, "source": source, **report}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot_report(report, str(args.plot))
    out = [f"model {model_id}, source {source}", *summary_lines(report)]
    out += [f"wrote {path}" for path in (args.json, args.plot) if path]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on bad arguments
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except UsageError as exc:
        sys.stderr.write(f"python -m service.calibrate: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())

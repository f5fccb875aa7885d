"""``python -m service check [--repair]``: open the gallery of ``FEWFACE_DATA_DIR`` as the server
would (lock, file checks, every row decoded), report, and with ``--repair`` delete the rows that
do not decode. Exit 0: healthy (or repaired); 1: problems found; 2: usage or configuration error.

It takes the data directory's lock, so it runs while the server is stopped. The server performs
the same checks at start and logs a warning when rows do not decode.
"""

from __future__ import annotations

import logging
from pathlib import Path

from service.config import ConfigError, Settings
from service.store import GALLERY_FILE, open_gallery
from service.store.base import DEFAULT_COLLECTION
from service.store.datalock import DataDirInUseError
from service.store.gallery import Gallery, GalleryOpenError, ModelMismatchError

log = logging.getLogger("service.check")


def check_main(args: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args not in ([], ["--repair"]):
        log.error("usage: python -m service check [--repair]")
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    path = Path(settings.data_dir) / GALLERY_FILE
    if not settings.database_url and not path.is_file():
        log.error("no gallery at %s (FEWFACE_DATA_DIR=%s)", path, settings.data_dir)
        return 1
    try:
        gallery = open_gallery(settings)
    except (DataDirInUseError, GalleryOpenError, ModelMismatchError, ValueError) as exc:
        log.error("check failed: %s", exc)
        return 1
    from service.store.registry import Galleries

    galleries = Galleries(gallery)
    try:
        problems = 0
        for info in galleries.list():
            try:
                problems += _check_collection(galleries.get(info.id), repair=args == ["--repair"])
            except ModelMismatchError as exc:
                log.error("collection %s: %s", info.id, exc)
                problems += 1
        if problems:
            log.info("run `python -m service check --repair` to delete them (export a state first to keep the rest)")
        return 1 if problems else 0
    finally:
        galleries.close()


def _check_collection(gallery: Gallery, *, repair: bool) -> int:
    """Report one collection's undecodable rows (and delete them with ``repair``); returns how
    many problems remain."""
    people, faces = gallery.counts()
    bad_people, bad_faces = gallery.undecodable()
    for person_id, problem in sorted(bad_people.items()):
        log.warning("person %r: %s", person_id, problem)
    for face_id, problem in sorted(bad_faces.items()):
        log.warning("face %d: %s", face_id, problem)
    where = gallery.location if gallery.collection == DEFAULT_COLLECTION else f"{gallery.location} collection {gallery.collection}"
    log.info(
        "gallery %s (model %s): %d people, %d face rows; %d person rows and %d face rows do not decode",
        where,
        gallery.model_id,
        people,
        faces,
        len(bad_people),
        len(bad_faces),
    )
    if not (bad_people or bad_faces):
        return 0
    if repair:
        gone_people, gone_faces = gallery.delete_undecodable()
        log.info("repaired: deleted %d person rows and %d face rows", gone_people, gone_faces)
        return 0
    return len(bad_people) + len(bad_faces)

"""``python -m service migrate-store --to postgresql://...``: copy the SQLite gallery of
``FEWFACE_DATA_DIR`` (every collection) into an empty PostgreSQL database, losslessly: the same
collections (model, pipeline, API key hash), person ids, names and times, face ids and every
embedding's bytes. One transaction: all or nothing. Afterwards both databases are read back and
compared (a digest of every row); exit 0 only when they agree.

Run it with the service stopped (it takes the data directory's lock). Then start the service
with ``FEWFACE_DATABASE_URL`` set to the same URL; the SQLite file is left as it was (migrated to
the latest schema) and can be kept as a backup. Exit 1: the copy failed or the target already
holds a gallery; 2: usage or configuration error.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from pathlib import Path

from service.config import ConfigError, Settings
from service.store.base import GalleryOpenError, Store, Tx
from service.store.datalock import DataDirInUseError

log = logging.getLogger("service.migrate_store")

FACE_COLUMNS = ("id", "collection", "person_id", "model_id", "embedding", "image_sha256", "box", "detection_prob", "created_at")
PEOPLE_COLUMNS = ("collection", "id", "name", "created_at")
COLLECTION_COLUMNS = ("id", "model_id", "dim", "pipeline", "key_hash", "created_at")
USAGE = "usage: python -m service migrate-store --to postgresql://user:password@host:port/database"


class CopyError(RuntimeError):
    pass


def digest(store: Store) -> tuple[dict[str, tuple[int, int]], str]:
    """(collection -> (people, faces), a SHA-256 over every catalog, person and face row in id
    order, values as Python sees them: embeddings as their exact bytes)."""
    h = hashlib.sha256()
    counts: dict[str, tuple[int, int]] = {}
    with store.read(snapshot=True) as tx:
        for table, columns, order in (
            ("collections", COLLECTION_COLUMNS, "id"),
            ("people", PEOPLE_COLUMNS, "collection, id"),
            ("faces", FACE_COLUMNS, "id"),
        ):
            for row in tx.stream(
                f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}{store.text_order if table != 'faces' else ''}"
            ):
                h.update(repr(tuple(bytes(v) if isinstance(v, bytes | memoryview) else v for v in row)).encode())
        people = dict(tx.execute("SELECT collection, COUNT(*) FROM people GROUP BY collection").fetchall())
        faces = dict(tx.execute("SELECT collection, COUNT(*) FROM faces GROUP BY collection").fetchall())
        for (cid,) in tx.execute("SELECT id FROM collections").fetchall():
            counts[cid] = (int(people.get(cid, 0)), int(faces.get(cid, 0)))
    return counts, h.hexdigest()


def _copy_rows(source: Tx, target: Tx, table: str, columns: tuple[str, ...]) -> int:
    """Every row of ``table`` through PostgreSQL's COPY; returns how many."""
    n = 0
    names = ", ".join(columns)
    with target.conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:  # type: ignore[attr-defined]
        for row in source.stream(f"SELECT {names} FROM {table}"):
            copy.write_row(row)
            n += 1
    return n


def copy_store(source: Store, target: Store) -> dict[str, tuple[int, int]]:
    """Copy every row of ``source`` (SQLite) into ``target`` (PostgreSQL, without any person or
    face yet) in one transaction, then compare both; returns collection -> (people, faces)."""
    if target.dialect != "postgresql":
        raise CopyError("the target must be a PostgreSQL database")
    with source.read(snapshot=True) as src, target.write() as dst:
        held = dst.execute("SELECT (SELECT COUNT(*) FROM people) + (SELECT COUNT(*) FROM faces)").fetchone()[0]
        if held:
            raise CopyError(f"the target {target.location} already holds a gallery ({held} people and faces): give it an empty database")
        dst.execute("DELETE FROM collections")  # an empty catalog row a service made ("default"): the source's wins
        for row in src.execute(f"SELECT {', '.join(COLLECTION_COLUMNS)} FROM collections").fetchall():
            dst.execute(f"INSERT INTO collections ({', '.join(COLLECTION_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", tuple(row))
            dst.log_change(row[0], "collection_create")
            dst.log_change(row[0], "reload")
        _copy_rows(src, dst, "people", PEOPLE_COLUMNS)
        _copy_rows(src, dst, "faces", FACE_COLUMNS)
        target.reserve_ids(dst)
    expected, source_digest = digest(source)
    copied, target_digest = digest(target)
    if (expected, source_digest) != (copied, target_digest):
        raise CopyError(f"the copy in {target.location} differs from the source (counts {copied} vs {expected}); do not use it")
    return copied


def migrate_store_main(args: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if len(args) != 2 or args[0] != "--to" or not args[1].startswith(("postgresql://", "postgres://")):
        log.error(USAGE)
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    import psycopg

    from service.store import GALLERY_FILE
    from service.store.postgres import PostgresStore, redact
    from service.store.sqlite import SqliteStore

    path = Path(settings.data_dir) / GALLERY_FILE
    if not path.is_file():
        log.error("no gallery at %s (FEWFACE_DATA_DIR=%s)", path, settings.data_dir)
        return 1
    started = time.monotonic()
    try:
        source: Store = SqliteStore(path, busy_timeout=settings.db_busy_timeout)
    except (DataDirInUseError, GalleryOpenError) as exc:
        log.error("cannot open the source: %s", exc)
        return 1
    try:
        target: Store = PostgresStore(args[1], busy_timeout=max(settings.db_busy_timeout, 30.0), max_connections=2)
    except GalleryOpenError as exc:
        source.close()
        log.error("cannot open the target: %s", exc)
        return 1
    try:
        counts = copy_store(source, target)
    except CopyError as exc:
        log.error("%s", exc)
        return 1
    except (psycopg.Error, sqlite3.Error) as exc:  # a row PostgreSQL refuses (damaged in the SQLite file), the server gone
        log.error(
            "the copy failed and was rolled back (%s: %s); run `python -m service check --repair` if rows are damaged",
            type(exc).__name__,
            exc,
        )
        return 1
    finally:
        source.close()
        target.close()
    for cid, (people, faces) in sorted(counts.items()):
        log.info("collection %s: %d people, %d faces copied", cid, people, faces)
    log.info(
        "copied %s into %s in %.1f s; every row verified. Start the service with FEWFACE_DATABASE_URL=%s",
        path,
        redact(args[1]),
        time.monotonic() - started,
        redact(args[1]),
    )
    return 0

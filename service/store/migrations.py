"""Versioned schema of the gallery, for both stores. ``meta.schema_version`` says which version a
database holds; opening it applies every later step in one transaction (all or nothing), so a
gallery written by any earlier Fewface opens and one written by a newer one is refused.

* **v1** (SQLite only): ``meta`` (schema version, model id, dim, pipeline), ``people``, ``faces``:
  one gallery per file, the layout of every SQLite gallery made before collections.
* **v2**: collections and the change log. ``collections`` (id, model id, dim, pipeline, optional
  salted hash of the collection's API key); ``people`` and ``faces`` gain a ``collection`` column
  (a person id is unique within its collection; face ids stay unique in the whole database, so
  a face id names one face everywhere, and ids are never reused); ``changes`` (monotonic ``seq``,
  collection, op, person id, face id, time) written in the same transaction as every write, which
  replicas follow. The v1 gallery becomes the collection ``default`` (model from ``meta``).
  PostgreSQL galleries start at v2.
* **v3**: ``thumbnails`` (face id, a small JPEG of the face: service/thumbnails.py), one row per
  face example that has one, deleted with its face (foreign key, ON DELETE CASCADE).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from service.store.base import GalleryOpenError

log = logging.getLogger(__name__)

LATEST = 3

SQLITE_V1 = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS people (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id TEXT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    box TEXT NOT NULL,
    detection_prob REAL NOT NULL,
    created_at REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id)",
]

# Tables are rebuilt (SQLite cannot change a primary key in place) with foreign keys off; every
# value is copied as it is, damaged rows included (the gallery leaves those out when it reads).
SQLITE_V2 = [
    """CREATE TABLE collections (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    pipeline TEXT,
    key_hash TEXT,
    created_at REAL NOT NULL
)""",
    """INSERT INTO collections (id, model_id, dim, pipeline, key_hash, created_at)
    SELECT 'default', m.value, CAST(d.value AS INTEGER), (SELECT value FROM meta WHERE key = 'pipeline'), NULL,
        COALESCE((SELECT MIN(created_at) FROM people), CAST(strftime('%s', 'now') AS REAL))
    FROM meta m JOIN meta d ON d.key = 'dim' WHERE m.key = 'model_id'""",
    "DELETE FROM meta WHERE key IN ('model_id', 'dim', 'pipeline')",
    """CREATE TABLE people_v2 (
    collection TEXT NOT NULL DEFAULT 'default' REFERENCES collections(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (collection, id)
)""",
    "INSERT INTO people_v2 (collection, id, name, created_at) SELECT 'default', id, name, created_at FROM people",
    """CREATE TABLE faces_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL DEFAULT 'default',
    person_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    box TEXT NOT NULL,
    detection_prob REAL NOT NULL,
    created_at REAL NOT NULL,
    FOREIGN KEY (collection, person_id) REFERENCES people(collection, id) ON DELETE CASCADE
)""",
    """INSERT INTO faces_v2 (id, collection, person_id, model_id, embedding, image_sha256, box, detection_prob, created_at)
    SELECT id, 'default', person_id, model_id, embedding, image_sha256, box, detection_prob, created_at FROM faces""",
    # AUTOINCREMENT never reuses an id: carry the old table's high-water mark over.
    "DELETE FROM sqlite_sequence WHERE name = 'faces_v2'",
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'faces_v2', seq FROM sqlite_sequence WHERE name = 'faces'",
    "DROP TABLE faces",
    "DROP TABLE people",
    "ALTER TABLE people_v2 RENAME TO people",
    "ALTER TABLE faces_v2 RENAME TO faces",
    "CREATE INDEX faces_person ON faces(collection, person_id)",
    """CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    op TEXT NOT NULL,
    person_id TEXT,
    face_id INTEGER,
    at REAL NOT NULL
)""",
]

POSTGRES_V2 = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE collections (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    pipeline TEXT,
    key_hash TEXT,
    created_at DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE people (
    collection TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (collection, id)
)""",
    """CREATE TABLE faces (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    collection TEXT NOT NULL,
    person_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embedding BYTEA NOT NULL,
    image_sha256 TEXT NOT NULL,
    box TEXT NOT NULL,
    detection_prob DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    FOREIGN KEY (collection, person_id) REFERENCES people(collection, id) ON DELETE CASCADE
)""",
    "CREATE INDEX faces_person ON faces(collection, person_id)",
    """CREATE TABLE changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection TEXT NOT NULL,
    op TEXT NOT NULL,
    person_id TEXT,
    face_id BIGINT,
    at DOUBLE PRECISION NOT NULL
)""",
]

SQLITE_V3 = [
    """CREATE TABLE thumbnails (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
)""",
]

POSTGRES_V3 = [
    """CREATE TABLE thumbnails (
    face_id BIGINT PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    jpeg BYTEA NOT NULL
)""",
]

STEPS: dict[str, dict[int, list[str]]] = {
    "sqlite": {1: SQLITE_V1, 2: SQLITE_V2, 3: SQLITE_V3},
    "postgresql": {2: POSTGRES_V2, 3: POSTGRES_V3},
}

# Every table some version creates: a database holding others is not a Fewface gallery.
TABLES = frozenset({"meta", "people", "faces", "collections", "changes", "thumbnails"})


def pending(dialect: str, current: int) -> list[tuple[int, list[str]]]:
    """The steps that take a ``dialect`` database from version ``current`` to ``LATEST``."""
    return [(version, statements) for version, statements in sorted(STEPS[dialect].items()) if version > current]


def upgrade(execute: Callable[..., Any], dialect: str, tables: set[str], *, where: str, unversioned: int, newer_fix: str) -> None:
    """Bring the database whose tables are ``tables`` to ``LATEST`` inside the caller's
    transaction (``execute(sql, params)``, the dialect's own placeholder): read its version
    (``unversioned`` when ``meta`` has none), refuse a newer one (GalleryOpenError naming
    ``where`` and ``newer_fix``), apply the pending steps and record the version."""
    mark = "?" if dialect == "sqlite" else "%s"
    current = 0
    if "meta" in tables:
        row = execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        current = int(row[0]) if row is not None and str(row[0]).isdigit() else unversioned
    if current > LATEST:
        raise GalleryOpenError(
            f"{where} has schema version {current}, written by a newer Fewface (this one knows up to {LATEST}): {newer_fix}"
        )
    for version, statements in pending(dialect, current):
        for statement in statements:
            execute(statement)
        log.info("%s: schema migrated to version %d", where, version)
    execute(
        f"INSERT INTO meta (key, value) VALUES ('schema_version', {mark}) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(LATEST),),
    )

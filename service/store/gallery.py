"""The gallery of record: people and face examples with their embeddings in SQLite (WAL),
mirrored into a FAISS index for search.

Every write commits to SQLite first and only then touches the index, so a crash can lose
nothing acknowledged; at start the index is rebuilt from SQLite. A gallery remembers the
model id it was built with and refuses to open with another one.

Storage failures surface as domain errors (``StorageError`` and its kinds) that the HTTP layer
maps to statuses (service/errors.py): a write that waits too long for SQLite's lock, a full disk,
an I/O error. A failed write leaves SQLite and the index as they were. Opening checks the file
(damaged, foreign, unwritable: ``GalleryOpenError`` naming the file and the fix), takes the data
directory's lock (service/store/datalock.py) and decodes every row: rows that do not decode are left
out of search and export, logged, and listed by ``python -m service check`` (service/store/check.py).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from service.index import DEFAULT_EXACT_MAX, VectorIndex
from service.store.datalock import DataDirLock

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a statement waits for SQLite's lock before StoreBusyError
TABLES = frozenset({"meta", "people", "faces", "thumbnails"})  # every table SCHEMA creates: a file with others is not ours

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id TEXT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    box TEXT NOT NULL,
    detection_prob REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
CREATE TABLE IF NOT EXISTS thumbnails (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
);
"""


# Galleries written before the pipeline was recorded were all taught this way (by model id).
LEGACY_PIPELINES = {"dlib-resnet-v1": "template"}
LEGACY_PIPELINE = "box"  # the facenet models


class ModelMismatchError(RuntimeError):
    """The gallery was built with a different embedding model, or the same model behind another
    crop / test-time flip (``pipeline``): its vectors are not comparable with this service's."""


class StorageError(RuntimeError):
    """The store could not do what was asked; the message says why (and the fix, if any)."""


class StoreBusyError(StorageError):
    """SQLite's lock stayed taken (by another connection) beyond the busy timeout: retry later."""


class StorageFullError(StorageError):
    """The disk (or the database's size limit) is full: the write was rolled back."""


class StoreUnavailableError(StorageError):
    """Any other failure of the database file at run time (I/O error, read-only, damaged)."""


class GalleryOpenError(StorageError):
    """The gallery file cannot be used at start: damaged, foreign or unwritable."""


class PersonNotFoundError(KeyError):
    pass


class FaceNotFoundError(KeyError):
    pass


@dataclass(frozen=True)
class NewFace:
    embedding: np.ndarray  # (dim,) float32, unit length
    image_sha256: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original image pixels
    detection_prob: float
    thumbnail: bytes | None = None  # small JPEG of the face (service/thumbnails.py), stored beside the example


@dataclass(frozen=True)
class FaceRecord:
    id: int
    person_id: str
    model_id: str
    image_sha256: str
    box: tuple[float, float, float, float]
    detection_prob: float
    created_at: float


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    created_at: float
    face_count: int


@dataclass(frozen=True)
class Match:
    person_id: str
    name: str
    similarity: float
    face_id: int


@dataclass(frozen=True)
class StoredFace:
    """A face example with its embedding, as exported and imported (service/state.py)."""

    id: int | None  # None: let the database choose (merge import)
    person_id: str
    embedding: np.ndarray  # (dim,) float32, unit length
    image_sha256: str
    box: tuple[float, float, float, float]
    detection_prob: float
    created_at: float
    thumbnail: bytes | None = None  # small JPEG of the face, when stored


def _open_failure(path: Path, exc: sqlite3.Error) -> str:
    """One sentence naming the file, what is wrong and the fix, for an error while opening."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_AUTH):
        return (
            f"cannot write the gallery {path} ({exc}): make {path.parent} and the files in it writable by uid {os.geteuid()}, "
            "or set FEWFACE_DATA_DIR to a writable directory"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return f"the gallery {path} is locked by another program ({exc}): stop it, then start again"
    if code == sqlite3.SQLITE_FULL:
        return f"no space left to open the gallery {path} ({exc}): free disk space, then start again"
    return (
        f"the gallery {path} is damaged or not a SQLite database ({exc}): move it (and any -wal/-shm files beside it) away, "
        "start with the empty directory and load your last state export (POST /v1/state)"
    )


def _translate(exc: sqlite3.Error, path: Path) -> StorageError:
    """The domain error for a sqlite3 error at run time."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        log.warning("gallery %s busy: %s", path, exc)
        return StoreBusyError("the gallery database is locked by another program; nothing was changed, retry shortly")
    if code == sqlite3.SQLITE_FULL:
        log.error("gallery %s: disk full (%s); the write was rolled back", path, exc)
        return StorageFullError("no space left for the gallery database; nothing was written: free disk space and retry")
    log.error("gallery %s failed: %s", path, exc)
    return StoreUnavailableError(f"the gallery database failed ({exc}); nothing was changed")


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _storage_errors(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Gallery methods raise StorageError kinds, never raw sqlite3 errors (integrity errors are
    bugs, not storage trouble, and pass through)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise _translate(exc, getattr(args[0], "path", Path("?"))) from exc

    return wrapper


class Gallery:
    """Thread-safe: one lock serialises every read and write of SQLite and the index."""

    def __init__(
        self,
        path: str | Path,
        model_id: str,
        dim: int,
        *,
        pipeline: str | None = None,
        index_exact_max: int = DEFAULT_EXACT_MAX,
        index_nprobe: int = 0,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        """Open (creating when new) the gallery at ``path``. Raises DataDirInUseError when another
        process owns the directory, GalleryOpenError when the file is damaged, foreign or cannot
        be written, ModelMismatchError when it was built with another model."""
        self.path = Path(path)
        self.pipeline = pipeline or LEGACY_PIPELINES.get(model_id, LEGACY_PIPELINE)
        # The index is exact up to index_exact_max faces and IVF above (service/index.py); it
        # switches in place inside add/remove, which run under self._lock.
        self._index_options = {"exact_max": index_exact_max, "nprobe": index_nprobe}
        self.model_id = model_id
        self.dim = dim
        self._lock = threading.RLock()
        self._undecodable: dict[int, str] = {}  # face id -> why its row cannot be used
        self._undecodable_people: dict[str, str] = {}  # person id -> why
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._dir_lock = DataDirLock(self.path.parent)
        except OSError as exc:
            raise GalleryOpenError(
                f"cannot use data directory {self.path.parent} ({exc.strerror or exc}): make it a directory writable by uid "
                f"{os.geteuid()}, or set FEWFACE_DATA_DIR to one"
            ) from None
        self._index = VectorIndex(dim, **self._index_options)
        self._face_person: dict[int, str] = {}
        self._names: dict[str, str] = {}
        try:
            self._db = self._open(busy_timeout)
            try:
                self._rebuild()
            except BaseException:
                self._db.close()
                raise
        except sqlite3.Error as exc:  # damage quick_check did not see, met while reading every row
            self._dir_lock.release()
            raise GalleryOpenError(_open_failure(self.path, exc)) from None
        except BaseException:
            self._dir_lock.release()
            raise

    # -- setup -------------------------------------------------------------------------
    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        """Connect, check the file is a healthy, writable Fewface gallery (or new), create the
        schema and check the model; sqlite3 errors become GalleryOpenError with the fix."""
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
            self._db = db
            # Read-only checks first: a foreign or damaged file is left exactly as it was.
            problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems))
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
            if (tables and "meta" not in tables) or not tables <= TABLES:
                raise GalleryOpenError(
                    f"{self.path} is a SQLite database but not a Fewface gallery (tables: {', '.join(sorted(tables))}); "
                    "point FEWFACE_DATA_DIR at another directory, or move that file away"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            with self._transaction() as tx:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        tx.execute(statement)
                tx.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")  # proves the file can be written
            self._check_meta()
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise GalleryOpenError(_open_failure(self.path, exc)) from None
        except BaseException:
            if db is not None:
                db.close()
            raise
        return db

    def _check_meta(self) -> None:
        with self._transaction() as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("model_id", self.model_id),
                        ("dim", str(self.dim)),
                        ("pipeline", self.pipeline),
                    ],
                )
                return
        if meta.get("model_id") != self.model_id or int(meta.get("dim", -1)) != self.dim:
            raise ModelMismatchError(
                f"gallery {self.path} was built with model {meta.get('model_id')!r} ({meta.get('dim')}-D) "
                f"but this service runs {self.model_id!r} ({self.dim}-D); use that model "
                "or another FEWFACE_DATA_DIR"
            )
        stored = meta.get("pipeline") or LEGACY_PIPELINES.get(self.model_id, LEGACY_PIPELINE)
        if stored != self.pipeline:
            raise ModelMismatchError(
                f"gallery {self.path} was taught with the {self.model_id} pipeline {stored!r} but this service runs "
                f"{self.pipeline!r}: embeddings from different face crops are not comparable, so they are never mixed. "
                f"Either start with {pipeline_settings(stored)} to keep using this gallery as it is, or re-teach "
                "the people from their photos into a new FEWFACE_DATA_DIR (a state export carries the old vectors "
                "and cannot convert them)"
            )

    def _rebuild(self) -> None:
        """Rebuild names and the index from SQLite, decoding every row; rows that do not decode
        stay in the file but out of search and export (logged; ``python -m service check``)."""
        with self._lock:
            self._index = VectorIndex(self.dim, **self._index_options)
            names: dict[str, str] = {}
            undecodable_people: dict[str, str] = {}
            for person_id, name, created_at in self._db.execute("SELECT id, name, created_at FROM people"):
                problem = _person_problem(person_id, name, created_at)
                if problem is None:
                    names[person_id] = name
                else:
                    undecodable_people[str(person_id)] = problem
            ids: list[int] = []
            vectors: list[np.ndarray] = []
            face_person: dict[int, str] = {}
            undecodable: dict[int, str] = {}
            rows = self._db.execute(
                "SELECT id, person_id, embedding, image_sha256, box, detection_prob, created_at FROM faces WHERE model_id = ?",
                (self.model_id,),
            )
            for row in rows:
                problem = _face_problem(row, self.dim)
                if problem is None and row[1] not in names:
                    problem = f"person {row[1]!r} " + ("is damaged" if str(row[1]) in undecodable_people else "does not exist")
                if problem is not None:
                    undecodable[row[0]] = problem
                    continue
                ids.append(row[0])
                vectors.append(np.frombuffer(row[2], dtype=np.float32))
                face_person[row[0]] = row[1]
            if ids:
                self._index.add(np.asarray(ids, dtype=np.int64), np.stack(vectors))
            self._names, self._face_person, self._undecodable = names, face_person, undecodable
            self._undecodable_people = undecodable_people
            if undecodable or undecodable_people:
                log.warning(
                    "gallery %s: %d face rows and %d person rows do not decode and are left out of search and export; "
                    "run `python -m service check` to list them and `python -m service check --repair` to delete them",
                    self.path,
                    len(undecodable),
                    len(undecodable_people),
                )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; any failure, the COMMIT's own included, rolls back (SQLite
        may already have, e.g. on SQLITE_FULL) so the database is as it was."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("rollback of %s failed", self.path)
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._dir_lock.release()

    # -- writes ------------------------------------------------------------------------
    @_storage_errors
    def add_faces(self, person_id: str, name: str | None, faces: Sequence[NewFace]) -> tuple[Person, list[FaceRecord], bool]:
        """Add face examples to a person, creating the person when new (``name`` defaults to the
        id). An image already taught to this person is not stored twice. Returns
        (person, the person's records for these faces, created)."""
        vectors = [_unit(face.embedding, self.dim) for face in faces]
        now = time.time()
        with self._lock:
            with self._transaction() as db:
                row = db.execute("SELECT name FROM people WHERE id = ?", (person_id,)).fetchone()
                created = row is None
                if created:
                    db.execute("INSERT INTO people (id, name, created_at) VALUES (?, ?, ?)", (person_id, name or person_id, now))
                elif name and name != row[0]:
                    db.execute("UPDATE people SET name = ? WHERE id = ?", (name, person_id))
                face_ids, new_ids = [], []
                for face, vec in zip(faces, vectors, strict=True):
                    existing = self._existing_face(db, person_id, face.image_sha256)
                    if existing is not None:
                        face_ids.append(existing)
                        continue
                    face_ids.append(self._insert_face(db, None, person_id, vec, face.image_sha256, face.box, face.detection_prob, now))
                    self._insert_thumbnail(db, face_ids[-1], face.thumbnail)
                    new_ids.append((face_ids[-1], vec))
                person = self._person(db, person_id)
                records = [self._face(db, face_id) for face_id in face_ids]
            # Committed; the lock is still held, so no search sees a half-updated index.
            self._names[person_id] = person.name
            if new_ids:
                self._index.add(np.asarray([i for i, _ in new_ids], dtype=np.int64), np.stack([v for _, v in new_ids]))
                self._face_person.update({i: person_id for i, _ in new_ids})
        return person, records, created

    @_storage_errors
    def rename(self, person_id: str, name: str) -> Person:
        with self._lock:
            with self._transaction() as db:
                if db.execute("UPDATE people SET name = ? WHERE id = ?", (name, person_id)).rowcount == 0:
                    raise PersonNotFoundError(person_id)
                person = self._person(db, person_id)
            self._names[person_id] = name
        return person

    @_storage_errors
    def delete_person(self, person_id: str) -> int:
        """Delete a person and all their face examples; returns how many examples went."""
        with self._lock:
            with self._transaction() as db:
                face_ids = [r[0] for r in db.execute("SELECT id FROM faces WHERE person_id = ?", (person_id,))]
                if db.execute("DELETE FROM people WHERE id = ?", (person_id,)).rowcount == 0:
                    raise PersonNotFoundError(person_id)
            self._forget(face_ids)
            self._names.pop(person_id, None)
        return len(face_ids)

    @_storage_errors
    def delete_face(self, person_id: str, face_id: int) -> None:
        with self._lock:
            with self._transaction() as db:
                if db.execute("SELECT 1 FROM people WHERE id = ?", (person_id,)).fetchone() is None:
                    raise PersonNotFoundError(person_id)
                if face_id >= 2**63 or db.execute("DELETE FROM faces WHERE id = ? AND person_id = ?", (face_id, person_id)).rowcount == 0:
                    raise FaceNotFoundError(face_id)
            self._forget([face_id])

    def _existing_face(self, db: sqlite3.Connection, person_id: str, image_sha256: str) -> int | None:
        """Id of the example this person already has from this image (same model), if any."""
        row = db.execute(
            "SELECT id FROM faces WHERE person_id = ? AND image_sha256 = ? AND model_id = ?", (person_id, image_sha256, self.model_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def _insert_face(
        self,
        db: sqlite3.Connection,
        face_id: int | None,
        person_id: str,
        vector: np.ndarray,
        image_sha256: str,
        box: Sequence[float],
        detection_prob: float,
        created_at: float,
    ) -> int:
        """Insert one example (``face_id`` None: the database picks it); returns its id."""
        cur = db.execute(
            "INSERT INTO faces (id, person_id, model_id, embedding, image_sha256, box, detection_prob, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (face_id, person_id, self.model_id, vector.tobytes(), image_sha256, json.dumps(list(box)), detection_prob, created_at),
        )
        return int(cur.lastrowid)

    @staticmethod
    def _insert_thumbnail(db: sqlite3.Connection, face_id: int, jpeg: bytes | None) -> None:
        if jpeg is not None:
            db.execute("INSERT OR REPLACE INTO thumbnails (face_id, jpeg) VALUES (?, ?)", (face_id, jpeg))

    @_storage_errors
    def thumbnail(self, person_id: str, face_id: int) -> bytes | None:
        """The JPEG stored with a face example (None: the example has none); PersonNotFoundError,
        FaceNotFoundError when the person or their example does not exist."""
        with self._lock:
            self._person(self._db, person_id)
            row = (
                self._db.execute(
                    "SELECT t.jpeg, f.id FROM faces f LEFT JOIN thumbnails t ON t.face_id = f.id WHERE f.id = ? AND f.person_id = ?",
                    (face_id, person_id),
                ).fetchone()
                if face_id < 2**63
                else None
            )
        if row is None:
            raise FaceNotFoundError(face_id)
        return bytes(row[0]) if row[0] is not None else None

    @_storage_errors
    def thumbnails(self) -> dict[int, bytes]:
        """Face id -> JPEG for every stored thumbnail (state export)."""
        with self._lock:
            return {int(r[0]): bytes(r[1]) for r in self._db.execute("SELECT face_id, jpeg FROM thumbnails")}

    def _forget(self, face_ids: list[int]) -> None:
        self._index.remove(face_ids)
        for face_id in face_ids:
            self._face_person.pop(face_id, None)

    @_storage_errors
    def rename_all(self, old_name: str, new_name: str) -> int:
        """Rename every person called ``old_name``; returns how many were renamed."""
        with self._lock:
            with self._transaction() as db:
                ids = [r[0] for r in db.execute("SELECT id FROM people WHERE name = ?", (old_name,))]
                db.execute("UPDATE people SET name = ? WHERE name = ?", (new_name, old_name))
            self._names.update({person_id: new_name for person_id in ids})
        return len(ids)

    # -- export / import (service/state.py) ----------------------------------------------
    @_storage_errors
    def export_snapshot(self) -> tuple[list[Person], list[StoredFace]]:
        """Every person and face example with its embedding, read in one consistent snapshot.
        Rows that do not decode are left out (``undecodable()`` counts them; logged)."""
        with self._lock:
            people = [p for p in self.list_people(limit=-1) if p.id not in self._undecodable_people]
            names = {p.id for p in people}
            rows = self._db.execute(
                "SELECT id, person_id, embedding, image_sha256, box, detection_prob, created_at FROM faces WHERE model_id = ? ORDER BY id",
                (self.model_id,),
            ).fetchall()
        faces, skipped = [], 0
        for r in rows:
            if _face_problem(r, self.dim) is not None or r[1] not in names:
                skipped += 1
                continue
            faces.append(StoredFace(r[0], r[1], np.frombuffer(r[2], dtype=np.float32).copy(), r[3], tuple(json.loads(r[4])), r[5], r[6]))
        if skipped or self._undecodable_people:
            log.warning(
                "export of %s left out %d face rows and %d person rows that do not decode",
                self.path,
                skipped,
                len(self._undecodable_people),
            )
        return people, faces

    def undecodable(self) -> tuple[dict[str, str], dict[int, str]]:
        """(person id -> problem, face id -> problem) for the rows found not to decode when the
        gallery was opened (or last rebuilt); they are kept in the file but never served."""
        with self._lock:
            return dict(self._undecodable_people), dict(self._undecodable)

    @_storage_errors
    def delete_undecodable(self) -> tuple[int, int]:
        """Delete the rows ``undecodable()`` lists (``python -m service check --repair``);
        returns (people, faces) deleted."""
        with self._lock:
            people, faces = self.undecodable()
            with self._transaction() as db:
                db.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in faces])
                db.executemany("DELETE FROM faces WHERE person_id = ?", [(i,) for i in people])
                db.executemany("DELETE FROM people WHERE id = ?", [(i,) for i in people])
            self._rebuild()
        return len(people), len(faces)

    @_storage_errors
    def import_snapshot(self, people: Sequence[tuple[str, str, float]], faces: Sequence[StoredFace], *, replace: bool) -> tuple[int, int]:
        """Load (id, name, created_at) people and their face examples in one transaction: all or
        nothing. ``replace`` empties the gallery first and keeps the examples' ids; otherwise the
        file is merged in (people keep their id and take the file's name, examples get new ids,
        an image a person already has is not stored twice). The index is rebuilt after commit.
        Returns (people, face examples) written."""
        vectors = [_unit(face.embedding, self.dim) for face in faces]
        with self._lock:
            with self._transaction() as db:
                if replace:
                    db.execute("DELETE FROM faces")
                    db.execute("DELETE FROM people")
                for person_id, name, created_at in people:
                    db.execute(
                        "INSERT INTO people (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name",
                        (person_id, name, created_at),
                    )
                written = 0
                for face, vec in zip(faces, vectors, strict=True):
                    if not replace and self._existing_face(db, face.person_id, face.image_sha256) is not None:
                        continue
                    face_id = face.id if replace else None
                    new_id = self._insert_face(
                        db, face_id, face.person_id, vec, face.image_sha256, face.box, face.detection_prob, face.created_at
                    )
                    self._insert_thumbnail(db, new_id, face.thumbnail)
                    written += 1
            self._rebuild()
        return len(people), written

    @_storage_errors
    def person_embeddings(self, person_id: str) -> np.ndarray:
        """(n, dim) embeddings of one person's examples; PersonNotFoundError when unknown."""
        with self._lock:
            self._person(self._db, person_id)
            rows = self._db.execute(
                "SELECT embedding FROM faces WHERE person_id = ? AND model_id = ? ORDER BY id", (person_id, self.model_id)
            ).fetchall()
        return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows]) if rows else np.zeros((0, self.dim), np.float32)

    # -- reads -------------------------------------------------------------------------
    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """For each query vector, the best ``top_k`` people (best example per person),
        most similar first."""
        with self._lock:
            total = len(self._index)
            fetch = min(total, max(64, top_k * 16))
            sims, ids = self._index.search(queries, fetch)
            results: list[list[Match]] = []
            for row_sims, row_ids in zip(sims, ids, strict=True):
                best: dict[str, Match] = {}
                for sim, face_id in zip(row_sims, row_ids, strict=True):
                    person_id = self._face_person.get(int(face_id))
                    if person_id is None or person_id in best:
                        continue
                    best[person_id] = Match(person_id, self._names[person_id], float(sim), int(face_id))
                    if len(best) >= top_k:
                        break
                results.append(sorted(best.values(), key=lambda m: m.similarity, reverse=True))
            return results

    def search_sized(self, queries: np.ndarray, top_k: int) -> tuple[list[list[Match]], int]:
        """``search``, and the number of faces it searched (read under the same lock)."""
        with self._lock:
            return self.search(queries, top_k), len(self._index)

    def face_count(self) -> int:
        """Face examples in the index (what identify compares a face with)."""
        with self._lock:
            return len(self._index)

    @_storage_errors
    def list_people(self, limit: int = 1000, offset: int = 0) -> list[Person]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.id, p.name, p.created_at, COUNT(f.id) FROM people p LEFT JOIN faces f ON f.person_id = p.id"
                " GROUP BY p.id ORDER BY p.created_at, p.id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [Person(r[0], r[1], r[2], r[3]) for r in rows]

    @_storage_errors
    def get_person(self, person_id: str) -> tuple[Person, list[FaceRecord]]:
        with self._lock:
            person = self._person(self._db, person_id)
            face_ids = [r[0] for r in self._db.execute("SELECT id FROM faces WHERE person_id = ? ORDER BY id", (person_id,))]
            return person, [self._face(self._db, f) for f in face_ids if f not in self._undecodable]

    @_storage_errors
    def counts(self) -> tuple[int, int]:
        """(people, face examples) in the database."""
        with self._lock:
            people = self._db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
            faces = self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        return people, faces

    def index_ids(self) -> set[int]:
        """Face ids currently searchable (for consistency checks)."""
        with self._lock:
            return {int(i) for i in self._index.ids()}

    @property
    def index_kind(self) -> str:
        """``exact`` or ``ivf``: the search index's current layout (service/index.py)."""
        with self._lock:
            return self._index.kind

    @_storage_errors
    def database_ids(self) -> set[int]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM faces WHERE model_id = ?", (self.model_id,))}

    @staticmethod
    def _person(db: sqlite3.Connection, person_id: str) -> Person:
        row = db.execute(
            "SELECT p.id, p.name, p.created_at, (SELECT COUNT(*) FROM faces f WHERE f.person_id = p.id) FROM people p WHERE p.id = ?",
            (person_id,),
        ).fetchone()
        if row is None:
            raise PersonNotFoundError(person_id)
        return Person(row[0], row[1], row[2], row[3])

    @staticmethod
    def _face(db: sqlite3.Connection, face_id: int) -> FaceRecord:
        r = db.execute(
            "SELECT id, person_id, model_id, image_sha256, box, detection_prob, created_at FROM faces WHERE id = ?", (face_id,)
        ).fetchone()
        if r is None:
            raise FaceNotFoundError(face_id)
        return FaceRecord(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6])


def pipeline_settings(pipeline: str) -> str:
    """The settings that select ``pipeline`` (e.g. ``template+flip``), for messages."""
    alignment, _, flip = pipeline.partition("+")
    return f"FEWFACE_ALIGNMENT={alignment} FEWFACE_FLIP={'true' if flip == 'flip' else 'false'}"


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _person_problem(person_id: Any, name: Any, created_at: Any) -> str | None:
    """Why a people row cannot be used, or None."""
    if not isinstance(person_id, str) or not person_id:
        return f"id {person_id!r} is not a text id"
    if not isinstance(name, str):
        return f"name {name!r} is not text"
    if not _finite_number(created_at):
        return f"created_at {created_at!r} is not a number"
    return None


def _face_problem(row: Sequence[Any], dim: int) -> str | None:
    """Why a faces row (id, person_id, embedding, image_sha256, box, detection_prob, created_at)
    cannot be used, or None."""
    _, _, embedding, image_sha256, box, detection_prob, created_at = row
    if not isinstance(embedding, bytes) or len(embedding) != 4 * dim:
        size = len(embedding) if isinstance(embedding, bytes | str) else type(embedding).__name__
        return f"embedding is {size} bytes, not {4 * dim}"
    vector = np.frombuffer(embedding, dtype=np.float32)
    if not np.all(np.isfinite(vector)) or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
        return "embedding is not a finite unit vector"
    if not isinstance(image_sha256, str):
        return "image_sha256 is not text"
    try:
        coords = json.loads(box) if isinstance(box, str) else None
    except ValueError:
        coords = None
    if not isinstance(coords, list) or len(coords) != 4 or not all(_finite_number(c) for c in coords):
        return f"box {str(box)[:40]!r} is not 4 numbers"
    if not _finite_number(detection_prob):
        return f"detection_prob {detection_prob!r} is not a number"
    if not _finite_number(created_at):
        return f"created_at {created_at!r} is not a number"
    return None


def _unit(vector: np.ndarray, dim: int) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape != (dim,) or not np.all(np.isfinite(v)):
        raise ValueError(f"embedding must be {dim} finite floats")
    norm = float(np.linalg.norm(v))
    if norm == 0:
        raise ValueError("embedding has zero length")
    return (v / norm).astype(np.float32)

"""The gallery of record: people and face examples with their embeddings in a store (SQLite by
default, PostgreSQL when configured: service/store/base.py is the seam), mirrored into a FAISS
index for search. One ``Gallery`` serves one collection (``default``: the gallery every route
used before collections; service/store/registry.py holds the others).

Every write commits to the store first (with its change-log row, in the same transaction) and
only then touches the index, so a crash can lose nothing acknowledged; at start the index is
rebuilt from the store. A collection remembers the model id and pipeline it was built with and
refuses to open with another one.

Storage failures surface as domain errors (``StorageError`` and its kinds, service/store/base.py)
that the HTTP layer maps to statuses: a write that waits too long for the database's lock, a full
disk, an I/O error, an unreachable server. A failed write leaves the store and the index as they
were. Opening checks the store (service/store/sqlite.py, service/store/postgres.py) and decodes
every row: rows that do not decode are left out of search and export, logged, and listed by
``python -m service check`` (service/store/check.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from service.index import DEFAULT_EXACT_MAX, VectorIndex
from service.store.base import (
    DEFAULT_COLLECTION,
    NO_LIMIT,
    CollectionNotFoundError,
    DatabaseUnavailableError,
    FaceNotFoundError,
    FaceRecord,
    GalleryOpenError,
    Match,
    ModelMismatchError,
    NewFace,
    Person,
    PersonNotFoundError,
    StorageError,
    StorageFullError,
    Store,
    StoreBusyError,
    StoredFace,
    StoreUnavailableError,
    Tx,
)
from service.store.migrations import SQLITE_V1
from service.store.sqlite import DEFAULT_BUSY_TIMEOUT, SqliteStore

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "Change",
    "DatabaseUnavailableError",
    "FaceNotFoundError",
    "FaceRecord",
    "Gallery",
    "GalleryOpenError",
    "Match",
    "ModelMismatchError",
    "NewFace",
    "Person",
    "PersonNotFoundError",
    "StorageError",
    "StorageFullError",
    "StoreBusyError",
    "StoreUnavailableError",
    "StoredFace",
    "open_store",
]

log = logging.getLogger(__name__)

SCHEMA = ";\n".join(SQLITE_V1)  # schema v1: every SQLite gallery made before collections (service/store/migrations.py)

# Galleries written before the pipeline was recorded were all taught this way (by model id).
LEGACY_PIPELINES = {"dlib-resnet-v1": "template"}
LEGACY_PIPELINE = "box"  # the facenet models

# The change log's ops (``changes.op``), written in the transaction of each write:
#   person (created or renamed), person_delete, face_add, face_delete (person_id, face_id);
#   reload (the collection was rewritten wholesale: import, repair), collection_create, collection_delete.
FACE_COLUMNS = "id, person_id, embedding, image_sha256, box, detection_prob, created_at"


def open_store(location: str | Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, max_connections: int = 10) -> Store:
    """The store at ``location``: a ``postgresql://`` URL, or the path of a SQLite file."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresStore

        return PostgresStore(text, busy_timeout=busy_timeout, max_connections=max_connections)
    return SqliteStore(location, busy_timeout=busy_timeout)


_P = ParamSpec("_P")
_T = TypeVar("_T")


def storage_errors(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Gallery methods raise StorageError kinds, never raw driver errors (integrity errors are
    bugs, not storage trouble, and pass through)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        store: Store = args[0].store  # type: ignore[attr-defined]
        try:
            return method(*args, **kwargs)
        except store.integrity_errors():
            raise
        except store.driver_errors() as exc:
            raise store.translate(exc) from exc

    return wrapper


class Gallery:
    """One collection's people and faces, and its search index. Thread-safe: one lock serialises
    every read and write of the collection's rows and its index."""

    def __init__(
        self,
        location: str | Path | Store,
        model_id: str,
        dim: int,
        *,
        pipeline: str | None = None,
        index_exact_max: int = DEFAULT_EXACT_MAX,
        index_nprobe: int = 0,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        collection: str = DEFAULT_COLLECTION,
    ) -> None:
        """Open (creating when new) the gallery at ``location``: a SQLite file's path or a
        ``postgresql://`` URL (the gallery then owns the store and closes it), or an open
        ``Store`` shared with other collections. Raises DataDirInUseError when another process
        owns the directory, GalleryOpenError when the store is damaged, foreign, unreachable or
        cannot be written, ModelMismatchError when the collection was built with another model,
        CollectionNotFoundError for a collection other than ``default`` that does not exist."""
        self.model_id = model_id
        self.dim = dim
        self.collection = collection
        self.pipeline = pipeline or LEGACY_PIPELINES.get(model_id, LEGACY_PIPELINE)
        # The index is exact up to index_exact_max faces and IVF above (service/index.py); it
        # switches in place inside add/remove, which run under self._lock.
        self._index_options = {"exact_max": index_exact_max, "nprobe": index_nprobe}
        self._lock = threading.RLock()
        self._undecodable: dict[int, str] = {}  # face id -> why its row cannot be used
        self._undecodable_people: dict[str, str] = {}  # person id -> why
        self._index = VectorIndex(dim, **self._index_options)
        self._face_person: dict[int, str] = {}
        self._names: dict[str, str] = {}
        self.loaded_seq = 0  # the change log's last seq the index reflects (replicas follow from there)
        self._owns_store = not hasattr(location, "write")
        self.store: Store = open_store(location, busy_timeout=busy_timeout) if self._owns_store else location  # type: ignore[assignment,arg-type]
        self.path: Path | None = self.store.path
        self.location = self.store.location
        try:
            try:
                self._check_collection()
                self._rebuild()
            except self.store.integrity_errors():
                raise
            except self.store.driver_errors() as exc:  # damage the store's checks did not see, met while reading every row
                if self.store.dialect == "sqlite":
                    from service.store.sqlite import open_failure

                    raise GalleryOpenError(open_failure(Path(self.location), exc)) from None  # type: ignore[arg-type]
                raise GalleryOpenError(f"cannot read the gallery {self.location}: {exc}") from None
        except BaseException:
            if self._owns_store:
                self.store.close()
            raise

    # -- setup -------------------------------------------------------------------------
    def _check_collection(self) -> None:
        """The collection's catalog row: created for ``default`` when new; its model must be ours."""
        with self.store.write() as tx:
            row = tx.execute("SELECT model_id, dim, pipeline FROM collections WHERE id = ?", (self.collection,)).fetchone()
            if row is None:
                if self.collection != DEFAULT_COLLECTION:
                    raise CollectionNotFoundError(self.collection)
                tx.execute(
                    "INSERT INTO collections (id, model_id, dim, pipeline, key_hash, created_at) VALUES (?, ?, ?, ?, NULL, ?)",
                    (self.collection, self.model_id, self.dim, self.pipeline, time.time()),
                )
                tx.log_change(self.collection, "collection_create")
                return
        check_model(self.location, self.collection, row, self.model_id, self.dim, self.pipeline)

    def _rebuild(self) -> None:
        """Rebuild names and the index from the store, decoding every row; rows that do not decode
        stay in the store but out of search and export (logged; ``python -m service check``)."""
        with self._lock:
            index = VectorIndex(self.dim, **self._index_options)
            names: dict[str, str] = {}
            undecodable_people: dict[str, str] = {}
            ids: list[int] = []
            vectors: list[np.ndarray] = []
            face_person: dict[int, str] = {}
            undecodable: dict[int, str] = {}
            with self.store.read(snapshot=True) as tx:
                seq = tx.execute("SELECT MAX(seq) FROM changes").fetchone()[0]
                for person_id, name, created_at in tx.execute(
                    "SELECT id, name, created_at FROM people WHERE collection = ?", (self.collection,)
                ):
                    problem = _person_problem(person_id, name, created_at)
                    if problem is None:
                        names[person_id] = name
                    else:
                        undecodable_people[str(person_id)] = problem
                rows = tx.stream(
                    f"SELECT {FACE_COLUMNS} FROM faces WHERE collection = ? AND model_id = ?", (self.collection, self.model_id)
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
                index.add(np.asarray(ids, dtype=np.int64), np.stack(vectors))
            self._index, self._names, self._face_person, self._undecodable = index, names, face_person, undecodable
            self._undecodable_people = undecodable_people
            self.loaded_seq = int(seq or 0)
            if undecodable or undecodable_people:
                log.warning(
                    "gallery %s (collection %s): %d face rows and %d person rows do not decode and are left out of search and export; "
                    "run `python -m service check` to list them and `python -m service check --repair` to delete them",
                    self.location,
                    self.collection,
                    len(undecodable),
                    len(undecodable_people),
                )

    def clear_index(self) -> None:
        """Forget every face in the index (the collection was deleted)."""
        with self._lock:
            self._index = VectorIndex(self.dim, **self._index_options)
            self._face_person, self._names = {}, {}

    def adopt_store(self) -> None:
        """From now on closing this gallery closes its store (service/store/__init__.py)."""
        self._owns_store = True

    def close(self) -> None:
        """Close the gallery (and its store when it opened it: for SQLite, the data directory's lock)."""
        with self._lock:
            if self._owns_store:
                self.store.close()

    # -- writes ------------------------------------------------------------------------
    @storage_errors
    def add_faces(self, person_id: str, name: str | None, faces: Sequence[NewFace]) -> tuple[Person, list[FaceRecord], bool]:
        """Add face examples to a person, creating the person when new (``name`` defaults to the
        id). An image already taught to this person is not stored twice. Returns
        (person, the person's records for these faces, created)."""
        vectors = [_unit(face.embedding, self.dim) for face in faces]
        now = time.time()
        c = self.collection
        with self._lock:
            with self.store.write() as db:
                row = db.execute("SELECT name FROM people WHERE collection = ? AND id = ?", (c, person_id)).fetchone()
                created = row is None
                if created:
                    db.execute(
                        "INSERT INTO people (collection, id, name, created_at) VALUES (?, ?, ?, ?)", (c, person_id, name or person_id, now)
                    )
                    db.log_change(c, "person", person_id)
                elif name and name != row[0]:
                    db.execute("UPDATE people SET name = ? WHERE collection = ? AND id = ?", (name, c, person_id))
                    db.log_change(c, "person", person_id)
                face_ids, new_ids = [], []
                for face, vec in zip(faces, vectors, strict=True):
                    existing = self._existing_face(db, person_id, face.image_sha256)
                    if existing is not None:
                        face_ids.append(existing)
                        continue
                    face_ids.append(self._insert_face(db, None, person_id, vec, face.image_sha256, face.box, face.detection_prob, now))
                    self._insert_thumbnail(db, face_ids[-1], face.thumbnail)
                    new_ids.append((face_ids[-1], vec))
                    db.log_change(c, "face_add", person_id, face_ids[-1])
                person = self._person(db, person_id)
                records = [self._face(db, face_id) for face_id in face_ids]
            # Committed; the lock is still held, so no search sees a half-updated index.
            self._names[person_id] = person.name
            if new_ids:
                self._index.add(np.asarray([i for i, _ in new_ids], dtype=np.int64), np.stack([v for _, v in new_ids]))
                self._face_person.update({i: person_id for i, _ in new_ids})
        return person, records, created

    @storage_errors
    def rename(self, person_id: str, name: str) -> Person:
        with self._lock:
            with self.store.write() as db:
                if (
                    db.execute("UPDATE people SET name = ? WHERE collection = ? AND id = ?", (name, self.collection, person_id)).rowcount
                    == 0
                ):
                    raise PersonNotFoundError(person_id)
                db.log_change(self.collection, "person", person_id)
                person = self._person(db, person_id)
            self._names[person_id] = name
        return person

    @storage_errors
    def delete_person(self, person_id: str) -> int:
        """Delete a person and all their face examples; returns how many examples went."""
        c = self.collection
        with self._lock:
            with self.store.write() as db:
                face_ids = [r[0] for r in db.execute("SELECT id FROM faces WHERE collection = ? AND person_id = ?", (c, person_id))]
                if db.execute("DELETE FROM people WHERE collection = ? AND id = ?", (c, person_id)).rowcount == 0:
                    raise PersonNotFoundError(person_id)
                db.log_change(c, "person_delete", person_id)
            self._forget(face_ids)
            self._names.pop(person_id, None)
        return len(face_ids)

    @storage_errors
    def delete_face(self, person_id: str, face_id: int) -> None:
        c = self.collection
        with self._lock:
            with self.store.write() as db:
                if db.execute("SELECT 1 FROM people WHERE collection = ? AND id = ?", (c, person_id)).fetchone() is None:
                    raise PersonNotFoundError(person_id)
                if (
                    not 0 <= face_id < 2**63
                    or db.execute("DELETE FROM faces WHERE id = ? AND collection = ? AND person_id = ?", (face_id, c, person_id)).rowcount
                    == 0
                ):
                    raise FaceNotFoundError(face_id)
                db.log_change(c, "face_delete", person_id, face_id)
            self._forget([face_id])

    def _existing_face(self, db: Tx, person_id: str, image_sha256: str) -> int | None:
        """Id of the example this person already has from this image (same model), if any."""
        row = db.execute(
            "SELECT id FROM faces WHERE collection = ? AND person_id = ? AND image_sha256 = ? AND model_id = ?",
            (self.collection, person_id, image_sha256, self.model_id),
        ).fetchone()
        return None if row is None else int(row[0])

    def _insert_face(
        self,
        db: Tx,
        face_id: int | None,
        person_id: str,
        vector: np.ndarray,
        image_sha256: str,
        box: Sequence[float],
        detection_prob: float,
        created_at: float,
    ) -> int:
        """Insert one example (``face_id`` None: the database picks it); returns its id."""
        values = (
            self.collection,
            person_id,
            self.model_id,
            vector.tobytes(),
            image_sha256,
            json.dumps(list(box)),
            detection_prob,
            created_at,
        )
        columns = "collection, person_id, model_id, embedding, image_sha256, box, detection_prob, created_at"
        if face_id is None:
            sql = f"INSERT INTO faces ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
        else:
            sql, values = f"INSERT INTO faces (id, {columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id", (face_id, *values)
        return int(db.execute(sql, values).fetchone()[0])

    @staticmethod
    def _insert_thumbnail(db: Tx, face_id: int, jpeg: bytes | None) -> None:
        if jpeg is not None:
            db.execute("INSERT INTO thumbnails (face_id, jpeg) VALUES (?, ?)", (face_id, jpeg))

    @storage_errors
    def thumbnail(self, person_id: str, face_id: int) -> bytes | None:
        """The JPEG stored with a face example (None: the example has none); PersonNotFoundError,
        FaceNotFoundError when the person or their example does not exist."""
        with self._lock:
            with self.store.read() as tx:
                self._person(tx, person_id)
                row = (
                    tx.execute(
                        "SELECT t.jpeg, f.id FROM faces f LEFT JOIN thumbnails t ON t.face_id = f.id"
                        " WHERE f.id = ? AND f.collection = ? AND f.person_id = ?",
                        (face_id, self.collection, person_id),
                    ).fetchone()
                    if 0 <= face_id < 2**63
                    else None
                )
        if row is None:
            raise FaceNotFoundError(face_id)
        return bytes(row[0]) if row[0] is not None else None

    @storage_errors
    def thumbnails(self) -> dict[int, bytes]:
        """Face id -> JPEG for every thumbnail of this collection (state export)."""
        with self._lock:
            with self.store.read() as tx:
                rows = tx.stream(
                    "SELECT t.face_id, t.jpeg FROM thumbnails t JOIN faces f ON f.id = t.face_id WHERE f.collection = ?",
                    (self.collection,),
                )
                return {int(r[0]): bytes(r[1]) for r in rows}

    def _forget(self, face_ids: list[int]) -> None:
        self._index.remove(face_ids)
        for face_id in face_ids:
            self._face_person.pop(face_id, None)

    @storage_errors
    def rename_all(self, old_name: str, new_name: str) -> int:
        """Rename every person called ``old_name``; returns how many were renamed."""
        c = self.collection
        with self._lock:
            with self.store.write() as db:
                ids = [r[0] for r in db.execute("SELECT id FROM people WHERE collection = ? AND name = ?", (c, old_name))]
                db.execute("UPDATE people SET name = ? WHERE collection = ? AND name = ?", (new_name, c, old_name))
                for person_id in ids:
                    db.log_change(c, "person", person_id)
            self._names.update({person_id: new_name for person_id in ids})
        return len(ids)

    # -- changes made by other replicas (the change log; service/store/feed.py) ------------
    @storage_errors
    def apply_changes(self, changes: Sequence[Change]) -> None:
        """Bring the index up to date with these change-log rows of this collection (in seq
        order), re-reading each person and face they name as the store holds it now. Idempotent:
        changes this process made itself, or applies twice, change nothing more. ``loaded_seq``
        moves to the last one."""
        with self._lock:
            if any(ch.op == "reload" for ch in changes):
                self._rebuild()
                changes = [ch for ch in changes if ch.seq > self.loaded_seq]
            with self.store.read() as tx:
                for ch in changes:
                    if ch.collection != self.collection:
                        continue
                    if ch.op == "face_add" and ch.face_id is not None and ch.face_id not in self._face_person:
                        row = tx.execute(
                            f"SELECT {FACE_COLUMNS} FROM faces WHERE id = ? AND collection = ? AND model_id = ?",
                            (ch.face_id, self.collection, self.model_id),
                        ).fetchone()
                        if row is not None and _face_problem(row, self.dim) is None:
                            if row[1] not in self._names:
                                self._load_person(tx, row[1])
                            if row[1] in self._names:
                                self._index.add(np.asarray([row[0]], dtype=np.int64), np.frombuffer(row[2], dtype=np.float32)[None, :])
                                self._face_person[int(row[0])] = row[1]
                    elif ch.op == "face_delete" and ch.face_id is not None:
                        if ch.face_id in self._face_person:
                            self._forget([ch.face_id])
                    elif ch.op == "person" and ch.person_id is not None:
                        self._load_person(tx, ch.person_id)
                    elif ch.op == "person_delete" and ch.person_id is not None:
                        gone = [face_id for face_id, person in self._face_person.items() if person == ch.person_id]
                        self._forget(gone)
                        self._names.pop(ch.person_id, None)
                    self.loaded_seq = max(self.loaded_seq, ch.seq)

    def _load_person(self, tx: Tx, person_id: str) -> None:
        row = tx.execute("SELECT name, created_at FROM people WHERE collection = ? AND id = ?", (self.collection, person_id)).fetchone()
        if row is not None and _person_problem(person_id, row[0], row[1]) is None:
            self._names[person_id] = row[0]

    # -- export / import (service/state.py) ----------------------------------------------
    @storage_errors
    def export_snapshot(self) -> tuple[list[Person], list[StoredFace]]:
        """Every person and face example with its embedding, read in one consistent snapshot.
        Rows that do not decode are left out (``undecodable()`` counts them; logged)."""
        with self._lock:
            with self.store.read(snapshot=True) as tx:
                people = [p for p in self._list_people(tx, NO_LIMIT, 0) if p.id not in self._undecodable_people]
                rows = list(
                    tx.stream(
                        f"SELECT {FACE_COLUMNS} FROM faces WHERE collection = ? AND model_id = ? ORDER BY id",
                        (self.collection, self.model_id),
                    )
                )
        names = {p.id for p in people}
        faces, skipped = [], 0
        for r in rows:
            if _face_problem(r, self.dim) is not None or r[1] not in names:
                skipped += 1
                continue
            faces.append(StoredFace(r[0], r[1], np.frombuffer(r[2], dtype=np.float32).copy(), r[3], tuple(json.loads(r[4])), r[5], r[6]))
        if skipped or self._undecodable_people:
            log.warning(
                "export of %s (collection %s) left out %d face rows and %d person rows that do not decode",
                self.location,
                self.collection,
                skipped,
                len(self._undecodable_people),
            )
        return people, faces

    def undecodable(self) -> tuple[dict[str, str], dict[int, str]]:
        """(person id -> problem, face id -> problem) for the rows found not to decode when the
        gallery was opened (or last rebuilt); they are kept in the store but never served."""
        with self._lock:
            return dict(self._undecodable_people), dict(self._undecodable)

    @storage_errors
    def delete_undecodable(self) -> tuple[int, int]:
        """Delete the rows ``undecodable()`` lists (``python -m service check --repair``);
        returns (people, faces) deleted."""
        c = self.collection
        with self._lock:
            people, faces = self.undecodable()
            with self.store.write() as db:
                db.executemany("DELETE FROM faces WHERE id = ? AND collection = ?", [(i, c) for i in faces])
                db.executemany("DELETE FROM faces WHERE collection = ? AND person_id = ?", [(c, i) for i in people])
                db.executemany("DELETE FROM people WHERE collection = ? AND id = ?", [(c, i) for i in people])
                db.log_change(c, "reload")
            self._rebuild()
        return len(people), len(faces)

    @storage_errors
    def import_snapshot(self, people: Sequence[tuple[str, str, float]], faces: Sequence[StoredFace], *, replace: bool) -> tuple[int, int]:
        """Load (id, name, created_at) people and their face examples in one transaction: all or
        nothing. ``replace`` empties the collection first and keeps the examples' ids (unless
        another collection uses one of them: then all get new ids); otherwise the file is merged
        in (people keep their id and take the file's name, examples get new ids, an image a
        person already has is not stored twice). The index is rebuilt after commit.
        Returns (people, face examples) written."""
        vectors = [_unit(face.embedding, self.dim) for face in faces]
        c = self.collection
        with self._lock:
            with self.store.write() as db:
                if replace:
                    db.execute("DELETE FROM faces WHERE collection = ?", (c,))
                    db.execute("DELETE FROM people WHERE collection = ?", (c,))
                keep_ids = replace and not self._ids_taken(db, [f.id for f in faces if f.id is not None])
                db.executemany(
                    "INSERT INTO people (collection, id, name, created_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (collection, id) DO UPDATE SET name = excluded.name",
                    [(c, person_id, name, created_at) for person_id, name, created_at in people],
                )
                # merge: an image a person already has (in the store, or earlier in this file) is not stored twice
                seen = (
                    set()
                    if replace
                    else {
                        (r[0], r[1])
                        for r in db.execute(
                            "SELECT person_id, image_sha256 FROM faces WHERE collection = ? AND model_id = ?", (c, self.model_id)
                        )
                    }
                )
                rows = []
                written = 0
                for face, vec in zip(faces, vectors, strict=True):
                    if not replace:
                        if (face.person_id, face.image_sha256) in seen:
                            continue
                        seen.add((face.person_id, face.image_sha256))
                    if face.thumbnail is not None:  # one by one: its thumbnail row needs the face's id
                        new_id = self._insert_face(
                            db,
                            face.id if keep_ids else None,
                            face.person_id,
                            vec,
                            face.image_sha256,
                            face.box,
                            face.detection_prob,
                            face.created_at,
                        )
                        self._insert_thumbnail(db, new_id, face.thumbnail)
                        written += 1
                        continue
                    values = (c, face.person_id, self.model_id, vec.tobytes(), face.image_sha256, json.dumps(list(face.box)))
                    rows.append(
                        (face.id, *values, face.detection_prob, face.created_at)
                        if keep_ids
                        else (*values, face.detection_prob, face.created_at)
                    )
                columns = "collection, person_id, model_id, embedding, image_sha256, box, detection_prob, created_at"
                if rows and keep_ids:
                    db.executemany(f"INSERT INTO faces (id, {columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                elif rows:
                    db.executemany(f"INSERT INTO faces ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                written += len(rows)
                if keep_ids:
                    self.store.reserve_ids(db)
                db.log_change(c, "reload")
            self._rebuild()
        return len(people), written

    def _ids_taken(self, db: Tx, ids: list[int]) -> bool:
        """Whether any of these face ids is used (by another collection: this one was emptied)."""
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            if db.execute(f"SELECT 1 FROM faces WHERE id IN ({marks}) LIMIT 1", chunk).fetchone() is not None:
                return True
        return False

    @storage_errors
    def person_embeddings(self, person_id: str) -> np.ndarray:
        """(n, dim) embeddings of one person's examples; PersonNotFoundError when unknown."""
        with self._lock:
            with self.store.read() as tx:
                self._person(tx, person_id)
                rows = tx.execute(
                    "SELECT embedding FROM faces WHERE collection = ? AND person_id = ? AND model_id = ? ORDER BY id",
                    (self.collection, person_id, self.model_id),
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

    @storage_errors
    def list_people(self, limit: int = 1000, offset: int = 0) -> list[Person]:
        with self._lock:
            with self.store.read() as tx:
                return self._list_people(tx, NO_LIMIT if limit < 0 else limit, offset)

    def _list_people(self, tx: Tx, limit: int, offset: int) -> list[Person]:
        rows = tx.execute(
            "SELECT p.id, p.name, p.created_at, COUNT(f.id) FROM people p"
            " LEFT JOIN faces f ON f.collection = p.collection AND f.person_id = p.id"
            f" WHERE p.collection = ? GROUP BY p.collection, p.id ORDER BY p.created_at, p.id{self.store.text_order} LIMIT ? OFFSET ?",
            (self.collection, limit, offset),
        ).fetchall()
        return [Person(r[0], r[1], r[2], r[3]) for r in rows]

    @storage_errors
    def get_person(self, person_id: str) -> tuple[Person, list[FaceRecord]]:
        with self._lock:
            with self.store.read() as tx:
                person = self._person(tx, person_id)
                rows = tx.execute(
                    "SELECT id, person_id, model_id, image_sha256, box, detection_prob, created_at FROM faces"
                    " WHERE collection = ? AND person_id = ? ORDER BY id",
                    (self.collection, person_id),
                ).fetchall()
            return person, [_face_record(r) for r in rows if r[0] not in self._undecodable]

    @storage_errors
    def counts(self) -> tuple[int, int]:
        """(people, face examples) in the database."""
        with self._lock:
            with self.store.read() as tx:
                people = tx.execute("SELECT COUNT(*) FROM people WHERE collection = ?", (self.collection,)).fetchone()[0]
                faces = tx.execute("SELECT COUNT(*) FROM faces WHERE collection = ?", (self.collection,)).fetchone()[0]
        return int(people), int(faces)

    def index_ids(self) -> set[int]:
        """Face ids currently searchable (for consistency checks)."""
        with self._lock:
            return {int(i) for i in self._index.ids()}

    @property
    def index_kind(self) -> str:
        """``exact`` or ``ivf``: the search index's current layout (service/index.py)."""
        with self._lock:
            return self._index.kind

    @storage_errors
    def database_ids(self) -> set[int]:
        with self._lock:
            with self.store.read() as tx:
                return {
                    int(r[0])
                    for r in tx.execute("SELECT id FROM faces WHERE collection = ? AND model_id = ?", (self.collection, self.model_id))
                }

    # -- replicas (service/store/feed.py) ------------------------------------------------
    def index_digest(self) -> str:
        """SHA-256 of the sorted searchable face ids joined by commas: equal on every replica whose
        index matches the database (``/readyz``; compare ``database_ids()``)."""
        with self._lock:
            ids = sorted(int(i) for i in self._index.ids())
        return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()

    def _person(self, db: Tx, person_id: str) -> Person:
        row = db.execute(
            "SELECT p.id, p.name, p.created_at,"
            " (SELECT COUNT(*) FROM faces f WHERE f.collection = p.collection AND f.person_id = p.id)"
            " FROM people p WHERE p.collection = ? AND p.id = ?",
            (self.collection, person_id),
        ).fetchone()
        if row is None:
            raise PersonNotFoundError(person_id)
        return Person(row[0], row[1], row[2], row[3])

    def _face(self, db: Tx, face_id: int) -> FaceRecord:
        r = db.execute(
            "SELECT id, person_id, model_id, image_sha256, box, detection_prob, created_at FROM faces WHERE id = ? AND collection = ?",
            (face_id, self.collection),
        ).fetchone()
        if r is None:
            raise FaceNotFoundError(face_id)
        return _face_record(r)


@dataclass(frozen=True)
class Change:
    """One row of the change log (``changes``)."""

    seq: int
    collection: str
    op: str
    person_id: str | None
    face_id: int | None


def read_changes(store: Store, after_seq: int, limit: int = 1000) -> list[Change]:
    """The change log's rows after ``after_seq``, oldest first (at most ``limit``)."""
    with store.read() as tx:
        rows = tx.execute(
            "SELECT seq, collection, op, person_id, face_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()
    return [Change(int(r[0]), r[1], r[2], r[3], None if r[4] is None else int(r[4])) for r in rows]


def _face_record(r: Sequence[Any]) -> FaceRecord:
    return FaceRecord(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6])


def check_model(location: str, collection: str, row: Sequence[Any], model_id: str, dim: int, pipeline: str) -> None:
    """ModelMismatchError unless the catalog row (model_id, dim, pipeline) is this service's."""
    where = f"gallery {location}" if collection == DEFAULT_COLLECTION else f"collection {collection!r} of {location}"
    if row[0] != model_id or int(row[1]) != dim:
        raise ModelMismatchError(
            f"{where} was built with model {row[0]!r} ({row[1]}-D) but this service runs {model_id!r} ({dim}-D); use that model "
            "or another FEWFACE_DATA_DIR"
        )
    stored = row[2] or LEGACY_PIPELINES.get(model_id, LEGACY_PIPELINE)
    if stored != pipeline:
        raise ModelMismatchError(
            f"{where} was taught with the {model_id} pipeline {stored!r} but this service runs "
            f"{pipeline!r}: embeddings from different face crops are not comparable, so they are never mixed. "
            f"Either start with {pipeline_settings(stored)} to keep using this gallery as it is, or re-teach "
            "the people from their photos into a new FEWFACE_DATA_DIR (a state export carries the old vectors "
            "and cannot convert them)"
        )


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

"""Collections: independent galleries in one store, each a ``Gallery`` with its own search index.

``Galleries`` is the catalog: ``get(cid)`` opens a collection (lazily; once per process),
``create(cid, api_key=None)``, ``delete(cid)`` (its people and faces with it, in one
transaction; the others are left exactly as they were), ``list()`` and ``key_ok(cid, key)``.
The collection ``default`` is the gallery every route used before collections; it always
exists and cannot be deleted. Each collection records the model id and pipeline it was created
with: opening one built with another model raises ``ModelMismatchError``.

Layout: rows of every collection live in the same tables with a ``collection`` column, in both
stores (service/store/migrations.py, v2). For SQLite that means one file: one transaction covers
a collection's rows, the catalog and the change log; the data directory's lock, the start-up
checks, ``python -m service check`` and the copy into PostgreSQL all see one database; and the
v1 file becomes the ``default`` collection in place. Face ids are unique across collections.

A collection's own API key is stored as a salted PBKDF2-SHA256 hash, never the key itself;
verified keys are remembered in memory (by the hash they matched and an HMAC of the key under a
per-process secret) so a request does not pay the hashing each time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from service.store.base import (
    COLLECTION_ID,
    DEFAULT_COLLECTION,
    CollectionExistsError,
    CollectionNotFoundError,
    CollectionProtectedError,
    InvalidCollectionIdError,
    Store,
)
from service.store.gallery import Change, Gallery, check_model, read_changes, storage_errors

log = logging.getLogger(__name__)

KEY_ITERATIONS = 100_000
_SLOW_CHECKS = threading.BoundedSemaphore(1)  # PBKDF2 verifications run one at a time (verified keys are cached)
_PROCESS_SECRET = secrets.token_bytes(32)

__all__ = [
    "CollectionExistsError",
    "CollectionInfo",
    "CollectionNotFoundError",
    "CollectionProtectedError",
    "Galleries",
    "InvalidCollectionIdError",
    "hash_key",
    "verify_key",
]


def hash_key(key: str, *, iterations: int = KEY_ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` of an API key (a new random salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_key(key: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        computed = hashlib.pbkdf2_hmac("sha256", key.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


def valid_collection_id(cid: object) -> str:
    if not isinstance(cid, str) or not COLLECTION_ID.fullmatch(cid):
        raise InvalidCollectionIdError(f"{str(cid)[:80]!r} is not a collection id: 1 to 64 of a-z 0-9 _ -, starting with a letter or digit")
    return cid


@dataclass(frozen=True)
class CollectionInfo:
    id: str
    model_id: str
    dim: int
    pipeline: str | None
    has_key: bool
    created_at: float
    people: int
    faces: int


class Galleries:
    """Every collection of one store, around its ``default`` gallery (which owns the store)."""

    def __init__(self, default: Gallery) -> None:
        if default.collection != DEFAULT_COLLECTION:
            raise ValueError("Galleries is built around the default collection's gallery")
        self.default = default
        self.store: Store = default.store
        self._lock = threading.RLock()
        self._open: dict[str, Gallery] = {DEFAULT_COLLECTION: default}
        self._verified: set[tuple[str, str, bytes]] = set()

    @property
    def model_id(self) -> str:
        return self.default.model_id

    def _new_gallery(self, cid: str) -> Gallery:
        d = self.default
        return Gallery(
            self.store,
            d.model_id,
            d.dim,
            pipeline=d.pipeline,
            index_exact_max=int(d._index_options["exact_max"]),
            index_nprobe=int(d._index_options["nprobe"]),
            collection=cid,
        )

    def get(self, cid: str) -> Gallery:
        """The collection's gallery (opened on first use: its index is built then). Raises
        InvalidCollectionIdError, CollectionNotFoundError, ModelMismatchError."""
        valid_collection_id(cid)
        with self._lock:
            gallery = self._open.get(cid)
            if gallery is None:
                gallery = self._new_gallery(cid)
                self._open[cid] = gallery
            return gallery

    def opened(self) -> dict[str, Gallery]:
        """The collections this process has open now (id -> gallery), e.g. for a change feed."""
        with self._lock:
            return dict(self._open)

    @storage_errors
    def create(self, cid: str, api_key: str | None = None) -> Gallery:
        """A new empty collection for this service's model and pipeline, with an optional API key
        of its own. Raises InvalidCollectionIdError, CollectionExistsError."""
        valid_collection_id(cid)
        key_hash = hash_key(api_key) if api_key else None
        d = self.default
        with self._lock:
            with self.store.write() as tx:
                if tx.execute("SELECT 1 FROM collections WHERE id = ?", (cid,)).fetchone() is not None:
                    raise CollectionExistsError(cid)
                tx.execute(
                    "INSERT INTO collections (id, model_id, dim, pipeline, key_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (cid, d.model_id, d.dim, d.pipeline, key_hash, time.time()),
                )
                tx.log_change(cid, "collection_create")
            self._open.pop(cid, None)
            return self.get(cid)

    @storage_errors
    def delete(self, cid: str) -> tuple[int, int]:
        """Delete a collection with its people and faces; returns (people, faces) deleted.
        Raises InvalidCollectionIdError, CollectionProtectedError (``default``),
        CollectionNotFoundError."""
        valid_collection_id(cid)
        if cid == DEFAULT_COLLECTION:
            raise CollectionProtectedError("the default collection cannot be deleted (delete its people instead)")
        with self._lock:
            gallery = self._open.get(cid)
            guard = gallery._lock if gallery is not None else threading.RLock()
            with guard:
                with self.store.write() as tx:
                    people = tx.execute("SELECT COUNT(*) FROM people WHERE collection = ?", (cid,)).fetchone()[0]
                    faces = tx.execute("SELECT COUNT(*) FROM faces WHERE collection = ?", (cid,)).fetchone()[0]
                    # explicit (not only ON DELETE CASCADE): the same on both stores whatever their foreign-key settings
                    tx.execute("DELETE FROM faces WHERE collection = ?", (cid,))
                    tx.execute("DELETE FROM people WHERE collection = ?", (cid,))
                    if tx.execute("DELETE FROM collections WHERE id = ?", (cid,)).rowcount == 0:
                        raise CollectionNotFoundError(cid)
                    tx.log_change(cid, "collection_delete")
                self.forget(cid)
                if gallery is not None:
                    gallery.clear_index()  # a request still holding it finds nothing
        return int(people), int(faces)

    def forget(self, cid: str) -> None:
        """Drop this process's open gallery of ``cid`` (deleted here, or by another replica)."""
        with self._lock:
            self._open.pop(cid, None)

    @storage_errors
    def exists(self, cid: str) -> bool:
        valid_collection_id(cid)
        with self.store.read() as tx:
            return tx.execute("SELECT 1 FROM collections WHERE id = ?", (cid,)).fetchone() is not None

    @storage_errors
    def list(self) -> list[CollectionInfo]:
        """Every collection, ``default`` first then by id, with its counts."""
        with self.store.read(snapshot=True) as tx:
            rows = tx.execute("SELECT id, model_id, dim, pipeline, key_hash, created_at FROM collections").fetchall()
            people = dict(tx.execute("SELECT collection, COUNT(*) FROM people GROUP BY collection").fetchall())
            faces = dict(tx.execute("SELECT collection, COUNT(*) FROM faces GROUP BY collection").fetchall())
        infos = [
            CollectionInfo(r[0], r[1], int(r[2]), r[3], r[4] is not None, float(r[5]), int(people.get(r[0], 0)), int(faces.get(r[0], 0)))
            for r in rows
        ]
        return sorted(infos, key=lambda c: (c.id != DEFAULT_COLLECTION, c.id))

    @storage_errors
    def check(self, cid: str) -> None:
        """CollectionNotFoundError / ModelMismatchError without opening (building) the collection."""
        valid_collection_id(cid)
        with self.store.read() as tx:
            row = tx.execute("SELECT model_id, dim, pipeline FROM collections WHERE id = ?", (cid,)).fetchone()
        if row is None:
            raise CollectionNotFoundError(cid)
        check_model(self.store.location, cid, row, self.default.model_id, self.default.dim, self.default.pipeline)

    @storage_errors
    def key_ok(self, cid: str, key: str | None) -> bool:
        """Whether ``key`` is the API key of collection ``cid`` (False when it has none, or for
        an unknown or invalid id)."""
        if not key or not isinstance(cid, str) or not COLLECTION_ID.fullmatch(cid):
            return False
        with self.store.read() as tx:
            row = tx.execute("SELECT key_hash FROM collections WHERE id = ?", (cid,)).fetchone()
        if row is None or not row[0]:
            return False
        stored = str(row[0])
        token = (cid, stored, hmac.new(_PROCESS_SECRET, key.encode(), hashlib.sha256).digest())
        if token in self._verified:
            return True
        with _SLOW_CHECKS:  # PBKDF2 costs ~50-400 ms: a flood of wrong keys may take one core, never all
            if not verify_key(key, stored):
                return False
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified.add(token)
        return True

    @storage_errors
    def set_key(self, cid: str, api_key: str | None) -> None:
        """Give collection ``cid`` a new API key of its own (None: none)."""
        valid_collection_id(cid)
        with self.store.write() as tx:
            if tx.execute("UPDATE collections SET key_hash = ? WHERE id = ?", (hash_key(api_key) if api_key else None, cid)).rowcount == 0:
                raise CollectionNotFoundError(cid)
            tx.log_change(cid, "collection_key")

    # -- following the change log (replicas: service/store/feed.py) ------------------------
    @storage_errors
    def changes_since(self, after_seq: int, limit: int = 1000) -> list[Change]:
        """Change-log rows after ``after_seq``, oldest first (seq follows commit order)."""
        return read_changes(self.store, after_seq, limit)

    @storage_errors
    def last_seq(self) -> int:
        with self.store.read() as tx:
            return int(tx.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])

    def apply(self, changes: list[Change]) -> None:
        """Apply change-log rows (in seq order) to the collections this process has open: a
        deleted collection is dropped, the others' indexes brought up to date (idempotent).
        Collections not open here are built from the store when first used."""
        by_collection: dict[str, list[Change]] = {}
        for ch in changes:
            if ch.op == "collection_delete" and ch.collection != DEFAULT_COLLECTION:
                with self._lock:
                    gallery = self._open.pop(ch.collection, None)
                if gallery is not None:
                    gallery.clear_index()
                by_collection.pop(ch.collection, None)
            elif ch.op not in ("collection_create", "collection_key"):
                by_collection.setdefault(ch.collection, []).append(ch)
        open_now = self.opened()
        for cid, rows in by_collection.items():
            gallery = open_now.get(cid)
            if gallery is not None:
                gallery.apply_changes([ch for ch in rows if ch.seq > gallery.loaded_seq])

    def close(self) -> None:
        """Close every collection and the store."""
        with self._lock:
            self._open.clear()
            self.default.close()

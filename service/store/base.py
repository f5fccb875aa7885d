"""The seam between the gallery (service/store/gallery.py: search index, caches, rules) and the
database that is its record: the domain errors and records both sides share, and the ``Store``
protocol each backend implements (service/store/sqlite.py, service/store/postgres.py).

A store hands out transactions (``write()``: one writer at a time, committed when the block
exits, rolled back on any exception) and reads (``read()``), each a ``Tx`` whose ``execute`` takes
SQL with ``?`` placeholders: the gallery's SQL is written once, in the subset both engines speak
(``INSERT ... RETURNING``, ``ON CONFLICT ... DO UPDATE``). A store translates its driver's errors
into the ``StorageError`` kinds below (``translate``); integrity errors are bugs and pass through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DEFAULT_COLLECTION = "default"
COLLECTION_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
NO_LIMIT = 2**62  # LIMIT for "all rows" that both engines accept


class ModelMismatchError(RuntimeError):
    """The gallery was built with a different embedding model, or the same model behind another
    crop / test-time flip (``pipeline``): its vectors are not comparable with this service's."""


class StorageError(RuntimeError):
    """The store could not do what was asked; the message says why (and the fix, if any)."""


class StoreBusyError(StorageError):
    """The database's write lock stayed taken (by another connection) beyond the busy timeout: retry later."""


class StorageFullError(StorageError):
    """The disk (or the database's size limit) is full: the write was rolled back."""


class StoreUnavailableError(StorageError):
    """Any other failure of the database at run time (I/O error, read-only, damaged)."""


class DatabaseUnavailableError(StoreUnavailableError):
    """The database server cannot be reached (PostgreSQL down, network, connection refused):
    nothing was changed; retry when it is back (HTTP 503 ``database_unavailable``)."""


class GalleryOpenError(StorageError):
    """The gallery cannot be used at start: damaged, foreign, unwritable or unreachable."""


class PersonNotFoundError(KeyError):
    pass


class FaceNotFoundError(KeyError):
    pass


class CollectionNotFoundError(KeyError):
    """No collection with this id."""


class CollectionExistsError(ValueError):
    """A collection with this id exists already."""


class InvalidCollectionIdError(ValueError):
    """Not a collection id: ``[a-z0-9][a-z0-9_-]{0,63}``."""


class CollectionProtectedError(ValueError):
    """The ``default`` collection (today's gallery) cannot be deleted."""


@dataclass(frozen=True)
class NewFace:
    embedding: np.ndarray  # (dim,) float32, unit length
    image_sha256: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original image pixels
    detection_prob: float


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


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """One connection inside a transaction (``Store.write``) or for reads (``Store.read``)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """Rows of a large result without holding them all in memory at once."""
        ...

    def log_change(self, collection: str, op: str, person_id: str | None = None, face_id: int | None = None) -> None:
        """Append to the change log (``changes``) in this transaction; PostgreSQL also NOTIFYs
        the channel ``fewface_changes`` (delivered at commit)."""
        ...


class Store(Protocol):
    dialect: str  # "sqlite" or "postgresql"
    location: str  # for messages: the file, or the URL without its password
    path: Path | None  # the SQLite file; None for a server
    text_order: str  # appended to ORDER BY on text: byte order on both engines

    def write(self) -> AbstractContextManager[Tx]: ...

    def read(self, snapshot: bool = False) -> AbstractContextManager[Tx]: ...

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's error classes ``translate`` handles."""
        ...

    def integrity_errors(self) -> tuple[type[BaseException], ...]: ...

    def translate(self, exc: BaseException) -> StorageError: ...

    def reserve_ids(self, tx: Tx) -> None:
        """After rows were inserted with explicit face ids: new ids continue above every id used."""
        ...

    def close(self) -> None: ...

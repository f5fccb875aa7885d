"""The embedded store: one SQLite file (WAL, ``synchronous=FULL``) in the data directory.

Opening takes the data directory's lock (service/store/datalock.py), checks the file (damaged,
foreign, unwritable: ``GalleryOpenError`` naming the file and the fix; a foreign or damaged file
is left exactly as it was) and migrates it to the latest schema (service/store/migrations.py).
One connection, serialised by a lock, serves every collection: SQLite has one writer anyway, and
one transaction covers a collection's rows, the catalog and the change log.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.store.base import (
    GalleryOpenError,
    StorageError,
    StorageFullError,
    StoreBusyError,
    StoreUnavailableError,
)
from service.store.datalock import DataDirLock
from service.store.migrations import TABLES, upgrade

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a statement waits for SQLite's lock before StoreBusyError


def open_failure(path: Path, exc: sqlite3.Error) -> str:
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


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        return iter(self.db.execute(sql, params))

    def log_change(self, collection: str, op: str, person_id: str | None = None, face_id: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO changes (collection, op, person_id, face_id, at) VALUES (?, ?, ?, ?, ?)",
            (collection, op, person_id, face_id, time.time()),
        )


class SqliteStore:
    dialect = "sqlite"
    text_order = ""  # SQLite compares text byte by byte (BINARY)

    def __init__(self, path: str | Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        """Open (creating when new) the gallery file at ``path``. Raises DataDirInUseError when
        another process owns the directory, GalleryOpenError when the file is damaged, foreign,
        written by a newer Fewface or cannot be written."""
        self.path: Path | None = Path(path)
        self.location = str(path)
        self._path = Path(path)
        self._lock = threading.RLock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._dir_lock = DataDirLock(self._path.parent)
        except OSError as exc:
            raise GalleryOpenError(
                f"cannot use data directory {self._path.parent} ({exc.strerror or exc}): make it a directory writable by uid "
                f"{os.geteuid()}, or set FEWFACE_DATA_DIR to one"
            ) from None
        try:
            self.db = self._open(busy_timeout)
        except BaseException:
            self._dir_lock.release()
            raise

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self._path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
            # Read-only checks first: a foreign or damaged file is left exactly as it was.
            problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems))
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
            if (tables and "meta" not in tables) or not tables <= TABLES:
                raise GalleryOpenError(
                    f"{self._path} is a SQLite database but not a Fewface gallery (tables: {', '.join(sorted(tables))}); "
                    "point FEWFACE_DATA_DIR at another directory, or move that file away"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=OFF")  # off while tables are rebuilt (migrations); on below
            self.db = db
            self._migrate(tables)
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise GalleryOpenError(open_failure(self._path, exc)) from None
        except BaseException:
            if db is not None:
                db.close()
            raise
        return db

    def _migrate(self, tables: set[str]) -> None:
        with self.write() as tx:
            upgrade(
                tx.execute,
                self.dialect,
                tables,
                where=f"the gallery {self._path}",
                unversioned=1 if "people" in tables else 0,  # a v1 file made before the version was recorded
                newer_fix="run that version, or point FEWFACE_DATA_DIR at another directory",
            )

    @contextmanager
    def write(self) -> Iterator[_Tx]:
        """BEGIN IMMEDIATE ... COMMIT; any failure, the COMMIT's own included, rolls back (SQLite
        may already have, e.g. on SQLITE_FULL) so the database is as it was."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(self.db)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("rollback of %s failed", self._path)
                raise

    @contextmanager
    def read(self, snapshot: bool = False) -> Iterator[_Tx]:
        """Reads under the lock (one connection: no writer can interleave; ``snapshot`` is implied)."""
        with self._lock:
            yield _Tx(self.db)

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def integrity_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.IntegrityError,)

    def translate(self, exc: BaseException) -> StorageError:
        """The domain error for a sqlite3 error at run time."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            log.warning("gallery %s busy: %s", self._path, exc)
            return StoreBusyError("the gallery database is locked by another program; nothing was changed, retry shortly")
        if code == sqlite3.SQLITE_FULL:
            log.error("gallery %s: disk full (%s); the write was rolled back", self._path, exc)
            return StorageFullError("no space left for the gallery database; nothing was written: free disk space and retry")
        log.error("gallery %s failed: %s", self._path, exc)
        return StoreUnavailableError(f"the gallery database failed ({exc}); nothing was changed")

    def reserve_ids(self, tx: _Tx) -> None:
        pass  # AUTOINCREMENT keeps its high-water mark in sqlite_sequence itself

    def close(self) -> None:
        with self._lock:
            self.db.close()
            self._dir_lock.release()

"""The PostgreSQL store (``FEWFACE_DATABASE_URL=postgresql://...``): psycopg 3 with its
connection pool, for any number of replicas on one database.

* Writes run in one transaction each, committed before the gallery answers (crash-safety:
  nothing acknowledged is lost). Every write transaction first takes one transaction-level
  advisory lock, so writers (of every replica) go one at a time, like SQLite's: the change
  log's ``seq`` is then assigned in commit order, and a replica that has applied up to ``seq``
  has seen everything before it. Waiting longer than the busy timeout for that lock (or any
  row lock) is ``StoreBusyError``.
* A server that cannot be reached (down, restarting, refused, pool exhausted for the busy
  timeout) is ``DatabaseUnavailableError`` (HTTP 503 ``database_unavailable``); the pool checks
  each connection before lending it and reconnects by itself once the server is back.
* Embeddings are ``bytea`` (the float32 bytes exactly as SQLite holds them); large reads (index
  rebuild, export) stream in binary through a server-side cursor.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from service.store.base import (
    DatabaseUnavailableError,
    GalleryOpenError,
    StorageError,
    StorageFullError,
    StoreBusyError,
    StoreUnavailableError,
)
from service.store.migrations import TABLES, upgrade

log = logging.getLogger(__name__)

WRITER_LOCK = 0x66657766  # pg_advisory_xact_lock key: one writer at a time ("fewf")
MIGRATION_LOCK = 0x66657767  # replicas starting together migrate one after the other
NOTIFY_CHANNEL = "fewface_changes"
CONNECT_TIMEOUT = 5  # seconds to establish one connection
STREAM_ROWS = 2000
UNREACHABLE_STATES = ("57P01", "57P02", "57P03", "53300")  # admin/crash shutdown, cannot connect now, too many connections


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _Tx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(_pg(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        with self.conn.cursor(name="fewface_stream", binary=True) as cur:
            cur.itersize = STREAM_ROWS
            cur.execute(_pg(sql), params)
            yield from cur

    def log_change(self, collection: str, op: str, person_id: str | None = None, face_id: int | None = None) -> None:
        self.conn.execute(
            "INSERT INTO changes (collection, op, person_id, face_id, at) VALUES (%s, %s, %s, %s, extract(epoch FROM clock_timestamp()))",
            (collection, op, person_id, face_id),
        )
        # Delivered at commit; identical payloads within one transaction are delivered once.
        self.conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, collection))


class PostgresStore:
    dialect = "postgresql"
    text_order = ' COLLATE "C"'  # byte order, as SQLite's, whatever the database's locale
    path: Path | None = None

    def __init__(self, url: str, *, busy_timeout: float = 5.0, max_connections: int = 10) -> None:
        """Connect (waiting up to CONNECT_TIMEOUT seconds) and migrate the schema. Raises
        GalleryOpenError when the server cannot be reached or holds something else."""
        self.url = url
        self.location = redact(url)
        self.busy_timeout = busy_timeout
        lock_ms = max(1, int(busy_timeout * 1000))
        self._kwargs: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "options": f"-c lock_timeout={lock_ms}",
            "application_name": "fewface",
        }
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, max_connections),
            open=False,
            kwargs=self._kwargs,
            check=ConnectionPool.check_connection,
            timeout=max(busy_timeout, 1.0),
            name="fewface",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except PoolTimeout:
            self._pool.close()
            raise GalleryOpenError(
                f"cannot reach the PostgreSQL database {self.location}: start the server, or fix FEWFACE_DATABASE_URL "
                "(postgresql://user:password@host:port/database)"
            ) from None
        try:
            self._migrate()
        except psycopg.Error as exc:
            self._pool.close()
            raise GalleryOpenError(f"cannot use the PostgreSQL database {self.location}: {exc}") from None
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; when the pool has none to lend within its timeout (the server
        was down and the pool is still backing off between reconnection attempts) one direct
        attempt, so a server that is back serves at once (OperationalError when it is not)."""
        with ExitStack() as stack:
            try:
                conn = stack.enter_context(self._pool.connection())
            except PoolTimeout:
                log.info("PostgreSQL %s: no pooled connection; connecting directly", self.location)
                conn = stack.enter_context(psycopg.connect(self.url, **self._kwargs))
            yield conn

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
            if (tables and "meta" not in tables) or not tables <= TABLES:
                raise GalleryOpenError(
                    f"the PostgreSQL database {self.location} holds other tables ({', '.join(sorted(tables - TABLES)) or 'no meta'}): "
                    "give Fewface a database of its own"
                )
            upgrade(
                conn.execute,
                self.dialect,
                tables,
                where=f"the PostgreSQL database {self.location}",
                unversioned=0,
                newer_fix="run that version",
            )

    @contextmanager
    def write(self) -> Iterator[_Tx]:
        """One transaction, committed when the block exits (before the caller answers), rolled
        back on any exception; writers of every replica take turns (advisory lock)."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            yield _Tx(conn)

    @contextmanager
    def read(self, snapshot: bool = False) -> Iterator[_Tx]:
        """A read-only transaction; ``snapshot``: every statement sees the same snapshot."""
        with self._connection() as conn, conn.transaction():
            if snapshot:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield _Tx(conn)

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)

    def integrity_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.IntegrityError,)

    def translate(self, exc: BaseException) -> StorageError:
        """The domain error for a psycopg error at run time."""
        state = getattr(exc, "sqlstate", None)
        if isinstance(exc, PoolTimeout) or (
            isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            and (state is None or state.startswith("08") or state in UNREACHABLE_STATES)
        ):
            log.warning("PostgreSQL %s unreachable: %s", self.location, exc)
            return DatabaseUnavailableError(
                "the gallery database (PostgreSQL) cannot be reached; nothing was changed, retry when it is back"
            )
        if isinstance(
            exc, pg_errors.LockNotAvailable | pg_errors.DeadlockDetected | pg_errors.SerializationFailure | pg_errors.QueryCanceled
        ):
            log.warning("PostgreSQL %s busy: %s", self.location, exc)
            return StoreBusyError("the gallery database is busy (lock wait timed out); nothing was changed, retry shortly")
        if isinstance(exc, pg_errors.DiskFull | pg_errors.OutOfMemory):
            log.error("PostgreSQL %s: out of space (%s); the write was rolled back", self.location, exc)
            return StorageFullError("no space left for the gallery database; nothing was written: free disk space and retry")
        log.error("PostgreSQL %s failed: %s", self.location, exc)
        return StoreUnavailableError(f"the gallery database failed ({type(exc).__name__}: {exc}); nothing was changed")

    def reserve_ids(self, tx: _Tx) -> None:
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('faces', 'id'), "
            "GREATEST((SELECT COALESCE(MAX(id), 0) FROM faces), (SELECT last_value FROM faces_id_seq), 1))"
        )

    def close(self) -> None:
        self._pool.close()

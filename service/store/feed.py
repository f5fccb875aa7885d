"""The change feed: keeps this replica's in-memory search indexes current from PostgreSQL's change log.

Every write to a PostgreSQL gallery appends rows to ``changes`` (monotonic ``seq``) in the same
transaction (service/store/postgres.py) and notifies the channel ``fewface_changes`` at commit. A
replica's ``ChangeFeed`` thread listens on that channel and, woken by a notification or every
``FEWFACE_FEED_POLL_INTERVAL`` seconds without one, reads the changes after the last ``seq`` it
applied. Applying is reconciliation, not replay: for each face and person a change names, the
index is made to match the database's current row (present: indexed with its person; absent:
dropped), so applying twice, out of order or after the writer itself already updated its index
(read-your-writes) changes nothing. A missed notification or a reconnect therefore loses nothing:
the next poll reads from the last ``seq`` applied.

Writers of every replica take turns (service/store/postgres.py: one advisory lock per write
transaction), so ``seq`` is assigned in commit order: once a change is visible, every earlier one
is too, and "applied up to ``seq``" is exact. Each gallery records the ``seq`` its index reflects
(``loaded_seq``: the snapshot it was built from, then what the feed applied), so a collection
loaded while the feed runs misses nothing either.

A replica that cannot reach the database keeps its index and serves identify from it; ``status()``
says how stale it is (seconds since the last poll that reached the end of the log), shown in
``/readyz`` and in every answer's ``X-Fewface-Staleness`` header. The thread reconnects with
exponential backoff (0.1 s doubling to 2 s).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

CHANNEL = "fewface_changes"
BATCH = 2000  # changes read per query
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
RELOAD_OPS = frozenset({"reload", "collection_create"})  # the whole collection is read again
DELETE_OP = "collection_delete"
PERSON_DELETE_OP = "person_delete"  # names only the person: their faces are looked for in the index


class FeedSource(Protocol):
    """The database's current rows for what some changes named (one collection)."""

    def members(self, face_ids: list[int], person_ids: list[str], model_id: str) -> tuple[dict[int, str], dict[str, str]]:
        """(face id -> person id for those of ``face_ids`` that exist and every face of
        ``person_ids``; person id -> name for ``person_ids`` and those faces' people that exist)."""
        ...

    def embeddings(self, face_ids: list[int]) -> dict[int, bytes]: ...


class FeedTarget(Protocol):
    """What the feed needs of a gallery (service/store/gallery.py ``Gallery``)."""

    loaded_seq: int

    def reconcile(self, face_ids: set[int], person_ids: set[str], source: FeedSource, seq: int, deleted: frozenset[str]) -> None: ...

    def reload(self) -> None: ...

    def clear_index(self) -> None: ...


class _Source:
    def __init__(self, conn: Any, collection: str) -> None:
        self.conn = conn
        self.collection = collection

    def members(self, face_ids: list[int], person_ids: list[str], model_id: str) -> tuple[dict[int, str], dict[str, str]]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT id, person_id FROM faces WHERE collection = %s AND model_id = %s AND (id = ANY(%s) OR person_id = ANY(%s))",
                (self.collection, model_id, face_ids, person_ids),
            )
            faces = {int(r[0]): str(r[1]) for r in cur.fetchall()}
            wanted = sorted(set(person_ids) | set(faces.values()))
            cur.execute("SELECT id, name FROM people WHERE collection = %s AND id = ANY(%s)", (self.collection, wanted))
            names = {str(r[0]): str(r[1]) for r in cur.fetchall()}
        return faces, names

    def embeddings(self, face_ids: list[int]) -> dict[int, bytes]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT id, embedding FROM faces WHERE collection = %s AND id = ANY(%s)", (self.collection, face_ids))
            return {int(r[0]): bytes(r[1]) for r in cur.fetchall()}


@dataclass
class _Batch:
    face_ids: set[int] = field(default_factory=set)
    person_ids: set[str] = field(default_factory=set)
    deleted_people: set[str] = field(default_factory=set)
    reload: bool = False
    deleted: bool = False  # the collection was deleted (and not created again after)
    top: int = 0  # newest seq in the batch


class ChangeFeed:
    """Follows the change log of the database at ``url`` for the galleries ``galleries()``
    returns (collection id -> gallery loaded in this replica; a collection loaded later reads
    the database then, and the feed takes it on from its ``loaded_seq``)."""

    def __init__(
        self,
        url: str,
        galleries: Callable[[], Mapping[str, FeedTarget] | None],
        poll_interval: float = 1.0,
        forget: Callable[[str], None] | None = None,
    ) -> None:
        """``forget(collection)`` drops a collection another replica deleted from this one's catalog."""
        self.url = url
        self.galleries = galleries
        self.forget = forget
        self.poll_interval = poll_interval
        self._seq = 0  # newest seq applied to every loaded gallery
        self._last_ok: float | None = time.monotonic()  # monotonic time of the last poll that reached the end of the log
        self._conn: Any = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error = ""

    @classmethod
    def following(cls, url: str, registry: Any, poll_interval: float = 1.0) -> ChangeFeed:
        """A feed for a ``Galleries`` registry (service/store/registry.py) that holds it only
        weakly: once the app owning it is gone, the feed stops and closes its connection."""
        ref = weakref.ref(registry)

        def opened() -> Mapping[str, FeedTarget] | None:
            r = ref()
            return None if r is None else r.opened()

        def forget(cid: str) -> None:
            r = ref()
            if r is not None:
                r.forget(cid)

        return cls(url, opened, poll_interval, forget=forget)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ChangeFeed:
        loaded = self.galleries() or {}
        self._seq = min((g.loaded_seq for g in loaded.values()), default=0)
        self._thread = threading.Thread(target=self._run, name="fewface-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    # -- state -------------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        return self._seq

    def staleness(self) -> float:
        """Seconds since this replica last knew its indexes held every committed change."""
        return 0.0 if self._last_ok is None else max(0.0, time.monotonic() - self._last_ok)

    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def status(self) -> dict[str, Any]:
        return {
            "seq": self._seq,
            "connected": self.connected(),
            "staleness_s": round(self.staleness(), 3),
            **({"error": self._error} if self._error else {}),
        }

    def wait_applied(self, seq: int, timeout: float) -> bool:
        """Block until the change ``seq`` (or a later one) is applied, at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            try:
                if not self.connected():
                    self._connect()
                    log.info("change feed connected (from seq %d)", self._seq)
                while self.poll_once():
                    pass  # a full batch: read on at once
                backoff = BACKOFF_MIN
                self._error = ""
                if self._stop.is_set():
                    break
                for _ in self._conn.notifies(timeout=self.poll_interval, stop_after=1):
                    pass
            except Exception as exc:  # noqa: BLE001 - any failure: drop the connection, back off, reconnect
                if self._stop.is_set():
                    break
                self._error = f"{type(exc).__name__}: {exc}".strip()[:300]
                log.warning("change feed: %s; reconnecting in %.1f s (index %.1f s stale)", self._error, backoff, self.staleness())
                self._close()
                self._stop.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
        self._close()

    def _connect(self) -> None:
        import psycopg

        self._close()
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name="fewface-feed")
        conn.execute(f"LISTEN {CHANNEL}")
        self._conn = conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing the feed's connection failed", exc_info=True)

    def poll_once(self) -> bool:
        """Read and apply the changes after the oldest ``loaded_seq`` of the loaded galleries;
        returns True when a full batch was read (more may follow)."""
        started = time.monotonic()
        current = self.galleries()
        if current is None:  # the registry is gone: nothing left to follow
            self._stop.set()
            return False
        loaded = dict(current)
        low = min((g.loaded_seq for g in loaded.values()), default=self._seq)
        with self._conn.cursor() as cur:
            cur.execute("SELECT seq, collection, op, person_id, face_id FROM changes WHERE seq > %s ORDER BY seq LIMIT %s", (low, BATCH))
            rows = cur.fetchall()
        batches: dict[str, _Batch] = {}
        top = max(low, self._seq)
        for seq, collection, op, person_id, face_id in rows:
            top = max(top, int(seq))
            gallery = loaded.get(str(collection))
            if gallery is None or seq <= gallery.loaded_seq:
                continue  # not loaded here, or already in the snapshot its index was built from
            batch = batches.setdefault(str(collection), _Batch())
            batch.top = int(seq)
            if op in RELOAD_OPS:
                batch.reload, batch.deleted = True, False
            elif op == DELETE_OP:
                batch.deleted = True
            elif op == PERSON_DELETE_OP and person_id is not None:
                batch.deleted_people.add(str(person_id))
            if face_id is not None:
                batch.face_ids.add(int(face_id))
            if person_id is not None:
                batch.person_ids.add(str(person_id))
        for collection, batch in batches.items():
            gallery = loaded[collection]
            if batch.deleted:
                if self.forget is not None:
                    self.forget(collection)
                gallery.clear_index()
            elif batch.reload:
                gallery.reload()
            else:
                source = _Source(self._conn, collection)
                gallery.reconcile(batch.face_ids, batch.person_ids, source, batch.top, frozenset(batch.deleted_people))
        for gallery in loaded.values():
            gallery.loaded_seq = max(gallery.loaded_seq, top)
        full = len(rows) >= BATCH
        with self._cond:
            self._seq = top
            self._cond.notify_all()
        if not full:
            self._last_ok = started
        return full


def staleness_header(response: Any) -> Any:
    """Flask ``after_request``: every answer of a replica says how stale its index may be."""
    from flask import current_app

    feed = current_app.extensions.get("fewface_feed")
    if feed is not None:
        response.headers["X-Fewface-Staleness"] = f"{feed.staleness():.3f}"
    return response

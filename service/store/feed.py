"""The change feed: keeps this replica's in-memory search indexes current from PostgreSQL's change log.

Every write to a PostgreSQL gallery appends rows to ``changes`` (monotonic ``seq``) in the same
transaction (service/store/postgres.py) and notifies the channel ``fewface_changes`` at commit. A
replica's ``ChangeFeed`` thread listens on that channel and, woken by a notification or every
``FEWFACE_FEED_POLL_INTERVAL`` seconds without one, reads the changes after the last ``seq`` it
applied, and hands them to the registry (``Galleries.apply`` -> ``Gallery.apply_changes``, in
service/store/): each face and person a change names is re-read as the database holds it now, so
applying a change twice, or after the writer itself already updated its index (read-your-writes),
changes nothing. A missed notification or a reconnect therefore loses nothing: the next poll reads
from the last ``seq`` applied.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.store.registry import Galleries

log = logging.getLogger(__name__)

CHANNEL = "fewface_changes"
BATCH = 2000  # changes read per query
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
WARN_EVERY = 60.0  # seconds between two warnings about the same failure


class ChangeFeed:
    """One thread per replica following the change log of the database at ``url`` for the
    collections its registry has open (one opened later is built from the database then, and the
    feed takes it on from its ``loaded_seq``)."""

    def __init__(self, url: str, registry: Galleries, poll_interval: float = 1.0) -> None:
        """Follow the change log for ``registry``'s open collections. The registry is held only
        weakly: once the app owning it is gone, the feed stops and closes its connection."""
        self.url = url
        self._registry = weakref.ref(registry)
        self.poll_interval = poll_interval
        self._seq = 0  # newest seq applied to every open collection
        self._last_ok: float | None = time.monotonic()  # monotonic time of the last poll that reached the end of the log
        self._conn: Any = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ChangeFeed:
        registry = self._registry()
        opened = registry.opened() if registry is not None else {}
        self._seq = min((g.loaded_seq for g in opened.values()), default=0)
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
        warned: tuple[str, float] | None = None  # the failure last logged as a warning, and when
        while not self._stop.is_set():
            try:
                if not self.connected():
                    self._connect()
                    log.info("change feed connected (from seq %d)", self._seq)
                    warned = None
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
                # One warning per outage (again when the failure changes, or each WARN_EVERY s while
                # it lasts); the retries in between are debug lines, not a line every 2 s.
                now = time.monotonic()
                loud = warned is None or warned[0] != self._error or now - warned[1] >= WARN_EVERY
                if loud:
                    warned = (self._error, now)
                log.log(
                    logging.WARNING if loud else logging.DEBUG,
                    "change feed: %s; reconnecting in %.1f s (index %.1f s stale)",
                    self._error,
                    backoff,
                    self.staleness(),
                )
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
        """Read the changes after the oldest ``loaded_seq`` of the open collections and apply them
        (``Galleries.apply``: idempotent, re-reads what each change names); returns True when a
        full batch was read (more may follow)."""
        started = time.monotonic()
        registry = self._registry()
        if registry is None:  # the app is gone: nothing left to follow
            self._stop.set()
            return False
        opened = registry.opened()
        low = min((g.loaded_seq for g in opened.values()), default=self._seq)
        changes = registry.changes_since(low, BATCH)
        registry.apply(changes)
        top = max([low, *(ch.seq for ch in changes)])
        for gallery in opened.values():  # each has applied every change of its collection up to top
            gallery.loaded_seq = max(gallery.loaded_seq, top)
        full = len(changes) >= BATCH
        with self._cond:
            self._seq = max(self._seq, top)
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

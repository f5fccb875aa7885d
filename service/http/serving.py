"""waitress with a graceful stop: on SIGTERM / SIGINT stop accepting connections, let the requests
already received finish and flush (at most ``shutdown_timeout`` seconds), then return.

waitress' own ``serve()`` stops at once and drops in-flight requests; here its event loop
(wasyncore) is driven one poll at a time so the loop can keep sending responses while it drains.

Also: waitress' own error answers (malformed HTTP, body over its limit) in the service's JSON
error shape, and a periodic ``malloc_trim`` so the resident size stays flat under load.

Connection limits (waitress only times out connections that are idle, and a byte every 30 s
keeps one alive; at its connection limit it stops accepting anyone): the loop closes

- a connection whose request headers are not complete ``header_timeout`` seconds after their
  first byte, or whose body is not complete ``body_timeout`` seconds after the headers (408
  ``request_timeout``, then close), however slowly the bytes trickle in;
- a connection idle (no request in flight, nothing to send) for ``idle_timeout`` seconds;
- when the open connections reach 90 % of ``max_connections``, the idle ones and the ones
  still sending a request, oldest first, down to 80 %: a new client always finds a slot (and
  is the last to be evicted), and a connection with a request in flight never is. Up to
  ACCEPTS_PER_TURN connections are accepted per turn of the loop (waitress accepts one), so
  a real client is not left queued behind a flood in the listen backlog.

The event loop uses poll() (select() fails above 1,024 descriptors) and the process's open-file
limit is raised to fit ``max_connections``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import resource
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import create_server, wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from service.http.errors import HTTP_CODES

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # longest wait of one event-loop turn (the trigger wakes it sooner)
SWEEP_SECONDS = 0.5  # how often connection deadlines are checked
EVICT_AT = 0.9  # share of max_connections at which idle and slow connections are closed ...
EVICT_TO = 0.8  # ... down to this share
ACCEPTS_PER_TURN = 64  # connections accepted per turn of the loop
EVICT_LOG_SECONDS = 10.0
FILES_RESERVED = 128  # descriptors kept for the gallery, the models, listeners and logs
# Errors waitress answers itself, before the app sees the request (malformed HTTP, body over
# its limit, headers too large, unsupported transfer coding).
SERVER_ERROR_CODES = {**HTTP_CODES, 431: "headers_too_large", 501: "not_implemented"}


class JsonErrorTask(ErrorTask):
    """waitress' own error answers in the service's one error shape instead of plain text."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps(
            {
                "ok": False,
                "status": error.code,
                "code": SERVER_ERROR_CODES.get(error.code, "http_error"),
                "error": f"{error.reason}: {error.body}",
            }
        ).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    """Also records when the request being received began, and when its headers ended."""

    error_task_class = JsonErrorTask
    request_started = 0.0  # time.monotonic() of the first byte of the request being received
    body_started: float | None = None  # ... and of the end of its headers
    _tracked: object = None  # the waitress parser those two times belong to

    def received(self, data: bytes) -> bool:
        result = super().received(data)
        parser = self.request
        if parser is None:
            self._tracked = None
        else:
            now = time.monotonic()
            if parser is not self._tracked:
                self._tracked, self.request_started, self.body_started = parser, now, None
            if parser.headers_finished and self.body_started is None:
                self.body_started = now
        return result

    @property
    def receiving(self) -> bool:
        """A request is partly received and none is in flight."""
        return self.request is not None and not self.requests

    @property
    def idle(self) -> bool:
        return self.request is None and not self.requests and not self.total_outbufs_len

    def time_out(self, what: str, seconds: float) -> None:
        """Answer 408 ``request_timeout`` and close once it is sent."""
        body = json.dumps(
            {
                "ok": False,
                "status": 408,
                "code": "request_timeout",
                "error": f"the request's {what} took over {seconds:g} s to arrive",
            }
        ).encode()
        head = (
            f"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with self.outbuf_lock:
            self.outbufs[-1].append(head + body)
            self.current_outbuf_count += len(head) + len(body)
            self.total_outbufs_len += len(head) + len(body)
        self.request = self._tracked = None
        self.close_when_flushed = True


class DrainingServer:
    """A waitress server whose ``serve()`` returns after a graceful drain.

    ``stop()`` may be called from a signal handler or any thread."""

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        shutdown_timeout: float,
        memory_trim_interval: float = 0.0,
        max_connections: int = 1000,
        idle_timeout: float = 30.0,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        **waitress_options: Any,
    ) -> None:
        self.shutdown_timeout = float(shutdown_timeout)
        self.memory_trim_interval = float(memory_trim_interval)
        self.max_connections = _fit_open_files(int(max_connections))
        self.idle_timeout = float(idle_timeout)
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        self.evicted = 0  # connections closed to make room (for tests and logs)
        self._next_sweep = 0.0
        self._next_evict_log = 0.0
        self._map: dict[int, Any] = {}
        options = {
            "connection_limit": self.max_connections,
            "channel_timeout": self.idle_timeout,
            "asyncore_use_poll": True,
            "channel_request_lookahead": 1,  # keeps reading while a request runs: a hang-up is noticed
            **waitress_options,
        }
        self._server = create_server(app, map=self._map, **options)
        for listener in self._listeners():
            listener.channel_class = JsonErrorChannel
            listener.handle_accept = self._accept_many(listener.handle_accept)  # type: ignore[method-assign]
        self._stop = threading.Event()
        self.drained = True  # False when the timeout cut in-flight requests off

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(s.effective_host, s.effective_port) for s in self._listeners()]

    def stop(self, *_: object) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._wake()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT start the drain (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)

    def serve(self) -> bool:
        """Serve until ``stop()``; then drain. True when every in-flight request finished."""
        adj = self._server.adj
        if self.memory_trim_interval > 0:
            threading.Thread(target=self._trim_memory, name="malloc-trim", daemon=True).start()
        while not self._stop.is_set():
            wasyncore.loop(timeout=POLL_SECONDS, map=self._map, use_poll=adj.asyncore_use_poll, count=1)
            self._enforce_limits()
        started = time.monotonic()
        deadline = started + self.shutdown_timeout
        for listener in self._listeners():
            wasyncore.dispatcher.close(listener)  # no new connections; keeps the trigger that wakes the loop
        busy = self._close_idle()
        log.info("stopping: %d connection(s) with requests in flight, waiting up to %.1f s", busy, self.shutdown_timeout)
        while busy and time.monotonic() < deadline:
            timeout = min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))
            wasyncore.loop(timeout=timeout, map=self._map, use_poll=adj.asyncore_use_poll, count=1)
            self._enforce_limits()  # a slow sender cannot hold the drain past its own deadline either
            busy = self._close_idle()
        self.drained = busy == 0
        if busy:
            log.warning("shutdown timeout: closing %d connection(s) with requests still in flight", busy)
        else:
            log.info("drained in %.2f s", time.monotonic() - started)
        dispatcher = self._server.task_dispatcher
        wasyncore.close_all(self._map)
        dispatcher.shutdown(cancel_pending=True, timeout=2.0 if self.drained else 0.1)  # idle workers exit at once
        return self.drained

    # -- internals -----------------------------------------------------------------------
    def _listeners(self) -> list[BaseWSGIServer]:
        return [d for d in list(self._map.values()) if isinstance(d, BaseWSGIServer)]

    def _channels(self) -> list[HTTPChannel]:
        return [d for d in list(self._map.values()) if isinstance(d, HTTPChannel)]

    def _enforce_limits(self) -> None:
        """Deadlines for slow senders and idle connections (every SWEEP_SECONDS), eviction near
        the connection limit (every turn of the loop)."""
        now = time.monotonic()
        crowded = len(self._map) >= EVICT_AT * self.max_connections
        if now < self._next_sweep and not crowded:
            return
        self._next_sweep = now + SWEEP_SECONDS
        wall = time.time()  # waitress' last_activity is wall-clock time
        channels = [c for c in self._channels() if isinstance(c, JsonErrorChannel)]
        for channel in channels:
            if channel.requests:
                continue  # in flight: the app's business
            if channel.will_close or channel.close_when_flushed:
                if wall - channel.last_activity > self.idle_timeout:
                    channel.handle_close()  # the client does not read its answer
            elif channel.request is not None:
                if channel.body_started is None and now - channel.request_started > self.header_timeout:
                    log.info("closing %s: request headers not complete after %.0f s", _peer(channel), self.header_timeout)
                    channel.time_out("headers", self.header_timeout)
                elif channel.body_started is not None and now - channel.body_started > self.body_timeout:
                    log.info("closing %s: request body not complete after %.0f s", _peer(channel), self.body_timeout)
                    channel.time_out("body", self.body_timeout)
            elif channel.idle and wall - channel.last_activity > self.idle_timeout:
                channel.handle_close()
        if crowded:
            self._evict(channels)

    def _accept_many(self, accept_one: Callable[[], None]) -> Callable[[], None]:
        """waitress accepts one connection per turn of the loop; under a flood of connections
        that leaves a real client queued behind hundreds of attackers in the listen backlog.
        Accept up to ACCEPTS_PER_TURN (within the limit) per turn instead."""

        def accept() -> None:
            for _ in range(ACCEPTS_PER_TURN):
                before = len(self._map)
                if before >= self.max_connections:
                    return
                accept_one()
                if len(self._map) == before:  # nothing waiting (or a failed accept)
                    return

        return accept

    def _evict(self, channels: list[JsonErrorChannel]) -> None:
        """Close idle connections and those still sending a request, oldest first, until the
        open connections are down to EVICT_TO of the limit."""
        excess = len(self._map) - int(EVICT_TO * self.max_connections)
        candidates = [c for c in channels if c.connected and (c.idle or c.receiving)]
        candidates.sort(key=lambda c: c.creation_time)  # a client that just connected is the last to go
        victims = candidates[: max(0, excess)]
        for channel in victims:
            channel.handle_close()
        if victims:
            self.evicted += len(victims)
            now = time.monotonic()
            if now >= self._next_evict_log:  # at most one line per EVICT_LOG_SECONDS under a flood
                self._next_evict_log = now + EVICT_LOG_SECONDS
                log.warning("connection limit %d reached: %d idle or slow connections closed so far", self.max_connections, self.evicted)

    def _close_idle(self) -> int:
        """Close connections with nothing in flight; return how many are still busy."""
        busy = 0
        for channel in self._channels():
            if channel.requests or channel.request is not None or channel.total_outbufs_len:
                busy += 1
            else:
                channel.handle_close()
        return busy

    def _trim_memory(self) -> None:
        """glibc keeps memory freed by the worker threads in per-thread arenas, fragmented by
        image-sized buffers, so the resident size creeps up under load although nothing leaks;
        ``malloc_trim(0)`` hands the free pages back. No-op without glibc."""
        trim = _malloc_trim()
        if trim is None:
            return
        while not self._stop.wait(self.memory_trim_interval):
            trim(0)

    def _wake(self) -> None:
        trigger = getattr(self._server, "trigger", None)
        if trigger is None:  # several listeners: waitress returns a MultiSocketServer
            trigger = next((s.trigger for s in self._listeners()), None)
        if trigger is not None:
            try:
                trigger.pull_trigger()
            except OSError:  # already closed: the loop is ending anyway
                pass


def _peer(channel: HTTPChannel) -> str:
    addr = getattr(channel, "addr", None)
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else "a client"


def _fit_open_files(max_connections: int) -> int:
    """Raise the soft open-file limit to fit ``max_connections`` (plus the gallery, models and
    listeners); when the hard limit is lower, lower the connection limit instead."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - not POSIX
        return max_connections
    wanted = max_connections + FILES_RESERVED
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitted = max(1, soft - FILES_RESERVED)
        log.warning("open-file limit %d: serving at most %d connections instead of %d", soft, fitted, max_connections)
        return fitted
    return max_connections


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None

"""waitress with a graceful stop: on SIGTERM / SIGINT stop accepting connections, let the requests
already received finish and flush (at most ``shutdown_timeout`` seconds), then return.

waitress' own ``serve()`` stops at once and drops in-flight requests; here its event loop
(wasyncore) is driven one poll at a time so the loop can keep sending responses while it drains.

Also: waitress' own error answers (malformed HTTP, body over its limit) in the service's JSON
error shape, and a periodic ``malloc_trim`` so the resident size stays flat under load.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import create_server, wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from service.errors import HTTP_CODES

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # longest wait of one event-loop turn (the trigger wakes it sooner)
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
    error_task_class = JsonErrorTask


class DrainingServer:
    """A waitress server whose ``serve()`` returns after a graceful drain.

    ``stop()`` may be called from a signal handler or any thread."""

    def __init__(
        self, app: Callable[..., Any], *, shutdown_timeout: float, memory_trim_interval: float = 0.0, **waitress_options: Any
    ) -> None:
        self.shutdown_timeout = float(shutdown_timeout)
        self.memory_trim_interval = float(memory_trim_interval)
        self._map: dict[int, Any] = {}
        self._server = create_server(app, map=self._map, **waitress_options)
        for listener in self._listeners():
            listener.channel_class = JsonErrorChannel
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
        started = time.monotonic()
        deadline = started + self.shutdown_timeout
        for listener in self._listeners():
            wasyncore.dispatcher.close(listener)  # no new connections; keeps the trigger that wakes the loop
        busy = self._close_idle()
        log.info("stopping: %d connection(s) with requests in flight, waiting up to %.1f s", busy, self.shutdown_timeout)
        while busy and time.monotonic() < deadline:
            timeout = min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))
            wasyncore.loop(timeout=timeout, map=self._map, use_poll=adj.asyncore_use_poll, count=1)
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


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None

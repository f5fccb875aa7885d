"""Graceful stop of ``python -m service``: on SIGTERM the request in flight still gets its answer,
no new connection is accepted, and the process exits 0 soon after; the wait is bounded by
FEWFACE_SHUTDOWN_TIMEOUT."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import dense_image, photo
from tests.serverproc import ServerProcess

SLOW = "couple.jpg"  # 2280 x 1588, two faces: a few hundred ms to identify on 2 quiet CPU cores


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"data{len(started)}", tmp_path / f"server{len(started)}.log", **env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


def send_identify(server: ServerProcess, settle: float = 0.0, body: bytes | None = None) -> http.client.HTTPConnection:
    """A keep-alive connection (accepted: it has answered once) with an identify request sent on it
    (``body``: the image, SLOW by default)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read()
    conn.request("POST", "/v1/identify", body=body or photo(SLOW), headers={"Content-Type": "image/jpeg"})
    # Wait until the app is handling it (GET /metrics counts itself too), not a fixed time: on a
    # busy machine the server may not have read the request yet when a fixed pause ends.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scrape = requests.get(server.url("/metrics"), timeout=10).text
        if float(re.search(r"^fewface_http_requests_in_flight (\S+)$", scrape, re.M).group(1)) >= 2:
            break
        time.sleep(0.02)
    time.sleep(settle)
    return conn


def refused_soon(port: int, within: float = 3.0) -> bool:
    """New connections are refused within ``within`` seconds (the signal takes a moment to land).

    A reset counts as refused: a probe whose handshake was still in the listen queue when the
    server closed the listening socket is reset by the kernel, never accepted."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            return True
        time.sleep(0.02)
    return False


def test_sigterm_lets_the_request_in_flight_finish(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # an idle keep-alive client must not hold the stop up
    idle.request("GET", "/v1/people")
    assert idle.getresponse().status == 200
    conn = send_identify(server)
    server.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert refused_soon(server.port), "the listening socket stays open after SIGTERM"
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 200 and body["face_count"] == 2, body
    assert server.wait(timeout=30) == 0
    assert time.monotonic() - stopped_at < 15
    log = server.log_tail()
    assert "1 connection(s) with requests in flight" in log and "drained in" in log and "stopped" in log, log


def test_shutdown_timeout_bounds_the_wait(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(FEWFACE_SHUTDOWN_TIMEOUT="0.2")
    # Photos tiled with a hundred faces or more: seconds of work each, far beyond the 0.2 s (a real
    # photo of a few faces now identifies in a few hundred ms, and the first could finish in time).
    crowd = dense_image()
    conns = [send_identify(server, body=crowd) for _ in range(2)]
    server.signal(signal.SIGINT)  # Ctrl-C stops the same way
    stopped_at = time.monotonic()
    assert server.wait(timeout=30) == 0
    assert time.monotonic() - stopped_at < 10
    for conn in conns:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.getresponse()
    assert "shutdown timeout" in server.log_tail()

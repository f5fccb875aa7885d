"""Connections: slow senders and idle connections are closed on deadlines, and near the
connection limit idle / slow ones are evicted so that a new client still gets in (issue 11,
item 1). Real waitress on 127.0.0.1 (tests/hostile.py ``served``); bounded in time."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable

import pytest
import requests
from flask import Flask

from tests import bombs
from tests.hostile import served


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _connect(base: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", _port(base)), timeout=10)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        out += chunk
    return out


def _json_of(response: bytes) -> dict:
    _head, _, body = response.partition(b"\r\n\r\n")
    return json.loads(body)


def test_headers_dripped_a_byte_at_a_time_get_408_and_close(make_app: Callable[..., Flask]) -> None:
    with served(make_app(), header_timeout=1.0, body_timeout=30.0, idle_timeout=30.0) as base:
        sock = _connect(base)
        started = time.monotonic()
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        closed_after = None
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(0.1)
            if time.monotonic() - started > 4:
                break
        response = _read_all(sock, 5)
        elapsed = time.monotonic() - started
        sock.close()
        assert response.startswith(b"HTTP/1.1 408"), response[:200]
        body = _json_of(response)
        assert body["code"] == "request_timeout" and body["status"] == 408 and body["ok"] is False
        assert elapsed < 5, (elapsed, closed_after)
        # the server still answers others
        assert requests.get(base + "/healthz", timeout=5).status_code == 200


def test_body_never_sent_gets_408(make_app: Callable[..., Flask]) -> None:
    with served(make_app(), header_timeout=5.0, body_timeout=1.0) as base:
        sock = _connect(base)
        sock.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        response = _read_all(sock, 6)
        sock.close()
        assert response.startswith(b"HTTP/1.1 408"), response[:200]
        assert _json_of(response)["code"] == "request_timeout"
        assert time.monotonic() - started < 5


def test_idle_connection_is_closed(make_app: Callable[..., Flask]) -> None:
    with served(make_app(), idle_timeout=1.0) as base:
        sock = _connect(base)
        started = time.monotonic()
        assert _read_all(sock, 6) == b""  # closed without a word
        assert time.monotonic() - started < 5
        sock.close()
        # a keep-alive connection that answered a request is closed when idle too
        sock = _connect(base)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response = _read_all(sock, 6)
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        sock.close()


def test_slow_and_idle_connections_beyond_the_limit_do_not_lock_out_a_new_client(make_app: Callable[..., Flask]) -> None:
    """More idle and slow-sending connections than the limit: the server keeps accepting,
    evicts the oldest of them, and a normal request is answered within 2 s throughout."""
    limit = 60
    with served(make_app(), max_connections=limit, header_timeout=60.0, idle_timeout=60.0) as base:
        attackers: list[socket.socket] = []
        worst = 0.0
        try:
            for i in range(3 * limit):
                sock = _connect(base)
                if i % 2:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never finished
                attackers.append(sock)
                if i % 20 == 19:
                    started = time.monotonic()
                    assert requests.get(base + "/healthz", timeout=5).status_code == 200
                    worst = max(worst, time.monotonic() - started)
            started = time.monotonic()
            r = requests.get(base + "/v1/people", timeout=5)
            worst = max(worst, time.monotonic() - started)
            assert r.status_code == 200
            assert worst < 2.0, worst
            # the oldest attackers were closed by the server
            attackers[0].settimeout(5)
            assert attackers[0].recv(1) == b""
        finally:
            for sock in attackers:
                sock.close()


def test_a_client_hanging_up_abandons_its_decode(make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture) -> None:
    """The decoder checks waitress' client_disconnected between chunks: a client that sends a
    40 Mpx image and hangs up does not keep a worker decoding it."""
    body = bombs.png_wide(*bombs.WIDE_SIZE, 8, 6)
    caplog.set_level(logging.INFO, logger="service.imaging")
    with served(make_app()) as base:
        for _ in range(3):  # the hang-up must land while the decode runs: a few tries
            sock = _connect(base)
            sock.sendall(
                b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.05)
            sock.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "image decoding abandoned" not in caplog.text:
                time.sleep(0.1)
            if "image decoding abandoned" in caplog.text:
                break
        assert "image decoding abandoned" in caplog.text
        assert requests.get(base + "/healthz", timeout=5).status_code == 200

"""URL input: fetched only from public addresses by default, with size, time and redirect limits.
Only loopback servers started here are contacted (with FEWFACE_ALLOW_PRIVATE_URLS on)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from service.errors import ApiError
from service.http.urlfetch import UrlFetcher, address_allowed
from tests.conftest import photo
from tests.loopback import Route, loopback_server


def api_error(exc: pytest.ExceptionInfo[ApiError], status: int, code: str) -> None:
    assert (exc.value.status, exc.value.code) == (status, code), exc.value.message


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("192.0.2.1", False),  # documentation
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_address_policy(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x", "http://", "http:///nohost", "javascript:x", "http://a b/"],
)
def test_only_http_and_https_urls(url: str) -> None:
    with pytest.raises(ApiError) as exc:
        UrlFetcher(1024, 2.0).fetch(url)
    api_error(exc, 400, "url_not_allowed")


def test_loopback_refused_by_default_without_contacting_it() -> None:
    with loopback_server({"/a.jpg": Route(body=b"x")}) as srv:
        for url in (
            srv.url("/a.jpg"),
            srv.url("/a.jpg").replace("127.0.0.1", "localhost"),
            srv.url("/a.jpg").replace("127.0.0.1", "[::1]"),
        ):
            with pytest.raises(ApiError) as exc:
                UrlFetcher(1024, 2.0).fetch(url)
            api_error(exc, 400, "url_not_allowed")
        assert srv.requests == []


def test_fetch_limits_with_private_allowed() -> None:
    big = b"y" * 5000
    routes = {
        "/ok": Route(body=b"hello"),
        "/hop1": Route(302, headers={"Location": "/hop2"}),
        "/hop2": Route(307, headers={"Location": "/ok"}),
        "/loop": Route(302, headers={"Location": "/loop"}),
        "/to-file": Route(302, headers={"Location": "file:///etc/passwd"}),
        "/missing": Route(404, b"nope"),
        "/big": Route(body=big),
        "/big-chunked": Route(body=big, chunked=True),
        "/slow": Route(body=b"late", delay=1.5),
    }
    fetcher = UrlFetcher(max_bytes=4096, timeout=1.0, allow_private=True)
    with loopback_server(routes) as srv:
        assert fetcher.fetch(srv.url("/ok")) == b"hello"
        assert fetcher.fetch(srv.url("/hop1")) == b"hello"  # relative redirects are followed
        expectations = {
            "/loop": (422, "url_fetch_failed"),  # more than MAX_REDIRECTS
            "/to-file": (400, "url_not_allowed"),  # every hop is checked again
            "/missing": (422, "url_fetch_failed"),
            "/big": (422, "url_fetch_failed"),  # Content-Length over the limit
            "/big-chunked": (422, "url_fetch_failed"),  # counted while reading
            "/slow": (422, "url_fetch_failed"),  # the deadline
        }
        for path, (status, code) in expectations.items():
            with pytest.raises(ApiError) as exc:
                fetcher.fetch(srv.url(path))
            api_error(exc, status, code)
        assert "/big-chunked" in srv.requests


def test_slow_dns_lookup_is_cut_off_by_the_deadline() -> None:
    """A resolver that would answer only after 30 s: the fetch gives up at its 0.5 s deadline
    and never contacts the address the late answer names."""
    release = threading.Event()
    with loopback_server({"/ok": Route(body=b"hello")}) as srv:

        def slow_resolver(host: str, port: int, **kwargs: object) -> list[object]:
            release.wait(30)
            return socket.getaddrinfo("127.0.0.1", port, **kwargs)

        fetcher = UrlFetcher(1024, 0.5, allow_private=True, resolver=slow_resolver)
        try:
            with pytest.raises(ApiError) as exc:
                fetcher.fetch(srv.url("/ok").replace("127.0.0.1", "slow-dns.test"))
            api_error(exc, 422, "url_fetch_failed")
            assert "resolving host 'slow-dns.test' took too long" in exc.value.message
        finally:
            release.set()
        assert srv.requests == []


def test_host_resolved_once_and_every_answer_checked() -> None:
    """A name with a public and a loopback answer is refused outright. A name that answers a
    public address first and loopback afterwards (DNS rebinding) is looked up once, and the
    connection goes to the public address that was checked, never to loopback."""
    calls: list[str] = []

    def resolver(host: str, port: int, **kwargs: object) -> list[object]:
        calls.append(host)
        if host == "mixed.test":
            ips = ["93.184.216.34", "127.0.0.1"]
        else:
            ips = ["93.184.216.34"] if calls.count(host) == 1 else ["127.0.0.1"]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

    with loopback_server({"/a.jpg": Route(body=b"x")}) as srv:
        fetcher = UrlFetcher(1024, 1.0, resolver=resolver)
        with pytest.raises(ApiError) as exc:
            fetcher.fetch(srv.url("/a.jpg").replace("127.0.0.1", "mixed.test"))
        api_error(exc, 400, "url_not_allowed")
        with pytest.raises(ApiError) as exc:  # the public address cannot be reached from here
            fetcher.fetch(srv.url("/a.jpg").replace("127.0.0.1", "rebind.test"))
        api_error(exc, 422, "url_fetch_failed")
        assert calls == ["mixed.test", "rebind.test"]
        assert srv.requests == []


def test_teach_identify_verify_by_url(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    routes = {
        f"/{name}": Route(body=photo(name), headers={"Content-Type": "image/jpeg"}) for name in ("img46.jpg", "img27.jpg", "img5.jpg")
    }
    with loopback_server(routes) as srv:
        # default: refused, nothing fetched, nothing stored
        strict = make_app().test_client()
        r = strict.post("/v1/people/p0/faces", json={"url": srv.url("/img46.jpg"), "name": "Person Zero"})
        assert r.status_code == 400 and r.json["code"] == "url_not_allowed"
        assert strict.get("/v1/people").json["total"] == 0 and srv.requests == []

        client = make_app(data_dir=tmp_path / "open", allow_private_urls=True).test_client()
        r = client.post("/v1/people/p0/faces", json={"url": srv.url("/img46.jpg"), "name": "Person Zero"})
        assert r.status_code == 201, r.json
        r = client.post("/v1/identify", json={"url": srv.url("/img27.jpg")})
        face = r.json["faces"][0]
        assert face["matched"] and face["match"]["person_id"] == "p0"
        r = client.post("/v1/verify", json={"image_a_url": srv.url("/img27.jpg"), "image_b_url": srv.url("/img5.jpg")})
        assert r.status_code == 200 and r.json["same_person"] is False
        r = client.post("/v1/identify", json={"url": srv.url("/nothing-here.jpg")})
        assert r.status_code == 422 and r.json["code"] == "url_fetch_failed"


def _dripping_server(response: bytes, every: float) -> tuple[str, threading.Event]:
    """A loopback server that answers every connection with ``response`` one byte per ``every`` s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in response:
                if stop.wait(every):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        with listener:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/x.jpg", stop


@pytest.mark.parametrize("part", ["status line and headers", "body"])
def test_deadline_covers_every_read_of_a_dripping_server(part: str) -> None:
    """Issue 11 item 4: a server sending its status line, headers or body one byte at a time
    cannot hold a fetch past FEWFACE_URL_TIMEOUT (each read used to wait afresh)."""
    headers = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Pad: " + b"p" * 200 + b"\r\nContent-Length: 400\r\n\r\n"
    body = b"b" * 400
    fetcher = UrlFetcher(max_bytes=1 << 20, timeout=1.0, allow_private=True)
    if part == "body":
        listener = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()

        def serve() -> None:
            conn, _ = listener.accept()
            with conn, listener:
                conn.recv(65536)
                conn.sendall(headers)
                for byte in body:
                    if stop.wait(0.05):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        return

        threading.Thread(target=serve, daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.jpg"
    else:
        url, stop = _dripping_server(headers + body, 0.05)
    started = time.monotonic()
    try:
        with pytest.raises(ApiError) as exc:
            fetcher.fetch(url)
    finally:
        stop.set()
    elapsed = time.monotonic() - started
    api_error(exc, 422, "url_fetch_failed")
    assert "too long" in exc.value.message
    assert elapsed < 2.5, elapsed  # 1 s deadline; dripping everything takes over 20 s


def test_one_deadline_for_all_urls_of_a_request(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    """Three URLs answering after 0.6 s each, FEWFACE_URL_TIMEOUT=1: the request's one deadline
    runs out at the second (each used to get its own, so a request with 10 URLs held a worker 10x)."""
    from tests.conftest import no_face_image

    routes = {f"/{i}.png": Route(body=no_face_image(), headers={"Content-Type": "image/png"}, delay=0.6) for i in range(3)}
    with loopback_server(routes) as srv:
        client = make_app(data_dir=tmp_path / "d", allow_private_urls=True, url_timeout=1.0).test_client()
        started = time.monotonic()
        r = client.post("/v1/people/p/faces", json={"url": [srv.url(f"/{i}.png") for i in range(3)], "name": "P"})
        assert r.status_code == 422 and r.json["code"] == "url_fetch_failed", r.json
        assert time.monotonic() - started < 1.6
        assert client.get("/v1/people").json["total"] == 0


def test_fetches_in_flight_are_bounded() -> None:
    """With every fetch slot held by a slow server, another fetch is refused at once (503
    url_fetch_busy) instead of taking one more worker thread."""
    routes = {"/slow": Route(body=b"x", delay=1.5), "/fast": Route(body=b"y")}
    with loopback_server(routes) as srv:
        fetcher = UrlFetcher(max_bytes=1024, timeout=5.0, allow_private=True, max_concurrent=2)
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(fetcher.fetch(srv.url("/slow")))) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(ApiError) as exc:
            fetcher.fetch(srv.url("/fast"))
        api_error(exc, 503, "url_fetch_busy")
        assert time.monotonic() - started < 0.5
        for t in threads:
            t.join(timeout=10)
        assert results == [b"x", b"x"]
        assert fetcher.fetch(srv.url("/fast")) == b"y"  # slots are given back

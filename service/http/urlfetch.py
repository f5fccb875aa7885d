"""Fetching an image (or a state file) from a client-given URL without becoming an SSRF proxy.

- http and https only; at most ``MAX_REDIRECTS`` redirects, each target checked like the first.
- The host is resolved once and every resolved address must be public (not private, loopback,
  link-local, multicast, reserved, unspecified, shared or documentation space, IPv4-mapped or
  not), unless ``allow_private``. The connection then goes to an address that was checked, with
  the original host name kept for the Host header and TLS (SNI and certificate checks), so a
  second DNS answer (DNS rebinding) cannot redirect it.
- One deadline covers the whole fetch, redirects and DNS lookups included: every connect, TLS
  handshake, send and read (status line, each header line, each body chunk) gets the time left
  as its timeout and fails once none is left, so a server dripping its headers a byte at a
  time cannot hold a fetch past the deadline. The body is read up to ``max_bytes``. A lookup
  runs on a daemon thread (at most ``DNS_LOOKUPS`` at once) so a slow resolver cannot hold a
  request past the deadline; a late answer is dropped.

- At most ``max_concurrent`` fetches run at once (half the worker threads): more are refused at
  once with 503 ``url_fetch_busy`` rather than letting slow servers hold every worker.

Refusals by policy are 400 ``url_not_allowed``; failures to get the bytes are 422
``url_fetch_failed``.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import math
import socket
import ssl
import string
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from service.errors import ApiError

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
MAX_URL_LENGTH = 2048
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "fewface-urlfetch/1"
DNS_LOOKUPS = 8  # lookups in flight at once, across requests

_dns_slots = threading.BoundedSemaphore(DNS_LOOKUPS)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_allowed(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses only."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not address_allowed(embedded):
            return False
    bad = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    return ip.is_global and not bad


@dataclass(frozen=True)
class UrlFetcher:
    max_bytes: int
    timeout: float
    allow_private: bool = False
    resolver: Callable[..., list[Any]] = field(default=socket.getaddrinfo, repr=False)  # getaddrinfo's signature

    max_concurrent: int = 4  # fetches in flight at once across requests (each holds a worker thread)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_slots", threading.BoundedSemaphore(max(1, self.max_concurrent)))

    def deadline(self) -> float:
        """A deadline ``timeout`` seconds from now, to share between the URLs of one request."""
        return time.monotonic() + self.timeout

    def fetch(self, url: str, deadline: float | None = None) -> bytes:
        """The body of ``url`` (after redirects); ApiError when refused or failed. ``deadline``
        (time.monotonic()) defaults to ``timeout`` seconds from now."""
        if not isinstance(url, str) or not url.strip():
            raise ApiError(400, "url_not_allowed", "url must be a non-empty string")
        if not self._slots.acquire(blocking=False):
            raise ApiError(503, "url_fetch_busy", f"{self.max_concurrent} URLs are being fetched already; try again shortly")
        try:
            return self._fetch(url, self.deadline() if deadline is None else deadline)
        finally:
            self._slots.release()

    def _fetch(self, url: str, deadline: float) -> bytes:
        current = url.strip()
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = self._get_once(current, deadline)
            if status in REDIRECT_STATUSES:
                if not location:
                    raise ApiError(422, "url_fetch_failed", f"the URL answered {status} without a Location")
                current = urljoin(current, location)
                continue
            if not 200 <= status < 300:
                raise ApiError(422, "url_fetch_failed", f"the URL answered HTTP {status}")
            return body
        raise ApiError(422, "url_fetch_failed", f"more than {MAX_REDIRECTS} redirects")

    # -- one request ----------------------------------------------------------------------
    def _get_once(self, url: str, deadline: float) -> tuple[int, str | None, bytes]:
        scheme, host, port, target = _split(url)
        addresses = self._resolve(host, port, deadline)
        conn = self._connect(scheme, host, port, addresses, deadline)
        try:
            conn.putrequest("GET", target, skip_accept_encoding=True)
            conn.putheader("Accept", "image/*, application/json;q=0.9, */*;q=0.5")
            conn.putheader("Accept-Encoding", "identity")
            conn.putheader("User-Agent", USER_AGENT)
            conn.putheader("Connection", "close")
            conn.endheaders()
            _check_deadline(deadline, conn)
            response = conn.getresponse()
            if response.status in REDIRECT_STATUSES:
                return response.status, response.getheader("Location"), b""
            if not 200 <= response.status < 300:
                return response.status, None, b""
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise _too_large(self.max_bytes)
            chunks, size = [], 0
            while True:
                _check_deadline(deadline, conn)
                chunk = response.read1(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise _too_large(self.max_bytes)
                chunks.append(chunk)
            return response.status, None, b"".join(chunks)
        except ApiError:
            raise
        except TimeoutError:
            raise ApiError(422, "url_fetch_failed", "fetching the URL took too long (FEWFACE_URL_TIMEOUT)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(422, "url_fetch_failed", f"fetching the URL failed: {_describe(exc)}") from None
        finally:
            conn.close()

    def _resolve(self, host: str, port: int, deadline: float) -> list[IPAddress]:
        try:
            infos = self._lookup(host, port, deadline)
        except TimeoutError:
            raise ApiError(422, "url_fetch_failed", f"resolving host {host!r} took too long (FEWFACE_URL_TIMEOUT)") from None
        except (OSError, UnicodeError) as exc:
            raise ApiError(422, "url_fetch_failed", f"cannot resolve host {host!r}: {_describe(exc)}") from None
        addresses: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ApiError(422, "url_fetch_failed", f"host {host!r} has no address")
        if not self.allow_private:
            refused = [str(ip) for ip in addresses if not address_allowed(ip)]
            if refused:
                log.warning("url input refused: %s resolves to non-public %s", host, ", ".join(refused))
                raise ApiError(
                    400,
                    "url_not_allowed",
                    f"host {host!r} resolves to a private, loopback, link-local or reserved address"
                    " (FEWFACE_ALLOW_PRIVATE_URLS allows them)",
                )
        return addresses

    def _lookup(self, host: str, port: int, deadline: float) -> list[Any]:
        """``resolver(host, port, ...)`` on a daemon thread, waited for until ``deadline``;
        TimeoutError when it (or a free lookup slot) takes longer."""
        if not _dns_slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError
        answer: Future[list[Any]] = Future()

        def run() -> None:
            try:
                answer.set_result(self.resolver(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                answer.set_exception(exc)
            finally:
                _dns_slots.release()

        threading.Thread(target=run, name="fewface-dns", daemon=True).start()
        return answer.result(timeout=max(0.0, deadline - time.monotonic()))

    def _connect(self, scheme: str, host: str, port: int, addresses: list[IPAddress], deadline: float) -> http.client.HTTPConnection:
        last: Exception | None = None
        for ip in addresses:
            _check_deadline(deadline)
            conn: http.client.HTTPConnection
            if scheme == "https":
                conn = _PinnedHTTPSConnection(host, port, str(ip), deadline=deadline, context=ssl.create_default_context())
            else:
                conn = _PinnedHTTPConnection(host, port, str(ip), deadline=deadline)
            try:
                conn.connect()
                return conn
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last = exc
        raise ApiError(422, "url_fetch_failed", f"cannot connect to {host!r}: {_describe(last)}")


class _DeadlineMixin:
    """Every send and receive gets the time left before ``deadline`` as its timeout."""

    deadline = math.inf

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline reached")
        self.settimeout(remaining)  # type: ignore[attr-defined]

    def recv(self, *args: Any) -> bytes:
        self._arm()
        return super().recv(*args)  # type: ignore[misc]

    def recv_into(self, *args: Any) -> int:
        self._arm()
        return super().recv_into(*args)  # type: ignore[misc]

    def send(self, *args: Any) -> int:
        self._arm()
        return super().send(*args)  # type: ignore[misc]

    def sendall(self, *args: Any) -> None:
        self._arm()
        super().sendall(*args)  # type: ignore[misc]


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


def _open_socket(ip: str, port: int, deadline: float) -> _DeadlineSocket:
    sock = _DeadlineSocket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    sock.deadline = deadline
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to ``ip`` while speaking HTTP to ``host`` (Host header)."""

    def __init__(self, host: str, port: int, ip: str, *, deadline: float) -> None:
        super().__init__(host, port, timeout=max(0.001, deadline - time.monotonic()))
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        if self.sock is None:
            self.sock = _open_socket(self._ip, self.port, self._deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to ``ip`` with SNI and certificate checks for ``host``."""

    def __init__(self, host: str, port: int, ip: str, *, deadline: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=max(0.001, deadline - time.monotonic()), context=context)
        self._ip = ip
        self._deadline = deadline
        self._tls = context
        self._tls.sslsocket_class = _DeadlineSSLSocket

    def connect(self) -> None:
        if self.sock is None:
            raw = _open_socket(self._ip, self.port, self._deadline)
            try:
                tls = self._tls.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False)
            except BaseException:
                raw.close()
                raise
            assert isinstance(tls, _DeadlineSSLSocket)
            tls.deadline = self._deadline
            tls.settimeout(max(0.001, self._deadline - time.monotonic()))
            tls.do_handshake()  # one timeout for the whole handshake
            self.sock = tls


def _split(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, request target); 400 url_not_allowed for anything but http(s)."""
    if len(url) > MAX_URL_LENGTH:
        raise ApiError(400, "url_not_allowed", f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ApiError(400, "url_not_allowed", "url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ApiError(400, "url_not_allowed", "only http and https URLs are fetched")
    host = parts.hostname
    if not host:
        raise ApiError(400, "url_not_allowed", "url has no host")
    if any(ch in url for ch in "\r\n\t ") or any(ord(ch) < 32 for ch in url):
        raise ApiError(400, "url_not_allowed", "url contains whitespace or control characters")
    target = quote(parts.path or "/", safe=string.punctuation)
    if parts.query:
        target += "?" + quote(parts.query, safe=string.punctuation)
    return scheme, host, port or (443 if scheme == "https" else 80), target


def _check_deadline(deadline: float, conn: http.client.HTTPConnection | None = None) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ApiError(422, "url_fetch_failed", "fetching the URL took too long (FEWFACE_URL_TIMEOUT)")
    if conn is not None and conn.sock is not None:
        conn.sock.settimeout(remaining)
    return remaining


def _too_large(limit: int) -> ApiError:
    return ApiError(422, "url_fetch_failed", f"the URL's content is larger than {limit} bytes (FEWFACE_MAX_UPLOAD_BYTES)")


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__

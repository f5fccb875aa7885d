"""Optional authentication: an API key (``X-API-Key`` or ``Authorization: Bearer``) and/or HTTP
basic auth (``FEWFACE_BASIC_AUTH``). When either is configured, every request needs one valid
credential except the exempt endpoints: liveness, readiness and the console's static shell
(its HTML/JS/CSS hold no data; every API call it makes needs credentials).

Collection keys (service/http/collections.py): a collection created with an ``api_key`` is also
opened by that key, sent the same way, on its own routes only (``/v1/collections/<cid>/...`` and
reading ``GET /v1/collections/<cid>``; for ``default``, today's gallery and Facebox routes). The
service's credentials open everything; the collection admin routes (list, create, delete), docs
and every other collection need them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging

from flask import Flask, Request, Response, current_app, request

from service.config import Settings
from service.http.errors import error_response

log = logging.getLogger(__name__)

EXEMPT_ENDPOINTS = frozenset({"api.healthz", "api.readyz", "console.index", "static"})
REALM = "fewface"


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison (hashing first hides the expected length too)."""
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


class Authenticator:
    def __init__(self, api_key: str = "", basic_auth: str = "") -> None:
        self._api_key = api_key
        self._basic = basic_auth

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(settings.api_key, settings.basic_auth)

    @property
    def enabled(self) -> bool:
        return bool(self._api_key or self._basic)

    @staticmethod
    def presented_key(req: Request) -> str | None:
        """The API key a request sends (``X-API-Key``, else a Bearer token), if any."""
        key = req.headers.get("X-API-Key")
        if key:
            return key
        scheme, _, value = req.headers.get("Authorization", "").partition(" ")
        return (value.strip() or None) if scheme.lower() == "bearer" else None

    def authorized(self, req: Request) -> bool:
        if not self.enabled:
            return True
        header = req.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if self._api_key:
            key = req.headers.get("X-API-Key")
            if key is not None and _same(key, self._api_key):
                return True
            if scheme.lower() == "bearer" and value and _same(value, self._api_key):
                return True
        if self._basic and scheme.lower() == "basic" and value:
            try:
                pair = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                return False
            return _same(pair, self._basic)
        return False

    def challenge(self) -> str:
        return f'Basic realm="{REALM}", charset="UTF-8"' if self._basic else f'Bearer realm="{REALM}"'


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or an interface's address: reachable from elsewhere


def exposure_warning(settings: Settings) -> str | None:
    """The start-up warning for a server reachable beyond loopback with authentication off."""
    if settings.api_key or settings.basic_auth or is_loopback(settings.host):
        return None
    return (
        f"AUTHENTICATION IS OFF and the server listens on {settings.host}:{settings.port}, beyond loopback: anyone who can "
        "reach it can list, identify, teach and delete people and download the whole gallery. Set FEWFACE_API_KEY "
        "(or FEWFACE_BASIC_AUTH), or FEWFACE_HOST=127.0.0.1 behind a proxy that authenticates"
    )


def _collection_key_opens(req: Request) -> bool:
    """True when the request sends the API key of the one collection it acts on."""
    from service.http.collections import collections, request_collection

    cid = request_collection()
    key = Authenticator.presented_key(req)
    if cid is None or key is None or current_app.extensions.get("fewface_collections") is None:
        return False
    return collections().key_ok(cid, key)


def register_auth(app: Flask, settings: Settings) -> None:
    auth = Authenticator.from_settings(settings)
    app.extensions["fewface_auth"] = auth
    if not auth.enabled:
        return
    log.info(
        "authentication required (%s)", ", ".join(n for n, on in (("api key", settings.api_key), ("basic", settings.basic_auth)) if on)
    )

    @app.before_request
    def _require_credentials() -> Response | None:
        if request.endpoint in EXEMPT_ENDPOINTS or auth.authorized(request):
            return None
        if _collection_key_opens(request):
            return None
        log.info("unauthorized %s %s from %s", request.method, request.path, request.remote_addr)
        response, status = error_response(401, "unauthorized", "missing or wrong credentials: send X-API-Key, a Bearer token or basic auth")
        response.status_code = status
        response.headers["WWW-Authenticate"] = auth.challenge()
        return response

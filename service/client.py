"""Python client for Fewface's native HTTP API (``/v1/...``), for apps that embed the service.

    from service.client import Client, Url, NoFaceDetectedError

    fewface = Client("http://127.0.0.1:8080", api_key="...")
    fewface.teach("alice", ["alice1.jpg", "alice2.jpg"], name="Alice Liddell")
    for face in fewface.identify("party.jpg")["faces"]:
        print(face["match"])

Images are a file path (``str`` or ``Path``), ``bytes``, a binary file object (sent as multipart
parts), ``Base64("...")`` (sent as JSON) or ``Url("https://...")`` (fetched by the service).
Every non-2xx answer raises the ``FewfaceError`` subclass named after its ``code``
(``no_face_detected`` -> ``NoFaceDetectedError``; an unknown code -> ``FewfaceError`` itself).
A 503 (busy: nothing changed on the server) is retried, waiting its ``Retry-After`` (bounded).

Only ``requests`` is imported: no torch, numpy or Flask. ``Client.in_process(app)`` talks to a
Flask app in this process instead of a socket (the CLI's ``--data-dir`` mode).
"""

from __future__ import annotations

import base64 as _b64
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, Union
from urllib.parse import quote

import requests

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["Base64", "Client", "FewfaceError", "ImageInput", "TransportError", "Url", "error_class"]

DEFAULT_URL = "http://127.0.0.1:8080"


# -- errors --------------------------------------------------------------------------------
class FewfaceError(Exception):
    """A non-2xx answer: ``status`` (HTTP), ``code`` (stable snake_case), ``message`` (the
    server's sentence), ``body`` (the decoded JSON answer, when there is one)."""

    code_name: str | None = None  # the code this class stands for (None: the base class)

    def __init__(self, status: int, code: str, message: str, body: Mapping[str, Any] | None = None, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = dict(body or {})
        self.retry_after = retry_after


class TransportError(FewfaceError):
    """No answer: the service could not be reached, or did not answer within the timeout."""

    code_name = "transport_error"


# One class per code of the error table (docs/errors.md) and the server's own HTTP codes.
class MissingImageError(FewfaceError):
    code_name = "missing_image"


class TooManyImagesError(FewfaceError):
    code_name = "too_many_images"


class InvalidBase64Error(FewfaceError):
    code_name = "invalid_base64"


class InvalidJsonError(FewfaceError):
    code_name = "invalid_json"


class InvalidNameError(FewfaceError):
    code_name = "invalid_name"


class InvalidIdError(FewfaceError):
    code_name = "invalid_id"


class InvalidParameterError(FewfaceError):
    code_name = "invalid_parameter"


class InvalidImageError(FewfaceError):
    code_name = "invalid_image"


class ImageTooLargeError(FewfaceError):
    code_name = "image_too_large"


class ImageTooComplexError(FewfaceError):
    code_name = "image_too_complex"


class NoFaceDetectedError(FewfaceError):
    code_name = "no_face_detected"


class MultipleFacesError(FewfaceError):
    code_name = "multiple_faces"


class LowQualityFaceError(FewfaceError):
    code_name = "low_quality_face"


class NotEnoughExamplesError(FewfaceError):
    code_name = "not_enough_examples"


class PersonNotFoundError(FewfaceError):
    code_name = "person_not_found"


class FaceNotFoundError(FewfaceError):
    code_name = "face_not_found"


class NotFoundError(FewfaceError):
    code_name = "not_found"


class MethodNotAllowedError(FewfaceError):
    code_name = "method_not_allowed"


class PayloadTooLargeError(FewfaceError):
    code_name = "payload_too_large"


class UnsupportedMediaTypeError(FewfaceError):
    code_name = "unsupported_media_type"


class BadRequestError(FewfaceError):
    code_name = "bad_request"


class HeadersTooLargeError(FewfaceError):
    code_name = "headers_too_large"


class NotImplementedByServerError(FewfaceError):
    code_name = "not_implemented"


class UrlNotAllowedError(FewfaceError):
    code_name = "url_not_allowed"


class UrlFetchFailedError(FewfaceError):
    code_name = "url_fetch_failed"


class RequestTimeoutError(FewfaceError):
    code_name = "request_timeout"


class ClientDisconnectedError(FewfaceError):
    code_name = "client_disconnected"


class UrlFetchBusyError(FewfaceError):
    code_name = "url_fetch_busy"


class UnauthorizedError(FewfaceError):
    code_name = "unauthorized"


class ForbiddenError(FewfaceError):
    code_name = "forbidden"


class MissingStateError(FewfaceError):
    code_name = "missing_state"


class InvalidStateError(FewfaceError):
    code_name = "invalid_state"


class StateChecksumMismatchError(FewfaceError):
    code_name = "state_checksum_mismatch"


class UnsupportedStateVersionError(FewfaceError):
    code_name = "unsupported_state_version"


class ModelMismatchError(FewfaceError):
    code_name = "model_mismatch"


class InvalidFaceprintError(FewfaceError):
    code_name = "invalid_faceprint"


class NameConflictError(FewfaceError):
    code_name = "name_conflict"


class ConflictError(FewfaceError):
    code_name = "conflict"


class UnprocessableError(FewfaceError):
    code_name = "unprocessable"


class TooManyRequestsError(FewfaceError):
    code_name = "too_many_requests"


class DatabaseBusyError(FewfaceError):
    code_name = "database_busy"


class DatabaseUnavailableError(FewfaceError):
    code_name = "database_unavailable"


class StorageFullError(FewfaceError):
    code_name = "storage_full"


class StorageUnavailableError(FewfaceError):
    code_name = "storage_unavailable"


class UnavailableError(FewfaceError):
    code_name = "unavailable"


class InternalError(FewfaceError):
    code_name = "internal_error"


class HttpError(FewfaceError):
    code_name = "http_error"


class CollectionNotFoundError(FewfaceError):
    code_name = "collection_not_found"


class CollectionExistsError(FewfaceError):
    code_name = "collection_exists"


class InvalidCollectionIdError(FewfaceError):
    code_name = "invalid_collection_id"


class CollectionProtectedError(FewfaceError):
    code_name = "collection_protected"


class InvalidApiKeyError(FewfaceError):
    code_name = "invalid_api_key"


class FaceTokenNotFoundError(FewfaceError):
    code_name = "face_token_not_found"


class FaceTokenExpiredError(FewfaceError):
    code_name = "face_token_expired"


class ThumbnailNotFoundError(FewfaceError):
    code_name = "thumbnail_not_found"


def _subclasses(cls: type[FewfaceError]) -> list[type[FewfaceError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


ERRORS: dict[str, type[FewfaceError]] = {c.code_name: c for c in _subclasses(FewfaceError) if c.code_name}
__all__ += sorted(c.__name__ for c in ERRORS.values() if c.__name__ not in __all__)


def error_class(code: str) -> type[FewfaceError]:
    """The exception class for an error ``code`` (``FewfaceError`` for a code this client does not know)."""
    return ERRORS.get(code, FewfaceError)


# -- image inputs --------------------------------------------------------------------------
@dataclass(frozen=True)
class Base64:
    """An image already base64-encoded (a ``data:...;base64,`` prefix is accepted); sent as JSON."""

    data: str


@dataclass(frozen=True)
class Url:
    """An image the service fetches itself (http(s); public addresses unless the service allows private ones)."""

    url: str


ImageInput = Union[str, os.PathLike, bytes, bytearray, IO[bytes], Base64, Url]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class _Part:
    kind: str  # "bytes", "base64" or "url"
    value: Any
    filename: str = "image"


def _part(image: ImageInput) -> _Part:
    if isinstance(image, Base64):
        return _Part("base64", image.data)
    if isinstance(image, Url):
        return _Part("url", image.url)
    if isinstance(image, bytes | bytearray):
        return _Part("bytes", bytes(image))
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return _Part("bytes", path.read_bytes(), path.name)
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise TypeError("open image files in binary mode ('rb')")
        return _Part("bytes", data, Path(str(getattr(image, "name", "image"))).name)
    raise TypeError(f"an image is a path, bytes, a binary file, Base64(...) or Url(...), not {type(image).__name__}")


@dataclass(frozen=True)
class _Field:
    """Where one image goes: multipart part / JSON base64 key / URL parameter."""

    file: str
    base64: str
    url: str


TEACH_FIELD = _Field("file", "base64", "url")


def _body(fields: Sequence[tuple[_Field, list[_Part]]], params: Mapping[str, Any]) -> dict[str, Any]:
    """requests keyword arguments (``files``+``data`` or ``json``) for images and parameters.
    Multipart unless a Base64 input or several URLs for one field ask for JSON (where bytes are
    base64-encoded)."""
    params = {k: v for k, v in params.items() if v is not None}
    as_json = any(p.kind == "base64" for _, parts in fields for p in parts) or any(
        sum(p.kind == "url" for p in parts) > 1 for _, parts in fields
    )
    if as_json:
        body: dict[str, Any] = dict(params)
        for field, parts in fields:
            b64 = [p.value if p.kind == "base64" else _b64.b64encode(p.value).decode() for p in parts if p.kind != "url"]
            urls = [p.value for p in parts if p.kind == "url"]
            if b64:
                body[field.base64] = b64 if len(b64) > 1 or field.base64 == "base64" else b64[0]
            if urls:
                body[field.url] = urls if len(urls) > 1 else urls[0]
        return {"json": body}
    files: list[tuple[str, tuple[str, bytes, str]]] = []
    data = {k: (v if isinstance(v, str) else str(v)) for k, v in params.items()}
    for field, parts in fields:
        for p in parts:
            if p.kind == "url":
                data[field.url] = p.value
            else:
                files.append((field.file, (p.filename, p.value, "application/octet-stream")))
    if not files:  # only URLs: a JSON body (a multipart body without parts is not sent as one)
        return {"json": {**params, **data}}
    return {"files": files, "data": data}


# -- transport -----------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.content)


class Transport(Protocol):
    def send(
        self, method: str, path: str, *, params: Mapping[str, Any] | None, headers: Mapping[str, str], timeout: float, **body: Any
    ) -> Reply: ...

    def close(self) -> None: ...


class HttpTransport:
    """``requests`` over a pooled session."""

    def __init__(self, base_url: str, session: requests.Session | None = None, pool_size: int = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        if session is None:
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)

    def send(
        self, method: str, path: str, *, params: Mapping[str, Any] | None, headers: Mapping[str, str], timeout: float, **body: Any
    ) -> Reply:
        try:
            r = self.session.request(method, self.base_url + path, params=params, headers=dict(headers), timeout=timeout, **body)
        except requests.Timeout as exc:
            raise TransportError(0, "transport_error", f"no answer from {self.base_url} within {timeout} s ({exc})") from exc
        except requests.RequestException as exc:
            raise TransportError(0, "transport_error", f"cannot reach {self.base_url}: {exc}") from exc
        return Reply(r.status_code, r.headers, r.content)

    def close(self) -> None:
        self.session.close()


class WsgiTransport:
    """A Flask app in this process (no socket): the same routes, validation and answers."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def send(
        self, method: str, path: str, *, params: Mapping[str, Any] | None, headers: Mapping[str, str], timeout: float, **body: Any
    ) -> Reply:
        import io

        kwargs: dict[str, Any] = {"method": method, "query_string": params, "headers": dict(headers)}
        if "json" in body:
            kwargs["json"] = body["json"]
        elif "files" in body:
            form: dict[str, Any] = dict(body.get("data") or {})
            for name, (filename, data, mimetype) in body["files"]:
                form.setdefault(name, []).append((io.BytesIO(data), filename, mimetype))
            kwargs["data"] = form
            kwargs["content_type"] = "multipart/form-data"
        elif "data" in body:
            kwargs["data"] = body["data"]
        with self.app.test_client() as client:
            r = client.open(path, **kwargs)
            return Reply(r.status_code, dict(r.headers), r.get_data())

    def close(self) -> None:
        pass


# -- the client ----------------------------------------------------------------------------
def _seg(value: str) -> str:
    return quote(str(value), safe="")


class Client:
    """Typed methods for every native route. Answers are the service's JSON objects (dicts).

    ``url``: the service (default ``$FEWFACE_URL`` or http://127.0.0.1:8080); ``api_key`` sent as
    ``X-API-Key``, or ``basic_auth=(user, password)``; ``collection``: act on that collection
    (``/v1/collections/<cid>/...``; None: the default one); ``timeout`` seconds per attempt;
    ``retries`` extra attempts after a 503, each waiting Retry-After (else 0.5, 1, 2 ... s),
    capped by ``max_retry_wait``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        collection: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait: float = 10.0,
        session: requests.Session | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("FEWFACE_URL") or DEFAULT_URL).rstrip("/")
        self.collection = collection
        self.timeout = timeout
        self.retries = max(0, retries)
        self.max_retry_wait = max_retry_wait
        self.headers: dict[str, str] = {"Accept": "application/json"}
        if api_key:
            self.headers["X-API-Key"] = api_key
        elif basic_auth:
            token = _b64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.transport: Transport = transport or HttpTransport(self.url, session)

    @classmethod
    def in_process(cls, app: Flask, **kwargs: Any) -> Client:
        """A client of a Flask app (``service.create_app``) in this process."""
        return cls("inprocess://app", transport=WsgiTransport(app), **kwargs)

    def with_collection(self, collection: str | None) -> Client:
        """The same connection acting on another collection."""
        other = object.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.collection = collection
        return other

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _scoped(self, path: str) -> str:
        """``/v1/x`` in the client's collection: ``/v1/collections/<cid>/x``."""
        if self.collection is None:
            return path
        return f"/v1/collections/{_seg(self.collection)}" + path.removeprefix("/v1")

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, **body: Any) -> Reply:
        """Send one request (retrying 503s); raise the code's ``FewfaceError`` subclass on non-2xx."""
        params = {k: v for k, v in (params or {}).items() if v is not None} or None
        attempt = 0
        while True:
            reply = self.transport.send(method, path, params=params, headers=self.headers, timeout=self.timeout, **body)
            if reply.status < 400:
                return reply
            error = self._error(reply)
            if reply.status != 503 or attempt >= self.retries:
                raise error
            wait = error.retry_after if error.retry_after is not None else 0.5 * 2**attempt
            time.sleep(min(max(wait, 0.0), self.max_retry_wait))
            attempt += 1

    @staticmethod
    def _error(reply: Reply) -> FewfaceError:
        body: dict[str, Any] = {}
        try:
            decoded = reply.json()
            body = decoded if isinstance(decoded, dict) else {}
        except ValueError:
            pass
        code = str(body.get("code") or "http_error")
        message = str(body.get("error") or reply.content[:200].decode("utf-8", "replace") or f"HTTP {reply.status}")
        retry_after = None
        raw = reply.headers.get("Retry-After")
        if raw is not None:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None  # an HTTP date: use the client's own back-off
        return error_class(code)(reply.status, code, message, body, retry_after)

    def _json(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, **body: Any) -> dict[str, Any]:
        return self.request(method, path, params=params, **body).json()

    # -- health and info -----------------------------------------------------------------
    def healthz(self) -> dict[str, Any]:
        """``GET /healthz``: liveness."""
        return self._json("GET", "/healthz")

    def readyz(self) -> dict[str, Any]:
        """``GET /readyz``: readiness (raises ``UnavailableError``/``StorageUnavailableError``... when not ready)."""
        return self._json("GET", "/readyz")

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``: version, model, pipeline, device, match rule, counts (of ``default``;
        ``get_collection`` tells a collection's)."""
        return self._json("GET", "/v1/info")

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``."""
        return self._json("GET", "/openapi.json")

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition (parse it with prometheus-client's parser)."""
        return self.request("GET", "/metrics").content.decode("utf-8")

    # -- teach, identify, verify ---------------------------------------------------------
    def teach(
        self,
        person_id: str,
        images: ImageInput | Iterable[ImageInput],
        *,
        name: str | None = None,
        pick: str | None = None,
        quality: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/people/<id>/faces``: one face example per image (all checked before any is
        stored). ``pick="largest"`` takes the largest of several faces, ``quality="off"`` skips the
        quality gate. The answer's ``created`` says whether the person is new."""
        if isinstance(images, str | os.PathLike | bytes | bytearray | Base64 | Url) or hasattr(images, "read"):
            parts = [_part(images)]  # type: ignore[arg-type]
        else:
            parts = [_part(i) for i in images]  # type: ignore[union-attr]
        body = _body([(TEACH_FIELD, parts)], {"name": name, "pick": pick, "quality": quality})
        return self._json("POST", self._scoped(f"/v1/people/{_seg(person_id)}/faces"), **body)

    def teach_face_token(self, person_id: str, face_token: str, *, name: str | None = None, quality: str | None = None) -> dict[str, Any]:
        """``POST /v1/people/<id>/faces`` with ``{"face_token": ...}``: teach the face an identify
        answer found (its ``face_token``), without sending the photo again."""
        body = {k: v for k, v in {"face_token": face_token, "name": name, "quality": quality}.items() if v is not None}
        return self._json("POST", self._scoped(f"/v1/people/{_seg(person_id)}/faces"), json=body)

    def identify(self, image: ImageInput, *, threshold: float | None = None, top_k: int | None = None) -> dict[str, Any]:
        """``POST /v1/identify``: every face in the image with its match and candidates."""
        body = _body([(TEACH_FIELD, [_part(image)])], {"threshold": threshold, "top_k": top_k})
        return self._json("POST", self._scoped("/v1/identify"), **body)

    def verify(self, image_a: ImageInput, image_b: ImageInput, *, threshold: float | None = None) -> dict[str, Any]:
        """``POST /v1/verify``: are the largest faces of two images the same person?"""
        fields = [(_Field(n, n, f"{n}_url"), [_part(i)]) for n, i in (("image_a", image_a), ("image_b", image_b))]
        return self._json("POST", self._scoped("/v1/verify"), **_body(fields, {"threshold": threshold}))

    # -- people --------------------------------------------------------------------------
    def list_people(self, *, limit: int | None = None, offset: int | None = None) -> dict[str, Any]:
        """``GET /v1/people``: ``people`` (id, name, created_at, face_count), ``total``, ``faces``."""
        return self._json("GET", self._scoped("/v1/people"), params={"limit": limit, "offset": offset})

    def iter_people(self, page: int = 1000) -> Iterable[dict[str, Any]]:
        """Every person, page by page."""
        offset = 0
        while True:
            people = self.list_people(limit=page, offset=offset)["people"]
            yield from people
            if len(people) < page:
                return
            offset += page

    def get_person(self, person_id: str) -> dict[str, Any]:
        """``GET /v1/people/<id>``: ``person`` and its ``faces`` (id, image_sha256, box, ...)."""
        return self._json("GET", self._scoped(f"/v1/people/{_seg(person_id)}"))

    def rename_person(self, person_id: str, name: str) -> dict[str, Any]:
        """``PATCH /v1/people/<id>``."""
        return self._json("PATCH", self._scoped(f"/v1/people/{_seg(person_id)}"), json={"name": name})

    def delete_person(self, person_id: str) -> dict[str, Any]:
        """``DELETE /v1/people/<id>``: the person and all their examples."""
        return self._json("DELETE", self._scoped(f"/v1/people/{_seg(person_id)}"))

    def delete_face(self, person_id: str, face_id: int) -> dict[str, Any]:
        """``DELETE /v1/people/<id>/faces/<face_id>``."""
        return self._json("DELETE", self._scoped(f"/v1/people/{_seg(person_id)}/faces/{int(face_id)}"))

    def thumbnail(self, person_id: str, face_id: int) -> bytes:
        """``GET /v1/people/<id>/faces/<face_id>/thumbnail``: the small JPEG kept of a taught face."""
        return self.request("GET", self._scoped(f"/v1/people/{_seg(person_id)}/faces/{int(face_id)}/thumbnail")).content

    # -- state ---------------------------------------------------------------------------
    def export_state(self, *, compress: bool = False) -> bytes:
        """``GET /v1/state``: the gallery's state file (gzipped with ``compress``)."""
        return self.request("GET", self._scoped("/v1/state"), params={"compress": "gzip" if compress else None}).content

    def import_state(self, state: ImageInput, *, mode: str = "replace") -> dict[str, Any]:
        """``POST /v1/state``: a state file (path, bytes, file object or ``Url``); ``mode`` replace or merge."""
        part = _part(state)
        if part.kind == "url":
            body: dict[str, Any] = {"json": {"url": part.value}}
        elif part.kind == "base64":
            body = {"files": [("file", ("state.json", _b64.b64decode(part.value), "application/octet-stream"))]}
        else:
            body = {"files": [("file", (part.filename, part.value, "application/octet-stream"))]}
        return self._json("POST", self._scoped("/v1/state"), params={"mode": mode}, **body)

    # -- calibration ---------------------------------------------------------------------
    def calibration(self, *, targets: Sequence[float] | None = None, gallery_size: int | None = None) -> dict[str, Any]:
        """``GET /v1/calibration``: the calibration report over the gallery."""
        return self._json(
            "GET", self._scoped("/v1/calibration"), params={"target": list(targets or []) or None, "gallery_size": gallery_size}
        )

    def calibration_plot(self, *, targets: Sequence[float] | None = None, gallery_size: int | None = None) -> bytes:
        """``GET /v1/calibration/plot.png``: the same report as a PNG."""
        params = {"target": list(targets or []) or None, "gallery_size": gallery_size}
        return self.request("GET", self._scoped("/v1/calibration/plot.png"), params=params).content

    # -- collections (issue 13) ----------------------------------------------------------
    def list_collections(self) -> dict[str, Any]:
        """``GET /v1/collections``: every collection with its counts (``default`` first)."""
        return self._json("GET", "/v1/collections")

    def get_collection(self, collection: str | None = None) -> dict[str, Any]:
        """``GET /v1/collections/<cid>`` (default: this client's collection, else ``default``):
        counts, model, threshold and match rule."""
        return self._json("GET", f"/v1/collections/{_seg(collection or self.collection or 'default')}")

    def set_collection_key(self, collection: str, api_key: str | None) -> dict[str, Any]:
        """``PATCH /v1/collections/<cid>``: a new key of the collection's own (the old one stops
        working), or None to remove it."""
        return self._json("PATCH", f"/v1/collections/{_seg(collection)}", json={"api_key": api_key})

    def create_collection(self, collection: str, *, api_key: str | None = None) -> dict[str, Any]:
        """``POST /v1/collections``: a new, empty collection (optionally with its own API key)."""
        body = {k: v for k, v in {"id": collection, "api_key": api_key}.items() if v is not None}
        return self._json("POST", "/v1/collections", json=body)

    def delete_collection(self, collection: str) -> dict[str, Any]:
        """``DELETE /v1/collections/<cid>``: the collection and its people."""
        return self._json("DELETE", f"/v1/collections/{_seg(collection)}")

"""Collections over HTTP: independent galleries in one service (issue 13).

Admin routes: ``GET/POST /v1/collections``, ``GET/PATCH/DELETE /v1/collections/<cid>`` (PATCH sets
or removes the collection's own API key; which credentials open what: service/http/auth.py).

Every per-gallery route is also served under ``/v1/collections/<cid>``, by the same view
function: the native ones (``/v1/people/...`` -> ``/v1/collections/<cid>/people/...``, identify,
verify, state, calibration) and the Facebox API (``/facebox/...``, ``/info``), so
``/v1/collections/<cid>`` is also a Facebox base URL. The URL's collection id is taken out of
the view arguments (``g.fewface_collection``); after authentication (service/http/auth.py) it is
checked and resolved to that collection's Recognizer (``g.fewface_recognizer``), which the views
reach through ``current_recognizer()``. Today's routes, Facebox's included, act on ``default``.

One Recognizer per collection, all sharing the app's Engine (one detector, embedder and
micro-batcher); each collection's Gallery keeps its own FAISS index (service/store/registry.py).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from service.errors import ApiError
from service.http.inputs import parse_request
from service.recognizer import Recognizer
from service.store.base import COLLECTION_ID, DEFAULT_COLLECTION, CollectionNotFoundError
from service.store.gallery import Gallery, ModelMismatchError
from service.store.registry import CollectionInfo, Galleries

log = logging.getLogger(__name__)

bp = Blueprint("collections", __name__)

URL_ARG = "collection"  # the path variable of every /v1/collections/<collection>... route
PREFIX = f"/v1/collections/<{URL_ARG}>"
ENDPOINT_PREFIX = "collection."  # a per-gallery route's twin: "api.identify" -> "collection.api.identify"
GALLERY_BLUEPRINTS = ("api", "state", "calibration", "facebox")  # their routes act on one gallery...
SERVICE_ENDPOINTS = frozenset({"api.healthz", "api.readyz", "api.info"})  # ...except these (GET /v1/collections/<cid> is info's twin)
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 256
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: it travels in a header


def collection_path(rule: str) -> str:
    """The per-collection twin of a per-gallery route: ``/v1/identify`` ->
    ``/v1/collections/<collection>/identify``; ``/facebox/check`` -> ``.../facebox/check``."""
    return PREFIX + (rule[len("/v1") :] if rule.startswith("/v1/") else rule)


def check_collection_id(cid: Any) -> str:
    if not isinstance(cid, str) or not COLLECTION_ID.fullmatch(cid):
        raise ApiError(
            400,
            "invalid_collection_id",
            f"{str(cid)[:80]!r} is not a collection id: 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
        )
    return cid


class Collections:
    """The app's collections: the store's registry, and one Recognizer per collection in use."""

    def __init__(self, galleries: Galleries, default: Recognizer) -> None:
        self.galleries = galleries
        self.default = default
        self._lock = threading.Lock()
        self._recognizers: dict[str, Recognizer] = {DEFAULT_COLLECTION: default}

    def gallery(self, cid: str) -> Gallery:
        """The collection's gallery, opened on first use: 400 invalid_collection_id, 404
        collection_not_found, 409 model_mismatch (built with another model or pipeline)."""
        try:
            return self.galleries.get(check_collection_id(cid))
        except ModelMismatchError as exc:
            raise ApiError(409, "model_mismatch", str(exc)) from None

    def recognizer(self, cid: str) -> Recognizer:
        gallery = self.gallery(cid)
        with self._lock:
            r = self._recognizers.get(cid)
            if r is None or r.gallery is not gallery:  # first use, or deleted and created again
                r = self._recognizers[cid] = Recognizer(self.default.engine, gallery, self.default.settings)
            return r

    def info(self, cid: str) -> CollectionInfo:
        check_collection_id(cid)
        found = next((c for c in self.galleries.list() if c.id == cid), None)
        if found is None:
            raise CollectionNotFoundError(cid)
        return found

    def key_ok(self, cid: str, key: str) -> bool:
        """True when ``key`` is collection ``cid``'s own API key (False for unknown or bad ids)."""
        if not COLLECTION_ID.fullmatch(cid) or not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH or not _KEY_CHARS.fullmatch(key):
            return False  # no key of that shape is ever set: skip the store and its slow hash
        return self.galleries.key_ok(cid, key)

    def forget(self, cid: str) -> None:
        with self._lock:
            self._recognizers.pop(cid, None)


def collections() -> Collections:
    return current_app.extensions["fewface_collections"]


def current_recognizer() -> Recognizer:
    """The Recognizer of the request's collection: its URL's, else ``default``."""
    r = g.get("fewface_recognizer")
    return r if r is not None else current_app.extensions["fewface"]


def current_collection_id() -> str:
    """The collection this request acts on: the URL's, else ``default``."""
    return g.get("fewface_collection") or DEFAULT_COLLECTION


def request_collection() -> str | None:
    """The collection whose credentials open this request: the URL's for a per-collection route
    (and for reading one collection's summary), ``default`` for today's per-gallery routes, None
    for service routes (collection admin, health, docs, console), which only service credentials open."""
    endpoint = request.endpoint or ""
    if endpoint.startswith(ENDPOINT_PREFIX) or endpoint == "collections.get_collection":
        return g.get("fewface_collection")
    if endpoint.partition(".")[0] in GALLERY_BLUEPRINTS and endpoint not in ("api.healthz", "api.readyz"):
        return DEFAULT_COLLECTION  # /v1/info included: it counts default's people
    return None


# -- JSON ---------------------------------------------------------------------------------------
def collection_json(info: CollectionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "model": info.model_id,
        "pipeline": info.pipeline,
        "people": info.people,
        "faces": info.faces,
        "api_key": info.has_key,
        "created_at": info.created_at,
        "protected": info.id == DEFAULT_COLLECTION,
    }


def collection_detail(cid: str) -> dict[str, Any]:
    """One collection's summary, its match rule at its size too (what /v1/info says of ``default``)."""
    r = collections().recognizer(cid)
    out = collection_json(collections().info(cid))
    out.update(default_threshold=r.identify_threshold(), match_rule=r.rule.describe(r.gallery.face_count()))
    return out


def _api_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not MIN_KEY_LENGTH <= len(value) <= MAX_KEY_LENGTH or not _KEY_CHARS.fullmatch(value):
        raise ApiError(
            400,
            "invalid_api_key",
            f"'api_key' must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} printable ASCII characters without spaces (or absent)",
        )
    if not current_app.extensions["fewface_auth"].enabled:
        raise ApiError(
            400,
            "invalid_api_key",
            "collection keys need authentication on (FEWFACE_API_KEY or FEWFACE_BASIC_AUTH): without it every route is open",
        )
    return value


# -- admin routes ---------------------------------------------------------------------------------
@bp.get("/v1/collections")
def list_collections() -> ResponseReturnValue:
    out = [collection_json(info) for info in collections().galleries.list()]
    return jsonify({"ok": True, "total": len(out), "collections": out})


@bp.post("/v1/collections")
def create_collection() -> ResponseReturnValue:
    data = parse_request(request, [])
    cid = check_collection_id(data.params.get("id"))
    key = _api_key(data.params.get("api_key"))
    collections().galleries.create(cid, api_key=key)
    log.info("collection %s created%s", cid, " with its own API key" if key else "")
    return jsonify({"ok": True, "created": True, "collection": collection_detail(cid)}), 201


@bp.get(PREFIX)
def get_collection() -> ResponseReturnValue:
    return jsonify({"ok": True, "collection": collection_detail(g.fewface_collection)})


@bp.patch(PREFIX)
def set_collection_key() -> ResponseReturnValue:
    """``{"api_key": "..."}`` gives the collection a new key of its own (the old one stops
    working); ``{"api_key": null}`` removes it. ``default`` may have one too."""
    cid = check_collection_id(g.fewface_collection)
    data = parse_request(request, [])
    if "api_key" not in data.params:
        raise ApiError(400, "invalid_api_key", "send 'api_key': the collection's new key, or null to remove it")
    key = _api_key(data.params["api_key"])
    collections().galleries.set_key(cid, key)
    log.info("collection %s: API key %s", cid, "set" if key else "removed")
    return jsonify({"ok": True, "collection": collection_json(collections().info(cid))})


@bp.delete(PREFIX)
def delete_collection() -> ResponseReturnValue:
    cid = check_collection_id(g.fewface_collection)
    if cid == DEFAULT_COLLECTION:
        raise ApiError(409, "collection_protected", "the collection 'default' cannot be deleted (delete its people instead)")
    c = collections()
    people, faces = c.galleries.delete(cid)
    c.forget(cid)
    log.info("collection %s deleted (%d people, %d faces)", cid, people, faces)
    return jsonify({"ok": True, "deleted": cid, "people_deleted": people, "faces_deleted": faces})


# -- wiring ------------------------------------------------------------------------------------
def _take_collection_id(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Every /v1/collections/<collection>... route: the id goes to ``g``, not to the view."""
    if values and URL_ARG in values:
        g.fewface_collection = values.pop(URL_ARG)


def _resolve() -> None:
    """Runs after authentication: a per-collection route's id is checked and resolved (400, 404,
    409 before the view reads any input, so a bad id changes nothing)."""
    endpoint = request.endpoint or ""
    if endpoint.startswith(ENDPOINT_PREFIX):
        g.fewface_recognizer = collections().recognizer(g.fewface_collection)


@bp.record_once
def _wire(state: BlueprintSetupState) -> None:
    """Runs when the app registers this blueprint, which it does after the per-gallery blueprints
    and authentication (service/http/app.py): the per-collection twins of their routes, the
    collection id taken out of the URL, and its resolution after authentication."""
    app = state.app
    galleries: Galleries = app.extensions["fewface_galleries"]  # service/http/app.py
    app.extensions["fewface_collections"] = Collections(galleries, app.extensions["fewface"])
    app.url_value_preprocessor(_take_collection_id)
    app.before_request(_resolve)
    twins = 0
    for rule in list(app.url_map.iter_rules()):
        blueprint = rule.endpoint.partition(".")[0]
        if blueprint not in GALLERY_BLUEPRINTS or rule.endpoint in SERVICE_ENDPOINTS:
            continue
        app.add_url_rule(
            collection_path(rule.rule),
            endpoint=ENDPOINT_PREFIX + rule.endpoint,
            view_func=app.view_functions[rule.endpoint],
            methods=sorted(rule.methods - {"HEAD", "OPTIONS"}),
        )
        twins += 1
    if not twins:
        raise RuntimeError("register the collections blueprint after the per-gallery ones")
    auth = app.extensions.get("fewface_auth")
    if auth is not None and not auth.enabled:
        keyed = [c.id for c in galleries.list() if c.has_key]
        if keyed:
            log.warning("authentication is off: the API keys of collections %s are not checked; every route is open", ", ".join(keyed))

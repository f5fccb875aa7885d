"""Portable gallery state: export to, and import from, one versioned JSON file (optionally gzipped).

Nothing in a state file can execute: it is plain JSON; embeddings are base64 of little-endian
float32. A sha256 checksum over the canonical content catches tampering and truncation. Import
checks everything before it touches the gallery, then writes in one SQLite transaction and
rebuilds the FAISS index after commit (service/store/gallery.py ``import_snapshot``).

Layout (format ``fewface-state``, version 1)::

    {"format": "fewface-state", "version": 1, "generator": "fewface 0.1.0", "exported_at": 1.7e9,
     "model": {"id": "dlib-resnet-v1", "dim": 128}, "embedding_encoding": "base64-float32-le",
     "people": [{"id": "alice", "name": "Alice", "created_at": 1.7e9}],
     "faces": [{"id": 1, "person_id": "alice", "box": [x1, y1, x2, y2], "detection_prob": 0.99,
                "image_sha256": "<64 hex>", "created_at": 1.7e9, "embedding": "<base64>",
                "thumbnail": "<base64 JPEG>"}],
     "checksum": {"algorithm": "sha256", "value": "<hex>"}}

``thumbnail`` (a small JPEG of the face, service/thumbnails.py) is optional: written only when the
exporting service keeps thumbnails (FEWFACE_THUMBNAILS) and has one for that face; files without
it (older exports) import as before, and services that predate it ignore it. An additive member,
so the format stays version 1.

The checksum is sha256 over ``canonical(document without "checksum")``: UTF-8 JSON, keys sorted,
separators ``,`` and ``:``, non-ASCII characters kept.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import hashlib
import json
import logging
import math
import re
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Request, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from service.errors import ApiError
from service.http.collections import current_recognizer
from service.http.inputs import choice_param, clean_facebox_id, clean_name, parse_request
from service.store.gallery import LEGACY_PIPELINE, LEGACY_PIPELINES, Gallery, StoredFace, pipeline_settings
from service.thumbnails import valid_jpeg

log = logging.getLogger(__name__)

FORMAT = "fewface-state"
VERSION = 1
EMBEDDING_ENCODING = "base64-float32-le"
MAX_INFLATE_RATIO = 2  # a gzipped state may unpack to at most this many times the upload limit (real ones: about 1.3x)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

bp = Blueprint("state", __name__)


@dataclass(frozen=True)
class ParsedState:
    people: list[tuple[str, str, float]]
    faces: list[StoredFace]


# -- export ---------------------------------------------------------------------------------
def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def checksum(doc: dict[str, Any]) -> str:
    """sha256 hex of the canonical document without its ``checksum`` member."""
    return hashlib.sha256(canonical({k: v for k, v in doc.items() if k != "checksum"})).hexdigest()


def build_state(gallery: Gallery, generator: str, *, thumbnails: bool = False) -> dict[str, Any]:
    """The state document; ``thumbnails``: with each face's thumbnail where one is stored."""
    people, faces = gallery.export_snapshot()
    jpegs = gallery.thumbnails() if thumbnails else {}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "generator": generator,
        "exported_at": time.time(),
        "model": {"id": gallery.model_id, "dim": gallery.dim, "pipeline": gallery.pipeline},
        "embedding_encoding": EMBEDDING_ENCODING,
        "people": [{"id": p.id, "name": p.name, "created_at": p.created_at} for p in people],
        "faces": [
            {
                "id": f.id,
                "person_id": f.person_id,
                "box": [float(x) for x in f.box],
                "detection_prob": float(f.detection_prob),
                "image_sha256": f.image_sha256,
                "created_at": f.created_at,
                "embedding": base64.b64encode(np.asarray(f.embedding, dtype="<f4").tobytes()).decode("ascii"),
                **({"thumbnail": base64.b64encode(jpegs[f.id]).decode("ascii")} if f.id in jpegs else {}),
            }
            for f in faces
        ],
    }
    doc["checksum"] = {"algorithm": "sha256", "value": checksum(doc)}
    return doc


# -- import ---------------------------------------------------------------------------------
# A state upload is bounded before and while it is parsed (issue 11): the gzip layer unpacks to
# at most MAX_INFLATE_RATIO x the upload limit; a file in the canonical layout this service
# exports (keys sorted, "checksum" first) has its checksum checked over the raw bytes before
# anything is parsed (a match skips the second check); the document is then read one top-level
# member and one list item at a time (each at most MAX_ITEM_CHARS, at most MAX_ITEMS, counted
# before reading), so no step holds the interpreter for long and no Python object tree of the
# whole document is built; items are validated as they arrive, embeddings checked all at once
# with numpy at the end.
MAX_ITEM_CHARS = 64 * 1024  # one list item or one other top-level member
MAX_ITEMS = 250_000  # people and faces together: each costs a few microseconds of Python to check
MAX_MEMBERS = 64
MAX_URL_BODY = 16 * 1024  # a JSON body naming a state file's URL is at most this long
_CANONICAL_HEAD = re.compile(rb'\{"checksum":\{"algorithm":"sha256","value":"([0-9a-f]{64})"\},')
_WS = re.compile(r"[ \t\n\r]*")
_LISTS = ("people", "faces")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_state", f"not a valid state file: {message}")


def _inflate(data: bytes, limit: int) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)  # zlib runs without the GIL
    except zlib.error as exc:
        raise _invalid(f"broken gzip data ({exc})") from None
    if len(out) > limit:
        raise _invalid(f"it unpacks to more than {limit} bytes")
    if not inflater.eof:
        raise _invalid("the gzip data is truncated")
    return out


def _verify_raw_checksum(raw: bytes) -> bool:
    """True when ``raw`` is in the canonical layout this service exports and its checksum
    matches, hashed over the raw bytes without parsing anything. False otherwise: the document
    is then parsed (within the reader's bounds) and its canonical form checked, which also
    accepts the earlier layout and files re-serialised differently (escaped non-ASCII...)."""
    head = _CANONICAL_HEAD.match(raw)
    if head is None:
        return False
    body = raw[head.end() :].rstrip(b" \t\r\n")
    if not body.endswith(b"}"):
        raise _invalid("not JSON or truncated (it does not end with '}')")
    return hashlib.sha256(b"{" + body).hexdigest() == head.group(1).decode()


def _number(value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise _invalid(f"{where} must be a finite number between {low} and {high}")
    return float(value)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _canonical_item(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass
class _PendingFace:
    id: int
    person_id: str
    image_sha256: str
    box: tuple[float, float, float, float]
    detection_prob: float
    created_at: float
    raw_embedding: bytes
    where: str
    thumbnail: bytes | None = None


class _Reader:
    """Reads a state document one top-level member and one list item at a time."""

    def __init__(self, text: str, hashing: bool) -> None:
        self.text = text
        self.pos = 0
        self.decoder = json.JSONDecoder(parse_constant=_reject_constant)
        self.hashing = hashing  # keep the canonical form of the lists for the checksum
        self.members: dict[str, Any] = {}
        self.canonical_lists: dict[str, bytearray] = {}
        self.people: list[tuple[str, str, float]] = []
        self.faces: list[_PendingFace] = []
        self.error: ApiError | None = None  # first invalid item: reported after format, version, checksum and model
        self._person_ids: set[str] = set()
        self._face_ids: set[int] = set()
        self._images: set[tuple[str, str]] = set()

    # -- tokens
    def _skip(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def _take(self, char: str) -> bool:
        self._skip()
        if self.text.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def _value(self) -> Any:
        """One JSON value; at most MAX_ITEM_CHARS characters."""
        self._skip()
        try:
            value, end = self.decoder.raw_decode(self.text, self.pos)
        except (ValueError, RecursionError) as exc:
            raise _invalid(f"not JSON or truncated ({exc})") from None
        if end - self.pos > MAX_ITEM_CHARS:
            raise _invalid(f"an item is longer than {MAX_ITEM_CHARS} characters")
        self.pos = end
        return value

    # -- document
    def read(self) -> None:
        # every item is an object: a cheap upper bound on their number before reading any
        if self.text.count("{") > MAX_ITEMS + MAX_MEMBERS:
            raise _invalid(f"it holds more than {MAX_ITEMS} people and faces")
        if not self._take("{"):
            raise _invalid("not a JSON object")
        if not self._take("}"):
            while True:
                key = self._value()
                if not isinstance(key, str) or not self._take(":"):
                    raise _invalid("not JSON or truncated (expected a member name and ':')")
                if key in self.members or key in self.canonical_lists:
                    raise _invalid(f"member {key!r} appears twice")
                if len(self.members) + len(self.canonical_lists) >= MAX_MEMBERS:
                    raise _invalid(f"more than {MAX_MEMBERS} members")
                self._skip()
                if key in _LISTS and self.text.startswith("[", self.pos):
                    self._list(key)
                else:
                    self.members[key] = self._value()
                if self._take("}"):
                    break
                if not self._take(","):
                    raise _invalid("not JSON or truncated (expected ',' or '}')")
        self._skip()
        if self.pos != len(self.text):
            raise _invalid("extra data after the JSON object")

    def _list(self, key: str) -> None:
        self.pos += 1  # "["
        canonical = self.canonical_lists[key] = bytearray(b"[")
        handle = self._person if key == "people" else self._face
        index = 0
        if not self._take("]"):
            while True:
                item = self._value()
                if self.hashing:
                    if index:
                        canonical += b","
                    try:
                        canonical += _canonical_item(item)
                    except ValueError as exc:
                        raise _invalid(str(exc)) from None
                if self.error is None:
                    try:
                        handle(item, f"{key}[{index}]")
                    except ApiError as exc:
                        self.error = exc
                index += 1
                if self._take("]"):
                    break
                if not self._take(","):
                    raise _invalid(f"not JSON or truncated (expected ',' or ']' in {key!r})")
        canonical += b"]"

    def checksum(self) -> str:
        """sha256 of the canonical document without "checksum", from the parts read."""
        digest = hashlib.sha256(b"{")
        keys = sorted(k for k in (*self.members, *self.canonical_lists) if k != "checksum")
        for i, key in enumerate(keys):
            digest.update((b"," if i else b"") + _canonical_item(key) + b":")
            if key in self.canonical_lists:
                digest.update(self.canonical_lists[key])
            else:
                digest.update(_canonical_item(self.members[key]))
        digest.update(b"}")
        return digest.hexdigest()

    # -- items
    def _person(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object")
        try:
            person_id, name = clean_facebox_id(item.get("id")), clean_name(item.get("name"))
        except ApiError as exc:
            raise _invalid(f"{where}: {exc.message}") from None
        if name != item.get("name"):
            raise _invalid(f"{where}.name has surrounding spaces")
        if person_id in self._person_ids:
            raise _invalid(f"{where}: person id {person_id!r} appears twice")
        self._person_ids.add(person_id)
        self.people.append((person_id, name, _number(item.get("created_at"), f"{where}.created_at", 0)))

    def _face(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object")
        face_id = item.get("id")
        if isinstance(face_id, bool) or not isinstance(face_id, int) or not 0 < face_id < 2**62 or face_id in self._face_ids:
            raise _invalid(f"{where}.id must be a unique positive integer")
        self._face_ids.add(face_id)
        person_id = item.get("person_id")
        if not isinstance(person_id, str):
            raise _invalid(f"{where}.person_id {person_id!r} is not among 'people'")
        sha = item.get("image_sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise _invalid(f"{where}.image_sha256 must be 64 lowercase hex digits")
        if (person_id, sha) in self._images:
            raise _invalid(f"{where}: the same image appears twice for person {person_id!r}")
        self._images.add((person_id, sha))
        box = item.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise _invalid(f"{where}.box must be [x1, y1, x2, y2]")
        x1, y1, x2, y2 = (_number(v, f"{where}.box") for v in box)
        if x2 < x1 or y2 < y1:
            raise _invalid(f"{where}.box must have x2 >= x1 and y2 >= y1")
        value = item.get("embedding")
        if not isinstance(value, str):
            raise _invalid(f"{where}.embedding must be a base64 string")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"{where}.embedding is not valid base64") from None
        thumbnail = item.get("thumbnail")
        if thumbnail is not None:
            try:
                thumbnail = base64.b64decode(thumbnail, validate=True) if isinstance(thumbnail, str) else b""
            except (binascii.Error, ValueError):
                thumbnail = b""
            if not valid_jpeg(thumbnail):
                raise _invalid(f"{where}.thumbnail must be a base64 JPEG of at most 64 KiB")
        self.faces.append(
            _PendingFace(
                id=face_id,
                person_id=person_id,
                image_sha256=sha,
                box=(x1, y1, x2, y2),
                detection_prob=_number(item.get("detection_prob"), f"{where}.detection_prob", 0, 1),
                created_at=_number(item.get("created_at"), f"{where}.created_at", 0),
                raw_embedding=raw,
                where=where,
                thumbnail=thumbnail,
            )
        )


def parse_state(data: bytes, gallery: Gallery, max_bytes: int) -> ParsedState:
    """Validate a state file completely; ApiError (400 invalid_state, state_checksum_mismatch,
    unsupported_state_version; 409 model_mismatch) on anything wrong."""
    if not data:
        raise ApiError(400, "missing_state", "send the state file as multipart 'file' or as the request body")
    raw = _inflate(data, max_bytes * MAX_INFLATE_RATIO)
    verified = _verify_raw_checksum(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"not UTF-8 JSON ({exc})") from None
    del raw
    reader = _Reader(text, hashing=not verified)
    reader.read()
    del text
    doc = reader.members
    if doc.get("format") != FORMAT:
        raise _invalid(f"'format' must be {FORMAT!r}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise ApiError(400, "unsupported_state_version", f"state version {doc.get('version')!r} is not supported (only {VERSION})")
    declared = doc.get("checksum")
    if not isinstance(declared, dict) or declared.get("algorithm") != "sha256" or not isinstance(declared.get("value"), str):
        raise _invalid("'checksum' must be {'algorithm': 'sha256', 'value': hex}")
    if not verified:
        try:
            actual = reader.checksum()
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        if declared["value"].lower() != actual:
            raise ApiError(400, "state_checksum_mismatch", "the state file's checksum does not match its content (changed or damaged)")
    model = doc.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("id"), str) or isinstance(model.get("dim"), bool):
        raise _invalid("'model' must be {'id': str, 'dim': int}")
    if model["id"] != gallery.model_id or model.get("dim") != gallery.dim:
        raise ApiError(
            409,
            "model_mismatch",
            f"the state holds {model['id']!r} ({model.get('dim')}-D) embeddings; this service runs {gallery.model_id!r} ({gallery.dim}-D)",
        )
    pipeline = model.get("pipeline") or LEGACY_PIPELINES.get(model["id"], LEGACY_PIPELINE)  # files from before it was recorded
    if pipeline != gallery.pipeline:
        raise ApiError(
            409,
            "model_mismatch",
            f"the state holds {model['id']} embeddings from the pipeline {pipeline!r}; this service runs {gallery.pipeline!r}, "
            f"whose vectors are not comparable (start a service with {pipeline_settings(pipeline)} to use this file)",
        )
    if doc.get("embedding_encoding") != EMBEDDING_ENCODING:
        raise _invalid(f"'embedding_encoding' must be {EMBEDDING_ENCODING!r}")
    if set(_LISTS) - set(reader.canonical_lists):
        raise _invalid("'people' and 'faces' must be lists")
    if reader.error is not None:
        raise reader.error
    return ParsedState(reader.people, _faces(reader.faces, {p[0] for p in reader.people}, gallery.dim))


def _faces(pending: list[_PendingFace], person_ids: set[str], dim: int) -> list[StoredFace]:
    """Embeddings checked all at once (right size, finite, unit length), people known."""
    for face in pending:
        if face.person_id not in person_ids:
            raise _invalid(f"{face.where}.person_id {face.person_id!r} is not among 'people'")
        if len(face.raw_embedding) != dim * 4:
            raise _invalid(f"{face.where}.embedding must hold {dim} float32 values, not {len(face.raw_embedding) / 4:g}")
    vectors = np.frombuffer(b"".join(f.raw_embedding for f in pending), dtype="<f4").astype(np.float32).reshape(len(pending), dim)
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0), axis=1)
    for i in np.flatnonzero(~finite | (np.abs(norms - 1.0) > 1e-3)):
        where = pending[int(i)].where
        if not finite[i]:
            raise _invalid(f"{where}.embedding holds NaN or infinite values")
        raise _invalid(f"{where}.embedding is not unit length (norm {norms[i]:.4f})")
    return [
        StoredFace(
            id=f.id,
            person_id=f.person_id,
            embedding=vectors[i],
            image_sha256=f.image_sha256,
            box=f.box,
            detection_prob=f.detection_prob,
            created_at=f.created_at,
            thumbnail=f.thumbnail,
        )
        for i, f in enumerate(pending)
    ]


def import_state(gallery: Gallery, data: bytes, *, mode: str, max_bytes: int, thumbnails: bool = True) -> dict[str, Any]:
    """Validate and load a state file; ``thumbnails`` False drops the file's face thumbnails
    (FEWFACE_THUMBNAILS=false: none stored)."""
    parsed = parse_state(data, gallery, max_bytes)
    if not thumbnails:
        parsed = ParsedState(parsed.people, [dataclasses.replace(f, thumbnail=None) for f in parsed.faces])
    people, faces = gallery.import_snapshot(parsed.people, parsed.faces, replace=mode == "replace")
    total_people, total_faces = gallery.counts()
    log.info("state imported (%s): %d people, %d face examples written", mode, people, faces)
    return {"mode": mode, "imported": {"people": people, "faces": faces}, "total": {"people": total_people, "faces": total_faces}}


def read_upload(req: Request) -> bytes:
    """The state file of a request: multipart ``file``, a ``url`` (form or JSON object with
    ``url`` and no ``format``), or the raw body (JSON or gzip)."""
    mimetype = req.mimetype or ""
    if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return parse_request(req, ["file"]).one_image("file", "'file' (the state file)")
    body = req.get_data(cache=True)
    if (mimetype == "application/json" or mimetype.endswith("+json")) and len(body) <= MAX_URL_BODY:
        # only a small body can be {"url": ...}; a state file is never parsed whole here
        try:
            head = req.get_json(silent=True)
        except RecursionError:  # absurdly deep nesting: not a state file either
            head = None
        if isinstance(head, dict) and "url" in head and "format" not in head:
            return parse_request(req, ["file"]).one_image("file", "'url'")
    return body


def generator() -> str:
    return f"fewface {current_app.config.get('FEWFACE_VERSION', '?')}"


def state_response(gallery: Gallery, compress: bool) -> Response:
    doc = build_state(gallery, generator(), thumbnails=current_app.extensions["fewface"].settings.thumbnails)
    text = canonical(doc)  # keys sorted, "checksum" first: import checks it over the raw bytes before parsing
    body = gzip.compress(text, mtime=0) if compress else text
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(doc["exported_at"]))
    name = f"fewface-state-{gallery.model_id}-{stamp}.json" + (".gz" if compress else "")
    response = Response(body, mimetype="application/gzip" if compress else "application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    # Rows that do not decode are left out of the file, never silently (service/store/gallery.py).
    skipped_people, skipped_faces = gallery.undecodable()
    response.headers["X-Fewface-Skipped-People"] = str(len(skipped_people))
    response.headers["X-Fewface-Skipped-Faces"] = str(len(skipped_faces))
    return response


def _gallery() -> Gallery:
    return current_recognizer().gallery  # the request's collection's (service/http/collections.py)


@bp.get("/v1/state")
def export_state() -> ResponseReturnValue:
    compress = choice_param(dict(request.args), "compress", ["none", "gzip"], "none") == "gzip"
    return state_response(_gallery(), compress)


@bp.post("/v1/state")
def upload_state() -> ResponseReturnValue:
    params = dict(request.args)
    if request.mimetype == "multipart/form-data":
        params.update(request.form.items())
    mode = choice_param(params, "mode", ["replace", "merge"], "replace")
    data = read_upload(request)
    settings = current_recognizer().settings
    summary = import_state(_gallery(), data, mode=mode, max_bytes=settings.max_upload_bytes, thumbnails=settings.thumbnails)
    return jsonify({"ok": True, **summary})

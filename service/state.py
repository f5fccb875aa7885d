"""Portable gallery state: export to, and import from, one versioned JSON file (optionally gzipped).

Nothing in a state file can execute: it is plain JSON; embeddings are base64 of little-endian
float32. A sha256 checksum over the canonical content catches tampering and truncation. Import
checks everything before it touches the gallery, then writes in one SQLite transaction and
rebuilds the FAISS index after commit (service/gallery.py ``import_snapshot``).

Layout (format ``fewface-state``, version 1)::

    {"format": "fewface-state", "version": 1, "generator": "fewface 0.1.0", "exported_at": 1.7e9,
     "model": {"id": "dlib-resnet-v1", "dim": 128}, "embedding_encoding": "base64-float32-le",
     "people": [{"id": "alice", "name": "Alice", "created_at": 1.7e9}],
     "faces": [{"id": 1, "person_id": "alice", "box": [x1, y1, x2, y2], "detection_prob": 0.99,
                "image_sha256": "<64 hex>", "created_at": 1.7e9, "embedding": "<base64>"}],
     "checksum": {"algorithm": "sha256", "value": "<hex>"}}

The checksum is sha256 over ``canonical(document without "checksum")``: UTF-8 JSON, keys sorted,
separators ``,`` and ``:``, non-ASCII characters kept.
"""

from __future__ import annotations

import base64
import binascii
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
from service.gallery import LEGACY_PIPELINE, LEGACY_PIPELINES, Gallery, StoredFace, pipeline_settings
from service.inputs import choice_param, clean_facebox_id, clean_name, parse_request

log = logging.getLogger(__name__)

FORMAT = "fewface-state"
VERSION = 1
EMBEDDING_ENCODING = "base64-float32-le"
MAX_INFLATE_RATIO = 8  # a gzipped state may unpack to at most this many times the upload limit
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


def build_state(gallery: Gallery, generator: str) -> dict[str, Any]:
    people, faces = gallery.export_snapshot()
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
            }
            for f in faces
        ],
    }
    doc["checksum"] = {"algorithm": "sha256", "value": checksum(doc)}
    return doc


# -- import ---------------------------------------------------------------------------------
def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_state", f"not a valid state file: {message}")


def _inflate(data: bytes, limit: int) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise _invalid(f"broken gzip data ({exc})") from None
    if len(out) > limit:
        raise _invalid(f"it unpacks to more than {limit} bytes")
    if not inflater.eof:
        raise _invalid("the gzip data is truncated")
    return out


def _number(value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise _invalid(f"{where} must be a finite number between {low} and {high}")
    return float(value)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def parse_state(data: bytes, gallery: Gallery, max_bytes: int) -> ParsedState:
    """Validate a state file completely; ApiError (400 invalid_state, state_checksum_mismatch,
    unsupported_state_version; 409 model_mismatch) on anything wrong."""
    if not data:
        raise ApiError(400, "missing_state", "send the state file as multipart 'file' or as the request body")
    text = _inflate(data, max_bytes * MAX_INFLATE_RATIO)
    try:
        doc = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _invalid(f"not JSON or truncated ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _invalid(f"'format' must be {FORMAT!r}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise ApiError(400, "unsupported_state_version", f"state version {doc.get('version')!r} is not supported (only {VERSION})")
    declared = doc.get("checksum")
    if not isinstance(declared, dict) or declared.get("algorithm") != "sha256" or not isinstance(declared.get("value"), str):
        raise _invalid("'checksum' must be {'algorithm': 'sha256', 'value': hex}")
    try:
        actual = checksum(doc)
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
    people_in, faces_in = doc.get("people"), doc.get("faces")
    if not isinstance(people_in, list) or not isinstance(faces_in, list):
        raise _invalid("'people' and 'faces' must be lists")
    people = _people(people_in)
    return ParsedState(people, _faces(faces_in, {p[0] for p in people}, gallery.dim))


def _people(items: list[Any]) -> list[tuple[str, str, float]]:
    people: list[tuple[str, str, float]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"people[{i}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object")
        try:
            person_id, name = clean_facebox_id(item.get("id")), clean_name(item.get("name"))
        except ApiError as exc:
            raise _invalid(f"{where}: {exc.message}") from None
        if name != item.get("name"):
            raise _invalid(f"{where}.name has surrounding spaces")
        if person_id in seen:
            raise _invalid(f"{where}: person id {person_id!r} appears twice")
        seen.add(person_id)
        people.append((person_id, name, _number(item.get("created_at"), f"{where}.created_at", 0)))
    return people


def _faces(items: list[Any], person_ids: set[str], dim: int) -> list[StoredFace]:
    faces: list[StoredFace] = []
    ids: set[int] = set()
    images: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        where = f"faces[{i}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object")
        face_id = item.get("id")
        if isinstance(face_id, bool) or not isinstance(face_id, int) or not 0 < face_id < 2**62 or face_id in ids:
            raise _invalid(f"{where}.id must be a unique positive integer")
        ids.add(face_id)
        person_id = item.get("person_id")
        if person_id not in person_ids:
            raise _invalid(f"{where}.person_id {person_id!r} is not among 'people'")
        sha = item.get("image_sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise _invalid(f"{where}.image_sha256 must be 64 lowercase hex digits")
        if (person_id, sha) in images:
            raise _invalid(f"{where}: the same image appears twice for person {person_id!r}")
        images.add((person_id, sha))
        box = item.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise _invalid(f"{where}.box must be [x1, y1, x2, y2]")
        x1, y1, x2, y2 = (_number(v, f"{where}.box") for v in box)
        if x2 < x1 or y2 < y1:
            raise _invalid(f"{where}.box must have x2 >= x1 and y2 >= y1")
        faces.append(
            StoredFace(
                id=face_id,
                person_id=person_id,
                embedding=_embedding(item.get("embedding"), dim, f"{where}.embedding"),
                image_sha256=sha,
                box=(x1, y1, x2, y2),
                detection_prob=_number(item.get("detection_prob"), f"{where}.detection_prob", 0, 1),
                created_at=_number(item.get("created_at"), f"{where}.created_at", 0),
            )
        )
    return faces


def _embedding(value: Any, dim: int, where: str) -> np.ndarray:
    if not isinstance(value, str):
        raise _invalid(f"{where} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where} is not valid base64") from None
    if len(raw) != dim * 4:
        raise _invalid(f"{where} must hold {dim} float32 values, not {len(raw) / 4:g}")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise _invalid(f"{where} holds NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > 1e-3:
        raise _invalid(f"{where} is not unit length (norm {norm:.4f})")
    return vector


def import_state(gallery: Gallery, data: bytes, *, mode: str, max_bytes: int) -> dict[str, Any]:
    parsed = parse_state(data, gallery, max_bytes)
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
    if mimetype == "application/json" or mimetype.endswith("+json"):
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
    doc = build_state(gallery, generator())
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    body = gzip.compress(text, mtime=0) if compress else text
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(doc["exported_at"]))
    name = f"fewface-state-{gallery.model_id}-{stamp}.json" + (".gz" if compress else "")
    response = Response(body, mimetype="application/gzip" if compress else "application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    # Rows that do not decode are left out of the file, never silently (service/gallery.py).
    skipped_people, skipped_faces = gallery.undecodable()
    response.headers["X-Fewface-Skipped-People"] = str(len(skipped_people))
    response.headers["X-Fewface-Skipped-Faces"] = str(len(skipped_faces))
    return response


def _gallery() -> Gallery:
    return current_app.extensions["fewface"].gallery


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
    max_bytes = current_app.extensions["fewface"].settings.max_upload_bytes
    return jsonify({"ok": True, **import_state(_gallery(), data, mode=mode, max_bytes=max_bytes)})

"""Facebox-compatible routes (Machine Box's discontinued Facebox HTTP API), on the same pipeline
and gallery as the native API, answering in the shapes the official Go SDK
(``github.com/machinebox/sdk-go/facebox``) decodes (tests/test_facebox_sdk.py, one test per SDK
method).

Mapping onto Fewface's people model: a Facebox teach ``id`` is a Fewface person id (taught
again with the same id, the person gains an example); Facebox ids may hold '/' (file paths,
URLs). Without an ``id`` the person is found by its exact name (``person_id_for_name``). Check and
similar answer with the person's id and name. Every answer carries ``success``: true on 2xx,
false on every error under ``/facebox/`` and ``/info`` (with Fewface's ``ok``, ``status``,
``code`` and ``error``), which is the rule the SDK applies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.routing import PathConverter

from models.types import DetectedFace
from service.errors import ApiError
from service.http.api import decode, recognizer, threshold_param
from service.http.inputs import RequestInput, clean_facebox_id, clean_name, decode_base64, int_param, parse_request
from service.imaging import DecodedImage
from service.metrics import stage
from service.state import import_state, read_upload, state_response
from service.store.gallery import Gallery, Match, NewFace, Person, PersonNotFoundError
from service.thumbnails import face_jpeg

bp = Blueprint("facebox", __name__)

API_VERSION = 1  # Facebox clients read /info's version as an integer
SIMILARS_DEFAULT_LIMIT = 5  # what the Go SDK's Similars* send when given no limit
_TRUE = ("1", "true", "yes", "on")
_UNIT_TOLERANCE = 1e-3  # faceprints are unit vectors; float32 rounding moves the norm by ~1e-7
_by_name_lock = threading.Lock()  # one teach-by-name at a time decides which person a name is


class FaceboxIdConverter(PathConverter):
    """``/facebox/teach/<id>``: the rest of the path, '/' included, leading '/' too (the Go SDK
    appends the id to the path unescaped, so ``photos/2019/anna.jpg`` or a URL arrive as is)."""

    regex = ".+"
    part_isolating = False  # spans '/' (Werkzeug would infer True from a regex without '/')


@bp.record_once
def _register_converter(state: Any) -> None:  # runs before this blueprint's rules are added
    state.app.url_map.converters["facebox_id"] = FaceboxIdConverter


_COLLECTION_FACEBOX = re.compile(r"/v1/collections/[^/]+/(?:info|facebox/.*)")  # a collection's Facebox base (service/http/collections.py)


def _is_facebox_path(path: str) -> bool:
    return path == "/info" or path.startswith("/facebox/") or _COLLECTION_FACEBOX.fullmatch(path) is not None


@bp.after_app_request
def _facebox_errors(response: Response) -> Response:
    """Errors under /facebox/ and /info (routing, auth, body size and Flask's own included) also
    carry ``"success": false``, which is what the SDK tests; unknown routes name themselves."""
    if response.status_code < 400 or not _is_facebox_path(request.path) or not response.is_json:
        return response
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or "success" in body:
        return response
    if body.get("code") == "not_found":
        body["error"] = f"no Facebox route {request.method} {request.path} (see docs/facebox.md)"
    response.set_data(json.dumps({"success": False, **body}, ensure_ascii=False))
    return response


def name_slug(name: str) -> str:
    """The readable part of an id derived from a name ("John Lennon" -> "john-lennon"; names
    without letters or digits -> "person-<12 hex of sha256>")."""
    slug = re.sub(r"[\W_]+", "-", name.casefold()).strip("-")[:96]
    return slug or "person-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


def _name_candidates(name: str) -> list[str]:
    """Person ids a name may live under: its slug, then slug + 8 hex of the name's sha256 (for a
    different name with the same slug, e.g. "Mary-Ann Smith" and "MARY ANN SMITH")."""
    slug = name_slug(name)
    return [slug, f"{slug}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"]


def person_id_for_name(gallery: Gallery, name: str) -> str:
    """The person a teach by ``name`` alone adds to: the candidate person already called exactly
    ``name``, else the first free candidate id. Names are never merged: two names that differ
    in any character (case and punctuation included) are two people. 409 ``name_conflict``
    when every candidate id is taken by someone else (only after renames). Call under
    ``_by_name_lock`` together with the write."""
    free = None
    for person_id in _name_candidates(name):
        try:
            person, _ = gallery.get_person(person_id)
        except PersonNotFoundError:
            free = free or person_id
            continue
        if person.name == name:
            return person_id
    if free is None:
        raise ApiError(
            409,
            "name_conflict",
            f"the ids for name {name!r} ({', '.join(_name_candidates(name))}) belong to people with other names; send an explicit 'id'",
        )
    return free


def _read() -> tuple[RequestInput, list[bytes]]:
    """Params and images from any form a Facebox client sends: multipart ``file``; form or JSON
    ``url``; form or JSON ``base64``; or a raw image body."""
    data = parse_request(request, ["file", "base64"])
    images = data.image_list("file") + data.image_list("base64")
    if "base64" in data.params:  # form-encoded base64 (the Facebox SDKs send it so)
        value = data.params.pop("base64")
        if value not in (None, ""):
            images.append(decode_base64(value, "base64"))
    return data, images


def _one_image(images: list[bytes]) -> DecodedImage:
    if len(images) != 1:
        raise ApiError(400, "missing_image" if not images else "too_many_images", "send exactly one image: file, url or base64")
    return decode(images[0])


def _flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    return value is True or (isinstance(value, str) and value.lower() in _TRUE)


def _rect(face: DetectedFace) -> dict[str, int]:
    x1, y1, x2, y2 = face.box
    return {"top": round(y1), "left": round(x1), "width": round(x2 - x1), "height": round(y2 - y1)}


def _confidence(similarity: float, gallery_faces: int | None = None) -> float:
    """Facebox's ``confidence``: the calibrated probability that the match is right for a gallery of
    ``gallery_faces`` (default: the current gallery; service/matching.py), or the clamped cosine
    similarity where the model's scores were not measured."""
    r = recognizer()
    calibrated = r.confidence(similarity, r.gallery.face_count() if gallery_faces is None else gallery_faces)
    return calibrated if calibrated is not None else round(min(1.0, max(0.0, similarity)), 5)


def _faceprint(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _from_faceprint(value: Any, key: str = "faceprint") -> np.ndarray:
    """A faceprint of this service's model: base64 of ``dim`` little-endian float32 of unit length."""
    raw = decode_base64(value, key)
    dim = recognizer().engine.embedder.dim
    wrong = f"{key!r} is not a faceprint of this service's model ({dim} float32 values of unit length)"
    if len(raw) != dim * 4:
        raise ApiError(400, "invalid_faceprint", wrong)
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float64)  # float64: the norm of huge float32 values does not overflow
    if not np.all(np.isfinite(vector)):
        raise ApiError(400, "invalid_faceprint", wrong)
    norm = float(np.linalg.norm(vector))
    if not abs(norm - 1.0) <= _UNIT_TOLERANCE:
        raise ApiError(400, "invalid_faceprint", wrong)
    return (vector / norm).astype(np.float32)


def _faceprint_list(value: Any) -> np.ndarray:
    limit = recognizer().settings.max_faces
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise ApiError(400, "invalid_faceprint", f"'faceprints' must be a list of 1 to {limit} faceprints")
    return np.stack([_from_faceprint(p, "faceprints") for p in value])


def _matched(best: Match | None, threshold: float) -> dict[str, Any]:
    if best is None or best.similarity < threshold:
        return {"matched": False, "confidence": 0.0}
    return {"id": best.person_id, "name": best.name, "matched": True, "confidence": _confidence(best.similarity)}


def _check_faceprints(prints: Any, threshold: float) -> list[dict[str, Any]]:
    """One Face per faceprint, in input order."""
    vectors = _faceprint_list(prints)
    with stage("search"):
        results = recognizer().gallery.search(vectors, 1)
    return [_matched(m[0] if m else None, threshold) for m in results]


def _threshold(data: RequestInput) -> float:
    return recognizer().identify_threshold(threshold_param(data))


# -- routes ---------------------------------------------------------------------------------
@bp.get("/info")
def info() -> ResponseReturnValue:
    r = recognizer()
    version = current_app.config.get("FEWFACE_VERSION", "?")
    build = f"fewface-{version} {r.engine.model_id}"
    return jsonify({"success": True, "name": "facebox", "version": API_VERSION, "build": build, "status": "ready"})


@bp.post("/facebox/check")
def check() -> ResponseReturnValue:
    r = recognizer()
    data, images = _read()
    threshold = _threshold(data)
    prints = data.params.get("faceprints")
    if prints not in (None, []) and not images:
        faces = _check_faceprints(prints, threshold)
        return jsonify({"success": True, "facesCount": len(faces), "faces": faces})
    with_print = _flag(data.params, "faceprint")
    faces = []
    for face in r.identify(_one_image(images), threshold=threshold, top_k=1):
        out: dict[str, Any] = {"rect": _rect(face.face), **_matched(face.best, threshold)}
        if with_print:
            out["faceprint"] = _faceprint(face.embedding)
        faces.append(out)
    return jsonify({"success": True, "facesCount": len(faces), "faces": faces})


@bp.post("/facebox/faceprint/check")
def check_faceprints() -> ResponseReturnValue:
    """JSON ``{"faceprints": [...]}`` -> ``{"success", "faceprintsCount", "faceprints": [Face]}``
    in input order (the Go SDK's CheckFaceprints)."""
    data = parse_request(request, [])
    faces = _check_faceprints(data.params.get("faceprints"), _threshold(data))
    return jsonify({"success": True, "faceprintsCount": len(faces), "faceprints": faces})


def _single_face(decoded: DecodedImage) -> tuple[np.ndarray, DetectedFace]:
    faces = recognizer().engine.analyze(decoded, recognizer().settings.max_faces)
    if not faces:
        raise ApiError(422, "no_face_detected", "no face was found in the image")
    if len(faces) > 1:
        raise ApiError(
            422,
            "multiple_faces",
            f"{len(faces)} faces were found in the image; a Facebox teach photo must show exactly one face (crop it to the person)",
        )
    recognizer().check_quality(faces[0], "image")
    return faces[0].embedding, faces[0].face


def _add(person_id: str | None, name: str | None, face: NewFace) -> tuple[Person, bool]:
    gallery = recognizer().gallery
    if person_id is not None:
        person, _, created = gallery.add_faces(person_id, name, [face])
        return person, created
    if name is None:
        raise ApiError(400, "invalid_name", "send 'name' (and optionally 'id')")
    with _by_name_lock:
        person, _, created = gallery.add_faces(person_id_for_name(gallery, name), name, [face])
    return person, created


@bp.post("/facebox/teach")
def teach() -> ResponseReturnValue:
    data, images = _read()
    name = clean_name(data.params["name"]) if data.params.get("name") not in (None, "") else None
    person_id = clean_facebox_id(data.params["id"]) if data.params.get("id") not in (None, "") else None
    faceprint = data.params.get("faceprint")
    if faceprint not in (None, "") and not images:
        vector = _from_faceprint(faceprint)
        digest = hashlib.sha256(vector.astype("<f4").tobytes()).hexdigest()
        new = NewFace(vector, digest, (0.0, 0.0, 0.0, 0.0), 1.0)
    else:
        decoded = _one_image(images)
        embedding, face = _single_face(decoded)
        thumbnail = face_jpeg(decoded, face.box) if recognizer().settings.thumbnails else None
        new = NewFace(embedding, decoded.sha256, face.box, face.prob, thumbnail)
    person, created = _add(person_id, name, new)
    return jsonify({"success": True, "id": person.id, "name": person.name, "created": created})


@bp.delete("/facebox/teach/<facebox_id:facebox_id>")
def remove(facebox_id: str) -> ResponseReturnValue:
    try:
        recognizer().gallery.delete_person(facebox_id)
    except PersonNotFoundError:
        raise ApiError(404, "person_not_found", f"no face taught with id {facebox_id!r}") from None
    return jsonify({"success": True})


@bp.patch("/facebox/teach/<facebox_id:facebox_id>")
def rename(facebox_id: str) -> ResponseReturnValue:
    data = parse_request(request, [])
    if data.params.get("name") in (None, ""):
        raise ApiError(400, "invalid_name", "send the new name as 'name'")
    try:
        recognizer().gallery.rename(facebox_id, clean_name(data.params["name"]))
    except PersonNotFoundError:
        raise ApiError(404, "person_not_found", f"no face taught with id {facebox_id!r}") from None
    return jsonify({"success": True})


@bp.post("/facebox/rename")
def rename_all() -> ResponseReturnValue:
    data = parse_request(request, [])
    old, new = clean_name(data.params.get("from")), clean_name(data.params.get("to"))
    return jsonify({"success": True, "renamed": recognizer().gallery.rename_all(old, new)})


def _similar_json(matches: list[Match]) -> list[dict[str, Any]]:
    return [{"id": m.person_id, "name": m.name, "confidence": _confidence(m.similarity)} for m in matches]


def _similar_faces(data: RequestInput, images: list[bytes], limit: int) -> list[dict[str, Any]]:
    """``{"rect", "similar_faces"}`` for every face of the image, largest first."""
    threshold = threshold_param(data)
    faces = []
    for face in recognizer().identify(_one_image(images), top_k=limit):
        kept = [m for m in face.candidates if threshold is None or m.similarity >= threshold]
        faces.append({"rect": _rect(face.face), "similar_faces": _similar_json(kept)})
    return faces


@bp.route("/facebox/similar", methods=["GET", "POST"])
def similar() -> ResponseReturnValue:
    r = recognizer()
    data, images = (RequestInput(params=dict(request.args)), []) if request.method == "GET" else _read()
    limit = int_param(data.params, "limit", 1, 100) or r.settings.top_k
    threshold = threshold_param(data)
    facebox_id = data.params.get("id")
    if facebox_id not in (None, "") and not images:
        try:
            vectors = r.gallery.person_embeddings(str(facebox_id))
        except PersonNotFoundError:
            raise ApiError(404, "person_not_found", f"no face taught with id {facebox_id!r}") from None
        best: dict[str, Match] = {}
        for row in r.gallery.search(vectors, limit + 1) if len(vectors) else []:
            for m in row:
                if m.person_id != facebox_id and (m.person_id not in best or m.similarity > best[m.person_id].similarity):
                    best[m.person_id] = m
        found = sorted(best.values(), key=lambda m: m.similarity, reverse=True)
        found = [m for m in found if threshold is None or m.similarity >= threshold][:limit]
        return jsonify({"success": True, "similarCount": len(found), "similar": _similar_json(found)})
    faces = _similar_faces(data, images, limit)
    first = faces[0]["similar_faces"] if faces else []
    return jsonify({"success": True, "facesCount": len(faces), "faces": faces, "similarCount": len(first), "similar": first})


@bp.post("/facebox/similars")
def similars() -> ResponseReturnValue:
    """Nearest people of every face (the Go SDK's Similars, SimilarsURL, SimilarsBase64):
    ``{"success", "facesCount", "faces": [{"rect", "similar_faces": [{"id", "name", "confidence"}]}]}``."""
    data, images = _read()
    limit = int_param(data.params, "limit", 1, 100) or SIMILARS_DEFAULT_LIMIT
    faces = _similar_faces(data, images, limit)
    return jsonify({"success": True, "facesCount": len(faces), "faces": faces})


@bp.post("/facebox/faceprint/compare")
def compare_faceprints() -> ResponseReturnValue:
    data = parse_request(request, [])
    target = _from_faceprint(data.params.get("target"), "target")
    prints = data.params.get("faceprints")
    if not isinstance(prints, list) or len(prints) > 10_000:
        raise ApiError(400, "invalid_faceprint", "'faceprints' must be a list of faceprints")
    confidences = [_confidence(float(np.dot(target, _from_faceprint(p, "faceprints"))), 1) for p in prints]
    return jsonify({"success": True, "confidences": confidences})


@bp.get("/facebox/state")
def download_state() -> ResponseReturnValue:
    return state_response(recognizer().gallery, compress=False)


@bp.post("/facebox/state")
def upload_state() -> ResponseReturnValue:
    r = recognizer()
    summary = import_state(
        r.gallery, read_upload(request), mode="replace", max_bytes=r.settings.max_upload_bytes, thumbnails=r.settings.thumbnails
    )
    return jsonify({"success": True, "people": summary["total"]["people"], "faces": summary["total"]["faces"]})

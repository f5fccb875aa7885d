"""Facebox-compatible routes (Machine Box's discontinued Facebox HTTP API), on the same pipeline
and gallery as the native API.

Mapping onto Fewface's people model: a Facebox teach ``id`` is a Fewface person id (taught
again with the same id, the person gains an example); without an ``id`` the person id is derived
from ``name`` (``person_id_for``). ``name`` is the person's name. Check and similar answer with
the person's id and name. Success answers carry ``"success": true``; errors keep Fewface's one
error shape, which Facebox clients read as failed (no ``success``) with the message in ``error``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import numpy as np
from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from models.types import DetectedFace
from service.api import decode, recognizer, threshold_param
from service.errors import ApiError
from service.gallery import Match, NewFace, PersonNotFoundError
from service.imaging import DecodedImage
from service.inputs import RequestInput, clean_id, clean_name, decode_base64, int_param, parse_request
from service.state import import_state, read_upload, state_response

bp = Blueprint("facebox", __name__)

API_VERSION = 1  # Facebox clients read /info's version as an integer
_TRUE = ("1", "true", "yes", "on")


def person_id_for(facebox_id: Any, name: str | None) -> str:
    """The person id for a Facebox teach: ``id`` when given, else derived from ``name``
    ("John Lennon" -> "john-lennon"; names without letters or digits hash to "person-<12 hex>")."""
    if facebox_id not in (None, ""):
        return clean_id(facebox_id)
    if not name:
        raise ApiError(400, "invalid_name", "send 'name' (and optionally 'id')")
    slug = re.sub(r"[\W_]+", "-", name.casefold()).strip("-")[:96]
    return slug or "person-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


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


def _confidence(similarity: float) -> float:
    return round(min(1.0, max(0.0, similarity)), 5)


def _faceprint(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _from_faceprint(value: Any, key: str = "faceprint") -> np.ndarray:
    raw = decode_base64(value, key)
    dim = recognizer().engine.embedder.dim
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32) if len(raw) == dim * 4 else None
    if vector is None or not np.all(np.isfinite(vector)) or float(np.linalg.norm(vector)) == 0.0:
        raise ApiError(400, "invalid_faceprint", f"{key!r} is not a faceprint of this service's model ({dim} float32 values)")
    return vector / np.linalg.norm(vector)


def _matched(best: Match | None, threshold: float) -> dict[str, Any]:
    if best is None or best.similarity < threshold:
        return {"matched": False, "confidence": 0.0}
    return {"id": best.person_id, "name": best.name, "matched": True, "confidence": _confidence(best.similarity)}


def _threshold(data: RequestInput) -> float:
    return recognizer().identify_threshold(threshold_param(data))


# -- routes ---------------------------------------------------------------------------------
@bp.get("/info")
def info() -> ResponseReturnValue:
    r = recognizer()
    version = current_app.config.get("FEWFACE_VERSION", "?")
    return jsonify({"name": "facebox", "version": API_VERSION, "build": f"fewface-{version} {r.engine.model_id}", "status": "ready"})


@bp.post("/facebox/check")
def check() -> ResponseReturnValue:
    r = recognizer()
    data, images = _read()
    threshold = _threshold(data)
    prints = data.params.get("faceprints")
    if prints not in (None, []) and not images:
        if not isinstance(prints, list) or not prints or len(prints) > r.settings.max_faces:
            raise ApiError(400, "invalid_faceprint", f"'faceprints' must be a list of 1 to {r.settings.max_faces} faceprints")
        vectors = np.stack([_from_faceprint(p, "faceprints") for p in prints])
        results = r.gallery.search(vectors, 1)
        faces = [_matched(m[0] if m else None, threshold) for m in results]
        return jsonify({"success": True, "facesCount": len(faces), "faces": faces})
    with_print = _flag(data.params, "faceprint")
    faces = []
    for face in r.identify(_one_image(images), threshold=threshold, top_k=1):
        out: dict[str, Any] = {"rect": _rect(face.face), **_matched(face.best, threshold)}
        if with_print:
            out["faceprint"] = _faceprint(face.embedding)
        faces.append(out)
    return jsonify({"success": True, "facesCount": len(faces), "faces": faces})


@bp.post("/facebox/teach")
def teach() -> ResponseReturnValue:
    r = recognizer()
    data, images = _read()
    name = clean_name(data.params["name"]) if data.params.get("name") not in (None, "") else None
    person_id = person_id_for(data.params.get("id"), name)
    faceprint = data.params.get("faceprint")
    if faceprint not in (None, "") and not images:
        vector = _from_faceprint(faceprint)
        digest = hashlib.sha256(vector.astype("<f4").tobytes()).hexdigest()
        person, _, created = r.gallery.add_faces(person_id, name, [NewFace(vector, digest, (0.0, 0.0, 0.0, 0.0), 1.0)])
    else:
        person, _, created, _ = r.teach(person_id, name, [_one_image(images)])
    return jsonify({"success": True, "id": person.id, "name": person.name, "created": created})


@bp.delete("/facebox/teach/<facebox_id>")
def remove(facebox_id: str) -> ResponseReturnValue:
    try:
        recognizer().gallery.delete_person(facebox_id)
    except PersonNotFoundError:
        raise ApiError(404, "person_not_found", f"no face taught with id {facebox_id!r}") from None
    return jsonify({"success": True})


@bp.patch("/facebox/teach/<facebox_id>")
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
    faces = []
    for face in r.identify(_one_image(images), top_k=limit):
        kept = [m for m in face.candidates if threshold is None or m.similarity >= threshold]
        faces.append({"rect": _rect(face.face), "similar_faces": _similar_json(kept)})
    first = faces[0]["similar_faces"] if faces else []
    return jsonify({"success": True, "facesCount": len(faces), "faces": faces, "similarCount": len(first), "similar": first})


@bp.post("/facebox/faceprint/compare")
def compare_faceprints() -> ResponseReturnValue:
    data = parse_request(request, [])
    target = _from_faceprint(data.params.get("target"), "target")
    prints = data.params.get("faceprints")
    if not isinstance(prints, list) or len(prints) > 10_000:
        raise ApiError(400, "invalid_faceprint", "'faceprints' must be a list of faceprints")
    confidences = [_confidence(float(np.dot(target, _from_faceprint(p, "faceprints")))) for p in prints]
    return jsonify({"success": True, "confidences": confidences})


@bp.get("/facebox/state")
def download_state() -> ResponseReturnValue:
    return state_response(recognizer().gallery, compress=False)


@bp.post("/facebox/state")
def upload_state() -> ResponseReturnValue:
    r = recognizer()
    summary = import_state(r.gallery, read_upload(request), mode="replace", max_bytes=r.settings.max_upload_bytes)
    return jsonify({"success": True, "people": summary["total"]["people"], "faces": summary["total"]["faces"]})

"""Native HTTP API (/v1/...) plus health and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from models.quality import FaceQuality
from models.types import LANDMARK_NAMES, DetectedFace
from service.errors import ApiError
from service.facetokens import FaceCapture, FaceTokenExpiredError, FaceTokenNotFoundError, FaceTokens
from service.http.collections import current_collection_id, current_recognizer
from service.http.inputs import (
    RequestInput,
    choice_param,
    clean_id,
    clean_name,
    float_param,
    int_param,
    parse_request,
)
from service.imaging import DecodedImage, decode_image
from service.metrics import stage
from service.recognizer import AnalyzedFace, IdentifiedFace, Recognizer
from service.store.gallery import FaceNotFoundError, FaceRecord, Match, NewFace, Person, PersonNotFoundError
from service.thumbnails import face_jpeg

bp = Blueprint("api", __name__)


def recognizer() -> Recognizer:
    """The request's collection's Recognizer (``default`` unless the URL names one)."""
    return current_recognizer()


@stage("decode")
def decode(data: bytes) -> DecodedImage:
    s = recognizer().settings
    return decode_image(
        data,
        max_pixels=s.max_image_pixels,
        max_side=s.max_image_side,
        max_bytes=s.max_decode_bytes,
        max_jpeg_scans=s.max_jpeg_scans,
        timeout=s.decode_timeout,
        cancelled=request.environ.get("waitress.client_disconnected"),  # set by waitress (channel_request_lookahead > 0)
    )


# -- JSON shapes ---------------------------------------------------------------------------
def box_json(box: tuple[float, float, float, float]) -> dict[str, float]:
    x1, y1, x2, y2 = box
    return {"left": round(x1, 1), "top": round(y1, 1), "width": round(x2 - x1, 1), "height": round(y2 - y1, 1)}


def face_json(face: DetectedFace) -> dict[str, Any]:
    return {
        "box": box_json(face.box),
        "detection_prob": round(face.prob, 5),
        "landmarks": {n: [round(x, 1), round(y, 1)] for n, (x, y) in zip(LANDMARK_NAMES, face.landmarks, strict=True)},
    }


def match_json(m: Match, confidence: float | None = None) -> dict[str, Any]:
    out = {"person_id": m.person_id, "name": m.name, "similarity": round(m.similarity, 5), "face_id": m.face_id}
    return out if confidence is None else {**out, "confidence": confidence}


def quality_json(q: FaceQuality) -> dict[str, float]:
    return {
        "eye_distance": round(q.eye_distance, 1),
        "sharpness": round(q.sharpness, 4),
        "visible": round(q.visible, 3),
        "yaw": round(q.yaw, 3),
    }


def person_json(p: Person) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "created_at": p.created_at, "face_count": p.face_count}


def record_json(r: FaceRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "model": r.model_id,
        "image_sha256": r.image_sha256,
        "box": box_json(r.box),
        "detection_prob": round(r.detection_prob, 5),
        "created_at": r.created_at,
    }


def identified_json(f: IdentifiedFace, r: Recognizer, token: str | None = None) -> dict[str, Any]:
    best = f.best
    confidence = r.confidence(best.similarity, f.gallery_faces) if best is not None else None
    return {
        "face_token": token,
        **face_json(f.face),
        "quality": quality_json(f.quality),
        "matched": f.matched,
        "match": match_json(best, confidence) if best is not None and f.matched else None,
        "similarity": round(best.similarity, 5) if best is not None else None,
        "confidence": confidence,
        "candidates": [match_json(m, r.confidence(m.similarity, f.gallery_faces)) for m in f.candidates],
    }


def threshold_param(data: RequestInput) -> float | None:
    return float_param(data.params, "threshold", -1.0, 1.0)


# -- health --------------------------------------------------------------------------------
@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify({"ok": True, "status": "alive"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready when the database answers; the gallery's size only to authenticated callers
    (the route itself is open for probes)."""
    people, faces = recognizer().gallery.counts()  # touches SQLite: a failing store answers 503
    body: dict[str, Any] = {"ok": True, "status": "ready", "model": recognizer().engine.model_id}
    feed = current_app.extensions.get("fewface_feed")
    if feed is not None:  # a replica on PostgreSQL: how current its index is (service/store/feed.py)
        body["feed"] = feed.status()
    if current_app.extensions["fewface_auth"].authorized(request):
        body.update(people=people, faces=faces)
        if request.args.get("index") == "digest":  # replicas' consistency checks (tests/test_replicas.py)
            gallery = recognizer().gallery
            body["index"] = {"faces": gallery.face_count(), "ids_sha256": gallery.index_digest()}
    return jsonify(body)


@bp.get("/v1/info")
def info() -> ResponseReturnValue:
    r = recognizer()
    people, faces = r.gallery.counts()
    spec = r.engine.embedder.spec
    return jsonify(
        {
            "ok": True,
            "name": "fewface",
            "version": current_app.config["FEWFACE_VERSION"],
            "model": {"id": spec.model_id, "dim": spec.dim, "description": spec.description},
            "device": str(r.engine.embedder.device),
            "pipeline": r.engine.embedder.pipeline,
            "default_threshold": r.identify_threshold(),
            "match_rule": r.rule.describe(r.gallery.face_count()),
            "people": people,
            "faces": faces,
        }
    )


# -- teach ---------------------------------------------------------------------------------
@bp.post("/v1/people/<person_id>/faces")
def teach(person_id: str) -> ResponseReturnValue:
    person_id = clean_id(person_id)
    r = recognizer()
    data = parse_request(request, ["file", "base64"])
    blobs = data.image_list("file") + data.image_list("base64")
    if data.params.get("face_token") is not None:
        if blobs:
            raise ApiError(400, "invalid_parameter", "send either images or a face_token, not both")
        return teach_token(person_id, data)
    if not blobs:
        raise ApiError(400, "missing_image", "send the photo as multipart 'file', JSON 'base64' or a raw image body")
    if len(blobs) > r.settings.max_teach_images:
        raise ApiError(400, "too_many_images", f"at most {r.settings.max_teach_images} images per teach request")
    name = clean_name(data.params["name"]) if data.params.get("name") not in (None, "") else None
    pick = choice_param(data.params, "pick", ["one", "largest"], "one")
    quality = choice_param(data.params, "quality", ["on", "off"], "on")
    person, records, created, analyzed = r.teach(
        person_id, name, [decode(b) for b in blobs], pick_largest=pick == "largest", check_quality=quality == "on"
    )
    faces = [{**record_json(x), "quality": quality_json(a.quality)} for x, a in zip(records, analyzed, strict=True)]
    return jsonify({"ok": True, "created": created, "person": person_json(person), "faces": faces}), (201 if created else 200)


# -- face tokens: teach a face an identify answer found (service/facetokens.py) -------------
def face_tokens() -> FaceTokens:
    tokens = current_app.extensions.get("fewface_face_tokens")
    if tokens is None:
        s = recognizer().settings
        tokens = current_app.extensions.setdefault("fewface_face_tokens", FaceTokens(s.face_token_ttl, s.face_token_max))
    return tokens


def issue_tokens(faces: list[IdentifiedFace], decoded: DecodedImage) -> list[str | None]:
    """One token per identified face (None each when tokens are off)."""
    tokens = face_tokens()
    if not tokens.enabled:
        return [None] * len(faces)
    r = recognizer()
    model_id, pipeline, thumbnails = r.engine.model_id, r.engine.embedder.pipeline, r.settings.thumbnails
    collection = current_collection_id()
    return [
        tokens.issue(
            FaceCapture(
                f.face,
                f.embedding,
                f.quality,
                decoded.sha256,
                model_id,
                pipeline,
                face_jpeg(decoded, f.face.box) if thumbnails else None,
                collection,
            )
        )
        for f in faces
    ]


def teach_token(person_id: str, data: RequestInput) -> ResponseReturnValue:
    """``POST /v1/people/<id>/faces`` with ``face_token``: teach the face an identify answer
    found, with the same checks as a photo (quality gate unless quality=off)."""
    r = recognizer()
    token = data.params["face_token"]
    if not isinstance(token, str) or not token:
        raise ApiError(400, "invalid_parameter", "face_token must be the string an identify answer gave")
    name = clean_name(data.params["name"]) if data.params.get("name") not in (None, "") else None
    quality = choice_param(data.params, "quality", ["on", "off"], "on")
    try:
        capture = face_tokens().get(token)
        if capture.collection != current_collection_id():  # a token never opens another collection's faces
            raise FaceTokenNotFoundError(token)
    except FaceTokenExpiredError:
        raise ApiError(410, "face_token_expired", "this face token has expired: identify the photo again for a fresh one") from None
    except FaceTokenNotFoundError:
        raise ApiError(
            404, "face_token_not_found", "no such face token (never issued by this server, forgotten, or the server restarted)"
        ) from None
    if (capture.model_id, capture.pipeline) != (r.gallery.model_id, r.gallery.pipeline):
        raise ApiError(409, "model_mismatch", "the face token was made by another model or pipeline than this gallery's")
    analyzed = AnalyzedFace(capture.face, capture.embedding, capture.quality)
    if quality == "on":
        r.check_quality(analyzed, "identified photo")
    new = NewFace(capture.embedding, capture.image_sha256, capture.face.box, capture.face.prob, capture.thumbnail)
    person, records, created = r.gallery.add_faces(person_id, name, [new])
    faces = [{**record_json(x), "quality": quality_json(capture.quality)} for x in records]
    return jsonify({"ok": True, "created": created, "person": person_json(person), "faces": faces}), (201 if created else 200)


# -- identify / verify ---------------------------------------------------------------------
@bp.post("/v1/identify")
def identify() -> ResponseReturnValue:
    r = recognizer()
    data = parse_request(request, ["file", "base64"])
    blobs = data.image_list("file") + data.image_list("base64")
    if len(blobs) != 1:
        raise ApiError(400, "missing_image" if not blobs else "too_many_images", "send exactly one image")
    threshold = threshold_param(data)
    top_k = int_param(data.params, "top_k", 1, 100)
    decoded = decode(blobs[0])
    faces = r.identify(decoded, threshold=threshold, top_k=top_k)
    tokens = issue_tokens(faces, decoded)
    return jsonify(
        {
            "ok": True,
            "model": r.engine.model_id,
            "threshold": faces[0].threshold if faces else r.identify_threshold(threshold),
            "image": {"width": decoded.width, "height": decoded.height, "sha256": decoded.sha256},
            "face_count": len(faces),
            "faces": [identified_json(f, r, t) for f, t in zip(faces, tokens, strict=True)],
        }
    )


@bp.post("/v1/verify")
def verify() -> ResponseReturnValue:
    r = recognizer()
    data = parse_request(request, ["image_a", "image_b"])
    a = decode(data.one_image("image_a"))
    b = decode(data.one_image("image_b"))
    fa, fb, similarity, threshold = r.verify(a, b, threshold=threshold_param(data))
    return jsonify(
        {
            "ok": True,
            "model": r.engine.model_id,
            "same_person": similarity >= threshold,
            "similarity": round(similarity, 5),
            "threshold": threshold,
            "confidence": r.confidence(similarity, 1),
            "faces": {
                "image_a": {**face_json(fa.face), "quality": quality_json(fa.quality)},
                "image_b": {**face_json(fb.face), "quality": quality_json(fb.quality)},
            },
        }
    )


# -- people --------------------------------------------------------------------------------
@bp.get("/v1/people")
def list_people() -> ResponseReturnValue:
    limit = int_param(dict(request.args), "limit", 1, 10_000) or 1000
    offset = int_param(dict(request.args), "offset", 0, 2**62) or 0
    r = recognizer()
    people, faces = r.gallery.counts()
    return jsonify(
        {
            "ok": True,
            "total": people,
            "faces": faces,
            "limit": limit,
            "offset": offset,
            "people": [person_json(p) for p in r.gallery.list_people(limit, offset)],
        }
    )


# <path:...>: ids taught through the Facebox API may hold '/' (file paths, URLs)
@bp.get("/v1/people/<path:person_id>")
def get_person(person_id: str) -> ResponseReturnValue:
    try:
        person, faces = recognizer().gallery.get_person(person_id)
    except PersonNotFoundError:
        raise _no_person(person_id) from None
    return jsonify({"ok": True, "person": person_json(person), "faces": [record_json(f) for f in faces]})


@bp.patch("/v1/people/<path:person_id>")
def rename_person(person_id: str) -> ResponseReturnValue:
    data = parse_request(request, [])
    if "name" not in data.params:
        raise ApiError(400, "invalid_name", "send the new name as 'name'")
    name = clean_name(data.params["name"])
    try:
        person = recognizer().gallery.rename(person_id, name)
    except PersonNotFoundError:
        raise _no_person(person_id) from None
    return jsonify({"ok": True, "person": person_json(person)})


@bp.delete("/v1/people/<path:person_id>")
def delete_person(person_id: str) -> ResponseReturnValue:
    try:
        removed = recognizer().gallery.delete_person(person_id)
    except PersonNotFoundError:
        raise _no_person(person_id) from None
    return jsonify({"ok": True, "deleted": person_id, "faces_deleted": removed})


@bp.delete("/v1/people/<path:person_id>/faces/<int:face_id>")
def delete_face(person_id: str, face_id: int) -> ResponseReturnValue:
    try:
        recognizer().gallery.delete_face(person_id, face_id)
    except PersonNotFoundError:
        raise _no_person(person_id) from None
    except FaceNotFoundError:
        raise ApiError(404, "face_not_found", f"person {person_id!r} has no face example {face_id}") from None
    return jsonify({"ok": True, "deleted": face_id})


@bp.get("/v1/people/<path:person_id>/faces/<int:face_id>/thumbnail")
def face_thumbnail(person_id: str, face_id: int) -> ResponseReturnValue:
    r = recognizer()
    if not r.settings.thumbnails:
        raise ApiError(404, "thumbnail_not_found", "thumbnails are off on this server (FEWFACE_THUMBNAILS=false)")
    try:
        jpeg = r.gallery.thumbnail(person_id, face_id)
    except PersonNotFoundError:
        raise _no_person(person_id) from None
    except FaceNotFoundError:
        raise ApiError(404, "face_not_found", f"person {person_id!r} has no face example {face_id}") from None
    if jpeg is None:
        raise ApiError(
            404, "thumbnail_not_found", f"face example {face_id} has no thumbnail (taught with thumbnails off, or imported without)"
        )
    response = Response(jpeg, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _no_person(person_id: str) -> ApiError:
    return ApiError(404, "person_not_found", f"no person with id {person_id!r}")

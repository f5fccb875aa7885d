"""Calibration report over the gallery: GET /v1/calibration (JSON) and /v1/calibration/plot.png.
Read-only: it reads one snapshot of the gallery and changes nothing."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from service.calibration_report import DEFAULT_TARGETS, NotEnoughExamplesError, build_report, plot_report
from service.errors import ApiError
from service.http.collections import current_recognizer
from service.http.inputs import float_param, int_param
from service.recognizer import Recognizer
from service.store.gallery import Gallery

bp = Blueprint("calibration", __name__)

MAX_TARGETS = 10


def _recognizer() -> Recognizer:
    return current_recognizer()  # the request's collection's (service/http/collections.py)


def current_threshold() -> float:
    """The threshold identify uses when a request gives none, at the gallery's current size (the
    one place this is read)."""
    return float(_recognizer().identify_threshold())


def gallery_embeddings(gallery: Gallery) -> tuple[dict[str, np.ndarray], int]:
    """({person id: (examples, dim) embeddings}, number of people in the gallery), from one
    consistent snapshot."""
    people, faces = gallery.export_snapshot()
    grouped: dict[str, list[np.ndarray]] = defaultdict(list)
    for face in faces:
        grouped[face.person_id].append(face.embedding)
    return {p: np.stack(v) for p, v in grouped.items()}, len(people)


def _targets() -> tuple[float, ...]:
    raw = request.args.getlist("target")
    if not raw:
        return DEFAULT_TARGETS
    if len(raw) > MAX_TARGETS:
        raise ApiError(400, "invalid_parameter", f"at most {MAX_TARGETS} target values")
    out = []
    for value in raw:
        target = float_param({"target": value}, "target", 0.0, 1.0)
        if target is None or not 0 < target < 1:
            raise ApiError(400, "invalid_parameter", "target must be a number between 0 and 1 (exclusive), e.g. 0.01")
        out.append(target)
    return tuple(out)


def _report() -> dict[str, Any]:
    targets = _targets()
    override = int_param(dict(request.args), "gallery_size", 1, 1_000_000_000)
    embeddings, people = gallery_embeddings(_recognizer().gallery)
    try:
        return build_report(embeddings, gallery_size=override or max(1, people), targets=targets, current_threshold=current_threshold())
    except NotEnoughExamplesError as exc:
        raise ApiError(422, "not_enough_examples", str(exc)) from None


@bp.get("/v1/calibration")
def calibration() -> ResponseReturnValue:
    return jsonify({"ok": True, "model": _recognizer().engine.model_id, **_report()})


@bp.get("/v1/calibration/plot.png")
def calibration_plot() -> ResponseReturnValue:
    buffer = io.BytesIO()
    plot_report(_report(), buffer)
    response = Response(buffer.getvalue(), mimetype="image/png")
    response.headers["Cache-Control"] = "no-store"
    return response

"""``GET /metrics`` (Prometheus text format) and the request hooks that feed it.

Each app has its own ``service.metrics.Recorder`` (``app.extensions["fewface_metrics"]``). Before
a request is routed its recorder is bound to the request's context, so the pipeline's stages and
the error answers (service/http/errors.py) count for this app; after it, the request is counted
by route (the URL rule, never the raw path: one series per route however many ids clients send),
method and status.

Authentication: ``/metrics`` needs credentials like the API when authentication is on, unless
``FEWFACE_METRICS_PUBLIC=true`` (service/http/auth.py exempts it then).
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client.exposition import choose_encoder

from service import __version__
from service.config import Settings
from service.metrics import GalleryCollector, Recorder
from service.recognizer import Recognizer

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others count as "other"
UNMATCHED = "unmatched"  # the route label of requests no URL rule matched (404, 405 on an unknown path)


@bp.get("/metrics")
def scrape() -> Response:
    recorder: Recorder = current_app.extensions["fewface_metrics"]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))  # OpenMetrics when the scraper asks for it
    return Response(encoder(recorder.registry), content_type=content_type)


def collection_counts(app: Flask) -> list[tuple[str, int, int]]:
    """(collection id, people, faces) for every collection: with the collections registry
    (``app.extensions["fewface_collections"]``, service/http/collections.py, issue 13) one
    snapshot query over all of them; without it the app's one gallery, ``default``."""
    registry = app.extensions.get("fewface_collections")
    if registry is not None:
        return [(c.id, c.people, c.faces) for c in registry.galleries.list()]
    recognizer: Recognizer = app.extensions["fewface"]
    return [("default", *recognizer.gallery.counts())]


def register_metrics(app: Flask, settings: Settings) -> None:
    """Create the app's recorder, its route and hooks (before authentication, so 401s count too)."""
    if not settings.metrics:
        return
    recognizer: Recognizer = app.extensions["fewface"]
    engine = recognizer.engine
    recorder = Recorder()
    info = {
        "model": engine.model_id,
        "pipeline": engine.embedder.pipeline,
        "device": str(engine.embedder.device),
        "version": __version__,
    }
    recorder.register(GalleryCollector(lambda: collection_counts(app), engine.batcher, info))
    app.extensions["fewface_metrics"] = recorder

    @app.before_request
    def _start() -> None:
        g.fewface_metrics = (recorder.bind(), time.perf_counter())
        recorder.in_flight.inc()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.get("fewface_metrics")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
            method = request.method if request.method in METHODS else "other"
            recorder.count_request(route, method, response.status_code, time.perf_counter() - started[1])
        return response

    @app.teardown_request
    def _finish(_exc: BaseException | None) -> None:
        started = g.pop("fewface_metrics", None)
        if started is not None:
            recorder.in_flight.dec()
            recorder.unbind(started[0])

    app.register_blueprint(bp)
    if settings.metrics_public and (settings.api_key or settings.basic_auth):
        log.info("Prometheus metrics at GET /metrics, without credentials (FEWFACE_METRICS_PUBLIC)")

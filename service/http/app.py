"""``create_app`` composes settings, the frozen pipeline and the gallery into the Flask app."""

from __future__ import annotations

import logging

from flask import Flask

from service import __version__
from service.config import Settings
from service.http.errors import register_error_handlers
from service.recognizer import Engine, Recognizer
from service.store import open_gallery
from service.store.gallery import Gallery
from service.store.registry import Galleries

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, engine: Engine | None = None, gallery: Gallery | None = None) -> Flask:
    """Build the Flask app. ``engine`` (detector + embedder) may be shared between apps; when
    absent it is loaded from ``settings``. ``gallery`` defaults to ``open_gallery(settings)``,
    opened before the models load so a bad data directory fails fast."""
    settings = settings or Settings.from_env()
    own_gallery = gallery is None
    gallery = gallery or open_gallery(settings)
    try:
        engine = engine or Engine.from_settings(settings)
        if engine.model_id != settings.model or gallery.model_id != engine.model_id or gallery.dim != engine.embedder.dim:
            raise ValueError(f"engine runs {engine.model_id!r} but settings ask for {settings.model!r} (gallery: {gallery.model_id!r})")
        if engine.embedder.pipeline != gallery.pipeline:
            raise ValueError(f"engine runs the pipeline {engine.embedder.pipeline!r} but settings ask for {gallery.pipeline!r}")
    except BaseException:
        if own_gallery:
            gallery.close()  # and with it the data directory's lock
        raise
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # "/v1/people//faces" is a 404, not a redirect an API client would not follow
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["FEWFACE_VERSION"] = __version__
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["fewface"] = Recognizer(engine, gallery, settings)
    # Every collection of the store (service/store/registry.py), around the default one above.
    app.extensions["fewface_galleries"] = Galleries(gallery)
    if settings.database_url:  # a replica: keep every open collection's index current (service/store/feed.py)
        from service.store.feed import ChangeFeed, staleness_header

        feed = ChangeFeed(settings.database_url, app.extensions["fewface_galleries"], settings.feed_poll_interval)
        app.extensions["fewface_feed"] = feed.start()
        app.after_request(staleness_header)
    register_error_handlers(app)

    from service.http.api import bp

    app.register_blueprint(bp)

    from service import state
    from service.http import calibration_api, collections, console, facebox, openapi
    from service.http.auth import register_auth
    from service.http.metrics import register_metrics
    from service.http.urlfetch import UrlFetcher

    app.extensions["fewface_urlfetch"] = UrlFetcher(
        settings.max_upload_bytes, settings.url_timeout, settings.allow_private_urls, max_concurrent=max(1, settings.threads // 2)
    )
    register_metrics(app, settings)  # before authentication: its hooks count the 401s too
    register_auth(app, settings)
    for module in (state, facebox, openapi, console, calibration_api, collections):  # collections last: it serves the others per collection
        app.register_blueprint(module.bp)
    log.info("fewface ready: model %s, gallery %s (%d people, %d faces)", engine.model_id, gallery.location, *gallery.counts())
    return app

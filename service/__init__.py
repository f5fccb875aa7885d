"""Fewface HTTP service: ``create_app`` composes settings, the frozen pipeline and the gallery."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from service.config import Settings
from service.errors import register_error_handlers
from service.gallery import Gallery
from service.recognizer import Engine, Recognizer

__version__ = "0.1.0"
GALLERY_FILE = "gallery.sqlite3"

log = logging.getLogger(__name__)


def gallery_pipeline(settings: Settings) -> str:
    """The pipeline id (crop and flip) a service with ``settings`` records in its gallery."""
    from models.embedders import EMBEDDERS, pipeline_id

    return pipeline_id(EMBEDDERS[settings.model], flip=settings.flip, alignment=settings.alignment)


def open_gallery(settings: Settings) -> Gallery:
    """Open the gallery of ``settings.data_dir`` for ``settings.model`` without loading any model:
    takes the data directory's lock and checks the file (service/gallery.py raises
    DataDirInUseError, GalleryOpenError, ModelMismatchError with the fix in the message)."""
    from models.embedders import EMBEDDERS

    spec = EMBEDDERS.get(settings.model)
    if spec is None:
        raise ValueError(f"unknown model id {settings.model!r}; known: {', '.join(sorted(EMBEDDERS))}")
    return Gallery(
        Path(settings.data_dir) / GALLERY_FILE,
        spec.model_id,
        spec.dim,
        pipeline=gallery_pipeline(settings),
        index_exact_max=settings.index_exact_max,
        index_nprobe=settings.index_nprobe,
        busy_timeout=settings.db_busy_timeout,
    )


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
    register_error_handlers(app)

    from service.api import bp

    app.register_blueprint(bp)

    from service import calibration_api, console, facebox, openapi, state
    from service.auth import register_auth
    from service.urlfetch import UrlFetcher

    app.extensions["fewface_urlfetch"] = UrlFetcher(
        settings.max_upload_bytes, settings.url_timeout, settings.allow_private_urls, max_concurrent=max(1, settings.threads // 2)
    )
    register_auth(app, settings)
    for module in (state, facebox, openapi, console, calibration_api):
        app.register_blueprint(module.bp)
    log.info("fewface ready: model %s, gallery %s (%d people, %d faces)", engine.model_id, gallery.path, *gallery.counts())
    return app

"""The gallery of record: opening it for the configured model and pipeline, in the configured store
(SQLite in ``FEWFACE_DATA_DIR`` by default, PostgreSQL when ``FEWFACE_DATABASE_URL`` is set), its
collections (service/store/registry.py), its lock and its checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.config import Settings
from service.store.gallery import Gallery

if TYPE_CHECKING:
    from service.store.registry import Galleries

GALLERY_FILE = "gallery.sqlite3"


def gallery_pipeline(settings: Settings) -> str:
    """The pipeline id (crop and flip) a service with ``settings`` records in its gallery."""
    from models.embedders import EMBEDDERS, pipeline_id

    return pipeline_id(EMBEDDERS[settings.model], flip=settings.flip, alignment=settings.alignment)


def store_location(settings: Settings) -> str | Path:
    """Where the gallery lives: the PostgreSQL URL, or the SQLite file in the data directory."""
    return settings.database_url or Path(settings.data_dir) / GALLERY_FILE


def open_gallery(settings: Settings) -> Gallery:
    """Open the ``default`` collection of the configured store for ``settings.model`` without
    loading any model: for SQLite takes the data directory's lock and checks the file; for
    PostgreSQL connects (service/store/gallery.py raises DataDirInUseError, GalleryOpenError,
    ModelMismatchError with the fix in the message). The gallery owns its store: closing it
    closes the store. ``Galleries(gallery, ...)`` (service/store/registry.py) adds the other
    collections over the same store."""
    from models.embedders import EMBEDDERS

    spec = EMBEDDERS.get(settings.model)
    if spec is None:
        raise ValueError(f"unknown model id {settings.model!r}; known: {', '.join(sorted(EMBEDDERS))}")
    from service.store.gallery import open_store

    store = open_store(store_location(settings), busy_timeout=settings.db_busy_timeout, max_connections=settings.threads + 2)
    try:
        gallery = Gallery(
            store,
            spec.model_id,
            spec.dim,
            pipeline=gallery_pipeline(settings),
            index_exact_max=settings.index_exact_max,
            index_nprobe=settings.index_nprobe,
            busy_timeout=settings.db_busy_timeout,
        )
    except BaseException:
        store.close()
        raise
    gallery.adopt_store()
    return gallery


def open_galleries(settings: Settings) -> Galleries:
    """Every collection of the configured store (the ``default`` one opened at once)."""
    from service.store.registry import Galleries

    return Galleries(open_gallery(settings))

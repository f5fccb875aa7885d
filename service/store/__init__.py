"""The gallery of record: opening it for the configured model and pipeline, its lock, its checks."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.store.gallery import Gallery

GALLERY_FILE = "gallery.sqlite3"


def gallery_pipeline(settings: Settings) -> str:
    """The pipeline id (crop and flip) a service with ``settings`` records in its gallery."""
    from models.embedders import EMBEDDERS, pipeline_id

    return pipeline_id(EMBEDDERS[settings.model], flip=settings.flip, alignment=settings.alignment)


def open_gallery(settings: Settings) -> Gallery:
    """Open the gallery of ``settings.data_dir`` for ``settings.model`` without loading any model:
    takes the data directory's lock and checks the file (service/store/gallery.py raises
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

"""Fewface: a self-hosted few-shot face-recognition service.

``models/`` is the frozen pipeline; ``service.store`` the gallery of record; ``service.http`` the
Flask app (``create_app``), whose routes call ``service.recognizer``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """``service.http.app.create_app``, imported on first use so ``import service`` stays light."""
    from service.http.app import create_app as _create_app

    return _create_app(*args, **kwargs)

"""The web console: one static page (service/http/static) that drives the native /v1 API."""

from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

bp = Blueprint("console", __name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@bp.get("/")
def index() -> ResponseReturnValue:
    response = current_app.send_static_file("index.html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response

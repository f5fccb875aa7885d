"""One JSON error shape for every non-2xx answer: {"ok": false, "status", "code", "error"}."""

from __future__ import annotations

import logging
import threading

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from service.errors import ApiError
from service.store.gallery import DatabaseUnavailableError, StorageError, StorageFullError, StoreBusyError, StoreUnavailableError

log = logging.getLogger(__name__)

# Domain errors of the store -> (status, code, Retry-After seconds or None). One table.
DOMAIN_ERRORS: dict[type[StorageError], tuple[int, str, int | None]] = {
    DatabaseUnavailableError: (503, "database_unavailable", 5),  # PostgreSQL cannot be reached (before its parent below)
    StoreBusyError: (503, "database_busy", 1),
    StorageFullError: (507, "storage_full", None),
    StoreUnavailableError: (503, "storage_unavailable", 5),
}
INTERNAL_ERROR_MARK = "answered 500 internal_error"  # every 500 is logged with this (tests count them)


class InternalErrorTally:
    """How many 500 answers this process has sent (all apps together): a 500 is a bug."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self) -> None:
        with self._lock:
            self._count += 1

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


INTERNAL_ERRORS = InternalErrorTally()

# Werkzeug's own errors (routing, body size, ...) get stable codes too.
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"ok": False, "status": status, "code": code, "error": message}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        response, status = error_response(status, HTTP_CODES.get(status, "http_error"), exc.description or exc.name)
        if status == 405 and exc.response is None:
            valid = getattr(exc, "valid_methods", None)
            if valid:
                response.headers["Allow"] = ", ".join(valid)
        return response, status

    @app.errorhandler(StorageError)
    def _storage_error(exc: StorageError) -> tuple[Response, int]:
        status, code, retry_after = next((v for t, v in DOMAIN_ERRORS.items() if isinstance(exc, t)), (503, "storage_unavailable", 5))
        response, status = error_response(status, code, str(exc))
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")

    @app.after_request
    def _log_server_errors(response: Response) -> Response:
        """Every 5xx is logged; a 500 (a bug) is also counted (tests/conftest.py fails on it)."""
        if response.status_code == 500:
            INTERNAL_ERRORS.add()
            log.error("%s to %s %s", INTERNAL_ERROR_MARK, request.method, request.path)
        elif response.status_code >= 500:
            body = response.get_json(silent=True) if response.is_json else None
            code = body.get("code") if isinstance(body, dict) else None
            log.warning("answered %d %s to %s %s", response.status_code, code, request.method, request.path)
        return response

"""The error every layer may raise for the client to see: HTTP status, stable snake_case code, message.
The HTTP layer (service/http/errors.py) turns it, and the store's domain errors, into the one JSON shape."""

from __future__ import annotations


class ApiError(Exception):
    """An error the client should see: HTTP status, stable snake_case code, human message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

"""Reading images and parameters from a request: multipart files, JSON base64, or a raw body."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Request, current_app

from service.errors import ApiError

_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
MAX_NAME_LENGTH = 256
MAX_ID_LENGTH = 128  # native ids: one URL path segment
MAX_FACEBOX_ID_LENGTH = 2048  # Facebox ids: file names, paths and URLs (the Go SDK's TeachURL uses the URL as id)
MAX_JSON_VALUES = 10_000  # commas and brackets in a JSON body (a request carries a few images and parameters)
_JOINERS = frozenset("\u200c\u200d")  # zero-width (non-)joiner: part of emoji sequences and of names in many scripts


@dataclass
class RequestInput:
    params: dict[str, Any] = field(default_factory=dict)
    images: dict[str, list[bytes]] = field(default_factory=dict)

    def image_list(self, name: str) -> list[bytes]:
        return self.images.get(name, [])

    def one_image(self, name: str, label: str | None = None) -> bytes:
        found = self.image_list(name)
        if not found:
            raise ApiError(400, "missing_image", f"no image given in {label or repr(name)}")
        if len(found) > 1:
            raise ApiError(400, "too_many_images", f"send one image in {label or repr(name)}")
        return found[0]


def parse_request(request: Request, image_fields: Sequence[str]) -> RequestInput:
    """Images under ``image_fields`` (multipart files, or JSON base64 strings / lists of them, or
    the raw body for the first field) plus every other parameter (query string, form, JSON).
    A ``url`` parameter (string, or JSON list of strings) is fetched into the first image field,
    ``<field>_url`` into ``<field>`` (service/http/urlfetch.py decides which URLs may be fetched)."""
    out = RequestInput(params=dict(request.args.items()))
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data" or mimetype == "application/x-www-form-urlencoded":
        out.params.update(request.form.items())
        for name in image_fields:
            files = [f.read() for f in request.files.getlist(name)]
            if files:
                out.images[name] = files
    elif mimetype == "application/json" or mimetype.endswith("+json"):
        raw = request.get_data(cache=True)
        if raw.count(b",") + raw.count(b"{") + raw.count(b"[") > MAX_JSON_VALUES:  # before parsing: [{},{},...] is 24x its size
            raise ApiError(400, "invalid_json", f"the JSON body holds more than {MAX_JSON_VALUES} values")
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # absurdly deep nesting
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the body is not a JSON object")
        for key, value in body.items():
            if key in image_fields:
                out.images[key] = [decode_base64(v, key) for v in (value if isinstance(value, list) else [value])]
            else:
                out.params[key] = value
    elif mimetype.startswith("image/") or mimetype == "application/octet-stream":
        out.images[image_fields[0]] = [request.get_data(cache=False)]
    elif request.content_length:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send multipart/form-data, application/json or a raw image body, not {mimetype or 'no content type'}",
        )
    if image_fields:
        _fetch_urls(out, image_fields)
    return out


def _fetch_urls(out: RequestInput, image_fields: Sequence[str]) -> None:
    targets = {"url": image_fields[0], **{f"{name}_url": name for name in image_fields}}
    deadline = None  # one FEWFACE_URL_TIMEOUT for all the URLs of a request
    for key, target in targets.items():
        value = out.params.pop(key, None)
        if value in (None, "", []):
            continue
        urls = value if isinstance(value, list) else [value]
        if not all(isinstance(u, str) for u in urls):
            raise ApiError(400, "url_not_allowed", f"{key!r} must be a URL string or a list of them")
        recognizer = current_app.extensions.get("fewface")
        limit = recognizer.settings.max_teach_images if recognizer is not None else 10
        if len(urls) > limit:
            raise ApiError(400, "too_many_images", f"at most {limit} URLs per request")
        fetcher = current_app.extensions.get("fewface_urlfetch")
        if fetcher is None:
            raise ApiError(400, "url_not_allowed", "URL input is not enabled")
        deadline = deadline or fetcher.deadline()
        out.images.setdefault(target, []).extend(fetcher.fetch(u, deadline) for u in urls)


def decode_base64(value: Any, key: str) -> bytes:
    """Bytes of a base64 string (whitespace and a ``data:...;base64,`` prefix allowed); 400 otherwise."""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_base64", f"{key!r} must be a base64 string")
    text = _DATA_URL.sub("", value.strip())
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", f"{key!r} is not valid base64") from None


def _clean_text(value: Any, what: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"invalid_{what}", f"{what} must be a string")
    text = value.strip()
    if not text:
        raise ApiError(400, f"invalid_{what}", f"{what} must not be empty")
    if len(text) > max_length:
        raise ApiError(400, f"invalid_{what}", f"{what} is longer than {max_length} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and not (what == "name" and ch in _JOINERS) for ch in text):
        raise ApiError(400, f"invalid_{what}", f"{what} contains control or unassigned characters")
    return text


def clean_name(value: Any) -> str:
    return _clean_text(value, "name", MAX_NAME_LENGTH)


def clean_id(value: Any) -> str:
    """A native person id (``/v1/people/<id>/faces``): one path segment, at most 128 characters."""
    text = _clean_text(value, "id", MAX_ID_LENGTH)
    if "/" in text or text != value:
        raise ApiError(400, "invalid_id", "id must not contain '/' or surrounding spaces")
    return text


def clean_facebox_id(value: Any) -> str:
    """Any person id a gallery may hold: native ids, and Facebox ids, which may contain '/' and be
    up to 2048 characters (Facebox apps use file paths and URLs as ids). No control, format,
    private-use or unassigned characters, no surrounding spaces."""
    text = _clean_text(value, "id", MAX_FACEBOX_ID_LENGTH)
    if text != value:
        raise ApiError(400, "invalid_id", "id must not have surrounding spaces")
    return text


def _number_param(params: dict[str, Any], name: str, low: float, high: float, kind: type[int] | type[float]) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or (kind is int and isinstance(raw, float)):
        raise ApiError(400, "invalid_parameter", f"{name} must be {'an integer' if kind is int else 'a number'}")
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, "invalid_parameter", f"{name} must be {'an integer' if kind is int else 'a number'}") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {low} and {high}")
    return value


def float_param(params: dict[str, Any], name: str, low: float, high: float) -> float | None:
    return _number_param(params, name, low, high, float)


def int_param(params: dict[str, Any], name: str, low: int, high: int) -> int | None:
    return _number_param(params, name, low, high, int)


def choice_param(params: dict[str, Any], name: str, choices: Sequence[str], default: str) -> str:
    raw = params.get(name, default)
    if raw in (None, ""):
        return default
    if raw not in choices:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}")
    return str(raw)

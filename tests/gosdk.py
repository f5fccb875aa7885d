"""The wire format of Machine Box's Go SDK (``github.com/machinebox/sdk-go``, packages ``facebox``,
``boxutil`` and ``internal/mbhttp``), written down from its source for the contract tests.

Requests are built byte for byte as the SDK builds them: Go's ``mime/multipart`` writer (file part
first, then fields, ``application/octet-stream``), ``url.Values.Encode`` (keys sorted),
``json.Encoder`` (compact, trailing newline), the ``Accept: application/json; charset=utf-8``
header where the SDK sets it, ids appended to the path as Go's ``url.URL.String`` escapes them
(``/`` and ``:`` kept), basic auth on every request (the SDK's ``HTTPClient`` transport).

Answers are decoded as ``encoding/json`` decodes them into the SDK's structs: fields matched by
name case-insensitively, unknown keys ignored, null leaves the zero value, and a JSON value of the
wrong type for the Go field is an error (a float into an ``int``, a number into a ``string``...).
The success rule is ``mbhttp.Client.DoUnmarshal``'s: an empty 2xx body is fine; otherwise the
body must be JSON with ``"success": true``, else the call fails with ``error`` as its message.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from urllib.parse import quote, urlencode

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

# Go types
STRING, INT, FLOAT64, BOOL = "string", "int", "float64", "bool"

# boxutil.Info
INFO = {"Name": STRING, "Version": INT, "Build": STRING, "Status": STRING}
# facebox.Rect, facebox.Face, facebox.Similar, facebox.SimilarFace (json tags "rect", "similar_faces")
RECT = {"Top": INT, "Left": INT, "Width": INT, "Height": INT}
FACE = {"Rect": RECT, "ID": STRING, "Name": STRING, "Matched": BOOL, "Confidence": FLOAT64, "Faceprint": STRING}
SIMILAR = {"ID": STRING, "Name": STRING, "Confidence": FLOAT64}
SIMILAR_FACE = {"rect": RECT, "similar_faces": [SIMILAR]}
# The anonymous response structs of each method
CHECK_RESPONSE = {"Faces": [FACE]}  # Check, CheckURL, CheckBase64, CheckBase64WithFaceprint
CHECK_FACEPRINTS_RESPONSE = {"Faceprints": [FACE]}  # CheckFaceprints
COMPARE_RESPONSE = {"Confidences": [FLOAT64]}  # CompareFaceprints
SIMILAR_RESPONSE = {"Similar": [SIMILAR]}  # Similar, SimilarURL, SimilarID, SimilarBase64
SIMILARS_RESPONSE = {"Faces": [SIMILAR_FACE]}  # Similars, SimilarsURL, SimilarsBase64
NOTHING: dict[str, Any] = {}  # Teach*, Remove, Rename, RenameAll, PostState* decode into nil
COMMON = {"Success": BOOL, "Error": STRING}  # mbhttp's first decode

ACCEPT = "application/json; charset=utf-8"
FORM = "application/x-www-form-urlencoded"
JSON_CT = "application/json; charset=utf-8"


class SdkError(AssertionError):
    """What the SDK method would return as its error."""


def _zero(spec: Any) -> Any:
    if isinstance(spec, dict):
        return {name: _zero(s) for name, s in spec.items()}
    if isinstance(spec, list):
        return None
    return {STRING: "", INT: 0, FLOAT64: 0.0, BOOL: False}[spec]


def go_decode(value: Any, spec: Any, where: str = "$") -> Any:
    """``value`` (parsed JSON) decoded into the Go type ``spec``; SdkError where encoding/json fails."""
    if value is None:
        return _zero(spec)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise SdkError(f"json: cannot unmarshal {type(value).__name__} into struct at {where}")
        out = _zero(spec)
        for key, item in value.items():
            name = key if key in spec else next((n for n in spec if n.lower() == key.lower()), None)
            if name is not None:
                out[name] = go_decode(item, spec[name], f"{where}.{key}")
        return out
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise SdkError(f"json: cannot unmarshal {type(value).__name__} into slice at {where}")
        return [go_decode(v, spec[0], f"{where}[{i}]") for i, v in enumerate(value)]
    ok = {
        STRING: isinstance(value, str),
        INT: isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63,
        FLOAT64: isinstance(value, int | float) and not isinstance(value, bool),
        BOOL: isinstance(value, bool),
    }[spec]
    if not ok:
        raise SdkError(f"json: cannot unmarshal {json.dumps(value)[:40]} into Go value of type {spec} at {where}")
    return value


def do_unmarshal(response: TestResponse, spec: Any) -> Any:
    """mbhttp.Client.DoUnmarshal: the decoded struct, or SdkError with the message the SDK gives."""
    body = response.get_data()
    status = response.status_code
    if not body:
        if not 200 <= status < 400:
            raise SdkError(f"facebox: {status}")
        return _zero(spec)
    try:
        parsed = json.loads(body)
    except ValueError:
        raise SdkError(f"facebox: {status}: {body[:80]!r}") from None
    common = go_decode(parsed, COMMON)
    if not common["Success"]:
        raise SdkError(f"facebox: {common['Error'] or status}")
    return go_decode(parsed, spec)


def go_path(segment: str) -> str:
    """How Go's url.URL.String escapes a path (``encodePath``: only unreserved and ``$&+,/:;=@`` stay)."""
    return quote(segment, safe="$&+,/:;=@")


class GoSdk:
    """Sends requests exactly as the SDK's ``facebox.Client`` does, through a Flask test client."""

    def __init__(self, client: FlaskClient, user: str = "", password: str = "") -> None:
        self.client = client
        self.auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()} if user else {}

    def _send(self, method: str, path: str, body: bytes | None, content_type: str | None, accept: bool) -> TestResponse:
        headers = dict(self.auth)
        if accept:
            headers["Accept"] = ACCEPT
        if content_type:
            headers["Content-Type"] = content_type
        return self.client.open(path, method=method, data=body, headers=headers)

    def multipart(self, path: str, file: bytes, filename: str = "image.dat", fields: list[tuple[str, str]] | None = None) -> TestResponse:
        """multipart.Writer: CreateFormFile("file", filename), then WriteField for each field."""
        boundary = os.urandom(30).hex()
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        parts = [
            f'Content-Disposition: form-data; name="file"; filename="{escaped}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + file
        ]
        parts += [f'Content-Disposition: form-data; name="{k}"\r\n\r\n{v}'.encode() for k, v in fields or []]
        body = b"".join((b"--" if i == 0 else b"\r\n--") + boundary.encode() + b"\r\n" + p for i, p in enumerate(parts))
        body += b"\r\n--" + boundary.encode() + b"--\r\n"
        return self._send("POST", path, body, f"multipart/form-data; boundary={boundary}", accept=True)

    def form(self, method: str, path: str, values: dict[str, str]) -> TestResponse:
        """url.Values{...}.Encode() (keys sorted) as application/x-www-form-urlencoded."""
        return self._send(method, path, urlencode(sorted(values.items())).encode(), FORM, accept=True)

    def json(self, path: str, payload: dict[str, Any]) -> TestResponse:
        """json.NewEncoder(&buf).Encode(request): compact JSON and a newline."""
        body = (json.dumps(payload, separators=(",", ":")) + "\n").encode()
        return self._send("POST", path, body, JSON_CT, accept=True)

    def request(self, method: str, path: str, *, content_type: str | None = None, accept: bool = True) -> TestResponse:
        return self._send(method, path, None, content_type, accept)

"""Property-based fuzzing of the native API through the Flask test client (hypothesis), and a
schemathesis run over /openapi.json: never a 5xx, the one error shape on every non-2xx, and a
refused request never changes the gallery.

Inputs hold no real face (random bytes, tiny synthetic pictures), so every example stays cheap.
Example counts are modest; raise FUZZ_EXAMPLES for a longer local run.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import string
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from tests.conftest import photo, upload
from tests.hostile import encode, error_body, landscape, snapshot

log = logging.getLogger(__name__)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # corrupt EXIF notes

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
TRIED: Counter[str] = Counter()  # requests sent per test, for the log line at the end

SEEDED = ("p0", "p1")
IMAGE_ROUTES = ("/v1/people/p0/faces", "/v1/people/fresh/faces", "/v1/identify", "/v1/verify")
KNOWN_KEYS = ("base64", "name", "pick", "threshold", "top_k", "image_a", "image_b", "file", "limit", "offset")
MAGIC = (b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBPVP8 ", b"II*\0", b"MM\0*")


def small_images() -> dict[str, bytes]:
    """Tiny face-free pictures in every accepted format: decoding and detection take milliseconds."""
    img = landscape(48, 36)
    return {
        "jpeg": encode(img, "JPEG"),
        "png": encode(img, "PNG"),
        "gif": encode(img.convert("P"), "GIF", save_all=True, append_images=[img.convert("P")]),
        "bmp": encode(img, "BMP"),
        "webp": encode(img, "WEBP"),
        "tiff": encode(img, "TIFF", compression="tiff_deflate"),
        "png16": encode(img.convert("I;16"), "PNG"),
    }


SMALL = small_images()


@pytest.fixture
def fuzz_client(make_app: Callable[..., Flask], request: pytest.FixtureRequest) -> Iterator[FlaskClient]:
    client = make_app().test_client()
    assert client.post("/v1/people/p0/faces", data={"file": upload(photo("img25.jpg")), "name": "Zero"}).status_code == 201
    assert client.post("/v1/people/p1/faces", data={"file": upload(photo("img5.jpg"))}).status_code == 201
    yield client
    log.info("fuzz %s: %d requests", request.node.name, TRIED[request.node.name])


def send(client: FlaskClient, test: str, method: str, path: str, **kwargs: Any) -> Any:
    """One request; checks no 5xx, the error shape, and no change on refusal. Returns the response."""
    before = snapshot(client)
    r = getattr(client, method)(path, **kwargs)
    TRIED[test] += 1
    body = r.get_json(silent=True)
    assert r.status_code < 500, (method, path, r.status_code, body)
    if not 200 <= r.status_code < 300:
        error_body(r.status_code, body)
        assert snapshot(client) == before, (method, path, body)
    return r


def image_request(route: str, data: bytes, how: str) -> dict[str, Any]:
    field = "image_a" if route == "/v1/verify" else "file"
    if how == "multipart":
        form: dict[str, Any] = {field: upload(data, "x")}
        if route == "/v1/verify":
            form["image_b"] = upload(SMALL["png"])
        return {"data": form}
    if how == "json":
        key = "image_a" if route == "/v1/verify" else "base64"
        body = {key: base64.b64encode(data).decode()}
        if route == "/v1/verify":
            body["image_b"] = base64.b64encode(SMALL["png"]).decode()
        return {"json": body}
    return {"data": data, "content_type": "application/octet-stream"}


hows = st.sampled_from(["multipart", "json", "raw"])
image_routes = st.sampled_from(IMAGE_ROUTES)


# -- bytes as images ---------------------------------------------------------------------
@given(
    data=st.one_of(st.binary(max_size=2048), st.tuples(st.sampled_from(MAGIC), st.binary(max_size=1024)).map(lambda t: t[0] + t[1])),
    route=image_routes,
    how=hows,
)
@FUZZ
def _random_bytes(client: FlaskClient, data: bytes, route: str, how: str) -> None:
    if how == "raw" and route == "/v1/verify":
        how = "multipart"
    r = send(client, "test_random_bytes_as_images", "post", route, **image_request(route, data, how))
    if route != "/v1/identify":
        assert r.status_code >= 400  # no face can be taught or verified from these


def test_random_bytes_as_images(fuzz_client: FlaskClient) -> None:
    _random_bytes(fuzz_client)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SMALL[draw(st.sampled_from(sorted(SMALL)))])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


@given(data=mutated(), route=image_routes, how=hows)
@FUZZ
def _mutated_images(client: FlaskClient, data: bytes, route: str, how: str) -> None:
    if how == "raw" and route == "/v1/verify":
        how = "json"
    send(client, "test_mutated_images", "post", route, **image_request(route, data, how))


def test_mutated_images(fuzz_client: FlaskClient) -> None:
    """Valid small images with bytes changed, inserted, deleted, cut off: deep into the decoders."""
    _mutated_images(fuzz_client)


# -- JSON bodies -------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
json_keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=10)
json_bodies = st.one_of(
    st.dictionaries(json_keys, json_values | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), max_size=6),
    json_values,
)
json_routes = st.sampled_from([*IMAGE_ROUTES, "/v1/people/p0", "/v1/people/ghost"])


@given(body=json_bodies, route=json_routes)
@FUZZ
def _json_bodies(client: FlaskClient, body: Any, route: str) -> None:
    if isinstance(body, dict):  # never let a fuzzed body make the server fetch a URL
        body = {k: v for k, v in body.items() if not k.endswith("url")}
    method = "patch" if route in ("/v1/people/p0", "/v1/people/ghost") else "post"
    send(client, "test_random_json_bodies", method, route, data=json.dumps(body), content_type="application/json")


def test_random_json_bodies(fuzz_client: FlaskClient) -> None:
    _json_bodies(fuzz_client)


# -- ids, names, parameters --------------------------------------------------------------
url_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
any_text = st.text(max_size=300)  # lone surrogates included: they travel as JSON escapes
params = st.dictionaries(
    st.sampled_from(["threshold", "top_k", "pick", "limit", "offset"]),
    st.one_of(url_text, st.integers().map(str), st.floats().map(str)),
    max_size=3,
)


@given(person=url_text, name=any_text, query=params, face_id=st.integers(min_value=0) | url_text, op=st.integers(0, 7))
@FUZZ
def _ids_names_params(client: FlaskClient, person: str, name: str, query: dict[str, str], face_id: Any, op: int) -> None:
    test = "test_random_ids_names_params"
    path = "/v1/people/" + quote(person, safe="")
    no_face = base64.b64encode(SMALL["png"]).decode()
    if person in SEEDED and op in (3, 5):
        return  # deleting a seeded person or renaming it validly is legitimate, not a rejection
    if op == 0:
        r = send(client, test, "post", path + "/faces", json={"base64": no_face, "name": name, **query})
        assert r.status_code >= 400
    elif op == 1:
        send(client, test, "post", "/v1/identify", query_string=query, data={"file": upload(SMALL["png"])})
    elif op == 2:
        send(client, test, "get", path)
    elif op == 3:
        r = send(client, test, "delete", path)
        assert r.status_code >= 400
    elif op == 4:
        send(client, test, "get", "/v1/people", query_string=query)
    elif op == 5:
        send(client, test, "patch", path, json={"name": name})
    elif op == 6:
        face_path = quote(str(face_id), safe="")
        r = send(client, test, "delete", f"/v1/people/p0/faces/{face_path}")
        if r.status_code == 200:  # it hit p0's real example: put one back for the next examples
            assert client.post("/v1/people/p0/faces", data={"file": upload(photo("img25.jpg"))}).status_code == 200
    else:
        send(client, test, "post", "/v1/verify", query_string=query, json={"image_a": no_face, "image_b": no_face})


def test_random_ids_names_params(fuzz_client: FlaskClient) -> None:
    _ids_names_params(fuzz_client)


# -- multipart and content types ---------------------------------------------------------
field_names = st.sampled_from(KNOWN_KEYS) | st.text(alphabet=string.ascii_letters + "_-", min_size=1, max_size=10)
part_values = st.one_of(
    st.binary(max_size=512).map(lambda b: ("bytes", b)),
    st.sampled_from(sorted(SMALL)).map(lambda k: ("bytes", SMALL[k])),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=50).map(lambda t: ("text", t)),
)


@given(parts=st.lists(st.tuples(field_names, part_values), max_size=6), route=image_routes)
@FUZZ
def _multipart(client: FlaskClient, parts: list[tuple[str, tuple[str, Any]]], route: str) -> None:
    form: dict[str, list[Any]] = {}
    for name, (kind, value) in parts:
        if name.endswith("url"):
            continue
        form.setdefault(name, []).append(upload(value, "part.bin") if kind == "bytes" else value)
    send(client, "test_random_multipart", "post", route, data=form, content_type="multipart/form-data")


def test_random_multipart(fuzz_client: FlaskClient) -> None:
    _multipart(fuzz_client)


content_types = st.sampled_from(
    ["application/json", "image/jpeg", "image/svg+xml", "multipart/form-data", "text/plain", "application/x-www-form-urlencoded", ""]
) | st.text(alphabet=string.printable.strip() + " ", max_size=60)


@given(ctype=content_types, body=st.binary(max_size=512) | st.sampled_from(sorted(SMALL.values())), route=image_routes)
@FUZZ
def _content_types(client: FlaskClient, ctype: str, body: bytes, route: str) -> None:
    send(client, "test_random_content_types", "post", route, data=body, headers={"Content-Type": ctype})


def test_random_content_types(fuzz_client: FlaskClient) -> None:
    _content_types(fuzz_client)


# -- schemathesis over /openapi.json -----------------------------------------------------
SCHEMA_EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "25"))


def _no_urls(value: Any) -> Any:
    """Drop every ``url`` / ``*_url`` key: the server must not go fetching generated addresses."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not (isinstance(k, str) and k.lower().endswith("url"))}
    return value


def _schema_case_check(checks: list[Any]) -> Callable[[Any], None]:
    def check(case: Any) -> None:
        case.body = _no_urls(case.body)
        case.query = _no_urls(case.query)
        response = case.call()
        TRIED["test_schemathesis_openapi_conformance"] += 1
        case.validate_response(response, checks=checks)
        if not 200 <= response.status_code < 300:
            error_body(response.status_code, json.loads(response.content))

    return check


def test_schemathesis_openapi_conformance(fuzz_client: FlaskClient) -> None:
    """Every documented operation, positive and negative data: no 5xx, documented status codes,
    content types and response schemas, and the error shape on every non-2xx."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

    app = fuzz_client.application
    assert fuzz_client.get("/openapi.json").status_code == 200
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    check = _schema_case_check(checks)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    limits = settings(max_examples=SCHEMA_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                limits(given(case=operation.as_strategy(generation_mode=mode))(check))()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise  # negative data is impossible for operations without inputs, such as GET /healthz

"""The native API's contract: request forms, CRUD, and one error shape that changes nothing."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from tests.conftest import no_face_image, photo, upload


def state(client: FlaskClient) -> dict:
    people = client.get("/v1/people").json
    return {"people": people, "details": [client.get(f"/v1/people/{p['id']}").json for p in people["people"]]}


def assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.json
    assert set(body) == {"ok", "status", "code", "error"}
    assert body["ok"] is False and body["status"] == status and body["code"] == code
    assert isinstance(body["error"], str) and body["error"]


@pytest.fixture
def app(make_app: Callable[..., Flask], store_settings: dict[str, str]) -> Flask:
    """Every API test runs on both stores: SQLite and PostgreSQL (tests/pgfixtures.py)."""
    return make_app(**store_settings)


@pytest.fixture
def taught(client: FlaskClient) -> FlaskClient:
    r = client.post("/v1/people/p0/faces", data={"file": upload(photo("img26.jpg")), "name": "Zoë Example"})
    assert r.status_code == 201, r.json
    return client


def test_teach_response_and_listing(taught: FlaskClient) -> None:
    person = taught.get("/v1/people/p0").json
    assert person["person"]["name"] == "Zoë Example" and person["person"]["face_count"] == 1
    face = person["faces"][0]
    assert face["model"] == "dlib-resnet-v1" and len(face["image_sha256"]) == 64
    assert taught.get("/v1/people").json["total"] == 1


def test_teach_same_image_twice_is_idempotent(taught: FlaskClient) -> None:
    r = taught.post("/v1/people/p0/faces", data={"file": upload(photo("img26.jpg"))})
    assert r.status_code == 200 and r.json["created"] is False
    assert taught.get("/v1/people/p0").json["person"]["face_count"] == 1


def test_teach_two_photos_in_one_request_json_base64(client: FlaskClient) -> None:
    b64 = [base64.b64encode(photo(f)).decode() for f in ("img26.jpg", "img27.jpg")]
    r = client.post("/v1/people/p1/faces", json={"name": "Two Shots", "base64": b64})
    assert r.status_code == 201, r.json
    assert len(r.json["faces"]) == 2 and r.json["person"]["face_count"] == 2


def test_teach_with_data_url_and_raw_body(client: FlaskClient) -> None:
    data_url = "data:image/jpeg;base64," + base64.b64encode(photo("img26.jpg")).decode()
    assert client.post("/v1/people/a/faces", json={"base64": data_url}).status_code == 201
    r = client.post("/v1/people/b/faces?name=Raw", data=photo("img27.jpg"), content_type="image/jpeg")
    assert r.status_code == 201 and r.json["person"]["name"] == "Raw"


def test_identify_finds_taught_person(taught: FlaskClient) -> None:
    r = taught.post("/v1/identify", data={"file": upload(photo("img27.jpg")), "top_k": "2"})
    face = r.json["faces"][0]
    assert face["matched"] is True and face["match"]["person_id"] == "p0" and face["match"]["name"] == "Zoë Example"
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert 0.9 <= face["detection_prob"] <= 1.0
    # an impossible threshold turns the same face into a non-match
    r = taught.post("/v1/identify", data={"file": upload(photo("img27.jpg")), "threshold": "0.9999"})
    assert r.json["faces"][0]["matched"] is False and r.json["faces"][0]["match"] is None


def test_multiple_faces_refused_unless_largest_is_picked(client: FlaskClient) -> None:
    r = client.post("/v1/people/g/faces", data={"file": upload(photo("couple.jpg"))})
    assert_error(r, 422, "multiple_faces")
    assert client.get("/v1/people").json["total"] == 0
    r = client.post("/v1/people/g/faces", data={"file": upload(photo("couple.jpg")), "pick": "largest"})
    assert r.status_code == 201


def test_rename_delete_face_and_person(taught: FlaskClient) -> None:
    r = taught.patch("/v1/people/p0", json={"name": "Renamed"})
    assert r.status_code == 200 and r.json["person"]["name"] == "Renamed"
    taught.post("/v1/people/p0/faces", data={"file": upload(photo("img27.jpg"))})
    faces = taught.get("/v1/people/p0").json["faces"]
    assert len(faces) == 2
    assert taught.delete(f"/v1/people/p0/faces/{faces[0]['id']}").status_code == 200
    assert_error(taught.delete(f"/v1/people/p0/faces/{faces[0]['id']}"), 404, "face_not_found")
    assert taught.get("/v1/people/p0").json["person"]["face_count"] == 1
    r = taught.delete("/v1/people/p0")
    assert r.status_code == 200 and r.json["faces_deleted"] == 1
    assert_error(taught.get("/v1/people/p0"), 404, "person_not_found")
    r = taught.post("/v1/identify", data={"file": upload(photo("img27.jpg"))})
    assert r.json["faces"][0]["candidates"] == []


@pytest.mark.parametrize(
    ("make_kwargs", "status", "code"),
    [
        (lambda: {"data": {"file": upload(b"not an image at all")}}, 422, "invalid_image"),
        (lambda: {"data": {"file": upload(photo("img27.jpg")[:2000])}}, 422, "invalid_image"),
        (lambda: {"data": {"file": upload(b"")}}, 400, "missing_image"),
        (lambda: {"data": {"file": upload(no_face_image())}}, 422, "no_face_detected"),
        (lambda: {"data": {"name": "x"}}, 400, "missing_image"),
        (lambda: {"json": {"base64": "%%% not base64"}}, 400, "invalid_base64"),
        (lambda: {"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        (lambda: {"data": "hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        (lambda: {"data": {"file": upload(photo("img27.jpg")), "name": "x" * 10_000}}, 400, "invalid_name"),
        (lambda: {"data": {"file": upload(photo("img27.jpg")), "name": "bad\x00name"}}, 400, "invalid_name"),
        (lambda: {"data": {"file": upload(photo("img27.jpg")), "pick": "all"}}, 400, "invalid_parameter"),
    ],
)
def test_bad_teach_input_is_4xx_and_changes_nothing(taught: FlaskClient, make_kwargs: Callable[[], dict], status: int, code: str) -> None:
    before = state(taught)
    assert_error(taught.post("/v1/people/p0/faces", **make_kwargs()), status, code)
    assert_error(taught.post("/v1/people/newbie/faces", **make_kwargs()), status, code)
    assert state(taught) == before


def test_decompression_bomb_refused(client: FlaskClient) -> None:
    buf = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buf, "PNG")  # 900 Mpx in a few hundred KB
    assert_error(client.post("/v1/identify", data={"file": upload(buf.getvalue(), "bomb.png")}), 422, "image_too_large")


def test_oversized_body_is_413(make_app) -> None:
    client = make_app(max_upload_bytes=10_000).test_client()
    assert_error(client.post("/v1/identify", data={"file": upload(photo("img27.jpg"))}), 413, "payload_too_large")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/v1/people/ghost", 404, "person_not_found"),
        ("patch", "/v1/people/ghost", 404, "person_not_found"),
        ("delete", "/v1/people/ghost", 404, "person_not_found"),
        ("delete", "/v1/people/ghost/faces/1", 404, "person_not_found"),
        ("get", "/no/such/route", 404, "not_found"),
        ("get", "/v1/identify", 405, "method_not_allowed"),
    ],
)
def test_unknown_ids_and_routes_share_the_error_shape(client: FlaskClient, method: str, path: str, status: int, code: str) -> None:
    kwargs = {"json": {"name": "x"}} if method == "patch" else {}
    assert_error(getattr(client, method)(path, **kwargs), status, code)


def test_bad_identify_parameters(client: FlaskClient) -> None:
    f = photo("img27.jpg")
    assert_error(client.post("/v1/identify", data={"file": upload(f), "threshold": "abc"}), 400, "invalid_parameter")
    assert_error(client.post("/v1/identify", data={"file": upload(f), "top_k": "0"}), 400, "invalid_parameter")
    assert_error(client.post("/v1/identify", data={"file": [upload(f), upload(f)]}), 400, "too_many_images")
    assert_error(client.post("/v1/verify", data={"image_a": upload(f)}), 400, "missing_image")


def test_health_ready_and_info(client: FlaskClient) -> None:
    assert client.get("/healthz").json["ok"] is True
    ready = client.get("/readyz").json
    assert ready["status"] == "ready" and ready["model"] == "dlib-resnet-v1"
    info = client.get("/v1/info").json
    assert info["model"]["dim"] == 128 and -1 <= info["default_threshold"] <= 1

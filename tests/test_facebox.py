"""Facebox compatibility: the request forms Facebox clients send (the Go SDK's multipart file,
form-encoded url/base64, JSON url/base64) and the response fields they read."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from service import create_app
from service.config import Settings
from service.http.facebox import name_slug
from service.recognizer import Engine
from tests.conftest import no_face_image, photo
from tests.loopback import Loopback, Route, loopback_server

SMALL = ["img27.jpg", "img28.jpg", "img46.jpg", "img5.jpg", "img10.jpg", "img50.jpg", "img51.jpg"]
ACCEPT = {"Accept": "application/json; charset=utf-8"}  # what the Go SDK sends


@pytest.fixture(scope="module")
def web() -> Iterator[Loopback]:
    routes = {f"/{n}": Route(body=photo(n), headers={"Content-Type": "image/jpeg"}) for n in SMALL}
    with loopback_server(routes) as srv:
        yield srv


@pytest.fixture(scope="module")
def fb(engine: Engine, tmp_path_factory: pytest.TempPathFactory, web: Loopback) -> FlaskClient:
    """A Facebox-style gallery taught through every teach form."""
    settings = Settings.from_env({}, data_dir=str(tmp_path_factory.mktemp("facebox")), allow_private_urls=True)
    client = create_app(settings, engine).test_client()
    # Go SDK Teach: multipart file (named after the id) + form name and id
    r = client.post(
        "/facebox/teach", data={"file": (io.BytesIO(photo("img27.jpg")), "p00"), "name": "Person Zero", "id": "p00"}, headers=ACCEPT
    )
    assert r.status_code == 200 and r.json["success"] is True and r.json["id"] == "p00", r.json
    # Go SDK TeachBase64: form-encoded base64, no id: the person id is derived from the name
    r = client.post("/facebox/teach", data={"base64": base64.b64encode(photo("img5.jpg")).decode(), "name": "Person One"}, headers=ACCEPT)
    assert r.json == {"success": True, "id": "person-one", "name": "Person One", "created": True}
    # JSON url (Facebox docs), taught twice to the same id: the person gains an example
    r = client.post("/facebox/teach", json={"url": web.url("/img50.jpg"), "name": "Person Two", "id": "p02"})
    assert r.status_code == 200 and r.json["created"] is True
    # JSON base64
    r = client.post("/facebox/teach", json={"base64": base64.b64encode(photo("img46.jpg")).decode(), "name": "Person Zero", "id": "p00"})
    assert r.status_code == 200 and r.json["created"] is False
    assert client.get("/v1/people/p00").json["person"]["face_count"] == 2
    return client


def check_fields(body: dict[str, Any], expected: list[tuple[str, str] | None]) -> None:
    assert body["success"] is True and body["facesCount"] == len(body["faces"]) == len(expected)
    for face, want in zip(body["faces"], expected, strict=True):
        assert set(face["rect"]) == {"top", "left", "width", "height"} and all(isinstance(v, int) for v in face["rect"].values())
        assert face["rect"]["width"] > 20 and face["rect"]["height"] > 20
        assert isinstance(face["confidence"], float) and 0 <= face["confidence"] <= 1
        if want is None:
            assert face["matched"] is False and "id" not in face and "name" not in face
        else:
            assert face["matched"] is True and (face["id"], face["name"]) == want and face["confidence"] >= 0.9


def test_check_in_every_request_form(fb: FlaskClient, web: Loopback) -> None:
    zero, one, two = ("p00", "Person Zero"), ("person-one", "Person One"), ("p02", "Person Two")
    r = fb.post("/facebox/check", data={"file": (io.BytesIO(photo("img28.jpg")), "image.dat")}, headers=ACCEPT)  # Go SDK Check
    check_fields(r.json, [zero])
    r = fb.post("/facebox/check", data={"url": web.url("/img10.jpg")}, headers=ACCEPT)  # Go SDK CheckURL: form-encoded
    check_fields(r.json, [one])
    r = fb.post("/facebox/check", json={"url": web.url("/img51.jpg")})
    check_fields(r.json, [two])
    r = fb.post("/facebox/check", json={"base64": base64.b64encode(photo("img10.jpg")).decode()})
    check_fields(r.json, [one])
    # Go SDK CheckBase64WithFaceprint: form-encoded base64 + faceprint=true
    r = fb.post("/facebox/check", data={"base64": base64.b64encode(photo("img28.jpg")).decode(), "faceprint": "true"})
    check_fields(r.json, [zero])
    faceprint = r.json["faces"][0]["faceprint"]
    assert np.frombuffer(base64.b64decode(faceprint), "<f4").shape == (128,)
    # nobody known in a photo of someone else; no face at all is a success with no faces
    r = fb.post("/facebox/check", json={"base64": base64.b64encode(photo("img12.jpg")).decode()})
    check_fields(r.json, [None])
    r = fb.post("/facebox/check", data={"file": (io.BytesIO(no_face_image()), "x.png")})
    assert r.json == {"success": True, "facesCount": 0, "faces": []}
    # faceprints: check them, compare them
    r = fb.post("/facebox/check", json={"faceprints": [faceprint]})
    assert r.json["success"] and r.json["faces"][0]["id"] == "p00" and r.json["faces"][0]["matched"]
    other = fb.post("/facebox/check", json={"url": web.url("/img51.jpg"), "faceprint": True}).json["faces"][0]["faceprint"]
    r = fb.post("/facebox/faceprint/compare", json={"target": faceprint, "faceprints": [faceprint, other]})
    assert r.json["success"] and r.json["confidences"][0] == pytest.approx(1.0, abs=1e-4) and r.json["confidences"][1] < 0.9


def test_errors_keep_one_shape_that_facebox_clients_read_as_failure(fb: FlaskClient) -> None:
    before = fb.get("/v1/people").json
    for r in (
        fb.post("/facebox/teach", data={"file": (io.BytesIO(no_face_image()), "x.png"), "name": "Nobody"}),
        fb.post("/facebox/teach", data={"file": (io.BytesIO(b"not an image"), "x.jpg"), "name": "Nobody"}),
        fb.post("/facebox/teach", json={"url": "file:///etc/passwd", "name": "Nobody"}),
        fb.post("/facebox/teach", data={"base64": "%%%", "name": "Nobody"}),
        fb.post("/facebox/check", data={}),
        fb.delete("/facebox/teach/nobody"),
    ):
        assert r.status_code >= 400 and r.json["success"] is False and r.json["ok"] is False
        assert set(r.json) == {"success", "ok", "status", "code", "error"} and r.json["error"]
    assert fb.get("/v1/people").json == before


def test_similar_rename_remove(fb: FlaskClient, web: Loopback) -> None:
    r = fb.post("/facebox/similar", data={"file": (io.BytesIO(photo("img28.jpg")), "image.dat")}, headers=ACCEPT)
    body = r.json
    assert body["success"] and body["facesCount"] == 1 and body["similarCount"] == len(body["similar"]) == 3
    assert body["similar"][0] == body["faces"][0]["similar_faces"][0] and body["similar"][0]["id"] == "p00"
    assert set(body["similar"][0]) == {"id", "name", "confidence"}
    confidences = [s["confidence"] for s in body["similar"]]
    assert confidences == sorted(confidences, reverse=True)
    r = fb.post("/facebox/similar", data={"url": web.url("/img10.jpg"), "limit": "1"})
    assert [s["id"] for s in r.json["similar"]] == ["person-one"]
    r = fb.get("/facebox/similar?id=p00", headers=ACCEPT)  # Go SDK SimilarID
    assert r.json["success"] and {s["id"] for s in r.json["similar"]} == {"person-one", "p02"}

    assert fb.patch("/facebox/teach/p02", data={"name": "Sir Two"}, headers=ACCEPT).json == {"success": True}  # Go SDK Rename
    r = fb.post("/facebox/check", json={"url": web.url("/img51.jpg")})
    assert r.json["faces"][0]["name"] == "Sir Two"
    assert fb.post("/facebox/rename", data={"from": "Sir Two", "to": "Dame Two"}).json == {"success": True, "renamed": 1}
    assert fb.get("/v1/people/p02").json["person"]["name"] == "Dame Two"
    assert fb.patch("/facebox/teach/nobody", data={"name": "X"}).status_code == 404

    assert fb.delete("/facebox/teach/p02", headers=ACCEPT).json == {"success": True}  # Go SDK Remove
    r = fb.post("/facebox/check", json={"url": web.url("/img51.jpg")})
    assert r.json["faces"][0]["matched"] is False
    r = fb.post(
        "/facebox/teach",
        json={
            "faceprint": fb.post("/facebox/check", json={"url": web.url("/img51.jpg"), "faceprint": "1"}).json["faces"][0]["faceprint"],
            "name": "Two Again",
            "id": "p02",
        },
    )
    assert r.status_code == 200, r.json
    assert fb.post("/facebox/check", json={"url": web.url("/img50.jpg")}).json["faces"][0]["id"] == "p02"


def test_state_download_and_upload(fb: FlaskClient, engine: Engine, tmp_path: Path, web: Loopback) -> None:
    r = fb.get("/facebox/state", headers=ACCEPT)  # Go SDK OpenState
    assert r.status_code == 200
    state = r.get_data()
    settings = Settings.from_env({}, data_dir=str(tmp_path / "other"), allow_private_urls=True)
    other = create_app(settings, engine).test_client()
    assert other.post("/facebox/teach", json={"url": web.url("/img10.jpg"), "name": "Gone"}).status_code == 200
    r = other.post("/facebox/state", data={"file": (io.BytesIO(state), "image.dat")}, headers=ACCEPT)  # Go SDK PostState
    assert r.json["success"] is True, r.json
    assert other.get("/v1/people").json == fb.get("/v1/people").json  # Facebox state upload replaces
    with loopback_server({"/state.json": Route(body=state)}) as srv:
        other.post("/facebox/teach", json={"url": web.url("/img10.jpg"), "name": "Gone"})
        r = other.post("/facebox/state", data={"url": srv.url("/state.json")})  # Go SDK PostStateURL
        assert r.json["success"] is True and srv.requests == ["/state.json"]
    assert other.get("/v1/people").json == fb.get("/v1/people").json


def test_info_and_id_mapping(fb: FlaskClient) -> None:
    info = fb.get("/info", headers=ACCEPT).json
    assert info["name"] == "facebox" and info["status"] == "ready" and isinstance(info["version"], int) and "fewface" in info["build"]
    assert name_slug("John Lennon") == "john-lennon"
    assert name_slug("Zoë  O'Brien") == "zoë-o-brien"
    assert name_slug("!!!").startswith("person-")


def _b64(name: str) -> str:
    return base64.b64encode(photo(name)).decode()


def test_overflowing_or_non_unit_faceprints_are_refused(client: FlaskClient) -> None:
    """Issue 11: a faceprint whose float32 norm overflows (and any faceprint not of unit length)
    is a 400 invalid_faceprint on every route that takes one, and nothing changes."""
    good = client.post("/facebox/check", json={"base64": _b64("img27.jpg"), "faceprint": True}).json["faces"][0]["faceprint"]
    assert client.post("/facebox/teach", json={"faceprint": good, "name": "Zero", "id": "p00"}).status_code == 200
    before = client.get("/v1/people").json
    huge = base64.b64encode(np.full(128, np.finfo(np.float32).max, "<f4").tobytes()).decode()
    double = base64.b64encode((2 * np.frombuffer(base64.b64decode(good), "<f4")).astype("<f4").tobytes()).decode()
    for bad in (huge, double):
        for r in (
            client.post("/facebox/teach", json={"faceprint": bad, "name": "Bad", "id": "bad"}),
            client.post("/facebox/teach", data={"faceprint": bad, "name": "Bad", "id": "p00"}),
            client.post("/facebox/check", json={"faceprints": [good, bad]}),
            client.post("/facebox/faceprint/check", json={"faceprints": [bad]}),
            client.post("/facebox/faceprint/compare", json={"target": bad, "faceprints": [good]}),
            client.post("/facebox/faceprint/compare", json={"target": good, "faceprints": [bad]}),
        ):
            assert r.status_code == 400 and r.json["code"] == "invalid_faceprint" and r.json["success"] is False, r.json
    assert client.get("/v1/people").json == before


def test_teach_by_name_never_merges_different_names(client: FlaskClient) -> None:
    """Issue 11: names that differ only in case or punctuation are different people; teaching a
    name again adds to the person of exactly that name; nobody is renamed."""
    first = client.post("/facebox/teach", data={"base64": _b64("img24.jpg"), "name": "Mary-Ann Smith", "id": ""}).json
    second = client.post("/facebox/teach", data={"base64": _b64("img22.jpg"), "name": "MARY ANN SMITH"}).json
    third = client.post("/facebox/teach", json={"base64": _b64("img25.jpg"), "name": "Mary-Ann Smith"}).json
    assert first["id"] == "mary-ann-smith" and first["created"] is True
    assert second["id"].startswith("mary-ann-smith-") and second["created"] is True and second["name"] == "MARY ANN SMITH"
    assert third == {"success": True, "id": "mary-ann-smith", "name": "Mary-Ann Smith", "created": False}
    people = {p["id"]: (p["name"], p["face_count"]) for p in client.get("/v1/people").json["people"]}
    assert people == {"mary-ann-smith": ("Mary-Ann Smith", 2), second["id"]: ("MARY ANN SMITH", 1)}
    for file, name in (("img25.jpg", "Mary-Ann Smith"), ("img23.jpg", "MARY ANN SMITH")):
        face = client.post("/facebox/check", json={"base64": _b64(file)}).json["faces"][0]
        assert face["matched"] and face["name"] == name
    # renamed away, the name no longer lives there: a new teach by it is a new person, not a merge
    assert client.patch("/facebox/teach/mary-ann-smith", data={"name": "Mary Smith"}).status_code == 200
    fourth = client.post("/facebox/teach", json={"base64": _b64("img29.jpg"), "name": "Mary-Ann Smith"}).json
    assert fourth["created"] is True and fourth["id"] not in people
    assert client.get("/v1/people/mary-ann-smith").json["person"]["name"] == "Mary Smith"


def test_ids_with_slashes_everywhere(client: FlaskClient) -> None:
    """Facebox ids may be paths and URLs: taught, found, renamed and removed through the Facebox
    routes, and reachable through the native per-person routes too."""
    for pid, file in (
        ("photos/2019/anna.jpg", "img5.jpg"),
        ("/abs/path/p.jpg", "img27.jpg"),
        ("https://x.example/a.jpg?s=1#f", "img50.jpg"),
    ):
        r = client.post("/facebox/teach", data={"base64": _b64(file), "name": "N " + file, "id": pid})
        assert r.status_code == 200 and r.json["id"] == pid, r.json
    face = client.post("/facebox/check", json={"base64": _b64("img10.jpg")}).json["faces"][0]
    assert face["id"] == "photos/2019/anna.jpg"
    assert client.get("/facebox/similar", query_string={"id": "photos/2019/anna.jpg"}).json["similarCount"] == 2
    assert client.get("/v1/people/photos/2019/anna.jpg").json["person"]["id"] == "photos/2019/anna.jpg"
    assert client.patch("/facebox/teach/photos/2019/anna.jpg", data={"name": "Anna"}).json == {"success": True}
    assert client.get("/v1/people/photos%2F2019%2Fanna.jpg").json["person"]["name"] == "Anna"
    assert client.delete("/facebox/teach//abs/path/p.jpg").json == {"success": True}
    assert client.delete("/facebox/teach/https://x.example/a.jpg%3Fs=1%23f").json == {"success": True}
    assert client.delete("/v1/people/photos/2019/anna.jpg").json["deleted"] == "photos/2019/anna.jpg"
    assert client.get("/v1/people").json["total"] == 0
    # native teach ids stay one path segment; refused ids are clear 400s
    assert client.post("/facebox/teach", data={"base64": _b64("img5.jpg"), "name": "N", "id": " x"}).json["code"] == "invalid_id"
    assert client.post("/facebox/teach", data={"base64": _b64("img5.jpg"), "name": "N", "id": "x" * 2049}).json["code"] == "invalid_id"

"""State export/import: a portable, checksummed file; import validates everything and is all or
nothing; another model's state is refused."""

from __future__ import annotations

import base64
import copy
import gzip
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.config import Settings
from service.recognizer import Engine
from service.state import checksum
from tests.conftest import photo, upload

# small photos keep the test quick on a CPU
TAUGHT = {"p0": ("Person Zero", ["img27.jpg", "img46.jpg"]), "p1": ("Person Ünë", ["img5.jpg"]), "p2": ("Person Two", ["img50.jpg"])}
PROBES = ["img28.jpg", "img10.jpg", "img51.jpg"]


def identify_all(client: FlaskClient) -> list[Any]:
    out = []
    for name in PROBES:
        r = client.post("/v1/identify", data={"file": upload(photo(name)), "top_k": "3"})
        assert r.status_code == 200, r.json
        out.append(r.json["faces"])
    return out


def snapshot(client: FlaskClient) -> dict[str, Any]:
    people = client.get("/v1/people").json
    return {"people": people, "details": [client.get(f"/v1/people/{p['id']}").json for p in people["people"]]}


@pytest.fixture(scope="module")
def source(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A gallery taught from real photos: its exported state and its identify answers."""
    app = create_app(Settings.from_env({}, data_dir=str(tmp_path_factory.mktemp("source"))), engine)
    client = app.test_client()
    for person_id, (name, files) in TAUGHT.items():
        r = client.post(f"/v1/people/{person_id}/faces", data={"file": [upload(photo(f), f) for f in files], "name": name})
        assert r.status_code == 201, r.json
    client.delete("/v1/people/p0/faces/1")  # a gap in the face ids must survive the round trip
    r = client.get("/v1/state")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert "attachment" in r.headers["Content-Disposition"]
    return {"state": r.get_data(), "identify": identify_all(client), "snapshot": snapshot(client)}


@pytest.fixture
def client(make_app: Callable[..., Flask], store_settings: dict[str, str]) -> FlaskClient:
    """The service under test, in each store (SQLite, PostgreSQL): the source above stays SQLite,
    so the round trip also crosses stores."""
    return make_app(**store_settings).test_client()


def post_state(client: FlaskClient, data: bytes, mode: str | None = None, form: str = "multipart") -> Any:
    query = f"?mode={mode}" if mode else ""
    if form == "multipart":
        return client.post("/v1/state" + query, data={"file": (io.BytesIO(data), "state.json")})
    return client.post("/v1/state" + query, data=data, content_type="application/json")


def signed(doc: dict[str, Any]) -> bytes:
    doc = copy.deepcopy(doc)
    doc["checksum"] = {"algorithm": "sha256", "value": checksum(doc)}
    return json.dumps(doc).encode()


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.get_data(as_text=True)
    assert set(r.json) == {"ok", "status", "code", "error"} and r.json["code"] == code


def test_file_is_plain_versioned_json(source: dict[str, Any], engine: Engine) -> None:
    doc = json.loads(source["state"])
    assert doc["format"] == "fewface-state" and doc["version"] == 1
    assert doc["model"] == {"id": "dlib-resnet-v1", "dim": 128, "pipeline": engine.embedder.pipeline}
    assert doc["checksum"]["value"] == checksum(doc)
    assert {p["id"] for p in doc["people"]} == set(TAUGHT) and len(doc["faces"]) == 3
    face = doc["faces"][0]
    vector = np.frombuffer(base64.b64decode(face["embedding"]), dtype="<f4")
    assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert len(face["image_sha256"]) == 64 and len(face["box"]) == 4 and 0.9 < face["detection_prob"] <= 1
    # the probes really are recognised, so comparing identify answers means something
    assert [faces[0]["match"]["person_id"] for faces in source["identify"]] == ["p0", "p1", "p2"]


def test_export_wipe_import_reproduces_identify(
    source: dict[str, Any], make_app: Callable[..., Flask], tmp_path: Path, store_settings: dict[str, str]
) -> None:
    client = make_app(data_dir=tmp_path / "fresh", **store_settings).test_client()
    assert client.get("/v1/people").json["total"] == 0
    r = post_state(client, source["state"])
    assert r.status_code == 200, r.json
    assert r.json["mode"] == "replace" and r.json["imported"] == {"people": 3, "faces": 3}
    assert snapshot(client) == source["snapshot"]
    assert identify_all(client) == source["identify"]
    # ... and again after a restart (the index is rebuilt from the store)
    restarted = make_app(data_dir=tmp_path / "fresh", **store_settings).test_client()
    assert identify_all(restarted) == source["identify"]
    # the raw-body form and the gzip form give the same state
    gz = restarted.get("/v1/state?compress=gzip")
    assert gz.mimetype == "application/gzip"
    other = make_app(data_dir=tmp_path / "gz").test_client()
    assert other.post("/v1/state", data=gz.get_data(), content_type="application/gzip").status_code == 200
    assert snapshot(other) == source["snapshot"]


def test_replace_drops_what_was_there_and_merge_keeps_it(source: dict[str, Any], client: FlaskClient) -> None:
    assert client.post("/v1/people/extra/faces", data={"file": upload(photo("img43.jpg")), "name": "Extra"}).status_code == 201
    assert post_state(client, source["state"], "merge", form="raw").status_code == 200
    ids = {p["id"] for p in client.get("/v1/people").json["people"]}
    assert ids == {"extra", *TAUGHT}
    again = post_state(client, source["state"], "merge")
    assert again.json["imported"]["faces"] == 0 and again.json["total"] == {"people": 4, "faces": 4}
    assert post_state(client, source["state"], "replace").status_code == 200
    assert {p["id"] for p in client.get("/v1/people").json["people"]} == set(TAUGHT)


def damaged_files(state: bytes) -> list[tuple[str, bytes, int, str]]:
    doc = json.loads(state)
    tampered = copy.deepcopy(doc)
    tampered["people"][0]["name"] = "Mallory"
    flipped = copy.deepcopy(doc)
    vec = bytearray(base64.b64decode(flipped["faces"][0]["embedding"]))
    vec[0] ^= 0x01
    flipped["faces"][0]["embedding"] = base64.b64encode(bytes(vec)).decode()

    def variant(edit: Callable[[dict[str, Any]], None]) -> bytes:
        d = copy.deepcopy(doc)
        edit(d)
        return signed(d)

    def unnormalised(d: dict[str, Any]) -> None:
        d["faces"][0]["embedding"] = base64.b64encode((np.ones(128, "<f4") * 0.5).tobytes()).decode()

    def short_vector(d: dict[str, Any]) -> None:
        d["faces"][0]["embedding"] = base64.b64encode(np.ones(64, "<f4").tobytes()).decode()

    def last_face_bad(d: dict[str, Any]) -> None:
        d["faces"][-1]["person_id"] = "nobody"

    return [
        ("tampered name", json.dumps(tampered).encode(), 400, "state_checksum_mismatch"),
        ("flipped embedding bit", json.dumps(flipped).encode(), 400, "state_checksum_mismatch"),
        ("truncated", state[: len(state) // 2], 400, "invalid_state"),
        ("truncated gzip", gzip.compress(state)[:-20], 400, "invalid_state"),
        ("pickle", pickle.dumps({"format": "fewface-state"}), 400, "invalid_state"),
        ("empty", b"", 400, "missing_state"),
        ("not an object", b"[1, 2]", 400, "invalid_state"),
        ("other model", variant(lambda d: d["model"].update(id="facenet-vggface2", dim=512)), 409, "model_mismatch"),
        ("same model id, other dim", variant(lambda d: d["model"].update(dim=512)), 409, "model_mismatch"),
        ("future version", variant(lambda d: d.update(version=2)), 400, "unsupported_state_version"),
        ("not unit length", variant(unnormalised), 400, "invalid_state"),
        ("wrong dimension", variant(short_vector), 400, "invalid_state"),
        ("duplicate person", variant(lambda d: d["people"].append(dict(d["people"][0]))), 400, "invalid_state"),
        ("duplicate face id", variant(lambda d: d["faces"][1].update(id=d["faces"][0]["id"])), 400, "invalid_state"),
        ("bad person id", variant(lambda d: d["people"][0].update(id="a/b")), 400, "invalid_state"),
        ("empty name", variant(lambda d: d["people"][0].update(name=" ")), 400, "invalid_state"),
        ("bad sha256", variant(lambda d: d["faces"][0].update(image_sha256="xyz")), 400, "invalid_state"),
        ("last face invalid", variant(last_face_bad), 400, "invalid_state"),
    ]


def test_damaged_or_foreign_state_is_refused_and_changes_nothing(source: dict[str, Any], client: FlaskClient) -> None:
    assert client.post("/v1/people/keep/faces", data={"file": upload(photo("img43.jpg")), "name": "Kept"}).status_code == 201
    before = snapshot(client)
    for label, data, status, code in damaged_files(source["state"]):
        for mode in ("replace", "merge"):
            r = post_state(client, data, mode)
            assert r.status_code == status and r.json["code"] == code, (label, mode, r.json)
            assert_error(r, status, code)
        assert snapshot(client) == before, label
    assert_error(client.post("/v1/state?mode=wipe", data={"file": (io.BytesIO(source["state"]), "s.json")}), 400, "invalid_parameter")
    assert snapshot(client) == before

"""Collections (issue 13 item 3): independent galleries in one service, over HTTP, on a real app
and the real pipeline: same person ids never mix, deleting one collection leaves the others
identical, per-collection API keys, bad ids change nothing, today's routes act on `default`.
Every test runs on both stores: embedded SQLite and a real PostgreSQL (tests/pgfixtures.py)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.config import Settings
from service.recognizer import Engine
from tests.conftest import photo, upload

SERVICE_KEY = "service-key-0123456789"
KEY_A = "collection-a-key-0123456789"
KEY_B = "collection-b-key-0123456789"
BAD_IDS = ["A", "-a", "_a", "a" * 65, "a.b", "a b", "é", "a%2Fb", "default!"]


def teach(client: FlaskClient, base: str, person: str, name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = client.post(f"{base}/people/{person}/faces", data={"file": upload(photo(name), name)}, headers=headers or {})
    assert r.status_code in (200, 201), r.json
    return r.json


def identify(client: FlaskClient, base: str, name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = client.post(f"{base}/identify", data={"file": upload(photo(name), name), "top_k": "10"}, headers=headers or {})
    assert r.status_code == 200, r.json
    return r.json


def without_tokens(answer: dict[str, Any]) -> dict[str, Any]:
    """An identify answer less its face tokens (new in every answer)."""
    return {**answer, "faces": [{k: v for k, v in f.items() if k != "face_token"} for f in answer["faces"]]}


def state(client: FlaskClient, base: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A collection's state export without what changes with the moment of export."""
    r = client.get(f"{base}/state", headers=headers or {})
    assert r.status_code == 200, r.json
    return {k: v for k, v in r.json.items() if k not in ("exported_at", "checksum", "generator")}


def create(client: FlaskClient, cid: str, headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/collections", json={"id": cid, **extra}, headers=headers or {})
    assert r.status_code == 201, r.json
    return r.json["collection"]


def collection_ids(client: FlaskClient, headers: dict[str, str] | None = None) -> list[str]:
    r = client.get("/v1/collections", headers=headers or {})
    assert r.status_code == 200, r.json
    return [c["id"] for c in r.json["collections"]]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_app(request: pytest.FixtureRequest, engine: Engine, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Apps over the embedded SQLite store, or over a fresh PostgreSQL database."""
    store = {"database_url": request.getfixturevalue("pg_url")} if request.param == "postgresql" else {}
    apps: list[Flask] = []

    def make(**overrides: object) -> Flask:
        settings = Settings.from_env({}, data_dir=str(tmp_path / "data"), **store, **overrides)
        apps.append(create_app(settings, engine))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["fewface_galleries"].close()


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


def test_admin_routes(client: FlaskClient, identities: dict[str, list[str]]) -> None:
    assert client.get("/v1/collections").json["collections"][0] | {"created_at": 0} == {
        "id": "default",
        "model": "dlib-resnet-v1",
        "pipeline": client.get("/v1/info").json["pipeline"],
        "people": 0,
        "faces": 0,
        "api_key": False,
        "created_at": 0,
        "protected": True,
    }
    made = create(client, "team-a_1")
    assert made["id"] == "team-a_1" and made["people"] == made["faces"] == 0 and made["api_key"] is False
    assert made["model"] == "dlib-resnet-v1" and "default_threshold" in made and "match_rule" in made
    teach(client, "/v1/collections/team-a_1", "p", identities["person00"][0])
    listed = {c["id"]: c for c in client.get("/v1/collections").json["collections"]}
    assert set(listed) == {"default", "team-a_1"}
    assert (listed["team-a_1"]["people"], listed["team-a_1"]["faces"]) == (1, 1)
    assert (listed["default"]["people"], listed["default"]["faces"]) == (0, 0)
    r = client.get("/v1/collections/team-a_1/calibration")  # per collection: one person with one example is not enough
    assert r.status_code == 422 and r.json["code"] == "not_enough_examples"
    faces = identities["person00"]
    r = client.post("/v1/collections/team-a_1/verify", data={"image_a": upload(photo(faces[1])), "image_b": upload(photo(faces[2]))})
    assert r.status_code == 200 and r.json["same_person"] is True
    one = client.get("/v1/collections/team-a_1").json["collection"]
    assert (one["people"], one["faces"], one["protected"]) == (1, 1, False)
    r = client.delete("/v1/collections/team-a_1")
    assert r.status_code == 200 and r.json == {"ok": True, "deleted": "team-a_1", "people_deleted": 1, "faces_deleted": 1}
    assert set(collection_ids(client)) == {"default"}
    r = client.get("/v1/collections/team-a_1/people")
    assert r.status_code == 404 and r.json["code"] == "collection_not_found"
    assert create(client, "team-a_1")["faces"] == 0  # created again: empty, nothing of the deleted one comes back
    assert client.get("/v1/collections/team-a_1/people").json["total"] == 0


def test_same_person_id_in_two_collections_never_mixes(client: FlaskClient, identities: dict[str, list[str]]) -> None:
    x, y, z = identities["person00"], identities["person01"], identities["person02"]
    create(client, "a")
    create(client, "b")
    a_faces = {f["id"] for n in x[:2] for f in teach(client, "/v1/collections/a", "p", n)["faces"]}
    a_faces |= {f["id"] for f in teach(client, "/v1/collections/a", "q", z[0])["faces"]}
    b_faces = {f["id"] for f in teach(client, "/v1/collections/b", "p", y[0])["faces"]}
    # identify: each collection answers from its own faces only
    in_a = identify(client, "/v1/collections/a", x[3])["faces"][0]
    assert in_a["matched"] and in_a["match"]["person_id"] == "p"
    assert {c["face_id"] for c in in_a["candidates"]} <= a_faces
    in_b = identify(client, "/v1/collections/b", x[3])["faces"][0]
    assert not in_b["matched"], "person00 was taught in a only"
    assert {c["face_id"] for c in in_b["candidates"]} <= b_faces
    y_in_b = identify(client, "/v1/collections/b", y[3])["faces"][0]
    assert y_in_b["matched"] and y_in_b["match"]["person_id"] == "p" and y_in_b["match"]["face_id"] in b_faces
    assert not identify(client, "/v1/collections/a", y[3])["faces"][0]["matched"]
    assert identify(client, "/v1", x[3])["faces"][0]["candidates"] == []  # default holds nobody
    # people and faces
    assert client.get("/v1/collections/a/people/p").json["person"]["face_count"] == 2
    assert client.get("/v1/collections/b/people/p").json["person"]["face_count"] == 1
    assert client.get("/v1/collections/b/people/q").status_code == 404
    assert client.get("/v1/people/p").status_code == 404
    # similar (Facebox, on the collection's Facebox base URL)
    r = client.get("/v1/collections/a/facebox/similar", query_string={"id": "p"})
    assert r.json["success"] and [s["id"] for s in r.json["similar"]] == ["q"]
    r = client.get("/v1/collections/b/facebox/similar", query_string={"id": "p"})
    assert r.json["success"] and r.json["similar"] == []
    r = client.post("/v1/collections/b/facebox/similars", data={"file": upload(photo(z[1]))})
    assert r.json["success"] and {s["id"] for f in r.json["faces"] for s in f["similar_faces"]} <= {"p"}
    r = client.post("/v1/collections/a/facebox/check", data={"file": upload(photo(z[1]))})
    assert r.json["faces"][0]["matched"] and r.json["faces"][0]["id"] == "q"
    # state export: each holds its own faces and nothing else
    sa, sb = state(client, "/v1/collections/a"), state(client, "/v1/collections/b")
    assert {f["id"] for f in sa["faces"]} == a_faces and {f["id"] for f in sb["faces"]} == b_faces
    assert [p["id"] for p in sa["people"]] == ["p", "q"] and [p["id"] for p in sb["people"]] == ["p"]
    assert not {f["embedding"] for f in sa["faces"]} & {f["embedding"] for f in sb["faces"]}
    assert state(client, "/v1")["faces"] == []
    # a face token from a's identify opens only a: teaching it into b or default changes nothing
    token = in_a["face_token"]
    for base in ("/v1/collections/b", "/v1"):
        r = client.post(f"{base}/people/t/faces", json={"face_token": token})
        assert r.status_code == 404 and r.json["code"] == "face_token_not_found", r.json
    assert state(client, "/v1/collections/b") == sb and state(client, "/v1")["faces"] == []
    # deleting p in b leaves a's p alone
    assert client.delete("/v1/collections/b/people/p").status_code == 200
    assert client.get("/v1/collections/a/people/p").json["person"]["face_count"] == 2
    assert state(client, "/v1/collections/a") == sa


def test_state_import_into_one_collection(client: FlaskClient, identities: dict[str, list[str]]) -> None:
    """A state exported from default imports into a collection (and only there)."""
    teach(client, "/v1", "p", identities["person03"][0])
    exported = client.get("/v1/state").data
    create(client, "copy")
    r = client.post("/v1/collections/copy/state", data=exported, content_type="application/json")
    assert r.status_code == 200 and r.json["total"] == {"people": 1, "faces": 1}
    copied, original = state(client, "/v1/collections/copy"), state(client, "/v1")
    assert copied["people"] == original["people"]
    drop_id = lambda faces: [{k: v for k, v in f.items() if k != "id"} for f in faces]  # noqa: E731 (face ids are unique across collections)
    assert drop_id(copied["faces"]) == drop_id(original["faces"])
    assert client.get("/v1/people").json["total"] == 1  # default unchanged
    hit = identify(client, "/v1/collections/copy", identities["person03"][1])["faces"][0]
    assert hit["matched"] and hit["match"]["person_id"] == "p"


def test_deleting_a_collection_leaves_the_others_identical(client: FlaskClient, identities: dict[str, list[str]]) -> None:
    create(client, "doomed")
    create(client, "kept")
    for base in ("/v1", "/v1/collections/doomed", "/v1/collections/kept"):
        teach(client, base, "p", identities["person04"][0])
    teach(client, "/v1/collections/doomed", "q", identities["person05"][0])
    teach(client, "/v1/collections/kept", "r", identities["person06"][0])
    before = {base: state(client, base) for base in ("/v1", "/v1/collections/kept")}
    answers = {base: without_tokens(identify(client, base, identities["person04"][1])) for base in before}
    r = client.delete("/v1/collections/doomed")
    assert r.status_code == 200 and (r.json["people_deleted"], r.json["faces_deleted"]) == (2, 2)
    assert {base: state(client, base) for base in before} == before
    assert {base: without_tokens(identify(client, base, identities["person04"][1])) for base in before} == answers
    assert set(collection_ids(client)) == {"default", "kept"}
    for path in ("/v1/collections/doomed", "/v1/collections/doomed/people", "/v1/collections/doomed/state"):
        r = client.get(path)
        assert r.status_code == 404 and r.json["code"] == "collection_not_found", path


def test_bad_collection_ids_change_nothing(client: FlaskClient, identities: dict[str, list[str]]) -> None:
    create(client, "a")
    teach(client, "/v1/collections/a", "p", identities["person07"][0])
    teach(client, "/v1", "p", identities["person07"][0])
    before = {base: state(client, base) for base in ("/v1", "/v1/collections/a")}
    image = photo(identities["person07"][1])
    for cid in [*BAD_IDS, "", None, 7, ["a"], {"id": "a"}]:
        r = client.post("/v1/collections", json={"id": cid})
        assert r.status_code == 400 and r.json["code"] == "invalid_collection_id", (cid, r.json)
    for cid in BAD_IDS:
        r = client.post(f"/v1/collections/{cid}/people/p/faces", data={"file": upload(image)})
        assert r.status_code in (400, 404) and r.json["code"] in ("invalid_collection_id", "not_found"), (cid, r.json)
        r = client.delete(f"/v1/collections/{cid}")
        assert r.status_code in (400, 404) and r.json["code"] in ("invalid_collection_id", "not_found"), (cid, r.json)
    for method, path in (
        ("POST", "/v1/collections/nope/people/p/faces"),
        ("POST", "/v1/collections/nope/state"),
        ("DELETE", "/v1/collections/nope/people/p"),
        ("DELETE", "/v1/collections/nope"),
        ("GET", "/v1/collections/nope"),
        ("POST", "/v1/collections/nope/facebox/teach"),
    ):
        r = client.open(path, method=method, data={"file": upload(image)} if method == "POST" else None)
        assert r.status_code == 404 and r.json["code"] == "collection_not_found", (path, r.json)
    r = client.post("/v1/collections/nope/facebox/check", data={"file": upload(image)})
    assert r.status_code == 404 and r.json["success"] is False  # a Facebox client reads success
    r = client.post("/v1/collections", json={"id": "a"})
    assert r.status_code == 409 and r.json["code"] == "collection_exists"
    r = client.post("/v1/collections", json={"id": "default"})
    assert r.status_code == 409 and r.json["code"] == "collection_exists"
    r = client.delete("/v1/collections/default")
    assert r.status_code == 409 and r.json["code"] == "collection_protected"
    r = client.post("/v1/collections", json={"id": "k", "api_key": "short"})
    assert r.status_code == 400 and r.json["code"] == "invalid_api_key"
    r = client.post("/v1/collections", json={"id": "k", "api_key": "x" * 40})  # keys need authentication on
    assert r.status_code == 400 and r.json["code"] == "invalid_api_key"
    assert set(collection_ids(client)) == {"a", "default"}
    assert {base: state(client, base) for base in before} == before


def test_default_routes_act_on_default(client: FlaskClient, identities: dict[str, list[str]]) -> None:
    person = identities["person08"]
    teach(client, "/v1", "p", person[0])
    r = client.post("/facebox/teach", data={"file": upload(photo(person[1])), "id": "fb", "name": "Facebox"})
    assert r.json["success"]
    via_collection = client.get("/v1/collections/default/people").json
    assert [p["id"] for p in via_collection["people"]] == [p["id"] for p in client.get("/v1/people").json["people"]] == ["p", "fb"]
    teach(client, "/v1/collections/default", "q", person[2])
    assert client.get("/v1/people/q").status_code == 200
    assert state(client, "/v1/collections/default") == state(client, "/v1")
    assert client.get("/v1/info").json["people"] == 3
    assert client.get("/v1/collections/default").json["collection"]["people"] == 3
    r = client.get("/v1/collections/default/info")
    assert r.json["success"] and r.json["name"] == "facebox"  # the collection's Facebox base URL


def test_collection_keys(make_app: Callable[..., Flask], identities: dict[str, list[str]]) -> None:
    client = make_app(api_key=SERVICE_KEY).test_client()
    service = {"X-API-Key": SERVICE_KEY}
    key_a, key_b = {"X-API-Key": KEY_A}, {"Authorization": f"Bearer {KEY_B}"}
    assert create(client, "a", service, api_key=KEY_A)["api_key"] is True
    create(client, "b", service, api_key=KEY_B)
    create(client, "open", service)
    person = identities["person09"]
    teach(client, "/v1/collections/a", "p", person[0], key_a)
    teach(client, "/v1/collections/b", "p", person[0], key_b)
    teach(client, "/v1/collections/open", "p", person[0], service)
    teach(client, "/v1", "p", person[0], service)
    before = {base: state(client, base, service) for base in ("/v1", "/v1/collections/a", "/v1/collections/b", "/v1/collections/open")}
    # a collection key opens its own collection: native routes, Facebox routes, its summary
    assert identify(client, "/v1/collections/a", person[1], key_a)["faces"][0]["matched"]
    assert client.get("/v1/collections/a/people", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200
    assert client.post("/v1/collections/a/facebox/check", data={"file": upload(photo(person[1]))}, headers=key_a).json["success"]
    assert client.get("/v1/collections/a", headers=key_a).json["collection"]["id"] == "a"
    assert state(client, "/v1/collections/a", key_a) == before["/v1/collections/a"]
    # ... and nothing else: other collections, keyless ones, default, Facebox, admin, docs
    image = photo(person[1])
    refused = [
        ("GET", "/v1/collections/b/people", None),
        ("GET", "/v1/collections/b/state", None),
        ("POST", "/v1/collections/b/people/x/faces", image),
        ("GET", "/v1/collections/open/people", None),
        ("GET", "/v1/collections/nope/people", None),
        ("GET", "/v1/collections/B/people", None),
        ("GET", "/v1/collections/default/people", None),
        ("GET", "/v1/people", None),
        ("POST", "/v1/identify", image),
        ("GET", "/v1/state", None),
        ("GET", "/v1/info", None),
        ("POST", "/facebox/check", image),
        ("POST", "/facebox/teach", image),
        ("GET", "/info", None),
        ("GET", "/v1/collections", None),
        ("POST", "/v1/collections", None),
        ("DELETE", "/v1/collections/a", None),
        ("DELETE", "/v1/collections/b", None),
        ("GET", "/v1/collections/b", None),
        ("GET", "/openapi.json", None),
    ]
    for method, path, body in refused:
        for headers in (key_a, {"Authorization": f"Bearer {KEY_A}"}, {}, {"X-API-Key": "wrong"}):
            data = {"file": upload(body)} if body else ({"id": "new"} if path == "/v1/collections" else None)
            r = client.open(path, method=method, data=data, headers=headers)
            assert r.status_code == 401 and r.json["code"] == "unauthorized", (method, path, headers, r.json)
    # key b opens b, not a
    assert client.get("/v1/collections/b/people", headers=key_b).status_code == 200
    assert client.get("/v1/collections/a/people", headers=key_b).status_code == 401
    # the service key opens every collection and the admin routes
    for base in before:
        assert client.get(f"{base}/people", headers=service).status_code == 200
    assert set(collection_ids(client, service)) == {"a", "b", "default", "open"}
    assert {base: state(client, base, service) for base in before} == before  # every refusal changed nothing
    assert client.delete("/v1/collections/b", headers=service).status_code == 200
    assert client.get("/v1/collections/b/people", headers=key_b).status_code == 401  # its key went with it
    assert client.get("/v1/collections/a/people", headers=key_a).status_code == 200


def test_key_of_default_and_key_rotation(make_app: Callable[..., Flask], identities: dict[str, list[str]]) -> None:
    client = make_app(api_key=SERVICE_KEY).test_client()
    service = {"X-API-Key": SERVICE_KEY}
    image = photo(identities["person10"][0])
    r = client.patch("/v1/collections/default", json={"api_key": KEY_A}, headers={"X-API-Key": KEY_A})
    assert r.status_code == 401  # no key yet, and a collection key never opens the admin routes
    r = client.patch("/v1/collections/default", json={"api_key": KEY_A}, headers=service)
    assert r.status_code == 200 and r.json["collection"]["api_key"] is True
    # default's key opens today's routes and Facebox's, and nothing else
    teach(client, "/v1", "p", identities["person10"][1], {"X-API-Key": KEY_A})
    assert client.post("/facebox/check", data={"file": upload(image)}, headers={"X-API-Key": KEY_A}).json["faces"][0]["id"] == "p"
    assert client.get("/v1/collections/default/people", headers={"X-API-Key": KEY_A}).json["total"] == 1
    create(client, "other", service)
    for method, path in (("GET", "/v1/collections/other/people"), ("GET", "/v1/collections"), ("DELETE", "/v1/collections/other")):
        assert client.open(path, method=method, headers={"X-API-Key": KEY_A}).status_code == 401, path
    # rotation: the new key works, the old one no longer does; null removes it
    assert client.patch("/v1/collections/default", json={"api_key": KEY_B}, headers=service).status_code == 200
    assert client.get("/v1/people", headers={"X-API-Key": KEY_A}).status_code == 401
    assert client.get("/v1/people", headers={"X-API-Key": KEY_B}).status_code == 200
    for bad in ({}, {"api_key": "short"}, {"api_key": 5}, {"api_key": "with spaces in it, long enough"}):
        r = client.patch("/v1/collections/default", json=bad, headers=service)
        assert r.status_code == 400 and r.json["code"] == "invalid_api_key", bad
    assert client.get("/v1/people", headers={"X-API-Key": KEY_B}).status_code == 200  # refused changes changed nothing
    r = client.patch("/v1/collections/default", json={"api_key": None}, headers=service)
    assert r.status_code == 200 and r.json["collection"]["api_key"] is False
    assert client.get("/v1/people", headers={"X-API-Key": KEY_B}).status_code == 401
    r = client.patch("/v1/collections/nope", json={"api_key": KEY_A}, headers=service)
    assert r.status_code == 404 and r.json["code"] == "collection_not_found"


def test_a_collection_of_another_model_answers_model_mismatch(make_app: Callable[..., Flask], identities: dict[str, list[str]]) -> None:
    first = make_app()
    client = first.test_client()
    create(client, "old")
    teach(client, "/v1/collections/old", "p", identities["person11"][0])
    with first.extensions["fewface_galleries"].store.write() as tx:  # as if a service with another pipeline had made it
        tx.execute("UPDATE collections SET pipeline = ? WHERE id = ?", ("box+noflip", "old"))
    client = make_app().test_client()  # a service started over the same store
    for method, path in (("GET", "/v1/collections/old/people"), ("POST", "/v1/collections/old/identify"), ("GET", "/v1/collections/old")):
        r = client.open(path, method=method, data={"file": upload(photo(identities["person11"][1]))} if method == "POST" else None)
        assert r.status_code == 409 and r.json["code"] == "model_mismatch", (path, r.json)
    assert client.get("/v1/people").status_code == 200  # the others are served as before
    assert {c["id"] for c in client.get("/v1/collections").json["collections"]} == {"default", "old"}


def _faceprint(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def test_concurrent_writes_to_collections_with_the_same_ids_stay_apart(make_app: Callable[..., Flask]) -> None:
    """Teaches (Facebox faceprints: no image work) into three collections at once, with the same
    person ids, while another collection is created and deleted over and over: each collection
    ends with exactly the faces sent to it, and its index agrees with its store."""
    app = make_app()
    create(app.test_client(), "a")
    create(app.test_client(), "b")
    rng = np.random.default_rng(13)
    per_collection = 24
    sent = {}
    for base in ("/v1/collections/a", "/v1/collections/b", ""):
        vectors = rng.standard_normal((per_collection, 128)).astype(np.float32)
        sent[base] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    errors: list[str] = []

    def teach_all(base: str) -> None:
        client = app.test_client()
        for i, vector in enumerate(sent[base]):
            r = client.post(f"{base}/facebox/teach", data={"faceprint": _faceprint(vector), "id": f"p{i % 4}", "name": f"P{i % 4}"})
            if r.status_code != 200:
                errors.append(f"{base}: {r.status_code} {r.json}")

    def churn() -> None:
        client = app.test_client()
        for _ in range(6):
            for r in (client.post("/v1/collections", json={"id": "churn"}), client.delete("/v1/collections/churn")):
                if r.status_code not in (200, 201):
                    errors.append(f"churn: {r.status_code} {r.json}")

    threads = [threading.Thread(target=teach_all, args=(base,)) for base in sent] + [threading.Thread(target=churn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads), errors[:5]
    client = app.test_client()
    galleries = app.extensions["fewface_galleries"]
    stored = {}
    for base, cid in (("/v1/collections/a", "a"), ("/v1/collections/b", "b"), ("/v1", "default")):
        doc = state(client, base)
        assert sorted((p["id"], p["name"]) for p in doc["people"]) == [(f"p{i}", f"P{i}") for i in range(4)]
        stored[base] = np.stack([np.frombuffer(base64.b64decode(f["embedding"]), dtype="<f4") for f in doc["faces"]])
        assert len(stored[base]) == per_collection
        gallery = galleries.get(cid)
        assert gallery.index_ids() == gallery.database_ids() == {f["id"] for f in doc["faces"]}
    for base, vectors in sent.items():
        mine = stored[base or "/v1"]
        assert np.all((vectors @ mine.T).max(axis=1) > 0.9999), base  # every face sent here is here...
        for other, theirs in stored.items():
            if other != (base or "/v1"):
                assert np.all((vectors @ theirs.T).max(axis=1) < 0.9), (base, other)  # ...and nowhere else
    assert {c["id"] for c in client.get("/v1/collections").json["collections"]} == {"default", "a", "b"}

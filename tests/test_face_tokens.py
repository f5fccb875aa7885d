"""Face tokens and face thumbnails through the real pipeline: identify hands out a token per face,
teaching the token teaches that face (no re-upload; quality gate as for photos); unknown or
expired tokens change nothing; each taught face keeps a small JPEG, served per face and carried by
state files (older files without thumbnails still import)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from models.quality import FaceQuality
from models.types import DetectedFace
from service.facetokens import FaceCapture, FaceTokenExpiredError, FaceTokenNotFoundError, FaceTokens
from service.state import checksum
from service.thumbnails import SIZE
from tests.conftest import photo, upload


def identify(client: FlaskClient, data: bytes) -> dict[str, Any]:
    r = client.post("/v1/identify", data={"file": upload(data)})
    assert r.status_code == 200, r.json
    return r.json


def small_face(name: str, factor: int) -> bytes:
    """The photo shrunk ``factor`` times: a face too small for the teach gate."""
    img = Image.open(io.BytesIO(photo(name))).convert("RGB")
    img = img.resize((img.width // factor, img.height // factor), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def jpeg_size(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return img.size


def test_teach_an_identified_face_by_its_token(client: FlaskClient) -> None:
    answer = identify(client, photo("img1.jpg"))
    face = answer["faces"][0]
    assert answer["face_count"] == 1 and not face["matched"] and face["face_token"].startswith("ft_")

    r = client.post("/v1/people/ada/faces", json={"face_token": face["face_token"], "name": "Ada"})
    assert r.status_code == 201, r.json
    assert r.json["person"] == {**r.json["person"], "id": "ada", "name": "Ada", "face_count": 1}
    taught = r.json["faces"][0]
    assert taught["box"] == face["box"] and taught["image_sha256"] == answer["image"]["sha256"]
    assert taught["quality"] == face["quality"]

    # another photo of her is named now
    other = identify(client, photo("img2.jpg"))["faces"][0]
    assert other["matched"] and other["match"]["person_id"] == "ada" and other["match"]["face_id"] == taught["id"]

    # her face's thumbnail: a small JPEG
    t = client.get(f"/v1/people/ada/faces/{taught['id']}/thumbnail")
    assert t.status_code == 200 and t.mimetype == "image/jpeg"
    width, height = jpeg_size(t.data)
    assert max(width, height) <= SIZE and min(width, height) >= SIZE // 2

    # the same token again: the same image is not stored twice for one person
    again = client.post("/v1/people/ada/faces", json={"face_token": face["face_token"]})
    assert again.status_code == 200 and again.json["person"]["face_count"] == 1 and again.json["faces"][0]["id"] == taught["id"]


def test_correct_a_match_teaches_the_face_to_another_person(client: FlaskClient) -> None:
    r = client.post("/v1/people/ada/faces", data={"file": upload(photo("img1.jpg")), "name": "Ada"})
    assert r.status_code == 201
    face = identify(client, photo("img2.jpg"))["faces"][0]
    assert face["matched"] and face["match"]["person_id"] == "ada"
    # "not Ada": the face goes to Grace; Ada keeps what she had
    r = client.post("/v1/people/grace/faces", json={"face_token": face["face_token"], "name": "Grace"})
    assert r.status_code == 201 and r.json["person"]["face_count"] == 1
    assert client.get("/v1/people/ada").json["person"]["face_count"] == 1
    # photo teach keeps a thumbnail too
    ada_face = client.get("/v1/people/ada").json["faces"][0]["id"]
    assert client.get(f"/v1/people/ada/faces/{ada_face}/thumbnail").status_code == 200


def test_bad_tokens_change_nothing(client: FlaskClient) -> None:
    token = identify(client, photo("img1.jpg"))["faces"][0]["face_token"]
    cases = [
        ({"face_token": "ft_never-issued"}, 404, "face_token_not_found"),
        ({"face_token": 42}, 400, "invalid_parameter"),
        ({"face_token": ""}, 400, "invalid_parameter"),
        ({"face_token": token, "base64": "aGVsbG8="}, 400, "invalid_parameter"),
        ({"face_token": token, "name": "\u202e"}, 400, "invalid_name"),
    ]
    for body, status, code in cases:
        r = client.post("/v1/people/ada/faces", json=body)
        assert (r.status_code, r.json["code"]) == (status, code), (body, r.json)
    r = client.post("/v1/people/ada/faces", data={"face_token": "ft_nope"})  # multipart form too
    assert r.status_code == 404 and r.json["code"] == "face_token_not_found"
    assert client.get("/v1/people").json["total"] == 0


def test_the_quality_gate_applies_to_tokens(client: FlaskClient) -> None:
    face = identify(client, small_face("img27.jpg", 6))["faces"][0]
    assert face["quality"]["eye_distance"] < 28, face["quality"]
    r = client.post("/v1/people/tiny/faces", json={"face_token": face["face_token"]})
    assert r.status_code == 422 and r.json["code"] == "low_quality_face" and "too_small" in r.json["error"]
    assert client.get("/v1/people").json["total"] == 0
    r = client.post("/v1/people/tiny/faces", json={"face_token": face["face_token"], "quality": "off"})
    assert r.status_code == 201


def test_expired_token_is_410_and_changes_nothing(make_app: Callable[..., Flask]) -> None:
    client = make_app(face_token_ttl=0.3).test_client()
    token = identify(client, photo("img1.jpg"))["faces"][0]["face_token"]
    time.sleep(0.6)
    r = client.post("/v1/people/ada/faces", json={"face_token": token})
    assert r.status_code == 410 and r.json["code"] == "face_token_expired"
    assert client.get("/v1/people").json["total"] == 0


def test_tokens_off(make_app: Callable[..., Flask]) -> None:
    client = make_app(face_token_ttl=0).test_client()
    assert identify(client, photo("img1.jpg"))["faces"][0]["face_token"] is None


def test_thumbnails_off_stores_none(make_app: Callable[..., Flask]) -> None:
    client = make_app(thumbnails=False).test_client()
    face = identify(client, photo("img1.jpg"))["faces"][0]
    assert client.post("/v1/people/ada/faces", json={"face_token": face["face_token"]}).status_code == 201
    assert client.post("/v1/people/bob/faces", data={"file": upload(photo("img27.jpg"))}).status_code == 201
    for person in ("ada", "bob"):
        face_id = client.get(f"/v1/people/{person}").json["faces"][0]["id"]
        r = client.get(f"/v1/people/{person}/faces/{face_id}/thumbnail")
        assert r.status_code == 404 and r.json["code"] == "thumbnail_not_found"
    assert all("thumbnail" not in f for f in json.loads(client.get("/v1/state").data)["faces"])


def test_thumbnail_route_errors(client: FlaskClient) -> None:
    assert client.post("/v1/people/ada/faces", data={"file": upload(photo("img1.jpg"))}).status_code == 201
    face_id = client.get("/v1/people/ada").json["faces"][0]["id"]
    for path, code in (
        (f"/v1/people/nobody/faces/{face_id}/thumbnail", "person_not_found"),
        ("/v1/people/ada/faces/999999/thumbnail", "face_not_found"),
        (f"/v1/people/ada/faces/{2**70}/thumbnail", "face_not_found"),
    ):
        r = client.get(path)
        assert r.status_code == 404 and r.json["code"] == code, (path, r.json)


def test_state_files_carry_thumbnails(make_app: Callable[..., Flask], tmp_path: Any) -> None:
    source = make_app(tmp_path / "a").test_client()
    assert source.post("/v1/people/ada/faces", data={"file": upload(photo("img1.jpg")), "name": "Ada"}).status_code == 201
    face_id = source.get("/v1/people/ada").json["faces"][0]["id"]
    jpeg = source.get(f"/v1/people/ada/faces/{face_id}/thumbnail").data
    state = source.get("/v1/state").data
    doc = json.loads(state)
    assert doc["version"] == 1 and doc["faces"][0]["thumbnail"]

    target = make_app(tmp_path / "b").test_client()
    r = target.post("/v1/state", data=state, content_type="application/json")
    assert r.status_code == 200, r.json
    assert target.get(f"/v1/people/ada/faces/{face_id}/thumbnail").data == jpeg
    merged = make_app(tmp_path / "c").test_client()
    assert merged.post("/v1/state?mode=merge", data=state, content_type="application/json").status_code == 200
    new_id = merged.get("/v1/people/ada").json["faces"][0]["id"]
    assert merged.get(f"/v1/people/ada/faces/{new_id}/thumbnail").data == jpeg

    # a file from before thumbnails imports as before
    old = {k: v for k, v in doc.items() if k != "checksum"}
    old["faces"] = [{k: v for k, v in f.items() if k != "thumbnail"} for f in old["faces"]]
    old["checksum"] = {"algorithm": "sha256", "value": checksum(old)}
    plain = make_app(tmp_path / "d").test_client()
    assert plain.post("/v1/state", json=old).status_code == 200
    r = plain.get(f"/v1/people/ada/faces/{face_id}/thumbnail")
    assert r.status_code == 404 and r.json["code"] == "thumbnail_not_found"

    # a thumbnail that is not a small JPEG: refused whole, nothing written
    bad = {k: v for k, v in doc.items() if k != "checksum"}
    bad["faces"] = [{**bad["faces"][0], "thumbnail": "aGVsbG8="}]
    bad["checksum"] = {"algorithm": "sha256", "value": checksum(bad)}
    empty = make_app(tmp_path / "e").test_client()
    r = empty.post("/v1/state", json=bad)
    assert r.status_code == 400 and r.json["code"] == "invalid_state" and "thumbnail" in r.json["error"]
    assert empty.get("/v1/people").json["total"] == 0


def test_the_token_table_is_bounded_and_expires() -> None:
    now = [1000.0]
    tokens = FaceTokens(ttl=10, max_size=2, clock=lambda: now[0])
    face = DetectedFace(box=(0.0, 0.0, 1.0, 1.0), prob=0.99, landmarks=((0.0, 0.0),) * 5)
    capture = FaceCapture(face, None, FaceQuality(30, 0.1, 1, 0), "0" * 64, "m", "p", None)  # type: ignore[arg-type]
    first, second = tokens.issue(capture), tokens.issue(capture)
    assert first and second and first != second and tokens.get(first) is capture
    third = tokens.issue(capture)  # the oldest is forgotten
    with pytest.raises(FaceTokenNotFoundError):
        tokens.get(first)
    assert tokens.get(second) is capture and tokens.get(third) is capture
    now[0] += 11
    with pytest.raises(FaceTokenExpiredError):
        tokens.get(second)
    assert len(tokens) == 0
    for _ in range(4 * 2):  # expired tokens are remembered, a bounded number of them
        tokens.issue(capture)
        now[0] += 11
    with pytest.raises(FaceTokenNotFoundError):
        tokens.get(third)
    assert FaceTokens(ttl=0, max_size=10).issue(capture) is None


def test_thumbnails_in_postgresql(make_app: Callable[..., Flask], pg_url: str, tmp_path: Any) -> None:
    """The same through the PostgreSQL store: stored with the face, deleted with it, exported."""
    client = make_app(tmp_path / "pg", database_url=pg_url).test_client()
    face = identify(client, photo("img1.jpg"))["faces"][0]
    r = client.post("/v1/people/ada/faces", json={"face_token": face["face_token"], "name": "Ada"})
    assert r.status_code == 201, r.json
    face_id = r.json["faces"][0]["id"]
    t = client.get(f"/v1/people/ada/faces/{face_id}/thumbnail")
    assert t.status_code == 200 and max(jpeg_size(t.data)) <= SIZE
    doc = json.loads(client.get("/v1/state").data)
    assert doc["faces"][0]["thumbnail"]
    assert client.delete(f"/v1/people/ada/faces/{face_id}").status_code == 200
    assert client.post("/v1/state", json=doc).status_code == 200  # replace: the thumbnail comes back with its face
    assert client.get(f"/v1/people/ada/faces/{face_id}/thumbnail").data == t.data


def test_a_gallery_from_before_thumbnails_opens(make_app: Callable[..., Flask], tmp_path: Any) -> None:
    """A schema v1 SQLite gallery (no thumbnails table) migrates: its faces have none, new ones do."""
    import sqlite3

    import numpy as np

    from service.store import GALLERY_FILE
    from service.store.migrations import SQLITE_V1

    data = tmp_path / "old"
    data.mkdir()
    db = sqlite3.connect(data / GALLERY_FILE)
    for statement in SQLITE_V1:
        db.execute(statement)
    probe = make_app(tmp_path / "probe")
    gallery = probe.extensions["fewface"].gallery
    meta = {"schema_version": "1", "model_id": gallery.model_id, "dim": str(gallery.dim), "pipeline": gallery.pipeline}
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
    db.execute("INSERT INTO people (id, name, created_at) VALUES ('old', 'Old', 1.0)")
    vector = (np.ones(gallery.dim) / np.sqrt(gallery.dim)).astype(np.float32)
    db.execute(
        "INSERT INTO faces (person_id, model_id, embedding, image_sha256, box, detection_prob, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("old", gallery.model_id, vector.tobytes(), "0" * 64, "[1, 2, 30, 40]", 0.99, 1.0),
    )
    db.commit()
    db.close()
    gallery.close()

    client = make_app(data).test_client()
    old_face = client.get("/v1/people/old").json["faces"][0]["id"]
    r = client.get(f"/v1/people/old/faces/{old_face}/thumbnail")
    assert r.status_code == 404 and r.json["code"] == "thumbnail_not_found"
    r = client.post("/v1/people/old/faces", data={"file": upload(photo("img1.jpg"))})
    assert r.status_code == 200 and r.json["person"]["face_count"] == 2
    assert client.get(f"/v1/people/old/faces/{r.json['faces'][0]['id']}/thumbnail").status_code == 200


def test_tokens_and_thumbnails_need_the_key(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_key="secret-key").test_client()
    key = {"X-API-Key": "secret-key"}
    r = client.post("/v1/identify", data={"file": upload(photo("img1.jpg"))}, headers=key)
    token = r.json["faces"][0]["face_token"]
    assert client.post("/v1/people/ada/faces", json={"face_token": token}).status_code == 401
    r = client.post("/v1/people/ada/faces", json={"face_token": token}, headers=key)
    assert r.status_code == 201
    path = f"/v1/people/ada/faces/{r.json['faces'][0]['id']}/thumbnail"
    assert client.get(path).status_code == 401 and client.get(path, headers=key).status_code == 200


def test_migrate_store_carries_thumbnails(tmp_path: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m service migrate-store``: thumbnails go to PostgreSQL with their faces (and the
    copy's digest covers them)."""
    import numpy as np

    from service.store import GALLERY_FILE
    from service.store.copy import migrate_store_main
    from service.store.gallery import Gallery, NewFace

    data_dir = tmp_path / "data"
    vector = (np.ones(128) / np.sqrt(128)).astype(np.float32)
    jpeg = b"\xff\xd8\xff" + bytes(range(256))
    source = Gallery(data_dir / GALLERY_FILE, "dlib-resnet-v1", 128, pipeline="template")
    _, records, _ = source.add_faces("ann", "Ann", [NewFace(vector, "a" * 64, (1.0, 2.0, 3.0, 4.0), 0.9, jpeg)])
    source.add_faces("bob", "Bob", [NewFace(vector, "b" * 64, (1.0, 2.0, 3.0, 4.0), 0.9)])
    source.close()
    monkeypatch.setenv("FEWFACE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FEWFACE_DATABASE_URL", raising=False)
    assert migrate_store_main(["--to", pg_url]) == 0
    copied = Gallery(pg_url, "dlib-resnet-v1", 128, pipeline="template")
    try:
        assert copied.thumbnail("ann", records[0].id) == jpeg and copied.thumbnails() == {records[0].id: jpeg}
        copied.delete_person("ann")  # the thumbnail goes with its face
        assert copied.thumbnails() == {}
    finally:
        copied.close()


def test_thumbnails_off_drops_those_of_a_start_up_state_file(make_app: Callable[..., Flask], tmp_path: Any) -> None:
    from service.startup_state import load_startup_state

    source = make_app(tmp_path / "a").test_client()
    assert source.post("/v1/people/ada/faces", data={"file": upload(photo("img1.jpg"))}).status_code == 201
    state = tmp_path / "state.json"
    state.write_bytes(source.get("/v1/state").data)
    assert json.loads(state.read_bytes())["faces"][0]["thumbnail"]
    gallery = make_app(tmp_path / "b", thumbnails=False).extensions["fewface"].gallery
    assert load_startup_state(gallery, str(state), max_bytes=10**7, timeout=5, thumbnails=False)
    assert gallery.counts() == (1, 1) and gallery.thumbnails() == {}

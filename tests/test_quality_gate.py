"""The teach quality gate (issue 9): faces too small, too blurred or cut by the border are refused
with 422 low_quality_face naming the failed test, nothing is stored, and quality=off overrides.
Built from real photos of ../shared/faces/deepface."""

from __future__ import annotations

import io

import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageFilter

from tests.conftest import FACES, photo, upload


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def blurred() -> bytes:
    return jpeg(Image.open(FACES / "img2.jpg").convert("RGB").filter(ImageFilter.GaussianBlur(14)))


def tiny() -> bytes:
    """The face at ~16 px between the eyes, on a canvas big enough for MTCNN to look at."""
    img = Image.open(FACES / "img2.jpg").convert("RGB")
    img.thumbnail((200, 200))
    canvas = Image.new("RGB", (400, 400), (128, 128, 128))
    canvas.paste(img, (100, 100))
    return jpeg(canvas)


def cut(engine) -> bytes:
    """The face shifted so that its left third lies outside the image."""
    img = Image.open(FACES / "img2.jpg").convert("RGB")
    img.thumbnail((800, 800))
    face = max(engine.detector.detect(img), key=lambda f: f.area)
    x1, _, x2, _ = face.box
    return jpeg(img.crop((int(x1 + (x2 - x1) / 3), 0, img.width, img.height)))


def people(client: FlaskClient) -> int:
    return client.get("/v1/people").json["total"]


@pytest.mark.parametrize(
    ("make", "failed"),
    [(lambda engine: blurred(), "too_blurred"), (lambda engine: tiny(), "too_small"), (cut, "cut_by_border")],
    ids=["blurred", "tiny", "cut"],
)
def test_bad_teach_photos_are_refused_and_change_nothing(client: FlaskClient, engine, make, failed: str) -> None:
    data = make(engine)
    r = client.post("/v1/people/anna/faces", data={"file": upload(data, "bad.jpg")})
    assert r.status_code == 422, r.json
    assert r.json["code"] == "low_quality_face" and failed in r.json["error"] and "quality=off" in r.json["error"]
    assert people(client) == 0

    # the same photo identifies fine (the gate is for teaching) and reports its figures
    r = client.post("/v1/identify", data={"file": upload(data, "bad.jpg")})
    assert r.status_code == 200 and r.json["face_count"] >= 1
    assert set(r.json["faces"][0]["quality"]) == {"eye_distance", "sharpness", "visible", "yaw"}

    r = client.post("/v1/people/anna/faces", data={"file": upload(data, "bad.jpg"), "quality": "off"})
    assert r.status_code == 201, r.json
    assert people(client) == 1


def test_a_bad_photo_among_good_ones_refuses_the_whole_request(client: FlaskClient) -> None:
    r = client.post("/v1/people/anna/faces", data={"file": [upload(photo("img1.jpg"), "a.jpg"), upload(blurred(), "b.jpg")]})
    assert r.status_code == 422 and "image #2" in r.json["error"]
    assert people(client) == 0


def test_good_photos_pass_and_return_their_figures(client: FlaskClient) -> None:
    r = client.post("/v1/people/anna/faces", data={"file": upload(photo("img1.jpg"), "img1.jpg")})
    assert r.status_code == 201, r.json
    q = r.json["faces"][0]["quality"]
    assert q["eye_distance"] >= 28 and q["sharpness"] >= 0.06 and q["visible"] >= 0.9 and abs(q["yaw"]) <= 0.7


def test_facebox_teach_applies_the_gate(client: FlaskClient) -> None:
    r = client.post("/facebox/teach", data={"file": upload(blurred(), "b.jpg"), "name": "Anna", "id": "anna.jpg"})
    assert r.status_code == 422 and r.json["code"] == "low_quality_face" and r.json["success"] is False
    assert people(client) == 0

"""Which face a photo is about: a big face cut by the border must not beat the whole face in the
middle (issue 9). The scene is built from two real photos of ../shared/faces/deepface: person01
(img1.jpg) whole in the middle, person03 (img3.jpg) enlarged and cut by the left edge, so that
MTCNN's raw box for the cut face (which reaches outside the image) is far larger than the whole
face's."""

from __future__ import annotations

import io

import pytest
from flask.testing import FlaskClient
from PIL import Image

from models.detector import FaceDetector
from models.ranking import rank_faces, visible_fraction
from models.types import DetectedFace
from tests.conftest import FACES, photo, upload

SIZE = (900, 600)


def _face_crop(detector: FaceDetector, name: str, margin: float = 0.6) -> Image.Image:
    img = Image.open(FACES / name).convert("RGB")
    face = max(detector.detect(img), key=lambda f: f.area)
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    return img.crop((int(x1 - margin * w), int(y1 - margin * h), int(x2 + margin * w), int(y2 + margin * h)))


@pytest.fixture(scope="module")
def scene(engine) -> bytes:
    """person01 whole in the middle (~100 px face), person03 at ~330 px cut by the left edge."""
    detector = engine.detector
    whole, cut = _face_crop(detector, "img1.jpg"), _face_crop(detector, "img3.jpg")
    canvas = Image.new("RGB", SIZE, (128, 128, 128))
    whole = whole.resize((220, round(220 * whole.height / whole.width)))
    canvas.paste(whole, (SIZE[0] // 2 - whole.width // 2, SIZE[1] // 2 - whole.height // 2))
    cut = cut.resize((560, round(560 * cut.height / cut.width)))
    canvas.paste(cut, (-200, SIZE[1] // 2 - cut.height // 2))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _central(face: DetectedFace) -> bool:
    x1, y1, x2, y2 = face.box
    return x1 < SIZE[0] / 2 < x2 and y1 < SIZE[1] / 2 < y2


def test_the_scene_has_a_bigger_cut_face(engine, scene: bytes) -> None:
    """The premise: MTCNN finds both faces and the cut one has the larger raw box."""
    faces = engine.detector.detect(Image.open(io.BytesIO(scene)).convert("RGB"))
    assert len(faces) == 2
    whole = next(f for f in faces if _central(f))
    cut = next(f for f in faces if not _central(f))
    assert cut.area > 4 * whole.area and cut.box[0] < 0
    assert visible_fraction(cut, *SIZE) < 0.75 and visible_fraction(whole, *SIZE) == 1.0
    assert _central(rank_faces(faces, *SIZE)[0])


def test_identify_lists_the_whole_face_first(client: FlaskClient, scene: bytes) -> None:
    r = client.post("/v1/identify", data={"file": upload(scene, "scene.jpg")})
    assert r.status_code == 200, r.json
    faces = r.json["faces"]
    assert len(faces) == 2
    box = faces[0]["box"]
    assert box["left"] < SIZE[0] / 2 < box["left"] + box["width"]
    assert faces[1]["quality"]["visible"] < 0.75 and faces[0]["quality"]["visible"] == 1.0


def test_verify_and_teach_pick_the_whole_face(client: FlaskClient, scene: bytes) -> None:
    r = client.post("/v1/verify", data={"image_a": upload(scene, "scene.jpg"), "image_b": upload(photo("img2.jpg"), "img2.jpg")})
    assert r.status_code == 200, r.json
    assert r.json["same_person"] is True  # img2 is person01, the whole face

    r = client.post("/v1/people/p01/faces", data={"file": upload(scene, "scene.jpg"), "pick": "largest"})
    assert r.status_code == 201, r.json
    r = client.post("/v1/identify", data={"file": upload(photo("img4.jpg"), "img4.jpg")})  # person01 again
    assert r.json["faces"][0]["matched"] is True and r.json["faces"][0]["match"]["person_id"] == "p01"
    r = client.post("/v1/identify", data={"file": upload(photo("img3.jpg"), "img3.jpg")})  # the cut face's owner
    assert r.json["faces"][0]["matched"] is False

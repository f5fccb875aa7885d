"""Contract tests: every method of the Go SDK's ``facebox.Client`` (github.com/machinebox/sdk-go),
plus ``boxutil.WaitForReady`` / ``IsReady``, against Fewface.

Each test names the SDK method it stands for, sends exactly the request that method sends
(tests/gosdk.py builds them from the SDK's source) and decodes the answer exactly as the SDK
does: into its structs' fields and Go types, under mbhttp's success rule. The service runs with
Facebox's own settings (``MB_BASICAUTH_USER`` / ``MB_BASICAUTH_PASS``), so every request carries
basic auth as a Facebox app's would. Real photos, real pipeline, URL inputs from a loopback server.

The 24 methods: Info, Check, CheckURL, CheckBase64, CheckBase64WithFaceprint, CheckFaceprints,
CompareFaceprints, Teach, TeachURL, TeachBase64, TeachFaceprint, Remove, Rename, RenameAll,
Similar, SimilarURL, SimilarID, SimilarBase64, Similars, SimilarsURL, SimilarsBase64,
OpenState, PostState, PostStateURL.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from service import create_app
from service.config import Settings
from service.recognizer import Engine
from tests.conftest import no_face_image, photo
from tests.gosdk import (
    CHECK_FACEPRINTS_RESPONSE,
    CHECK_RESPONSE,
    COMPARE_RESPONSE,
    INFO,
    NOTHING,
    SIMILAR_RESPONSE,
    SIMILARS_RESPONSE,
    GoSdk,
    SdkError,
    do_unmarshal,
    go_decode,
    go_path,
)
from tests.loopback import Loopback, Route, loopback_server

USER, PASSWORD = "facebox-user", "s3cret:pass"
PHOTOS = ["img27.jpg", "img28.jpg", "img5.jpg", "img10.jpg", "img50.jpg", "img51.jpg", "img12.jpg", "img16.jpg", "img17.jpg"]
PHOTOS += ["selfie-many-people.jpg"]
ZERO = ("p00", "Person Zero")  # taught by Teach (multipart)
ANNA = ("photos/2019/anna.jpg", "Anna")  # an id with '/', taught by TeachBase64


def b64(name: str) -> str:
    return base64.b64encode(photo(name)).decode()


@dataclass
class Box:
    sdk: GoSdk
    web: Loopback
    data_dir: Path

    @property
    def two(self) -> tuple[str, str]:  # taught by TeachURL with the URL as id, as the SDK's docs suggest
        return (self.web.url("/img50.jpg"), "Person Two")


@pytest.fixture(scope="module")
def box(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    routes = {f"/{n}": Route(body=photo(n), headers={"Content-Type": "image/jpeg"}) for n in PHOTOS}
    with loopback_server(routes) as web:
        data_dir = tmp_path_factory.mktemp("sdk")
        env = {"MB_BASICAUTH_USER": USER, "MB_BASICAUTH_PASS": PASSWORD}
        settings = Settings.from_env(env, data_dir=str(data_dir), allow_private_urls=True)
        sdk = GoSdk(create_app(settings, engine).test_client(), USER, PASSWORD)
        b = Box(sdk, web, data_dir)
        for response in (
            sdk.multipart("/facebox/teach", photo("img27.jpg"), "p00", [("name", "Person Zero"), ("id", "p00")]),
            sdk.form("POST", "/facebox/teach", {"base64": b64("img5.jpg"), "name": "Anna", "id": ANNA[0]}),
            sdk.form("POST", "/facebox/teach", {"url": web.url("/img50.jpg"), "name": "Person Two", "id": web.url("/img50.jpg")}),
        ):
            do_unmarshal(response, NOTHING)
        yield b


def faces_of(response: object, spec: dict = CHECK_RESPONSE, key: str = "Faces") -> list[dict]:
    decoded = do_unmarshal(response, spec)  # type: ignore[arg-type]
    assert isinstance(decoded[key], list), f"{key} missing"
    return decoded[key]


def who(face: dict) -> tuple[str, str] | None:
    return (face["ID"], face["Name"]) if face["Matched"] else None


def assert_rect(rect: dict) -> None:
    assert rect["Width"] > 20 and rect["Height"] > 20 and rect["Top"] >= 0 and rect["Left"] >= 0


# -- boxutil -----------------------------------------------------------------------------------
def test_info_and_wait_for_ready(box: Box) -> None:
    """SDK: Client.Info (GET /info, Accept) and boxutil.WaitForReady / IsReady (status == "ready")."""
    info = do_unmarshal(box.sdk.request("GET", "/info"), INFO)
    assert info["Status"] == "ready"  # boxutil.IsReady: WaitForReady returns on the first poll
    assert info["Name"] == "facebox" and info["Version"] >= 1 and "fewface" in info["Build"]


# -- check -------------------------------------------------------------------------------------
def test_check(box: Box) -> None:
    """SDK: Client.Check (multipart "file" named image.dat to /facebox/check)."""
    faces = faces_of(box.sdk.multipart("/facebox/check", photo("img28.jpg")))
    assert [who(f) for f in faces] == [ZERO]
    assert_rect(faces[0]["Rect"])
    assert 0.9 <= faces[0]["Confidence"] <= 1 and faces[0]["Faceprint"] == ""


def test_check_url(box: Box) -> None:
    """SDK: Client.CheckURL (form url)."""
    faces = faces_of(box.sdk.form("POST", "/facebox/check", {"url": box.web.url("/img10.jpg")}))
    assert [who(f) for f in faces] == [ANNA]  # the id with '/' comes back unchanged


def test_check_base64(box: Box) -> None:
    """SDK: Client.CheckBase64 (form base64); a stranger and a photo without faces."""
    assert [who(f) for f in faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64("img51.jpg")}))] == [box.two]
    stranger = faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64("img12.jpg")}))
    assert [who(f) for f in stranger] == [None] and stranger[0]["ID"] == "" and stranger[0]["Confidence"] == 0
    empty = base64.b64encode(no_face_image()).decode()
    assert faces_of(box.sdk.form("POST", "/facebox/check", {"base64": empty})) == []


def test_check_base64_with_faceprint(box: Box) -> None:
    """SDK: Client.CheckBase64WithFaceprint (form base64 + faceprint=true)."""
    faces = faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64("img28.jpg"), "faceprint": "true"}))
    assert [who(f) for f in faces] == [ZERO]
    vector = np.frombuffer(base64.b64decode(faces[0]["Faceprint"]), "<f4")
    assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4


def _faceprint(box: Box, name: str) -> str:
    faces = faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64(name), "faceprint": "true"}))
    return faces[0]["Faceprint"]


def test_check_faceprints(box: Box) -> None:
    """SDK: Client.CheckFaceprints (JSON {"faceprints": [...]} to /facebox/faceprint/check;
    answers under "faceprints", in input order)."""
    prints = [_faceprint(box, n) for n in ("img10.jpg", "img12.jpg", "img28.jpg")]
    faces = faces_of(box.sdk.json("/facebox/faceprint/check", {"faceprints": prints}), CHECK_FACEPRINTS_RESPONSE, "Faceprints")
    assert [who(f) for f in faces] == [ANNA, None, ZERO]
    assert faces[0]["Confidence"] >= 0.9 and faces[1]["Confidence"] == 0


def test_compare_faceprints(box: Box) -> None:
    """SDK: Client.CompareFaceprints (JSON {"faceprints", "target"} to /facebox/faceprint/compare)."""
    target, same, other = (_faceprint(box, n) for n in ("img27.jpg", "img28.jpg", "img51.jpg"))
    decoded = do_unmarshal(
        box.sdk.json("/facebox/faceprint/compare", {"faceprints": [target, same, other], "target": target}), COMPARE_RESPONSE
    )
    confidences = decoded["Confidences"]
    assert len(confidences) == 3 and confidences[0] == pytest.approx(1.0, abs=1e-4)
    assert confidences[1] > 0.9 > confidences[2]


# -- teach -------------------------------------------------------------------------------------
def test_teach(box: Box) -> None:
    """SDK: Client.Teach (multipart "file" named after the id, then fields name and id)."""
    do_unmarshal(
        box.sdk.multipart("/facebox/teach", photo("img16.jpg"), "t/teach 5.jpg", [("name", "Five"), ("id", "t/teach 5.jpg")]), NOTHING
    )
    faces = faces_of(box.sdk.form("POST", "/facebox/check", {"url": box.web.url("/img17.jpg")}))
    assert [who(f) for f in faces] == [("t/teach 5.jpg", "Five")]
    do_unmarshal(box.sdk.request("DELETE", "/facebox/teach/" + go_path("t/teach 5.jpg")), NOTHING)


def test_teach_url(box: Box) -> None:
    """SDK: Client.TeachURL (form url, name, id; here the URL is the id)."""
    faces = faces_of(box.sdk.form("POST", "/facebox/check", {"url": box.web.url("/img51.jpg")}))
    assert [who(f) for f in faces] == [box.two]
    url = box.web.url("/img16.jpg")
    do_unmarshal(box.sdk.form("POST", "/facebox/teach", {"url": url, "name": "Five", "id": url}), NOTHING)
    assert [who(f) for f in faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64("img17.jpg")}))] == [(url, "Five")]
    do_unmarshal(box.sdk.request("DELETE", "/facebox/teach/" + go_path(url)), NOTHING)  # Remove(url): the id holds "//" and ":"
    assert [who(f) for f in faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64("img17.jpg")}))] == [None]


def test_teach_base64(box: Box) -> None:
    """SDK: Client.TeachBase64 (form base64, name, id); with an empty id the name decides the person."""
    do_unmarshal(box.sdk.form("POST", "/facebox/teach", {"base64": b64("img16.jpg"), "name": "Five By Name", "id": ""}), NOTHING)
    faces = faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64("img17.jpg")}))
    assert faces[0]["Matched"] and faces[0]["Name"] == "Five By Name"
    do_unmarshal(box.sdk.request("DELETE", "/facebox/teach/" + go_path(faces[0]["ID"])), NOTHING)


def test_teach_faceprint(box: Box) -> None:
    """SDK: Client.TeachFaceprint (form faceprint, name, id)."""
    print16 = _faceprint(box, "img16.jpg")
    do_unmarshal(box.sdk.form("POST", "/facebox/teach", {"faceprint": print16, "name": "Five", "id": "fp/5"}), NOTHING)
    assert [who(f) for f in faces_of(box.sdk.form("POST", "/facebox/check", {"base64": b64("img17.jpg")}))] == [("fp/5", "Five")]
    do_unmarshal(box.sdk.request("DELETE", "/facebox/teach/fp/5"), NOTHING)


# -- remove / rename ---------------------------------------------------------------------------
def test_remove(box: Box) -> None:
    """SDK: Client.Remove (DELETE /facebox/teach/<id>, Accept); removing it again fails."""
    sdk, item = box.sdk, "photos/2019/tmp anna.jpg"
    do_unmarshal(sdk.form("POST", "/facebox/teach", {"base64": b64("img10.jpg"), "name": "Anna Too", "id": item}), NOTHING)
    do_unmarshal(sdk.request("DELETE", "/facebox/teach/" + go_path(item)), NOTHING)
    with pytest.raises(SdkError, match="no face taught with id"):
        do_unmarshal(sdk.request("DELETE", "/facebox/teach/" + go_path(item)), NOTHING)
    assert [who(f) for f in faces_of(sdk.form("POST", "/facebox/check", {"url": box.web.url("/img10.jpg")}))] == [ANNA]


def test_rename(box: Box) -> None:
    """SDK: Client.Rename (PATCH /facebox/teach/<id>, form name)."""
    sdk = box.sdk
    do_unmarshal(sdk.form("PATCH", "/facebox/teach/" + go_path(ANNA[0]), {"name": "Anna B."}), NOTHING)
    assert [who(f) for f in faces_of(sdk.form("POST", "/facebox/check", {"url": box.web.url("/img10.jpg")}))] == [(ANNA[0], "Anna B.")]
    do_unmarshal(sdk.form("PATCH", "/facebox/teach/" + go_path(ANNA[0]), {"name": ANNA[1]}), NOTHING)
    with pytest.raises(SdkError):
        do_unmarshal(sdk.form("PATCH", "/facebox/teach/nobody", {"name": "X"}), NOTHING)


def test_rename_all(box: Box) -> None:
    """SDK: Client.RenameAll (POST /facebox/rename, form from and to)."""
    sdk = box.sdk
    do_unmarshal(sdk.form("POST", "/facebox/rename", {"from": "Person Zero", "to": "Person 0"}), NOTHING)
    assert [who(f) for f in faces_of(sdk.multipart("/facebox/check", photo("img28.jpg")))] == [("p00", "Person 0")]
    do_unmarshal(sdk.form("POST", "/facebox/rename", {"from": "Person 0", "to": "Person Zero"}), NOTHING)


# -- similar (deprecated single-face forms) ----------------------------------------------------
def _similar(response: object) -> list[tuple[str, str]]:
    similar = do_unmarshal(response, SIMILAR_RESPONSE)["Similar"]  # type: ignore[arg-type]
    assert isinstance(similar, list) and all(0 <= s["Confidence"] <= 1 for s in similar)
    assert [s["Confidence"] for s in similar] == sorted((s["Confidence"] for s in similar), reverse=True)
    return [(s["ID"], s["Name"]) for s in similar]


def test_similar(box: Box) -> None:
    """SDK: Client.Similar (multipart "file" to /facebox/similar; reads top-level "similar")."""
    assert _similar(box.sdk.multipart("/facebox/similar", photo("img28.jpg")))[0] == ZERO


def test_similar_url(box: Box) -> None:
    """SDK: Client.SimilarURL (form url)."""
    assert _similar(box.sdk.form("POST", "/facebox/similar", {"url": box.web.url("/img10.jpg")}))[0] == ANNA


def test_similar_id(box: Box) -> None:
    """SDK: Client.SimilarID (GET /facebox/similar?id=..., with a form Content-Type and no body)."""
    path = "/facebox/similar?id=" + "photos%2F2019%2Fanna.jpg"  # url.Values.Encode escapes '/' in a query
    found = _similar(box.sdk.request("GET", path, content_type="application/x-www-form-urlencoded"))
    assert set(found) == {ZERO, box.two}  # everyone else, not Anna herself


def test_similar_base64(box: Box) -> None:
    """SDK: Client.SimilarBase64 (form base64)."""
    assert _similar(box.sdk.form("POST", "/facebox/similar", {"base64": b64("img51.jpg")}))[0] == box.two


# -- similars (every face) ---------------------------------------------------------------------
def _similars(response: object) -> list[list[tuple[str, str]]]:
    faces = faces_of(response, SIMILARS_RESPONSE)
    for face in faces:
        assert_rect(face["rect"])
    return [[(s["ID"], s["Name"]) for s in face["similar_faces"]] for face in faces]


def test_similars(box: Box) -> None:
    """SDK: Client.Similars (multipart "file" to /facebox/similars?limit=N)."""
    found = _similars(box.sdk.multipart("/facebox/similars?limit=2", photo("img28.jpg")))
    assert len(found) == 1 and len(found[0]) == 2 and found[0][0] == ZERO
    group = _similars(box.sdk.multipart("/facebox/similars?limit=5", photo("selfie-many-people.jpg")))
    assert len(group) >= 3 and all(len(f) == 3 for f in group)  # 3 people taught, limit 5


def test_similars_url(box: Box) -> None:
    """SDK: Client.SimilarsURL (form url and limit)."""
    found = _similars(box.sdk.form("POST", "/facebox/similars", {"url": box.web.url("/img10.jpg"), "limit": "1"}))
    assert found == [[ANNA]]


def test_similars_base64(box: Box) -> None:
    """SDK: Client.SimilarsBase64 (form base64 and limit; the SDK sends 5 when given none)."""
    found = _similars(box.sdk.form("POST", "/facebox/similars", {"base64": b64("img51.jpg"), "limit": "5"}))
    assert len(found) == 1 and found[0][0] == box.two and len(found[0]) == 3


# -- state -------------------------------------------------------------------------------------
def _other(engine: Engine, tmp_path: Path) -> GoSdk:
    env = {"MB_BASICAUTH_USER": USER, "MB_BASICAUTH_PASS": PASSWORD}
    settings = Settings.from_env(env, data_dir=str(tmp_path / "other"), allow_private_urls=True)
    return GoSdk(create_app(settings, engine).test_client(), USER, PASSWORD)


def _checks(sdk: GoSdk) -> list[list[dict]]:
    return [faces_of(sdk.form("POST", "/facebox/check", {"base64": b64(n)})) for n in ("img28.jpg", "img10.jpg", "img51.jpg", "img12.jpg")]


def test_open_state(box: Box) -> None:
    """SDK: Client.OpenState (GET /facebox/state; any 2xx body is the state)."""
    response = box.sdk.request("GET", "/facebox/state", accept=False)
    assert 200 <= response.status_code < 300 and response.get_data()[:1] == b"{"


def test_post_state(box: Box, engine: Engine, tmp_path: Path) -> None:
    """SDK: Client.PostState (multipart "file" named image.dat to /facebox/state): replaces the gallery."""
    state = box.sdk.request("GET", "/facebox/state", accept=False).get_data()
    other = _other(engine, tmp_path)
    do_unmarshal(other.form("POST", "/facebox/teach", {"base64": b64("img16.jpg"), "name": "Gone", "id": "gone"}), NOTHING)
    do_unmarshal(other.multipart("/facebox/state", state), NOTHING)
    assert _checks(other) == _checks(box.sdk)


def test_post_state_url(box: Box, engine: Engine, tmp_path: Path) -> None:
    """SDK: Client.PostStateURL (form url to /facebox/state)."""
    state = box.sdk.request("GET", "/facebox/state", accept=False).get_data()
    other = _other(engine, tmp_path)
    with loopback_server({"/state.json": Route(body=state)}) as srv:
        do_unmarshal(other.form("POST", "/facebox/state", {"url": srv.url("/state.json")}), NOTHING)
    assert _checks(other) == _checks(box.sdk)


# -- the SDK's error path ----------------------------------------------------------------------
def test_every_error_is_a_failure_with_a_message(box: Box) -> None:
    """mbhttp.DoUnmarshal on errors: every non-2xx answer under /facebox/ and /info carries
    "success": false and an "error" the SDK returns as its message; the gallery is unchanged."""
    sdk = box.sdk
    before = _checks(sdk)
    anonymous = GoSdk(sdk.client)
    bad_print = base64.b64encode(np.full(128, 3e38, "<f4").tobytes()).decode()
    cases = [
        (sdk.form("POST", "/facebox/teach", {"base64": base64.b64encode(no_face_image()).decode(), "name": "N", "id": "n"}), 422),
        (sdk.multipart("/facebox/teach", photo("selfie-many-people.jpg"), "g", [("name", "Group"), ("id", "g")]), 422),
        (sdk.form("POST", "/facebox/teach", {"base64": "%%%", "name": "N", "id": "n"}), 400),
        (sdk.form("POST", "/facebox/teach", {"base64": b64("img16.jpg"), "name": "", "id": ""}), 400),
        (sdk.form("POST", "/facebox/teach", {"faceprint": bad_print, "name": "N", "id": "n"}), 400),
        (sdk.form("POST", "/facebox/check", {"url": "file:///etc/passwd"}), 400),
        (sdk.json("/facebox/faceprint/check", {"faceprints": [bad_print]}), 400),
        (sdk.request("GET", "/facebox/similar?id=nobody"), 404),
        (sdk.request("DELETE", "/facebox/teach/nobody"), 404),
        (sdk.form("POST", "/facebox/nonsense", {}), 404),
        (sdk.request("GET", "/facebox/check"), 405),
        (anonymous.multipart("/facebox/check", photo("img28.jpg")), 401),
        (anonymous.request("GET", "/info"), 401),
    ]
    for response, status in cases:
        assert response.status_code == status, response.get_json()
        body = response.get_json()
        assert body["success"] is False and isinstance(body["error"], str) and body["error"]
        with pytest.raises(SdkError, match="^facebox: " + re.escape(body["error"])):
            do_unmarshal(response, NOTHING)
    assert "pick=largest" not in cases[1][0].get_json()["error"] and "one face" in cases[1][0].get_json()["error"]
    assert "/facebox/nonsense" in cases[9][0].get_json()["error"]
    assert _checks(sdk) == before


def test_go_decoding_is_strict() -> None:
    """The checker itself: wrong Go types fail as encoding/json fails."""
    with pytest.raises(SdkError):
        go_decode({"Version": 1.5}, INFO)
    with pytest.raises(SdkError):
        go_decode({"faces": [{"rect": {"top": 1.0}}]}, CHECK_RESPONSE)
    assert go_decode({"STATUS": "ready", "extra": 1}, INFO)["Status"] == "ready"

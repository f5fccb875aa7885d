"""service.client against a real ``python -m service`` on 127.0.0.1: every native route, every
input form, errors as the class of their code, 503 retried after Retry-After, timeouts."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import client as fc
from service.client import Base64, Client, FewfaceError, Url
from tests.conftest import FACES, ROOT, no_face_image, photo
from tests.loopback import Loopback, Route, loopback_server
from tests.serverproc import ServerProcess, free_port

KEY = "client-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("client")
    env = {"FEWFACE_API_KEY": KEY, "FEWFACE_DB_BUSY_TIMEOUT": "0.3", "FEWFACE_ALLOW_PRIVATE_URLS": "true"}
    with ServerProcess(tmp / "data", tmp / "server.log", **env) as s:
        yield s


@pytest.fixture(scope="module")
def photos_site() -> Iterator[Loopback]:
    """Photos by URL, from a loopback HTTP server (the service may fetch private addresses here)."""
    routes = {f"/{n}": Route(200, photo(n), {"Content-Type": "image/jpeg"}) for n in ("img29.jpg", "img30.jpg", "img31.jpg", "img1.jpg")}
    routes["/missing.jpg"] = Route(404, b"no")
    routes["/slow"] = Route(200, b"{}", {"Content-Type": "application/json"}, delay=3.0)
    with loopback_server(routes) as site:
        yield site


@pytest.fixture(scope="module")
def empty_state(server: ServerProcess) -> bytes:
    return Client(server.base, api_key=KEY).export_state()  # before any test taught anything


@pytest.fixture(scope="module")
def fewface(server: ServerProcess, empty_state: bytes) -> Iterator[Client]:
    with Client(server.base, api_key=KEY, timeout=120) as c:
        yield c


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reset(fewface: Client, empty_state: bytes) -> None:
    fewface.import_state(empty_state, mode="replace")
    assert fewface.list_people()["total"] == 0


# -- health, info, OpenAPI -----------------------------------------------------------------
def test_health_readiness_info_openapi(fewface: Client, server: ServerProcess) -> None:
    assert fewface.healthz()["status"] == "alive"
    ready = fewface.readyz()
    assert ready["status"] == "ready" and "people" in ready  # authenticated: counts shown
    assert "people" not in Client(server.base).readyz()  # open probe, no counts without the key
    info = fewface.info()
    assert info["model"]["id"] == ready["model"] and info["model"]["dim"] > 0 and "match_rule" in info
    spec = fewface.openapi()
    assert "/v1/identify" in spec["paths"] and "/v1/people/{person_id}/faces" in spec["paths"]
    assert "fewface_http_requests_total" in fewface.metrics()
    with pytest.raises(fc.UnauthorizedError):
        Client(server.base).metrics()  # same auth as the API


# -- teach: every input form -----------------------------------------------------------------
def test_teach_takes_paths_bytes_files_base64_and_urls(fewface: Client, photos_site: Loopback, tmp_path: Path) -> None:
    p = FACES / "img26.jpg"
    first = fewface.teach("ada", str(p), name="Ada")  # a path as str
    assert first["created"] is True and first["person"]["name"] == "Ada"
    assert [f["image_sha256"] for f in first["faces"]] == [sha(p.read_bytes())]
    assert fewface.teach("ada", FACES / "img27.jpg")["created"] is False  # a Path
    assert fewface.teach("ada", photo("img28.jpg"))["faces"][0]["image_sha256"] == sha(photo("img28.jpg"))  # bytes
    with open(FACES / "img42.jpg", "rb") as fh:  # a binary file object
        fewface.teach("ada", fh)
    b64 = Base64("data:image/jpeg;base64," + base64.b64encode(photo("img43.jpg")).decode())
    two = fewface.teach("ada", [b64, photo("img44.jpg")])  # base64 and bytes in one request (sent as JSON)
    assert [f["image_sha256"] for f in two["faces"]] == [sha(photo("img43.jpg")), sha(photo("img44.jpg"))]
    by_url = fewface.teach("bea", Url(photos_site.url("/img29.jpg")), name="Bea")
    assert by_url["created"] is True and by_url["faces"][0]["image_sha256"] == sha(photo("img29.jpg"))
    several = fewface.teach("bea", [Url(photos_site.url("/img30.jpg")), Url(photos_site.url("/img31.jpg"))], pick="largest")
    assert len(several["faces"]) == 2
    mixed = fewface.teach(
        "cyd", [FACES / "img1.jpg", Url(photos_site.url("/img1.jpg")), FACES / "img10.jpg"], pick="largest", quality="off"
    )
    assert len(mixed["faces"]) == 3 and len({f["id"] for f in mixed["faces"]}) == 2  # the same image (file and URL) is stored once
    ada = fewface.get_person("ada")
    assert ada["person"]["face_count"] == 6
    with pytest.raises(TypeError):
        fewface.teach("ada", 42)  # type: ignore[arg-type]
    text = tmp_path / "t.txt"
    text.write_text("x")
    with open(text) as fh, pytest.raises(TypeError):  # a text-mode file
        fewface.teach("ada", fh)  # type: ignore[arg-type]


# -- identify / verify -----------------------------------------------------------------------
def test_identify_and_verify(fewface: Client, photos_site: Loopback) -> None:
    fewface.teach("dee", [FACES / "img12.jpg", FACES / "img3.jpg"], name="Dee")
    found = fewface.identify(FACES / "img53.jpg", top_k=3)
    assert found["face_count"] == 1 and found["faces"][0]["match"]["person_id"] == "dee"
    assert found["image"]["sha256"] == sha(photo("img53.jpg"))
    strict = fewface.identify(photo("img53.jpg"), threshold=0.999)
    assert strict["threshold"] == 0.999 and strict["faces"][0]["matched"] is False
    assert fewface.identify(Url(photos_site.url("/img1.jpg")))["face_count"] == 1
    assert fewface.identify(Base64(base64.b64encode(no_face_image()).decode()))["face_count"] == 0
    same = fewface.verify(FACES / "img54.jpg", photo("img55.jpg"))
    assert same["same_person"] is True and 0 <= same["confidence"] <= 1
    other = fewface.verify(Url(photos_site.url("/img29.jpg")), Base64(base64.b64encode(photo("img55.jpg")).decode()), threshold=0.99)
    assert other["same_person"] is False and other["threshold"] == 0.99
    assert fewface.verify(FACES / "img29.jpg", FACES / "img55.jpg")["same_person"] is False


# -- people ----------------------------------------------------------------------------------
def test_people_routes(fewface: Client) -> None:
    fewface.teach("eve", [FACES / "img13.jpg", FACES / "img14.jpg"], name="Eve")
    fewface.teach("fay é?#", FACES / "img16.jpg", name="Fay")  # ids are quoted into one path segment
    listing = fewface.list_people(limit=1, offset=0)
    assert listing["limit"] == 1 and len(listing["people"]) == 1 and listing["total"] >= 2
    everyone = {p["id"]: p for p in fewface.iter_people(page=1)}
    assert len(everyone) == listing["total"] and everyone["eve"]["face_count"] == 2 and "fay é?#" in everyone
    assert fewface.get_person("fay é?#")["person"]["name"] == "Fay"
    assert fewface.rename_person("eve", "Eve Online")["person"]["name"] == "Eve Online"
    faces = fewface.get_person("eve")["faces"]
    assert fewface.delete_face("eve", faces[0]["id"])["deleted"] == faces[0]["id"]
    assert [f["id"] for f in fewface.get_person("eve")["faces"]] == [faces[1]["id"]]
    with pytest.raises(fc.FaceNotFoundError) as err:
        fewface.delete_face("eve", faces[0]["id"])
    assert err.value.status == 404 and err.value.code == "face_not_found"
    assert fewface.delete_person("eve")["faces_deleted"] == 1
    assert fewface.delete_person("fay é?#")["deleted"] == "fay é?#"
    for call in (lambda: fewface.get_person("eve"), lambda: fewface.rename_person("eve", "x"), lambda: fewface.delete_person("eve")):
        with pytest.raises(fc.PersonNotFoundError):
            call()


def test_face_token_teach_and_thumbnail(fewface: Client) -> None:
    """Teach the face an identify answer found (its face_token), then fetch its thumbnail."""
    face = fewface.identify(FACES / "img20.jpg")["faces"][0]
    taught = fewface.teach_face_token("hal", face["face_token"], name="Hal")
    assert taught["created"] is True and taught["person"]["name"] == "Hal"
    jpeg = fewface.thumbnail("hal", taught["faces"][0]["id"])
    assert jpeg[:3] == b"\xff\xd8\xff"  # a JPEG
    with pytest.raises(fc.FaceTokenNotFoundError) as err:
        fewface.teach_face_token("hal", "ft_never_issued")
    assert err.value.status == 404 and fewface.get_person("hal")["person"]["face_count"] == 1
    with pytest.raises(fc.FaceNotFoundError):
        fewface.thumbnail("hal", taught["faces"][0]["id"] + 1000)
    fewface.delete_person("hal")


# -- state -----------------------------------------------------------------------------------
def test_state_export_and_import(fewface: Client, empty_state: bytes, tmp_path: Path) -> None:
    fewface.teach("gil", [FACES / "img34.jpg", FACES / "img35.jpg"])
    state = fewface.export_state()
    assert json.loads(state)["format"] == "fewface-state"
    packed = fewface.export_state(compress=True)
    assert gallery_view_of(gzip.decompress(packed)) == gallery_view_of(state)
    people = fewface.list_people()["total"]
    reset(fewface, empty_state)
    path = tmp_path / "state.json.gz"
    path.write_bytes(packed)
    done = fewface.import_state(path)  # a path (gzipped)
    assert done["mode"] == "replace" and done["total"]["people"] == people
    assert gallery_view(fewface) == gallery_view_of(state)
    assert fewface.get_person("gil")["person"]["face_count"] == 2
    with io.BytesIO(state) as fh:
        merged = fewface.import_state(fh, mode="merge")  # a file object; merging the same file adds nothing
    assert merged["mode"] == "merge" and merged["imported"]["faces"] == 0 and merged["total"]["people"] == people
    fewface.import_state(Base64(base64.b64encode(state).decode()), mode="replace")
    assert fewface.get_person("gil")["person"]["face_count"] == 2


# -- calibration -----------------------------------------------------------------------------
def test_calibration_report_and_plot(fewface: Client, empty_state: bytes) -> None:
    keep = fewface.export_state()
    try:
        reset(fewface, empty_state)
        with pytest.raises(fc.NotEnoughExamplesError) as err:
            fewface.calibration()
        assert err.value.status == 422
        for person, names in {"p7": ["img38.jpg", "img39.jpg"], "p8": ["img34.jpg", "img35.jpg"], "p4": ["img29.jpg", "img30.jpg"]}.items():
            fewface.teach(person, [FACES / n for n in names])
        report = fewface.calibration(targets=[0.01, 0.2], gallery_size=50)
        assert report["ok"] is True and [t["target"] for t in report["targets"]] == [0.01, 0.2]
        assert fewface.calibration_plot(targets=[0.05]).startswith(b"\x89PNG\r\n\x1a\n")
        with pytest.raises(fc.InvalidParameterError):
            fewface.calibration(targets=[2.0])
    finally:
        fewface.import_state(keep)


# -- errors ----------------------------------------------------------------------------------
def test_errors_come_back_as_the_class_of_their_code(fewface: Client, server: ServerProcess, photos_site: Loopback) -> None:
    before = fewface.export_state()
    cases: list[tuple[type[FewfaceError], int, object]] = [
        (fc.NoFaceDetectedError, 422, lambda: fewface.teach("zed", no_face_image())),
        (fc.MultipleFacesError, 422, lambda: fewface.teach("zed", FACES / "couple.jpg")),
        (fc.InvalidImageError, 422, lambda: fewface.identify(b"not an image at all")),
        (fc.InvalidBase64Error, 400, lambda: fewface.identify(Base64("@@@"))),
        (fc.InvalidParameterError, 400, lambda: fewface.identify(photo("img1.jpg"), threshold=5)),
        (fc.InvalidParameterError, 400, lambda: fewface.teach("zed", photo("img1.jpg"), pick="smallest")),
        (fc.InvalidIdError, 400, lambda: fewface.teach("a\x00b", photo("img1.jpg"))),
        (fc.InvalidNameError, 400, lambda: fewface.rename_person("ada", "   ")),
        (fc.MissingImageError, 400, lambda: fewface.teach("zed", [])),
        (fc.UrlFetchFailedError, 422, lambda: fewface.identify(Url(photos_site.url("/missing.jpg")))),
        (fc.UrlNotAllowedError, 400, lambda: fewface.identify(Url("ftp://example.com/a.jpg"))),
        (fc.InvalidStateError, 400, lambda: fewface.import_state(b'{"format": "nope"}')),
        (fc.PersonNotFoundError, 404, lambda: fewface.get_person("nobody-here")),
        (fc.NotFoundError, 404, lambda: fewface.request("GET", "/v1/no-such-route")),
        (fc.MethodNotAllowedError, 405, lambda: fewface.request("PUT", "/v1/identify")),
        (fc.UnauthorizedError, 401, lambda: Client(server.base).info()),
        (fc.UnauthorizedError, 401, lambda: Client(server.base, api_key="wrong").list_people()),
    ]
    for cls, status, call in cases:
        with pytest.raises(cls) as err:
            call()  # type: ignore[operator]
        e = err.value
        assert type(e) is cls and isinstance(e, FewfaceError), (cls, e)
        assert e.status == status and e.code == cls.code_name and e.message and e.body["ok"] is False, (cls, e.body)
    assert gallery_view(fewface) == gallery_view_of(before)  # nothing changed


def gallery_view_of(state: bytes) -> list[tuple[str, str, list[str]]]:
    """(person id, name, image hashes) of a state file."""
    doc = json.loads(state)
    return sorted((p["id"], p["name"], sorted(f["image_sha256"] for f in doc["faces"] if f["person_id"] == p["id"])) for p in doc["people"])


def gallery_view(fewface: Client) -> list[tuple[str, str, list[str]]]:
    """The same, through the people routes."""
    out = []
    for p in fewface.iter_people():
        person = fewface.get_person(p["id"])
        out.append((p["id"], p["name"], sorted(f["image_sha256"] for f in person["faces"])))
    return sorted(out)


def test_unknown_codes_get_the_base_class_and_every_documented_code_has_one() -> None:
    assert fc.error_class("a_code_from_the_future") is FewfaceError
    assert fc.error_class("no_face_detected") is fc.NoFaceDetectedError
    documented = documented_error_codes()
    assert len(documented) > 30
    assert documented <= set(fc.ERRORS), documented - set(fc.ERRORS)
    from service.http.errors import DOMAIN_ERRORS, HTTP_CODES

    server_codes = set(HTTP_CODES.values()) | {code for _, code, _ in DOMAIN_ERRORS.values()}
    assert server_codes <= set(fc.ERRORS), server_codes - set(fc.ERRORS)
    raised = {m for f in (ROOT / "service").rglob("*.py") for m in re.findall(r'\(\s*\d{3},\s*"([a-z_]+)"', f.read_text())}
    assert len(raised) > 25 and raised <= set(fc.ERRORS), raised - set(fc.ERRORS)  # every literal code the service raises
    assert len({c.__name__ for c in fc.ERRORS.values()}) == len(fc.ERRORS)  # one class per code


def documented_error_codes() -> set[str]:
    """Codes in the error table (docs/errors.md once the README is split, else README's Errors)."""
    docs = ROOT / "docs" / "errors.md"
    text = docs.read_text() if docs.is_file() else (ROOT / "README.md").read_text()
    codes: set[str] = set()
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and re.fullmatch(r"\s*[\d /]+\s*", cells[2]):  # | `code` / `code` | status | when |
            codes.update(re.findall(r"`([a-z_]+)`", cells[1]))
    return codes


# -- retries and timeouts --------------------------------------------------------------------
def test_503_is_retried_after_retry_after(fewface: Client, server: ServerProcess) -> None:
    db = sqlite3.connect(server.data_dir / "gallery.sqlite3", isolation_level=None, check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")  # another program holds the write lock: teach answers 503 database_busy, Retry-After: 1
    try:
        with pytest.raises(fc.DatabaseBusyError) as err:
            Client(server.base, api_key=KEY, retries=0).teach("hal", FACES / "img18.jpg")
        assert err.value.status == 503 and err.value.retry_after == 1.0
        release = threading.Timer(1.5, lambda: db.execute("ROLLBACK"))
        release.start()
        started = time.monotonic()
        taught = Client(server.base, api_key=KEY, retries=5).teach("hal", FACES / "img18.jpg")
        assert taught["created"] is True
        assert time.monotonic() - started >= 1.0  # it waited for Retry-After at least once
        release.join()
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
    assert fewface.get_person("hal")["person"]["face_count"] == 1


def test_timeouts_and_unreachable_service_raise_transport_error(photos_site: Loopback) -> None:
    with pytest.raises(fc.TransportError) as err:
        Client(photos_site.base, timeout=0.5, retries=0).request("GET", "/slow")
    assert err.value.status == 0 and "within" in err.value.message
    with pytest.raises(fc.TransportError, match="cannot reach"):
        Client(f"http://127.0.0.1:{free_port()}", timeout=5).healthz()


def test_collections(fewface: Client, server: ServerProcess) -> None:
    """Collection admin routes, and every per-gallery method on a collection (/v1/collections/<cid>/...)."""
    team_key = "team-a-key-0123456789"
    scoped = fewface.with_collection("team-a")
    assert scoped._scoped("/v1/people/x/faces") == "/v1/collections/team-a/people/x/faces" and fewface.collection is None
    with pytest.raises(fc.CollectionNotFoundError):
        scoped.list_people()
    made = fewface.create_collection("team-a", api_key=team_key)["collection"]
    assert made["id"] == "team-a" and made["api_key"] is True and made["people"] == 0
    with pytest.raises(fc.CollectionExistsError):
        fewface.create_collection("team-a")
    with pytest.raises(fc.InvalidCollectionIdError):
        fewface.create_collection("Team A")
    with pytest.raises(fc.InvalidApiKeyError):
        fewface.create_collection("team-b", api_key="short")
    with pytest.raises(fc.CollectionProtectedError):
        fewface.delete_collection("default")
    try:
        team = Client(server.base, api_key=team_key, collection="team-a")  # the collection's own key opens it only
        assert team.teach("ada", FACES / "img45.jpg", name="Ada A")["created"] is True  # ada of default is another person
        assert team.identify(FACES / "img46.jpg")["faces"][0]["match"]["person_id"] == "ada"
        assert team.verify(FACES / "img45.jpg", FACES / "img46.jpg")["same_person"] is True
        assert [p["id"] for p in team.list_people()["people"]] == ["ada"]
        assert team.rename_person("ada", "Ada B")["person"]["name"] == "Ada B"
        assert team.get_collection()["collection"]["faces"] == 1
        state = team.export_state()
        assert gallery_view_of(state) == [("ada", "Ada B", [sha(photo("img45.jpg"))])]
        assert team.import_state(state, mode="merge")["imported"]["faces"] == 0
        with pytest.raises(fc.NotEnoughExamplesError):
            team.calibration()
        assert sha(photo("img45.jpg")) not in {f["image_sha256"] for f in fewface.get_person("ada")["faces"]}  # default untouched
        with pytest.raises(fc.UnauthorizedError):
            team.with_collection(None).list_people()  # not default's key
        with pytest.raises(fc.UnauthorizedError):
            team.list_collections()  # nor the admin routes'
        fewface.set_collection_key("team-a", None)
        with pytest.raises(fc.UnauthorizedError):
            team.list_people()  # the key is gone
        assert {c["id"] for c in fewface.list_collections()["collections"]} >= {"default", "team-a"}
    finally:
        done = fewface.delete_collection("team-a")
    assert done == {"ok": True, "deleted": "team-a", "people_deleted": 1, "faces_deleted": 1}
    with pytest.raises(fc.CollectionNotFoundError):
        scoped.identify(FACES / "img46.jpg")

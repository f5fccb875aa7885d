"""Authentication: with a key and/or basic auth configured, every route but liveness, readiness
and the console's static shell answers 401 without credentials, and works with them. Blank
credentials refuse to start; readiness shows the gallery's size only to authenticated callers;
a server reachable beyond loopback with authentication off says so loudly at start."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from service.config import ConfigError, Settings
from service.http.auth import EXEMPT_ENDPOINTS, exposure_warning
from tests.conftest import photo, upload

ROOT = Path(__file__).resolve().parents[1]
KEY = "s3cret-key"
USER, PASSWORD = "admin", "pa:ss wörd"
QUERIES = {"/facebox/similar": "?id=nobody"}  # routes that need a parameter to do anything
NEEDS_DATA = {"/v1/calibration", "/v1/calibration/plot.png"}  # 422 not_enough_examples on the empty gallery
SAMPLE_ARGS = {"person_id": "nobody", "facebox_id": "nobody", "face_id": "1", "filename": "console.js", "collection": "nobody"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def routes(app: Flask) -> list[tuple[Rule, str, str]]:
    """(rule, method, concrete path) for every route of the app."""
    out = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: SAMPLE_ARGS[m.group(1)], rule.rule) + QUERIES.get(rule.rule, "")
        out.extend((rule, method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"}))
    return out


@pytest.fixture
def locked(make_app: Callable[..., Flask]) -> Flask:
    return make_app(api_key=KEY, basic_auth=f"{USER}:{PASSWORD}")


def test_every_route_needs_credentials(locked: Flask) -> None:
    client = locked.test_client()
    checked = 0
    for rule, method, path in routes(locked):
        r = client.open(path, method=method)
        if rule.endpoint in EXEMPT_ENDPOINTS:
            assert r.status_code == 200, (method, path)
            continue
        checked += 1
        assert r.status_code == 401, (method, path, r.status_code)
        facebox = {"success": False} if "facebox" in rule.endpoint.split(".")[:-1] else {}  # Facebox clients read success
        assert r.json == {**facebox, "ok": False, "status": 401, "code": "unauthorized", "error": r.json["error"]}
        assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
        for bad in (
            {"X-API-Key": "wrong"},
            {"Authorization": "Bearer wrong"},
            basic(USER, "wrong"),
            basic("", ""),
            {"Authorization": "Basic %%%"},
        ):
            assert client.open(path, method=method, headers=bad).status_code == 401, (method, path, bad)
    assert checked >= 20  # /v1, /facebox, /info, /openapi.json ...
    assert {e for e in EXEMPT_ENDPOINTS} <= {rule.endpoint for rule, _, _ in routes(locked)}
    # unknown routes do not reveal that they do not exist
    assert client.get("/no/such/route").status_code == 401


@pytest.mark.parametrize("credentials", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, basic(USER, PASSWORD)])
def test_every_route_works_with_credentials(locked: Flask, credentials: dict[str, str]) -> None:
    client = locked.test_client()
    for rule, method, path in routes(locked):
        r = client.open(path, method=method, headers=credentials)
        assert r.status_code != 401, (method, path)
        if rule.rule in NEEDS_DATA:
            assert r.status_code == 422 and r.json["code"] == "not_enough_examples", (method, path, r.status_code)
        elif method == "GET" and "<" not in rule.rule and "?" not in path:
            assert r.status_code == 200, (method, path, r.status_code)
        elif method == "GET":
            assert r.status_code in (200, 404), (method, path, r.status_code)  # unknown sample ids
        else:
            assert r.status_code in (400, 404, 415), (method, path, r.status_code)  # no body sent: refused by validation, not auth


def test_real_flow_with_a_key(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_key=KEY).test_client()
    r = client.post("/v1/people/p0/faces", data={"file": upload(photo("img27.jpg")), "name": "Zero"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/v1/people", headers={"X-API-Key": KEY}).json["total"] == 0  # the refused teach stored nothing
    r = client.post("/v1/people/p0/faces", data={"file": upload(photo("img27.jpg")), "name": "Zero"}, headers={"X-API-Key": KEY})
    assert r.status_code == 201
    r = client.post("/facebox/check", data={"file": upload(photo("img28.jpg"))}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.json["faces"][0]["id"] == "p0"
    assert basic(USER, PASSWORD) and client.get("/v1/people", headers=basic(USER, PASSWORD)).status_code == 401  # basic not configured
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_open_by_default(client: FlaskClient) -> None:
    assert client.get("/v1/people").status_code == 200


def test_basic_auth_setting_needs_a_colon() -> None:
    with pytest.raises(ConfigError, match="FEWFACE_BASIC_AUTH"):
        Settings.from_env({"FEWFACE_BASIC_AUTH": "justauser"})
    assert Settings.from_env({"FEWFACE_API_KEY": "k", "FEWFACE_BASIC_AUTH": "u:p:q"}).basic_auth == "u:p:q"


@pytest.mark.parametrize(
    "env",
    [
        {"FEWFACE_API_KEY": "   "},
        {"FEWFACE_API_KEY": "\t\n"},
        {"FEWFACE_BASIC_AUTH": "   "},
        {"FEWFACE_BASIC_AUTH": "user:"},
        {"FEWFACE_BASIC_AUTH": "user:   "},
        {"FEWFACE_BASIC_AUTH": ":pass"},
        {"FEWFACE_BASIC_AUTH": "  :pass"},
        {"FEWFACE_API_KEY": KEY, "FEWFACE_BASIC_AUTH": "user:"},
    ],
)
def test_blank_credentials_refuse_to_start(env: dict[str, str]) -> None:
    """A credential that is only whitespace, or an empty user or password, is a mistake: never
    silently "authentication off" (nor a password anyone can guess)."""
    with pytest.raises(ConfigError, match=r"FEWFACE_API_KEY|FEWFACE_BASIC_AUTH"):
        Settings.from_env(env)


def test_blank_credentials_given_directly_are_refused() -> None:
    with pytest.raises(ConfigError, match="FEWFACE_API_KEY"):
        Settings.from_env({}, api_key="   ")
    with pytest.raises(ConfigError, match="FEWFACE_BASIC_AUTH"):
        Settings.from_env({}, basic_auth="admin:")


def test_empty_credentials_mean_no_authentication() -> None:
    settings = Settings.from_env({"FEWFACE_API_KEY": "", "FEWFACE_BASIC_AUTH": ""})
    assert (settings.api_key, settings.basic_auth) == ("", "")


def test_service_with_a_blank_key_exits_2() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FEWFACE_API_KEY": "   ", "FEWFACE_HOST": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "FEWFACE_API_KEY is only whitespace" in proc.stderr and "Traceback" not in proc.stderr


def test_readyz_shows_counts_only_to_authenticated_callers(locked: Flask, make_app: Callable[..., Flask], tmp_path: Path) -> None:
    client = locked.test_client()
    assert client.post("/v1/people/p0/faces", data={"file": upload(photo("img27.jpg"))}, headers={"X-API-Key": KEY}).status_code == 201
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.json == {"ok": True, "status": "ready", "model": "dlib-resnet-v1"}
    for credentials in ({"X-API-Key": KEY}, basic(USER, PASSWORD)):
        assert client.get("/readyz", headers=credentials).json == {**anonymous.json, "people": 1, "faces": 1}
    assert client.get("/readyz", headers={"X-API-Key": "wrong"}).json == anonymous.json
    open_ready = make_app(data_dir=tmp_path / "open").test_client().get("/readyz").json
    assert (open_ready["people"], open_ready["faces"]) == (0, 0)  # auth off: everyone is "authenticated"


@pytest.mark.parametrize(
    ("host", "auth", "warned"),
    [
        ("127.0.0.1", {}, False),
        ("127.0.0.2", {}, False),
        ("::1", {}, False),
        ("localhost", {}, False),
        ("0.0.0.0", {}, True),
        ("::", {}, True),
        ("192.168.1.20", {}, True),
        ("myhost.example", {}, True),
        ("0.0.0.0", {"api_key": KEY}, False),
        ("0.0.0.0", {"basic_auth": f"{USER}:{PASSWORD}"}, False),
    ],
)
def test_warning_when_listening_beyond_loopback_with_auth_off(host: str, auth: dict[str, str], warned: bool) -> None:
    warning = exposure_warning(Settings.from_env({}, host=host, **auth))
    assert (warning is not None) == warned
    if warning:
        assert "AUTHENTICATION IS OFF" in warning and host in warning and "FEWFACE_API_KEY" in warning


def test_service_warns_at_start_when_exposed_without_auth(tmp_path: Path) -> None:
    """``python -m service`` says it before anything else. The gallery here is damaged, so the
    child exits before it would listen: nothing binds beyond loopback in the test."""
    (tmp_path / "gallery.sqlite3").write_bytes(b"not a database" * 1000)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FEWFACE_HOST": "0.0.0.0",
        "FEWFACE_DATA_DIR": str(tmp_path),
        "FEWFACE_WEIGHTS_PATH": str(tmp_path / "missing.dat"),  # a second stop before any listening
    }
    proc = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "!!! AUTHENTICATION IS OFF and the server listens on 0.0.0.0:8080" in warnings[0], proc.stderr

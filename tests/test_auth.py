"""Authentication: with a key and/or basic auth configured, every route but liveness, readiness
and the console's static shell answers 401 without credentials, and works with them."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from service.auth import EXEMPT_ENDPOINTS
from service.config import ConfigError, Settings
from tests.conftest import photo, upload

KEY = "s3cret-key"
USER, PASSWORD = "admin", "pa:ss wörd"
QUERIES = {"/facebox/similar": "?id=nobody"}  # routes that need a parameter to do anything
NEEDS_DATA = {"/v1/calibration", "/v1/calibration/plot.png"}  # 422 not_enough_examples on the empty gallery
SAMPLE_ARGS = {"person_id": "nobody", "facebox_id": "nobody", "face_id": "1", "filename": "console.js"}


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
        facebox = {"success": False} if path == "/info" or path.startswith("/facebox/") else {}  # Facebox clients read success
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

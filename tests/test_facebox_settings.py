"""Facebox's container settings: ``MB_*`` aliases, and a state file loaded at start-up
(``MB_FACEBOX_STATE_URL`` / ``FEWFACE_STATE_URL``) by a real ``python -m service``."""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from service import create_app
from service.config import ConfigError, Settings, unsupported_facebox_settings
from service.recognizer import Engine
from service.startup_state import StartupStateError, load_startup_state
from tests.conftest import photo
from tests.serverproc import ROOT, ServerProcess, free_port

CHECKED = ["img28.jpg", "img10.jpg", "img51.jpg", "img12.jpg", "selfie-many-people.jpg"]


def test_mb_aliases() -> None:
    s = Settings.from_env({"MB_BASICAUTH_USER": "user", "MB_BASICAUTH_PASS": "p:w", "MB_FACEBOX_STATE_URL": "http://lan/state"})
    assert s.basic_auth == "user:p:w" and s.state_url == "http://lan/state"
    # a non-empty FEWFACE_* variable wins over its alias; an empty one does not
    s = Settings.from_env({"MB_BASICAUTH_USER": "u", "MB_BASICAUTH_PASS": "p", "FEWFACE_BASIC_AUTH": "a:b", "FEWFACE_STATE_URL": ""})
    assert s.basic_auth == "a:b" and s.state_url == ""
    s = Settings.from_env({"MB_FACEBOX_STATE_URL": "/x/state.json", "FEWFACE_STATE_URL": "/y/state.json"})
    assert s.state_url == "/y/state.json"
    for half in ({"MB_BASICAUTH_USER": "u"}, {"MB_BASICAUTH_PASS": "p"}, {"MB_BASICAUTH_USER": "a:b", "MB_BASICAUTH_PASS": "p"}):
        with pytest.raises(ConfigError, match="MB_BASICAUTH"):
            Settings.from_env(half)
    assert unsupported_facebox_settings({"MB_KEY": "k", "MB_WORKERS": "2", "MB_BASICAUTH_USER": "u"}) == ["MB_KEY", "MB_WORKERS"]


@pytest.fixture
def exported(engine: Engine, tmp_path: Path) -> tuple[Path, list[dict]]:
    """A state file exported by one service (taught through the Facebox API, ids with '/'
    included), and that service's /facebox/check answers."""
    app = create_app(Settings.from_env({}, data_dir=str(tmp_path / "source")), engine).test_client()
    for name, pid, file in (("Person Zero", "p00", "img27.jpg"), ("Anna", "photos/2019/anna.jpg", "img5.jpg"), ("Two", "", "img50.jpg")):
        r = app.post("/facebox/teach", data={"base64": base64.b64encode(photo(file)).decode(), "name": name, "id": pid})
        assert r.status_code == 200, r.json
    state = tmp_path / "state.json"
    state.write_bytes(app.get("/facebox/state").get_data())
    return state, [app.post("/facebox/check", data={"file": (io.BytesIO(photo(n)), n)}).json for n in CHECKED]


def checks(server: ServerProcess) -> list[dict]:
    return [requests.post(server.url("/facebox/check"), files={"file": (n, photo(n))}, timeout=60).json() for n in CHECKED]


def test_state_loaded_at_start_answers_like_the_exporter(exported: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """A real ``python -m service`` started with Facebox's MB_FACEBOX_STATE_URL (a file path)."""
    state, expected = exported
    log = tmp_path / "server.log"
    with ServerProcess(tmp_path / "loaded", log, MB_FACEBOX_STATE_URL=str(state)) as server:
        assert checks(server) == expected
    assert any(f.get("id") == "photos/2019/anna.jpg" for body in expected for f in body["faces"])
    assert f"start-up state {state} loaded: 3 people, 3 faces" in log.read_text()


def test_start_up_state_fills_only_an_empty_gallery(exported: tuple[Path, list[dict]], engine: Engine, tmp_path: Path) -> None:
    """What ``python -m service`` calls: a restart keeps what was taught since the first load;
    a bad or unreadable file changes nothing."""
    state, expected = exported
    app = create_app(Settings.from_env({}, data_dir=str(tmp_path / "g")), engine)
    gallery, client = app.extensions["fewface"].gallery, app.test_client()
    doc = json.loads(state.read_text())
    doc["people"][0]["name"] = "Changed"  # the checksum no longer matches
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    for bad, message in (
        (tampered, "state_checksum_mismatch"),
        (f"file://{tmp_path}/missing.json", "cannot read"),
        ("ftp://x/s", "scheme"),
    ):
        with pytest.raises(StartupStateError, match=message):
            load_startup_state(gallery, str(bad), max_bytes=10**7, timeout=5)
        assert gallery.counts() == (0, 0)
    assert load_startup_state(gallery, f"file://{state}", max_bytes=10**7, timeout=5) is True
    assert [client.post("/facebox/check", data={"file": (io.BytesIO(photo(n)), n)}).json for n in CHECKED] == expected
    r = client.post("/facebox/teach", data={"file": (io.BytesIO(photo("img16.jpg")), "x"), "name": "Later", "id": "later"})
    assert r.status_code == 200, r.json
    assert load_startup_state(gallery, str(state), max_bytes=10**7, timeout=5) is False  # restart: not clobbered
    assert gallery.counts() == (4, 4)


def test_bad_state_file_stops_start_up(tmp_path: Path) -> None:
    """``python -m service`` with an unreadable state file: exit 2, a message naming the file, nothing written."""
    data_dir, missing = tmp_path / "untouched", tmp_path / "missing-state.json"
    env = {"FEWFACE_DATA_DIR": str(data_dir), "MB_FACEBOX_STATE_URL": str(missing), "FEWFACE_HOST": "127.0.0.1"}
    env |= {"FEWFACE_PORT": str(free_port()), "FEWFACE_API_KEY": "", "FEWFACE_BASIC_AUTH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "service"], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"state file {missing}" in result.stderr and "cannot read" in result.stderr
    with sqlite3.connect(data_dir / "gallery.sqlite3") as db:
        assert db.execute("SELECT (SELECT COUNT(*) FROM people), (SELECT COUNT(*) FROM faces)").fetchone() == (0, 0)

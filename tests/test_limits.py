"""Issue 11: every resource one request can take is bounded. Decode memory and CPU (crafted
TIFF tiles, 40 Mpx wide-mode images, many-scan JPEGs, EPS), state uploads (gzip bombs, huge
lists), measured on a real ``python -m service``: each crafted upload is answered (never 500)
within the documented budgets (server RSS growth, server CPU), ``/healthz`` answers within a
second while it runs, and the gallery is unchanged. Files are built by tests/bombs.py."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from service.errors import ApiError
from service.imaging import decode_image
from tests import bombs
from tests.conftest import photo, upload
from tests.hostile import api_state, assert_error, snapshot
from tests.serverproc import ServerProcess

RSS_BUDGET_MIB = 400  # README Reliability: most a single request may raise the server's resident size
CPU_BUDGET_S = 5.0  # ... and the most server CPU it may take
PROBE_LIMIT_S = 1.0

log = logging.getLogger(__name__)


class Prober:
    """GET /healthz every 0.2 s on a thread; the slowest answer and any failure."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.worst = 0.0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            started = time.monotonic()
            try:
                status = requests.get(self.base + "/healthz", timeout=10).status_code
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                continue
            self.worst = max(self.worst, time.monotonic() - started)
            if status != 200:
                self.failures.append(str(status))


def test_crafted_uploads_stay_within_budgets(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", tmp_path / "server.log") as server:
        face = {"file": ("face.jpg", photo("img1.jpg"))}
        taught = requests.post(server.url("/v1/people/kept/faces"), files=face, data={"name": "K"}, timeout=60)
        assert taught.status_code == 201, taught.text
        requests.post(server.url("/v1/identify"), files=face, timeout=60)  # warm-up
        before = api_state(server.base)
        results = []
        for item in bombs.crafted_uploads():
            body = item.build()
            with Prober(server.base) as probe:
                result = bombs.send_and_measure(server.base, server.pid, item, body)
            result["probe_worst_s"] = probe.worst
            results.append(result)
            log.warning("%s", {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})
            assert (result["status"], result["code"]) == (item.status, item.code), result
            assert result["cpu_s"] <= CPU_BUDGET_S, result
            assert result["rss_growth_mib"] <= RSS_BUDGET_MIB, result
            assert not probe.failures and probe.worst < PROBE_LIMIT_S, (result, probe.failures)
        # the worst case: three tile bombs at once
        tile = bombs.tiff_huge_tile()
        bombs.reset_peak(server.pid)
        rss = bombs.proc_kib(server.pid, "VmRSS")
        with Prober(server.base) as probe, ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(server.url("/v1/identify"), data=tile, headers={"Content-Type": "image/tiff"}, timeout=60),
                    range(3),
                )
            )
        growth = (bombs.proc_kib(server.pid, "VmHWM") - rss) / 1024
        assert [a.status_code for a in answers] == [422] * 3
        assert growth <= RSS_BUDGET_MIB and probe.worst < PROBE_LIMIT_S, (growth, probe.worst)
        assert api_state(server.base) == before
        assert "Traceback" not in server.log_tail(200_000)


# -- decode budgets, in process ------------------------------------------------------------
def test_decode_refuses_from_the_header() -> None:
    cases = [
        (bombs.tiff_huge_tile(), "image_too_complex"),
        (bombs.progressive_jpeg(640, 480, 200), "image_too_complex"),
        (bombs.eps(2_000_000), "invalid_image"),
    ]
    for data, code in cases:
        started = time.process_time()
        with pytest.raises(ApiError) as exc:
            decode_image(data, max_pixels=40_000_000, max_side=1600)
        assert exc.value.code == code, exc.value.message
        assert time.process_time() - started < 1.0  # refused before decoding


def test_scan_limit_and_memory_budget_are_settings() -> None:
    jpeg = bombs.progressive_jpeg(640, 480, 20)  # 30 scans
    assert decode_image(jpeg, max_pixels=40_000_000, max_side=1600, max_jpeg_scans=30).image.size == (640, 480)
    with pytest.raises(ApiError) as exc:
        decode_image(jpeg, max_pixels=40_000_000, max_side=1600, max_jpeg_scans=29)
    assert exc.value.code == "image_too_complex"
    png = bombs.png_wide(2000, 1000, 16, 6)  # RGBA: 4 bytes a pixel, 8 MB decoded
    assert decode_image(png, max_pixels=40_000_000, max_side=1600, max_bytes=9_000_000).image.size == (1600, 800)
    with pytest.raises(ApiError) as exc:
        decode_image(png, max_pixels=40_000_000, max_side=1600, max_bytes=7_000_000)
    assert exc.value.code == "image_too_complex"


def test_decode_deadline_and_client_hang_up_abandon_the_work() -> None:
    jpeg = bombs.progressive_jpeg(2000, 1500, 50)
    with pytest.raises(ApiError) as exc:
        decode_image(jpeg, max_pixels=40_000_000, max_side=1600, timeout=1e-6)
    assert (exc.value.status, exc.value.code) == (422, "image_too_complex")
    calls = []

    def gone() -> bool:
        calls.append(1)
        return len(calls) > 3  # hangs up once decoding has started

    with pytest.raises(ApiError) as exc:
        decode_image(jpeg, max_pixels=40_000_000, max_side=1600, cancelled=gone)
    assert exc.value.code == "client_disconnected"


def test_wide_modes_through_the_api(client: Any) -> None:
    before = snapshot(client)
    for data in (bombs.png_wide(3000, 2000, 16, 0), bombs.png_wide(3000, 2000, 16, 6), bombs.tiff_float(3000, 2000)):
        r = client.post("/v1/identify", data={"file": upload(data, "wide.png")})
        assert r.status_code == 200 and r.json["faces"] == [], r.json
    assert_error(client.post("/v1/identify", data={"file": upload(bombs.tiff_huge_tile(), "t.tif")}), 422, "image_too_complex")
    bomb = bombs.nested_json(2_000_000)  # 6 MB of "{}," : about 150 MB of Python objects if parsed
    assert_error(client.post("/v1/identify", data=bomb, content_type="application/json"), 400, "invalid_json")
    assert snapshot(client) == before


# -- state uploads, in process -------------------------------------------------------------
def _taught(client: Any) -> bytes:
    r = client.post("/v1/people/alice/faces", data={"file": upload(photo("img1.jpg")), "name": "Alice"})
    assert r.status_code == 201, r.json
    return client.get("/v1/state").get_data()


def test_export_is_canonical_and_checked_before_parsing(client: Any) -> None:
    state = _taught(client)
    assert state.startswith(b'{"checksum":{"algorithm":"sha256","value":"')
    doc = json.loads(state)
    # changed content: refused by the checksum over the raw bytes
    changed = state.replace(doc["faces"][0]["image_sha256"].encode(), b"0" * 64)
    before = snapshot(client)
    assert_error(client.post("/v1/state", data=changed, content_type="application/json"), 400, "state_checksum_mismatch")
    assert snapshot(client) == before
    # a file in the layout exported before (insertion order, checksum last, spaces) still
    # imports, and so does one re-serialised with sorted keys but escaped non-ASCII
    assert client.patch("/v1/people/alice", json={"name": "Zoë Ångström"}).status_code == 200
    state = client.get("/v1/state").get_data()
    doc = json.loads(state)
    legacy = dict(doc)
    legacy["checksum"] = legacy.pop("checksum")
    before = snapshot(client)
    ascii_sorted = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()  # checksum first, non-ASCII escaped
    for text in (
        json.dumps(legacy).encode(),
        json.dumps(legacy, separators=(",", ":"), ensure_ascii=False).encode(),
        ascii_sorted,
    ):
        for body in (text, gzip.compress(text)):
            r = client.post("/v1/state", data=body, content_type="application/json")
            assert r.status_code == 200 and r.json["imported"] == {"people": 1, "faces": 1}, (text[:80], r.json)
    assert snapshot(client) == before


def test_state_bombs_refused_without_change(client: Any) -> None:
    _taught(client)
    before = snapshot(client)
    huge_item = b'{"format":"fewface-state","faces":[{"box":[' + b"0," * 40_000 + b"0]}]}"
    for body, content_type in (
        (bombs.state_bomb(166_000_000), "application/gzip"),
        (bombs.state_people(1_000_000), "application/gzip"),
        (bombs.nested_json(300_000), "application/json"),
        (huge_item, "application/json"),
        (b'{"url": "' + b"x" * 20_000 + b'"}', "application/json"),  # a big JSON body is not parsed as a URL request
    ):
        r = client.post("/v1/state", data=body, content_type=content_type)
        assert r.status_code == 400 and r.json["code"] in ("invalid_state", "unsupported_state_version"), r.json
    assert snapshot(client) == before


def test_state_upload_keeps_healthz_answering(make_app: Callable[..., Flask]) -> None:
    from tests.hostile import served

    body = bombs.state_people(8_000_000)
    with served(make_app()) as base, Prober(base) as probe:
        r = requests.post(base + "/v1/state", data=body, headers={"Content-Type": "application/gzip"}, timeout=120)
        time.sleep(0.5)
    assert r.status_code == 400 and r.json()["code"] == "invalid_state"
    assert not probe.failures and probe.worst < PROBE_LIMIT_S, (probe.worst, probe.failures)

"""GET /metrics: Prometheus text that the client library's own parser reads, figures that move
under a small real load (teach, identify, bad requests), and the same authentication rules as the API."""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from service.config import ConfigError, Settings
from tests.conftest import photo, upload
from tests.hostile import served

KEY = "metrics-test-key"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient, **headers: str) -> Samples:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.data
    assert r.mimetype == "text/plain" and "version=" in r.content_type
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.get_data(as_text=True))
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 for a labelled series not yet created (counters start there)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in samples if n == name]


def test_figures_move_under_load(app: Flask, client: FlaskClient) -> None:
    before = scrape(client)
    assert value(before, "fewface_gallery_people", collection="default") == 0
    assert value(before, "fewface_gallery_faces", collection="default") == 0
    for stage in ("decode", "detect", "embed", "search"):  # every stage's histogram is there from the start
        assert ("fewface_stage_seconds_count", frozenset({("stage", stage)})) in before, stage
    info = series(before, "fewface_model_info")
    assert len(info) == 1 and info[0]["model"] == "dlib-resnet-v1" and info[0]["pipeline"] and info[0]["device"]

    assert client.post("/v1/people/ada/faces", data={"file": upload(photo("img26.jpg")), "name": "Ada"}).status_code == 201
    assert client.post("/v1/people/bob/faces", data={"file": upload(photo("img1.jpg")), "name": "Bob"}).status_code == 201
    r = client.post("/v1/identify", data={"file": upload(photo("img27.jpg"))})
    assert r.status_code == 200 and r.json["faces"][0]["matched"]
    assert client.post("/v1/identify", data={"file": upload(b"not an image at all")}).json["code"] == "invalid_image"
    assert client.post("/v1/identify", data={}).json["code"] == "missing_image"
    assert client.get("/v1/no/such/route").status_code == 404
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    teach, identify = "/v1/people/<person_id>/faces", "/v1/identify"
    assert moved("fewface_http_requests_total", route=teach, method="POST", status="201") == 2  # one series for both people
    assert moved("fewface_http_requests_total", route=identify, method="POST", status="200") == 1
    assert moved("fewface_http_requests_total", route=identify, method="POST", status="422") == 1
    assert moved("fewface_http_requests_total", route=identify, method="POST", status="400") == 1
    assert moved("fewface_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert moved("fewface_http_requests_total", route="/metrics", method="GET", status="200") == 1  # the first scrape
    routes = {s["route"] for s in series(after, "fewface_http_requests_total")}
    assert not any("ada" in r or "bob" in r or "/no/such" in r for r in routes), routes  # URL rules, never raw paths
    assert moved("fewface_http_request_duration_seconds_count", route=identify, method="POST") == 3
    assert moved("fewface_http_request_duration_seconds_sum", route=teach, method="POST") > 0
    assert value(after, "fewface_http_request_duration_seconds_bucket", route=teach, method="POST", le="+Inf") == 2

    assert moved("fewface_stage_seconds_count", stage="decode") == 4  # the junk image too: it was decoded (and refused)
    assert moved("fewface_stage_seconds_count", stage="detect") == 3
    assert moved("fewface_stage_seconds_count", stage="embed") == 3
    assert moved("fewface_stage_seconds_count", stage="search") == 1
    for stage in ("decode", "detect", "embed", "search"):
        assert moved("fewface_stage_seconds_sum", stage=stage) > 0, stage

    assert moved("fewface_errors_total", code="invalid_image") == 1
    assert moved("fewface_errors_total", code="missing_image") == 1
    assert moved("fewface_errors_total", code="not_found") == 1
    assert value(after, "fewface_gallery_people", collection="default") == 2
    assert value(after, "fewface_gallery_faces", collection="default") == 2
    # the engine (and its batcher) is shared by this session's apps: its figures only grow
    assert moved("fewface_batch_size_count", lane="detect") >= 3 and moved("fewface_batch_size_count", lane="embed") >= 3
    assert moved("fewface_batch_requests_sum", lane="embed") >= 3
    assert {s["lane"] for s in series(after, "fewface_batch_queue_depth")} == {"embed", "detect"}
    assert all(value(after, "fewface_batch_queue_depth", lane=lane) >= 0 for lane in ("embed", "detect"))


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_concurrent_requests_behind_waitress(app: Flask) -> None:
    """Under the real server each worker thread records into the app's figures: every request's
    stages are counted, none is left in flight."""
    jpeg = photo("img26.jpg")
    with served(app, threads=4) as base:
        before = parse(requests.get(base + "/metrics", timeout=10).text)

        def identify(_: int) -> int:
            return requests.post(base + "/v1/identify", files={"file": ("a.jpg", jpeg, "image/jpeg")}, timeout=60).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(identify, range(8))) == [200] * 8
        after = parse(requests.get(base + "/metrics", timeout=10).text)
    for stage in ("decode", "detect", "embed"):
        assert value(after, "fewface_stage_seconds_count", stage=stage) - value(before, "fewface_stage_seconds_count", stage=stage) == 8
    assert value(after, "fewface_http_requests_total", route="/v1/identify", method="POST", status="200") == 8
    assert value(after, "fewface_http_requests_in_flight") == 1  # the scrape itself
    assert value(after, "fewface_batch_requests_sum", lane="detect") - value(before, "fewface_batch_requests_sum", lane="detect") >= 8


def test_openmetrics_when_the_scraper_asks(client: FlaskClient) -> None:
    r = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.mimetype == "application/openmetrics-text"
    names = {f.name for f in openmetrics_families(r.get_data(as_text=True))}
    assert {"fewface_http_requests", "fewface_stage_seconds", "fewface_gallery_faces", "fewface_model"} <= names


def test_apps_keep_their_own_figures(make_app: Callable[..., Flask], tmp_path) -> None:
    a = make_app(tmp_path / "a").test_client()
    b = make_app(tmp_path / "b").test_client()
    a.get("/v1/people")
    assert value(scrape(a), "fewface_http_requests_total", route="/v1/people", method="GET", status="200") == 1
    assert value(scrape(b), "fewface_http_requests_total", route="/v1/people", method="GET", status="200") == 0


def test_metrics_need_credentials_when_authentication_is_on(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_key=KEY).test_client()
    r = client.get("/metrics")
    assert r.status_code == 401 and r.json["code"] == "unauthorized" and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"X-API-Key": "wrong"}).status_code == 401
    samples = scrape(client, Authorization=f"Bearer {KEY}")
    assert value(samples, "fewface_errors_total", code="unauthorized") == 2  # refused requests are counted too
    assert value(samples, "fewface_http_requests_total", route="/metrics", method="GET", status="401") == 2


def test_public_metrics_open_only_the_metrics(make_app: Callable[..., Flask]) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
    client = make_app(api_key=KEY, basic_auth="admin:pw", metrics_public=True).test_client()
    assert "fewface_gallery_people" in {name for name, _ in scrape(client)}
    assert client.get("/v1/people").status_code == 401
    assert client.get("/v1/people", headers=basic).status_code == 200


def test_metrics_can_be_turned_off(make_app: Callable[..., Flask]) -> None:
    client = make_app(metrics=False).test_client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/v1/people").status_code == 200
    with pytest.raises(ConfigError, match="FEWFACE_METRICS_PUBLIC"):
        Settings.from_env({"FEWFACE_METRICS": "false", "FEWFACE_METRICS_PUBLIC": "true"})

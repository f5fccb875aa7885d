"""The calibration report: GET /v1/calibration (+ plot.png) over a small gallery taught from real
photos, and `python -m service.calibrate` run as a real subprocess over the same gallery
(read-only) and over a folder of labelled photos."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from models.embedders import EMBEDDERS, pipeline_id
from service import create_app
from service.calibrate import main as calibrate_main
from service.calibration import far_frr, pair_scores
from service.calibration_report import NotEnoughExamplesError, build_report, plot_report
from service.config import Settings
from service.matching import MatchRule
from service.recognizer import Engine
from service.store import GALLERY_FILE
from tests.conftest import ROOT, photo, upload
from tests.hostile import snapshot

TAUGHT = {"person00": 2, "person01": 2, "person02": 2, "person03": 1}  # 3 people with pairs, one with a single photo
COMMAND_TIMEOUT = 300


@pytest.fixture(scope="module")
def taught(engine: Engine, identities: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Path]]:
    data_dir = tmp_path_factory.mktemp("calibration-gallery")
    app = create_app(Settings.from_env({}, data_dir=str(data_dir)), engine)
    with app.test_client() as client:
        for person, count in TAUGHT.items():
            files = [upload(photo(name), name) for name in identities[person][:count]]
            r = client.post(f"/v1/people/{person}/faces", data={"file": files})
            assert r.status_code == 201, r.get_json()
    yield app, data_dir
    app.extensions["fewface"].gallery.close()


@pytest.fixture
def client(taught: tuple[Flask, Path]) -> Iterator[FlaskClient]:
    with taught[0].test_client() as c:
        yield c


def file_digests(data_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data_dir.iterdir()) if not p.name.endswith("-shm")}


def test_report_over_the_gallery(taught: tuple[Flask, Path], client: FlaskClient) -> None:
    app = taught[0]
    r = client.get("/v1/calibration")
    assert r.status_code == 200, r.get_json()
    report = r.get_json()
    assert report["ok"] and report["model"] == "dlib-resnet-v1"
    examples = sum(TAUGHT.values())
    assert (report["people"], report["people_with_pairs"], report["examples"], report["gallery_size"]) == (4, 3, examples, 4)
    assert report["genuine_pairs"] == 3 and report["impostor_pairs"] == examples * (examples - 1) // 2 - 3
    assert report["current_threshold"] == pytest.approx(app.extensions["fewface"].identify_threshold(), abs=1e-4)  # shown rounded up

    # the same numbers straight from the gallery's embeddings
    _, faces = app.extensions["fewface"].gallery.export_snapshot()
    genuine, impostor = pair_scores(np.stack([f.embedding for f in faces]), [f.person_id for f in faces])
    far, frr = far_frr(genuine, impostor, [report["current_threshold"]])
    assert report["current"]["far"] == pytest.approx(far[0]) and report["current"]["frr"] == pytest.approx(frr[0])
    assert report["scores"]["genuine"]["median"] == pytest.approx(np.median(genuine), abs=1e-6)
    assert report["scores"]["impostor"]["max"] == pytest.approx(impostor.max(), abs=1e-6)
    # real photos: the same person scores higher than different people
    assert report["scores"]["genuine"]["median"] > report["scores"]["impostor"]["median"]

    hist = report["histogram"]
    assert sum(hist["genuine"]) == 3 and sum(hist["impostor"]) == report["impostor_pairs"]
    assert len(hist["edges"]) == len(hist["genuine"]) + 1
    table = report["table"]
    assert len(table) >= 5
    for rows in (table, report["curve"]):
        assert all(a["far"] >= b["far"] and a["frr"] <= b["frr"] and a["threshold"] < b["threshold"] for a, b in itertools.pairwise(rows))
    assert len(report["curve"]) > len(table)
    assert 0 <= report["eer"]["rate"] <= 1 and -1 <= report["eer"]["threshold"] <= 1
    assert [t["target"] for t in report["targets"]] == [0.01, 0.05, 0.1]
    for row in report["targets"]:
        assert row["per_comparison_far"] == pytest.approx(1 - (1 - row["target"]) ** (1 / 4), rel=1e-5)
        assert row["threshold"] > report["scores"]["impostor"]["min"]
    # 3 people with pairs is too few to mean much, and it says so
    assert any("Only 3 people" in w for w in report["warnings"])


def test_report_target_and_gallery_size(client: FlaskClient) -> None:
    r = client.get("/v1/calibration?target=0.2&gallery_size=1000")
    assert r.status_code == 200, r.get_json()
    report = r.get_json()
    assert report["gallery_size"] == 1000
    (row,) = report["targets"]
    assert row["target"] == 0.2 and row["per_comparison_far"] == pytest.approx(-math.expm1(math.log(0.8) / 1000), rel=1e-5)
    # 1000 people from 7 photos: far beyond what the data resolves, flagged
    assert row["resolved"] is False
    assert any("finer than" in w for w in report["warnings"])
    two = client.get("/v1/calibration?target=0.01&target=0.5").get_json()
    assert [t["target"] for t in two["targets"]] == [0.01, 0.5]


@pytest.mark.parametrize("query", ["target=0", "target=1", "target=-0.1", "target=abc", "target=nan", "gallery_size=0", "gallery_size=x"])
def test_bad_parameters_are_400(client: FlaskClient, query: str) -> None:
    for path in ("/v1/calibration", "/v1/calibration/plot.png"):
        r = client.get(f"{path}?{query}")
        assert r.status_code == 400 and r.get_json()["code"] == "invalid_parameter", (path, query, r.get_json())


def test_plot_is_a_png(client: FlaskClient) -> None:
    r = client.get("/v1/calibration/plot.png?target=0.05")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.headers["Cache-Control"] == "no-store"
    with Image.open(io.BytesIO(r.data)) as img:
        assert img.format == "PNG" and img.size == (900, 800)
        img.verify()


def test_too_few_people_is_422_and_changes_nothing(make_app: Callable[..., Flask], identities: dict[str, list[str]]) -> None:
    with make_app().test_client() as client:
        for path in ("/v1/calibration", "/v1/calibration/plot.png"):
            r = client.get(path)
            assert r.status_code == 422 and r.get_json()["code"] == "not_enough_examples"
        files = [upload(photo(name), name) for name in identities["person04"][:2]]
        assert client.post("/v1/people/person04/faces", data={"file": files}).status_code == 201
        one = identities["person05"][0]
        assert client.post("/v1/people/person05/faces", data={"file": upload(photo(one), one)}).status_code == 201
        before = snapshot(client)
        for path in ("/v1/calibration", "/v1/calibration/plot.png"):
            r = client.get(path)
            body = r.get_json()
            assert r.status_code == 422 and body["code"] == "not_enough_examples", body
            assert body["ok"] is False and "1 people have 2 or more" in body["error"] and "teach" in body["error"]
        assert snapshot(client) == before


def test_calibration_needs_credentials(make_app: Callable[..., Flask]) -> None:
    with make_app(api_key="sesame").test_client() as client:
        assert client.get("/v1/calibration").status_code == 401
        assert client.get("/v1/calibration/plot.png").status_code == 401
        r = client.get("/v1/calibration", headers={"X-API-Key": "sesame"})
        assert r.status_code == 422 and r.get_json()["code"] == "not_enough_examples"


# -- build_report on synthetic embeddings ------------------------------------------------------
def clusters(people: int, per_person: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(people):
        centre = rng.normal(size=32)
        e = centre / np.linalg.norm(centre) + 0.15 * rng.normal(size=(per_person, 32))
        out[f"p{k}"] = e / np.linalg.norm(e, axis=1, keepdims=True)
    return out


def test_build_report_samples_large_data_and_validates() -> None:
    data = clusters(60, 3)
    report = build_report(data, gallery_size=60, current_threshold=0.5, max_examples=90)
    assert report["examples"] == 90 and report["people"] == 30 and report["genuine_pairs"] == 90
    assert any("uses a sample of 90 examples of 30 people" in w for w in report["warnings"])
    assert build_report(data, gallery_size=60, current_threshold=0.5, max_examples=90) == report  # deterministic
    json.dumps(report, allow_nan=False)
    with pytest.raises(NotEnoughExamplesError):
        build_report({"a": data["p0"], "b": data["p1"][:1]}, gallery_size=2, current_threshold=0.5)
    with pytest.raises(ValueError):
        build_report(data, gallery_size=60, targets=[1.0], current_threshold=0.5)
    buffer = io.BytesIO()
    plot_report(report, buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as img:
        assert img.format == "PNG"


# -- python -m service.calibrate --------------------------------------------------------------
def calibrate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEWFACE_")}
    return subprocess.run(
        [sys.executable, "-m", "service.calibrate", "--quiet", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def test_command_over_the_gallery_matches_the_endpoint_and_writes_nothing(
    taught: tuple[Flask, Path], client: FlaskClient, tmp_path: Path
) -> None:
    data_dir = taught[1]
    before = file_digests(data_dir)
    out_json, out_png = tmp_path / "report.json", tmp_path / "report.png"
    proc = calibrate("--data-dir", data_dir, "--json", out_json, "--plot", out_png)
    assert proc.returncode == 0, proc.stderr
    assert "equal error rate" in proc.stdout and f"wrote {out_png}" in proc.stdout
    report = json.loads(out_json.read_text())
    endpoint = client.get("/v1/calibration").get_json()
    assert report["source"] == str(data_dir)
    keys = ("model", "people", "examples", "genuine_pairs", "impostor_pairs", "current", "eer", "targets", "table", "curve", "histogram")
    for key in keys:
        assert report[key] == endpoint[key], key
    with Image.open(out_png) as img:
        assert img.format == "PNG"
        img.verify()
    assert file_digests(data_dir) == before
    assert (data_dir / GALLERY_FILE).stat().st_size > 0


def test_command_over_a_folder_of_photos(identities: dict[str, list[str]], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for person, count in (("person06", 2), ("person07", 2), ("person08", 1)):
        (folder / person).mkdir(parents=True)
        for name in identities[person][:count]:
            (folder / person / name).symlink_to(ROOT.parent / "shared" / "faces" / "deepface" / name)
    (folder / "person08" / "notes.txt").write_text("not a photo")
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    proc = calibrate("--folder", folder, "--json", out_json, "--plot", out_png, "--target", "0.05", "--gallery-size", "50")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out_json.read_text())
    assert report["model"] == "dlib-resnet-v1" and report["gallery_size"] == 50
    assert (report["people"], report["people_with_pairs"], report["examples"], report["genuine_pairs"]) == (3, 2, 5, 2)
    settings = Settings.from_env({})
    rule = MatchRule.from_settings(settings, "dlib-resnet-v1", pipeline_id(EMBEDDERS["dlib-resnet-v1"], flip=settings.flip))
    assert report["current_threshold"] == pytest.approx(rule.identify_threshold(5), abs=1e-4)  # the service's rule for 5 faces
    assert [t["target"] for t in report["targets"]] == [0.05]
    assert report["scores"]["genuine"]["min"] > report["scores"]["impostor"]["median"]
    with Image.open(out_png) as img:
        assert img.format == "PNG"
        img.verify()
    assert "2 with 2+ examples" in proc.stdout


def test_command_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # in-process: each subprocess start pays for importing torch
    for argv in ([], ["--data-dir", str(tmp_path), "--folder", str(tmp_path)], ["--folder", str(tmp_path), "--target", "2"]):
        with pytest.raises(SystemExit) as exc:
            calibrate_main(argv)
        assert exc.value.code == 2, argv
    assert calibrate_main(["--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no gallery" in capsys.readouterr().err
    assert calibrate_main(["--folder", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_command_exits_2_on_too_little_data(identities: dict[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    (folder / "person09").mkdir(parents=True)
    for name in identities["person09"][:2]:
        (folder / "person09" / name).symlink_to(ROOT.parent / "shared" / "faces" / "deepface" / name)
    (folder / "person10").mkdir()
    assert calibrate_main(["--folder", str(folder)]) == 2  # refused before any model is loaded
    assert "1 people have 2 or more photos" in capsys.readouterr().err

"""The calibrated match rule (issue 9): score tables, thresholds that rise with the gallery,
confidence, and galleries from another pipeline refused with a clear message."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from models.score_model import ScoreModel, load_score_model
from service import create_app
from service.config import Settings
from service.matching import MatchRule
from service.store import GALLERY_FILE
from service.store.gallery import Gallery, ModelMismatchError
from tests.conftest import photo, upload


@pytest.fixture(scope="module")
def synthetic() -> ScoreModel:
    rng = np.random.default_rng(1)
    genuine = rng.normal(0.95, 0.02, 20_000)
    impostor = rng.normal(0.80, 0.04, 2_000_000)
    return ScoreModel.fit(genuine, impostor, source="synthetic")


def test_threshold_is_the_impostor_quantile_for_one_face(synthetic: ScoreModel) -> None:
    # P(N(0.80, 0.04) >= t) = 1 %  at t = 0.80 + 2.326 * 0.04
    assert synthetic.threshold_for(0.01, 1) == pytest.approx(0.80 + 2.3263 * 0.04, abs=0.002)
    # ten faces: each draw must stay below t with probability 0.99 ** (1 / 10): tail 0.1005 %
    assert synthetic.threshold_for(0.01, 10) == pytest.approx(0.80 + 3.0896 * 0.04, abs=0.003)


def test_threshold_rises_with_the_gallery_and_falls_with_the_target(synthetic: ScoreModel) -> None:
    sizes = [1, 10, 100, 1000, 10**5, 10**7]
    thresholds = [synthetic.threshold_for(0.05, n) for n in sizes]
    assert all(a < b for a, b in itertools.pairwise(thresholds))
    assert synthetic.threshold_for(0.01, 100) > synthetic.threshold_for(0.10, 100)


def test_confidence_is_monotone_and_sized(synthetic: ScoreModel) -> None:
    scores = np.linspace(0.7, 1.0, 61)
    for n in (1, 100, 10_000):
        c = [synthetic.confidence(float(s), n) for s in scores]
        assert all(0.0 <= x <= 1.0 for x in c) and all(a <= b for a, b in itertools.pairwise(c))
        assert c[0] < 0.01 and c[-1] > (0.99 if n <= 100 else 0.5)
    # the same similarity is less convincing in a bigger gallery
    assert synthetic.confidence(0.92, 10_000) < synthetic.confidence(0.92, 10)


def test_tables_round_trip_as_json(synthetic: ScoreModel) -> None:
    assert ScoreModel.from_json(synthetic.to_json()) == synthetic


def test_fixed_threshold_overrides_the_calibration(synthetic: ScoreModel) -> None:
    rule = MatchRule(scores=synthetic, false_accept=0.01, fixed=0.5, verify_false_accept=0.005, uncalibrated_default=0.9)
    assert rule.identify_threshold(1000) == 0.5 and rule.verify_threshold() == 0.5 and not rule.calibrated
    rule = MatchRule(scores=synthetic, false_accept=0.01, fixed=None, verify_false_accept=0.005, uncalibrated_default=0.9)
    assert rule.identify_threshold(1000) > rule.identify_threshold(10)
    assert rule.verify_threshold() == pytest.approx(synthetic.threshold_for(0.005, 1), abs=1e-5)
    rule = MatchRule(scores=None, false_accept=0.01, fixed=None, verify_false_accept=0.005, uncalibrated_default=0.9)
    assert rule.identify_threshold(1000) == rule.verify_threshold() == 0.9 and rule.confidence(0.95, 10) is None


def test_the_default_pipeline_ships_its_tables(engine) -> None:
    scores = load_score_model(engine.model_id, engine.embedder.pipeline)
    assert scores is not None and "lfw-dev" in scores.source


def test_identify_reports_the_sized_threshold_and_confidence(client: FlaskClient) -> None:
    for person, f in (("a", "img1.jpg"), ("b", "img3.jpg")):
        assert client.post(f"/v1/people/{person}/faces", data={"file": upload(photo(f), f)}).status_code == 201
    info = client.get("/v1/info").json
    assert info["match_rule"]["kind"] == "calibrated" and info["match_rule"]["gallery_faces"] == 2
    r = client.post("/v1/identify", data={"file": upload(photo("img2.jpg"), "img2.jpg")}).json
    assert r["threshold"] == info["match_rule"]["identify_threshold"]
    face = r["faces"][0]
    assert face["matched"] and face["match"]["person_id"] == "a" and face["confidence"] > 0.9
    assert face["match"]["confidence"] == face["confidence"]


def test_an_old_pipeline_gallery_is_refused_with_the_fix(engine, tmp_path: Path) -> None:
    """A gallery written before the pipeline was recorded (template alignment, no flip)."""
    path = tmp_path / GALLERY_FILE
    Gallery(path, engine.model_id, engine.embedder.dim, pipeline="template").close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE key = 'pipeline'")
    if engine.embedder.pipeline == "template":
        pytest.skip("the running pipeline is the legacy one")
    with pytest.raises(ModelMismatchError) as err:
        create_app(Settings.from_env({}, data_dir=str(tmp_path)), engine)
    message = str(err.value)
    assert "'template'" in message and "not comparable" in message
    assert "FEWFACE_ALIGNMENT=template FEWFACE_FLIP=false" in message and "re-teach" in message


def test_a_state_file_from_another_pipeline_is_refused(client: FlaskClient) -> None:
    import json

    from service.state import checksum

    assert client.post("/v1/people/a/faces", data={"file": upload(photo("img1.jpg"), "img1.jpg")}).status_code == 201
    doc = json.loads(client.get("/v1/state").get_data())
    doc["model"]["pipeline"] = "some-other-crop"
    del doc["checksum"]
    doc["checksum"] = {"algorithm": "sha256", "value": checksum(doc)}
    before = client.get("/v1/people").json
    r = client.post("/v1/state?mode=replace", data=json.dumps(doc), content_type="application/json")
    assert r.status_code == 409 and r.json["code"] == "model_mismatch" and "some-other-crop" in r.json["error"]
    assert client.get("/v1/people").json == before

"""Shared fixtures: the real pipeline is loaded once per test session."""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from service import create_app
from service.config import Settings
from service.http.errors import INTERNAL_ERRORS
from service.recognizer import Engine
from tests.pgfixtures import gallery_location, pg_server, pg_url, store_kind, store_settings  # noqa: F401 (fixtures: tests/pgfixtures.py)
from tests.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces" / "deepface"
LFW = FACES.parent / "lfw-dev" / "people"


def _require_faces() -> None:
    if not (FACES / "identities.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{FACES} is missing: CI must run with ../shared beside the checkout")
        pytest.skip(f"real face photos not found at {FACES}")


def internal_errors() -> int:
    """500 answers so far: by apps in this process (service/errors.py counts every one) and by
    child servers (tests/serverproc.py counts the line each logs)."""
    return INTERNAL_ERRORS.count + ServerProcess.internal_errors


@pytest.fixture(autouse=True)
def no_unexpected_500(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test during which the service answered 500 more often than the test declares
    with ``@pytest.mark.expect_500(n)`` (0 by default): a 500 is a bug, never an outcome."""
    before = internal_errors()
    yield
    marker = request.node.get_closest_marker("expect_500")
    expected = int(marker.args[0]) if marker and marker.args else 0
    produced = internal_errors() - before
    if produced != expected:
        pytest.fail(f"the service answered 500 internal_error {produced} times during this test ({expected} expected); see the log")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(f"fewface: {internal_errors()} answers 500 internal_error in this run (tests/conftest.py)")


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    _require_faces()
    return FACES


@pytest.fixture(scope="session")
def identities(faces_dir: Path) -> dict[str, list[str]]:
    """identity -> photo file names, in the order of identities.csv."""
    groups: dict[str, list[str]] = defaultdict(list)
    with open(faces_dir / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            groups[row["identity"]].append(row["file"])
    return dict(groups)


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The real detector + embedder (dlib-resnet-v1, weights from PyPI), on CPU unless CUDA."""
    return Engine.from_settings(Settings.from_env({}))


@pytest.fixture
def make_app(engine: Engine, tmp_path: Path) -> Callable[..., Flask]:
    def make(data_dir: Path | None = None, **overrides: object) -> Flask:
        settings = Settings.from_env({}, data_dir=str(data_dir or tmp_path / "data"), **overrides)
        return create_app(settings, engine)

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def photo(name: str) -> bytes:
    _require_faces()
    return (FACES / name).read_bytes()


def dense_image(side: int = 1600, tile: int = 100) -> bytes:
    """A JPEG tiled with real LFW faces (256 faces of 100 px in 1600 x 1600 by default): seconds of
    detection and embedding work in one request."""
    photos = sorted(LFW.glob("*/*.jpg"))
    if not photos:
        pytest.skip(f"LFW photos not found at {LFW}")
    per_row = side // tile
    step = len(photos) // per_row**2
    canvas = Image.new("RGB", (side, side))
    for k, path in enumerate(photos[::step][: per_row**2]):
        face = Image.open(path).convert("RGB").crop((62, 62, 188, 188)).resize((tile, tile))  # LFW faces sit in the centre
        canvas.paste(face, ((k % per_row) * tile, (k // per_row) * tile))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(data: bytes, filename: str = "photo.jpg") -> tuple[io.BytesIO, str]:
    return io.BytesIO(data), filename


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def no_face_image() -> bytes:
    """A synthetic landscape: sky, ground and a sun; contains no face."""
    img = Image.new("RGB", (640, 480), (120, 170, 230))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 300, 640, 480), fill=(70, 130, 60))
    draw.ellipse((480, 40, 560, 120), fill=(250, 220, 90))
    return png_bytes(img)

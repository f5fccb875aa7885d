"""The numpy port of dlib's 5-point shape predictor gives dlib's own landmarks.

Boxes come from dlib's HOG detector (run on a reduced copy of each photo to keep the test fast,
then scaled back), plus shifted and resized copies of them; both predictors see the same full
photo and the same box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

dlib = pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin) as the reference")

from models.dlib_resnet import DlibFormatError  # noqa: E402
from models.shape_predictor import ShapePredictor, default_shape_predictor_path, load_shape_predictor  # noqa: E402

FACES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "faces"
DEEPFACE = [f"deepface/img{i}.jpg" for i in (1, 2, 3, 5, 7, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50, 55, 61)] + ["deepface/couple.jpg"]
LFW_EVERY = 200  # the first photo of every 200th person of lfw-dev, in name order


def lfw_slice() -> list[str]:
    people = sorted((FACES_DIR / "lfw-dev" / "people").iterdir())[::LFW_EVERY]
    return [str(min(person.iterdir()).relative_to(FACES_DIR)) for person in people]


# (dx, dy, grow) of the extra boxes tried per detected face, in fractions of the box width.
JITTER = [(0.0, 0.0, 0.0), (0.05, -0.03, 0.0), (-0.04, 0.06, 0.1), (0.02, 0.02, -0.08)]
DETECT_SIDE = 400  # the detector runs on a copy at most this large


@pytest.fixture(scope="module")
def predictor() -> ShapePredictor:
    return load_shape_predictor()


@pytest.fixture(scope="module")
def reference() -> object:
    return dlib.shape_predictor(str(default_shape_predictor_path()))


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, np.ndarray, tuple[int, int, int, int]]]:
    """(photo, RGB image, dlib rectangle) for every face dlib finds in the photos."""
    if not (FACES_DIR / "lfw-dev" / "people").is_dir():
        pytest.skip(f"face photos not found at {FACES_DIR}")
    paths = [FACES_DIR / name for name in DEEPFACE + lfw_slice()]
    detector = dlib.get_frontal_face_detector()
    result = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        scale = min(1.0, DETECT_SIDE / max(image.size))
        small = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
        for rect in detector(np.asarray(small), 1 if scale == 1.0 else 0):
            box = tuple(round(v / scale) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            for dx, dy, grow in JITTER:
                w = box[2] - box[0]
                shift_x, shift_y, pad = round(dx * w), round(dy * w), round(grow * w / 2)
                result.append(
                    (path.name, pixels, (box[0] + shift_x - pad, box[1] + shift_y - pad, box[2] + shift_x + pad, box[3] + shift_y + pad))
                )
    assert len(result) >= 4 * 25, "dlib found too few faces in the test photos"
    return result


def test_landmarks_match_dlib(predictor: ShapePredictor, reference: object, cases: list) -> None:
    worst, exact = 0.0, 0
    for name, image, box in cases:
        want = np.array([(p.x, p.y) for p in reference(image, dlib.rectangle(*box)).parts()], dtype=np.float64)
        got = predictor(image, box)
        assert got.shape == (5, 2)
        diff = float(np.abs(got - want).max())
        assert diff <= 1.0, f"{name} {box}: {got.tolist()} vs dlib {want.tolist()}"
        worst = max(worst, diff)
        exact += diff == 0.0
    assert exact >= 0.95 * len(cases), f"only {exact} of {len(cases)} faces match dlib exactly (worst {worst} px)"


def test_grey_image_matches_dlib(predictor: ShapePredictor, reference: object, cases: list) -> None:
    for _, image, box in cases[::8]:
        grey = np.asarray(Image.fromarray(image).convert("L"))
        want = np.array([(p.x, p.y) for p in reference(grey, dlib.rectangle(*box)).parts()], dtype=np.float64)
        assert np.abs(predictor(grey, box) - want).max() <= 1.0


def test_box_partly_outside_the_image(predictor: ShapePredictor, reference: object, cases: list) -> None:
    _, image, box = cases[0]
    w = box[2] - box[0]
    shifted = (box[0] - w // 2 - image.shape[1] // 2, box[1], box[2] - w // 2 - image.shape[1] // 2, box[3])
    want = np.array([(p.x, p.y) for p in reference(image, dlib.rectangle(*shifted)).parts()], dtype=np.float64)
    assert np.abs(predictor(image, shifted) - want).max() <= 1.0


def test_model_shape(predictor: ShapePredictor) -> None:
    assert predictor.num_parts == 5
    assert predictor.anchors.shape == (15, 800)
    assert predictor.depth == 4


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    truncated = tmp_path / "sp.dat"
    truncated.write_bytes(default_shape_predictor_path().read_bytes()[:200_000])
    with pytest.raises(DlibFormatError):
        load_shape_predictor(truncated)
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DlibFormatError):
        load_shape_predictor(garbage)

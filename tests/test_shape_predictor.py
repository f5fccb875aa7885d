"""dlib's face alignment without dlib: landmarks, chips and the whole pipeline against dlib.

* The numpy port of dlib's 5-point shape predictor gives dlib's own landmarks.  Boxes come from
  dlib's HOG detector (run on a reduced copy of each photo to keep the test fast, then scaled
  back), plus shifted and resized copies of them; both predictors see the same photo and box.
* ``models.align``'s chip gives ``dlib.get_face_chip``'s pixels from the same landmarks.
* The ``dlib5`` alignment of dlib-resnet-v1 (MTCNN, box mapped to where dlib's detector puts
  it, our predictor, our chip, our ResNet port) gives descriptors close to dlib's whole pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

dlib = pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin) as the reference")

from models.align import DLIB_CHIP_PADDING, dlib_box_from_mtcnn, extract_image_chip, face_chip_details  # noqa: E402
from models.detector import FaceDetector  # noqa: E402
from models.dlib_resnet import DlibFormatError, default_dat_path  # noqa: E402
from models.embedders import Embedder, create_embedder  # noqa: E402
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


# ---------------------------------------------------------------------------------------
# dlib's face chip, and the whole pipeline


def test_chip_matches_dlib(reference: object, cases: list) -> None:
    """extract_image_chip(face_chip_details(...)) gives dlib.get_face_chip's pixels, for small
    faces (direct bilinear) and big ones (sampled from dlib's image pyramid)."""
    widths = []
    for name, image, box in cases[:: len(JITTER)]:
        shape = reference(image, dlib.rectangle(*box))
        want = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        details = face_chip_details([(p.x, p.y) for p in shape.parts()], 150, DLIB_CHIP_PADDING)
        got = extract_image_chip(image, details)
        assert got.shape == want.shape == (150, 150, 3)
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        assert diff.max() <= 1 and diff.mean() < 0.01, f"{name}: chip differs from dlib's by up to {diff.max()} (mean {diff.mean():.3f})"
        widths.append(details.rect[2] - details.rect[0])
    assert min(widths) < 300 < max(widths), "the photos should need both direct and pyramid sampling"


PIPELINE_PHOTOS = [f"img{i}.jpg" for i in (1, 10, 15, 24, 34, 37)]  # 24, 34, 37: the lowest cosines of all photos
PIPELINE_SIDE = 500  # both pipelines see the same copy, at most this large


@pytest.fixture(scope="module")
def pipeline_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(photo, our descriptor, dlib's descriptor) for photos where both pipelines find one face.

    Ours: MTCNN -> dlib_box_from_mtcnn -> numpy shape predictor -> our chip -> PyTorch port.
    dlib's: HOG detector -> shape_predictor -> get_face_chip -> face_recognition_model_v1.
    """
    photo_dir = FACES_DIR / "deepface"
    if not photo_dir.is_dir():
        pytest.skip(f"face photos not found at {photo_dir}")
    detector = FaceDetector("cpu")
    embedder = create_embedder("dlib-resnet-v1", "cpu", alignment="dlib5")
    hog = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(default_shape_predictor_path()))
    network = dlib.face_recognition_model_v1(str(default_dat_path()))
    result = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MTCNN on small photos: far less CPU time than two threads on a busy machine
    try:
        for name in PIPELINE_PHOTOS:
            result.extend(pipeline_pair(photo_dir / name, detector, embedder, hog, shapes, network))
    finally:
        torch.set_num_threads(threads)
    assert len(result) >= 5, f"both pipelines found one face in only {len(result)} photos"
    return result


def pipeline_pair(path: Path, detector: FaceDetector, embedder: Embedder, hog: object, shapes: object, network: object) -> list:
    """[(photo, our descriptor, dlib's)] if both pipelines find one face in the photo, else []."""
    image = Image.open(path).convert("RGB")
    scale = min(1.0, PIPELINE_SIDE / max(image.size))
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    pixels = np.asarray(image)
    ours, rects = detector.detect(image), hog(pixels, 0)
    if len(ours) != 1 or len(rects) != 1:
        return []
    mine = embedder.embed([embedder.crop(image, ours[0])])[0]
    chip = dlib.get_face_chip(pixels, shapes(pixels, rects[0]), size=150, padding=0.25)
    theirs = np.asarray(network.compute_face_descriptor(chip), dtype=np.float32)
    return [(path.name, mine, theirs / np.linalg.norm(theirs))]


def test_pipeline_descriptors_match_dlib(pipeline_pairs: list) -> None:
    for name, mine, theirs in pipeline_pairs:
        cosine = float(mine @ theirs)
        assert cosine >= 0.99, f"{name}: cosine {cosine:.4f} between our pipeline's descriptor and dlib's"


def test_embedder_rejects_unknown_alignment() -> None:
    with pytest.raises(ValueError, match="alignment"):
        create_embedder("dlib-resnet-v1", "cpu", alignment="nonsense")


def test_box_mapping_follows_the_face() -> None:
    """The mapped box moves and scales with the face (it is fitted in the landmarks' own frame)."""
    landmarks = [(90.0, 110.0), (150.0, 108.0), (121.0, 145.0), (96.0, 175.0), (146.0, 174.0)]
    box = (62.0, 55.0, 178.0, 210.0)
    left, top, right, bottom = dlib_box_from_mtcnn(landmarks, box)
    assert left < 90 and right > 150 and top < 110 and bottom > 175, "dlib's box holds the eyes and the mouth"
    assert 0.8 < (right - left) / (bottom - top) < 1.25, "dlib's boxes are about square"
    moved_box = (2 * box[0] + 7, 2 * box[1] - 3, 2 * box[2] + 7, 2 * box[3] - 3)
    moved = dlib_box_from_mtcnn([(2 * x + 7, 2 * y - 3) for x, y in landmarks], moved_box)
    np.testing.assert_allclose(moved, (2 * left + 7, 2 * top - 3, 2 * right + 7, 2 * bottom - 3), atol=1e-6)

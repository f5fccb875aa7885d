"""Where pretrained embedding weights come from.

* ``dlib-resnet-v1``: the .dat file inside the PyPI package ``face_recognition_models``.
* ``facenet-vggface2`` / ``facenet-casia``: facenet-pytorch's checkpoints. facenet-pytorch
  downloads them on first use, which fails on machines without internet, so Fewface never
  downloads at run time: it reads an explicit file (the ``FEWFACE_WEIGHTS_PATH`` setting) or
  the torch hub cache (``$TORCH_HOME/checkpoints``), which the Docker build fills with
  ``python -m models.weights fetch facenet-vggface2``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

FACENET_CHECKPOINTS: dict[str, tuple[str, str]] = {
    # model id -> (facenet-pytorch "pretrained" name, checkpoint file name)
    "facenet-vggface2": ("vggface2", "20180402-114759-vggface2.pt"),
    "facenet-casia": ("casia-webface", "20180408-102900-casia-webface.pt"),
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says how to get them."""


def torch_checkpoint_dir() -> Path:
    """``$TORCH_HOME/checkpoints``, the folder facenet-pytorch caches its downloads in."""
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "checkpoints"


def resolve_weights(model_id: str, configured: str | os.PathLike[str] | None = None) -> Path:
    """The weights file for ``model_id``: the configured path, else the default location."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file {str(path)!r} (FEWFACE_WEIGHTS_PATH) does not exist")
        return path
    if model_id == "dlib-resnet-v1":
        from models.dlib_resnet import default_dat_path

        return default_dat_path()
    if model_id in FACENET_CHECKPOINTS:
        path = torch_checkpoint_dir() / FACENET_CHECKPOINTS[model_id][1]
        if path.is_file():
            return path
        raise WeightsNotFoundError(
            f"weights for {model_id!r} not found at {path}. Fix: on a machine with internet run "
            f"`python -m models.weights fetch {model_id}` (the Docker image does this at build time), "
            "or set FEWFACE_WEIGHTS_PATH to the checkpoint file, "
            "or use FEWFACE_MODEL=dlib-resnet-v1, whose weights install from PyPI."
        )
    raise ValueError(f"unknown model id {model_id!r}")


def fetch(model_id: str) -> Path:
    """Download facenet-pytorch weights into the torch hub cache (build time only)."""
    if model_id not in FACENET_CHECKPOINTS:
        return resolve_weights(model_id)
    from facenet_pytorch import InceptionResnetV1

    InceptionResnetV1(pretrained=FACENET_CHECKPOINTS[model_id][0])
    return resolve_weights(model_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.weights", description=__doc__)
    parser.add_argument("action", choices=["fetch", "check"], help="fetch: download (needs internet); check: only locate")
    parser.add_argument("model_id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = fetch(args.model_id) if args.action == "fetch" else resolve_weights(args.model_id)
    except (WeightsNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    log.info("%s weights: %s", args.model_id, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

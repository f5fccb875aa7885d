"""Today's detector before issue 12, for same-run comparisons in the benchmarks: facenet-pytorch's
own MTCNN ``detect`` (full-resolution pyramid from a 20 px face), behind the ``FaceDetector``
interface. Not used by the service."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from models import DetectedFace


class StockMTCNNDetector:
    def __init__(self, device: torch.device | str = "cpu", *, min_face_size: int = 20, min_prob: float = 0.9) -> None:
        from facenet_pytorch import MTCNN

        self.device = torch.device(device)
        self.min_prob = min_prob
        self.min_face_size = min_face_size
        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=self.device).eval()

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[DetectedFace]]:
        results: list[list[DetectedFace]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if min(image.size) >= self.min_face_size:
                by_size.setdefault(image.size, []).append(index)
        for indices in by_size.values():
            with torch.inference_mode():
                boxes, probs, points = self._mtcnn.detect([images[i] for i in indices], landmarks=True)
            for i, b, p, lm in zip(indices, boxes, probs, points, strict=True):
                if b is not None:
                    results[i] = [
                        DetectedFace(tuple(float(v) for v in box), float(pr), tuple((float(x), float(y)) for x, y in pts))
                        for box, pr, pts in zip(b, p, lm, strict=True)
                        if float(pr) >= self.min_prob
                    ]
        return results


def engine_with(detector_name: str, settings: object) -> object:
    """An ``Engine`` from ``settings`` whose detector is ours ("fewface") or today's ("stock")."""
    from service.recognizer import Engine

    engine = Engine.from_settings(settings)  # type: ignore[arg-type]
    if detector_name == "fewface":
        return engine
    engine.close()
    detector = StockMTCNNDetector(engine.detector.device, min_face_size=engine.detector.min_face_size, min_prob=engine.detector.min_prob)
    return Engine(
        detector,  # type: ignore[arg-type]
        engine.embedder,
        batch_max_size=settings.batch_max_size,  # type: ignore[attr-defined]
        batch_max_wait_ms=settings.batch_max_wait_ms,  # type: ignore[attr-defined]
        detect_workers=settings.detect_workers,  # type: ignore[attr-defined]
    )

"""detect -> crop -> embed -> search -> threshold. No Flask in here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models import DetectedFace, Embedder, FaceDetector, create_embedder, resolve_device
from models.quality import FaceQuality, assess
from models.ranking import rank_faces
from service.batcher import MicroBatcher
from service.config import Settings
from service.errors import ApiError
from service.imaging import DecodedImage
from service.matching import MatchRule
from service.metrics import stage
from service.store.gallery import FaceRecord, Gallery, Match, NewFace, Person
from service.thumbnails import face_jpeg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzedFace:
    face: DetectedFace  # in original-image pixel coordinates
    embedding: np.ndarray  # (dim,) unit float32
    quality: FaceQuality  # measured in the working image


@dataclass(frozen=True)
class QualityGate:
    """Teach refuses a face that fails any of these (models/quality.py says what each measures)."""

    min_eye_distance: float
    min_sharpness: float
    min_visible: float
    max_yaw: float

    def failures(self, q: FaceQuality) -> list[str]:
        failed = []
        if q.eye_distance < self.min_eye_distance:
            failed.append(f"too_small (eye distance {q.eye_distance:.1f} px < {self.min_eye_distance:g})")
        if q.sharpness < self.min_sharpness:
            failed.append(f"too_blurred (sharpness {q.sharpness:.3f} < {self.min_sharpness:g})")
        if q.visible < self.min_visible:
            failed.append(f"cut_by_border (visible {q.visible:.2f} < {self.min_visible:g})")
        if abs(q.yaw) > self.max_yaw:
            failed.append(f"turned_too_far (yaw {q.yaw:+.2f}, limit {self.max_yaw:g})")
        return failed


@dataclass(frozen=True)
class IdentifiedFace:
    face: DetectedFace
    embedding: np.ndarray  # (dim,) unit float32 (Facebox faceprints)
    candidates: list[Match]  # best first, at most top_k
    threshold: float
    quality: FaceQuality
    gallery_faces: int  # gallery size the threshold and confidence were computed for

    @property
    def best(self) -> Match | None:
        return self.candidates[0] if self.candidates else None

    @property
    def matched(self) -> bool:
        return self.best is not None and self.best.similarity >= self.threshold


class Engine:
    """The frozen pipeline (detector + embedder), shareable by several apps (tests load it once)."""

    def __init__(
        self,
        detector: FaceDetector,
        embedder: Embedder,
        *,
        batch_max_size: int = 32,
        batch_max_wait_ms: float = 5.0,
        detect_workers: int = 2,
        torch_threads: int = 0,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        # Every detection and embedding of every request goes through the batcher, which
        # coalesces concurrent requests into batches and sets each batch's intra-op threads
        # (service/batcher.py).
        self.batcher = MicroBatcher(
            embedder,
            detector,
            max_size=batch_max_size,
            max_wait_ms=batch_max_wait_ms,
            detect_workers=detect_workers,
            torch_threads=torch_threads,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        device = resolve_device(settings.device)
        detector = FaceDetector(
            device,
            min_face_size=settings.min_face_size,
            min_prob=settings.min_detection_prob,
            detect_side=settings.detect_side,
            max_faces=settings.max_faces,
        )
        embedder = create_embedder(
            settings.model,
            device,
            weights_path=settings.weights_path or None,
            half=settings.half,
            flip=settings.flip,
            alignment=settings.alignment or None,
        )
        return cls(
            detector,
            embedder,
            batch_max_size=settings.batch_max_size,
            batch_max_wait_ms=settings.batch_max_wait_ms,
            detect_workers=settings.detect_workers,
            torch_threads=settings.torch_threads,
        )

    def close(self) -> None:
        """Finish queued work and stop the batcher's threads."""
        self.batcher.close()

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @stage("embed")
    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, dim) unit vectors, batched with concurrent requests' crops."""
        return self.batcher.embed(crops)

    def embed_unbatched(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The same on the calling thread, without the batcher (benchmark baseline)."""
        return self.embedder.embed(crops)

    @stage("detect")
    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """Faces in one RGB image, largest first; same-size images of concurrent requests share an MTCNN pass."""
        return self.batcher.detect(image)

    def analyze(self, decoded: DecodedImage, max_faces: int) -> list[AnalyzedFace]:
        """Every face (most prominent first, at most ``max_faces``) with its embedding; the order is
        models.ranking's: visible area, faces cut by the border or unsure ranked down."""
        faces = rank_faces(self.detect(decoded.image), *decoded.image.size)[:max_faces]
        if not faces:
            return []
        vectors = self.embed(self.embedder.crops(decoded.image, faces))
        return [
            AnalyzedFace(f.scaled(decoded.scale).clipped(decoded.width, decoded.height), v, assess(decoded.image, f))
            for f, v in zip(faces, vectors, strict=True)
        ]


class Recognizer:
    def __init__(self, engine: Engine, gallery: Gallery, settings: Settings) -> None:
        self.engine = engine
        self.gallery = gallery
        self.settings = settings
        embedder = engine.embedder
        self.rule = MatchRule.from_settings(settings, embedder.model_id, embedder.pipeline)
        self.quality_gate = QualityGate(
            min_eye_distance=settings.quality_min_eye_distance,
            min_sharpness=settings.quality_min_sharpness,
            min_visible=settings.quality_min_visible,
            max_yaw=settings.quality_max_yaw,
        )

    def identify_threshold(self, threshold: float | None = None) -> float:
        """A request's threshold, or the default rule's for the gallery's current size."""
        return self.rule.identify_threshold(self.gallery.face_count()) if threshold is None else threshold

    def verify_threshold(self, threshold: float | None = None) -> float:
        """A request's threshold, or the configured / model default for 1:1 comparisons."""
        return self.rule.verify_threshold() if threshold is None else threshold

    def single_face(self, decoded: DecodedImage, *, pick_largest: bool, label: str = "image") -> AnalyzedFace:
        """The one face of an image: 422 when there is none, or several and the caller did not
        ask for the largest."""
        faces = self.engine.analyze(decoded, self.settings.max_faces)
        if not faces:
            raise ApiError(422, "no_face_detected", f"no face was found in the {label}")
        if len(faces) > 1 and not pick_largest:
            raise ApiError(
                422,
                "multiple_faces",
                f"{len(faces)} faces were found in the {label}; send a photo with one face or set pick=largest",
            )
        return faces[0]

    def check_quality(self, analyzed: AnalyzedFace, label: str) -> None:
        """422 low_quality_face naming every failed test when the face fails the teach gate."""
        failed = self.quality_gate.failures(analyzed.quality)
        if failed:
            raise ApiError(
                422,
                "low_quality_face",
                f"the face in the {label} is not good enough to teach from: {'; '.join(failed)}. "
                "Send a sharper, larger, frontal, uncut photo, or set quality=off to teach it anyway",
            )

    def teach(
        self,
        person_id: str,
        name: str | None,
        images: Sequence[DecodedImage],
        *,
        pick_largest: bool = False,
        check_quality: bool = True,
    ) -> tuple[Person, list[FaceRecord], bool, list[AnalyzedFace]]:
        """Add one face example per image; every image is checked (one face, and the quality gate
        unless ``check_quality`` is off) before anything is stored."""
        labels = [f"image #{i + 1}" if len(images) > 1 else "image" for i in range(len(images))]
        chosen = [self.single_face(img, pick_largest=pick_largest, label=label) for img, label in zip(images, labels, strict=True)]
        if check_quality:
            for analyzed, label in zip(chosen, labels, strict=True):
                self.check_quality(analyzed, label)
        new = [
            NewFace(a.embedding, img.sha256, a.face.box, a.face.prob, face_jpeg(img, a.face.box) if self.settings.thumbnails else None)
            for a, img in zip(chosen, images, strict=True)
        ]
        person, records, created = self.gallery.add_faces(person_id, name, new)
        return person, records, created, chosen

    def identify(self, decoded: DecodedImage, *, threshold: float | None = None, top_k: int | None = None) -> list[IdentifiedFace]:
        faces = self.engine.analyze(decoded, self.settings.max_faces)
        top_k = top_k or self.settings.top_k
        if not faces:
            return []
        with stage("search"):
            matches, gallery_faces = self.gallery.search_sized(np.stack([f.embedding for f in faces]), top_k)
        if threshold is None:
            threshold = self.rule.identify_threshold(gallery_faces)
        return [IdentifiedFace(f.face, f.embedding, m, threshold, f.quality, gallery_faces) for f, m in zip(faces, matches, strict=True)]

    def confidence(self, similarity: float, gallery_faces: int) -> float | None:
        """Calibrated probability that a best match at ``similarity`` is right (matching.py)."""
        return self.rule.confidence(similarity, gallery_faces)

    def verify(
        self, a: DecodedImage, b: DecodedImage, *, threshold: float | None = None
    ) -> tuple[AnalyzedFace, AnalyzedFace, float, float]:
        """(face a, face b, cosine similarity, threshold) for the largest face of each image."""
        fa = self.single_face(a, pick_largest=True, label="first image")
        fb = self.single_face(b, pick_largest=True, label="second image")
        similarity = float(np.dot(fa.embedding, fb.embedding))
        return fa, fb, similarity, self.verify_threshold(threshold)

"""The default match decision: a threshold that rises with the gallery, and a calibrated confidence.

Identify names a face when its best similarity reaches ``identify_threshold(n)`` for a gallery of
``n`` faces: the similarity a stranger's best match reaches with probability
``FEWFACE_MATCH_FALSE_ACCEPT`` (models/score_model.py). Verify, a 1:1 comparison, uses the
similarity one impostor reaches with probability ``FEWFACE_VERIFY_FALSE_ACCEPT`` (or the model's
fixed default where its scores were not measured). ``FEWFACE_MATCH_THRESHOLD`` replaces both
with one fixed threshold; a request's own ``threshold`` wins over everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.embedders import EMBEDDERS
from models.score_model import ScoreModel, load_score_model
from service.config import Settings


@dataclass(frozen=True)
class MatchRule:
    scores: ScoreModel | None  # None for a pipeline whose scores were not measured
    false_accept: float
    fixed: float | None  # FEWFACE_MATCH_THRESHOLD
    verify_false_accept: float
    uncalibrated_default: float  # the model's fixed threshold, where no scores were measured

    @classmethod
    def from_settings(cls, settings: Settings, model_id: str, pipeline: str) -> MatchRule:
        """The rule a service with ``settings`` applies to a ``model_id`` / ``pipeline`` gallery."""
        return cls(
            scores=load_score_model(model_id, pipeline),
            false_accept=settings.match_false_accept,
            fixed=settings.match_threshold,
            verify_false_accept=settings.verify_false_accept,
            uncalibrated_default=EMBEDDERS[model_id].default_threshold,
        )

    @property
    def calibrated(self) -> bool:
        return self.fixed is None and self.scores is not None

    def identify_threshold(self, gallery_faces: int) -> float:
        if self.fixed is not None:
            return self.fixed
        if self.scores is None:
            return self.uncalibrated_default
        return round(self.scores.threshold_for(self.false_accept, gallery_faces), 5)

    def verify_threshold(self) -> float:
        if self.fixed is not None:
            return self.fixed
        if self.scores is None:
            return self.uncalibrated_default
        return round(self.scores.threshold_for(self.verify_false_accept, 1), 5)

    def confidence(self, similarity: float, gallery_faces: int) -> float | None:
        """P(the best match is the right person), or None where the pipeline is not calibrated."""
        if self.scores is None:
            return None
        return round(self.scores.confidence(similarity, gallery_faces), 5)

    def describe(self, gallery_faces: int) -> dict[str, object]:
        """For /v1/info: what the default decision is right now."""
        return {
            "kind": "calibrated" if self.calibrated else "fixed",
            "false_accept_target": self.false_accept if self.calibrated else None,
            "verify_false_accept_target": self.verify_false_accept if self.calibrated else None,
            "identify_threshold": self.identify_threshold(gallery_faces),
            "verify_threshold": self.verify_threshold(),
            "gallery_faces": gallery_faces,
            "calibration": self.scores.source if self.scores is not None else None,
        }

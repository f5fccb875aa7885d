"""What an embedding pipeline's similarity scores mean: its genuine and impostor score
distributions, measured on labelled photos (LFW's development folds for the shipped models, by
``python -m bench.lfw --fit``) and stored as small JSON tables beside this module.

From them, for a gallery of ``n`` faces:

- ``threshold_for(target, n)``: the similarity a stranger's best match reaches with probability
  ``target``. A stranger compared with ``n`` faces draws ``n`` impostor scores; taking them as
  independent, P(best >= t) = 1 - (1 - p(t))^n where p(t) = P(one impostor score >= t), so the
  threshold is the impostor score whose tail probability is 1 - (1 - target)^(1/n). The threshold
  rises with the gallery: about one decade of p per tenfold more faces. The scores of one stranger
  against one gallery are not independent, so n faces count as n ** gallery_exponent draws, the
  exponent measured by simulating galleries on the labelled photos.
- ``confidence(s, n)``: the probability that a best match at similarity ``s`` is the right person,
  for a probe that is a taught person or a stranger with equal prior odds. With G, g the genuine
  score CDF and density and F, f the impostor's: right = g(s) F(s) (the person's own example wins
  over the n - 1 others), wrong = f(s) ((n - 1) G(s) + n F(s)) (another person's example wins, or
  a stranger's best of n), confidence = right / (right + wrong) (common factor F^(n-2) dropped),
  made non-decreasing in ``s``.

The impostor tail is tabulated where the data has samples (log10 p against score) and extended
beyond the last measured point along the straight line through the last decades, which is how
the tail of these scores behaves on log scale.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

TABLES = Path(__file__).resolve().parent / "score_models"
_MIN_TAIL_SAMPLES = 20  # the tail table stops where fewer impostor scores than this lie beyond
_GRID = np.linspace(-1.0, 1.0, 4001)  # where confidence is tabulated (step 0.0005)


@dataclass(frozen=True)
class ScoreModel:
    source: str  # where the scores were measured
    tail_scores: tuple[float, ...]  # increasing
    tail_log10: tuple[float, ...]  # log10 P(impostor >= score), decreasing
    genuine_quantiles: tuple[float, ...]  # genuine scores at probabilities genuine_probs
    genuine_probs: tuple[float, ...]
    # A stranger's scores against the faces of one gallery are not independent (a face that looks
    # like many people scores high against all of them), so n faces act as n ** gallery_exponent
    # independent draws; measured by simulating galleries on the labelled photos (bench.lfw).
    gallery_exponent: float = 1.0

    def draws(self, n: int) -> float:
        """Independent impostor draws that a gallery of ``n`` faces is worth."""
        return max(1.0, float(n)) ** self.gallery_exponent

    # -- impostor tail ------------------------------------------------------------------------
    def tail_log10_at(self, score: np.ndarray | float) -> np.ndarray:
        """log10 P(one impostor score >= score), extended linearly past the table's last point."""
        s = np.asarray(score, dtype=np.float64)
        xs, ys = np.asarray(self.tail_scores), np.asarray(self.tail_log10)
        slope = (ys[-1] - ys[-3]) / (xs[-1] - xs[-3])
        inside = np.interp(s, xs, ys, left=0.0)
        return np.where(s > xs[-1], ys[-1] + slope * (s - xs[-1]), np.minimum(inside, 0.0))

    def threshold_for(self, target: float, n: int) -> float:
        """Similarity that a stranger's best match among ``n`` faces reaches with probability ``target``."""
        if not 0.0 < target < 1.0:
            raise ValueError("target must be between 0 and 1")
        per_draw = -math.expm1(math.log1p(-target) / self.draws(n))  # 1 - (1 - target)^(1/draws), exact for large n
        level = math.log10(per_draw)
        xs, ys = np.asarray(self.tail_scores), np.asarray(self.tail_log10)
        if level >= ys[0]:
            return float(xs[0])
        if level >= ys[-1]:
            return float(np.interp(-level, -ys, xs))
        slope = (ys[-1] - ys[-3]) / (xs[-1] - xs[-3])
        return float(xs[-1] + (level - ys[-1]) / slope)

    # -- confidence ---------------------------------------------------------------------------
    def confidence(self, score: float, n: int) -> float:
        """P(right person | best similarity ``score``, ``n`` faces in the gallery), prior odds 1:1."""
        table = _confidence_table(self, self.draws(n))
        return float(np.interp(score, _GRID, table))

    # -- fitting and storage --------------------------------------------------------------------
    @classmethod
    def fit(cls, genuine: np.ndarray, impostor: np.ndarray, source: str, gallery_exponent: float = 1.0) -> ScoreModel:
        """Tables from genuine and impostor similarity scores."""
        imp = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]  # descending
        levels = np.arange(-0.25, math.log10(_MIN_TAIL_SAMPLES / len(imp)), -0.25)
        counts = np.maximum(1, np.round(10.0**levels * len(imp)).astype(int))
        scores = imp[counts - 1]  # increasing, as the tail probability (levels) decreases
        keep = np.concatenate([[True], np.diff(scores) > 0])
        probs = np.linspace(0.001, 0.999, 999)
        return cls(
            source=source,
            tail_scores=tuple(float(round(x, 6)) for x in scores[keep]),
            tail_log10=tuple(float(round(x, 4)) for x in levels[keep]),
            genuine_quantiles=tuple(float(round(x, 6)) for x in np.quantile(genuine, probs)),
            genuine_probs=tuple(float(round(x, 4)) for x in probs),
            gallery_exponent=float(round(gallery_exponent, 4)),
        )

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ScoreModel:
        raw = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def table_path(model_id: str, pipeline: str) -> Path:
    return TABLES / f"{model_id}__{pipeline}.json"


@cache
def load_score_model(model_id: str, pipeline: str) -> ScoreModel | None:
    """The shipped tables for this model and pipeline, or None where none was measured."""
    path = table_path(model_id, pipeline)
    return ScoreModel.from_json(path.read_text()) if path.is_file() else None


@lru_cache(maxsize=64)  # one table per gallery size in use; bounded, since a growing gallery sees many sizes
def _confidence_table(model: ScoreModel, n: float) -> np.ndarray:
    step = _GRID[1] - _GRID[0]
    # genuine score CDF G and density g (derivative of the tabulated CDF, smoothed over +-0.01)
    big_g = np.interp(_GRID, model.genuine_quantiles, model.genuine_probs, left=0.0, right=1.0)
    width = round(0.01 / step)
    g = np.clip((np.roll(big_g, -width) - np.roll(big_g, width)) / (2 * width * step), 0.0, None)
    # impostor CDF F = 1 - p and density f = -dp/ds
    p = 10.0 ** model.tail_log10_at(_GRID)
    big_f = 1.0 - p
    f = np.clip(-np.gradient(p, step), 0.0, None)
    right = g * big_f  # a taught person whose own example beats the n - 1 others (common factor F^(n-2) dropped)
    wrong = f * ((n - 1) * big_g + n * big_f)  # another person beats them, or a stranger's best of n
    with np.errstate(invalid="ignore", divide="ignore"):
        posterior = np.where(right + wrong > 0, right / (right + wrong), np.nan)
    # where neither has any density: 0 below the genuine scores, 1 above them
    posterior = np.where(np.isnan(posterior), np.where(_GRID < model.genuine_quantiles[0], 0.0, 1.0), posterior)
    return np.maximum.accumulate(np.clip(posterior, 0.0, 1.0))

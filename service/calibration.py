"""Score statistics for calibrating the match threshold: genuine / impostor score sets, FAR and
FRR by threshold, the equal error rate, and the threshold for a target chance of naming a
stranger at a given gallery size. Pure numpy: no Flask, no storage.

Scores are cosine similarities of L2-normalised embeddings (dot products, in [-1, 1]); a match
is declared when ``score >= threshold``. So for a threshold t:

- FAR(t) = share of impostor scores >= t (different people called the same),
- FRR(t) = share of genuine scores < t (the same person missed).

Open-set identification: a stranger probed against a gallery of N people is wrongly named when
the best of N impostor draws reaches t. With independent draws whose CDF is F,
P(best of N >= t) = 1 - F(t)^N, so a target chance ``a`` needs F(t) = (1 - a)^(1/N), i.e. a
per-draw FAR of 1 - (1 - a)^(1/N) (about a / N when a is small). The draws are not truly
independent (one stranger's scores against many people are correlated: a probe that looks
"generic" scores high against everyone), so the real chance is usually somewhat lower than
computed, and the threshold errs on the strict side. With several examples per person the
draw is the person's best example score, as the gallery search ranks people
(:func:`person_best_scores`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

_BLOCK_ROWS = 512  # rows per matrix-product block: 512 x 4,000 float64 is 16 MB


# -- score sets ------------------------------------------------------------------------------
def _codes(labels: Sequence[str], n: int) -> np.ndarray:
    if len(labels) != n:
        raise ValueError(f"{n} embeddings but {len(labels)} labels")
    _, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    return codes.reshape(-1)


def _as_matrix(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {e.shape}")
    return e


class _Sampler:
    """A deterministic random subsample of at most ``cap`` of ``total`` items seen block by
    block: each item is kept with probability a little above cap / total (6 standard
    deviations of margin), then the surplus is dropped at random, so exactly ``cap`` remain
    (fewer only with negligible probability). O(total) time, no O(total) memory."""

    def __init__(self, total: int, cap: int, seed: int) -> None:
        self.cap = max(0, int(cap))
        self.rng = np.random.default_rng(seed)
        self.p = 1.0 if total <= self.cap else min(1.0, (self.cap + 6 * math.sqrt(self.cap) + 10) / total)
        self.parts: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        self.parts.append(block if self.p >= 1 else block[self.rng.random(len(block)) < self.p])

    def result(self) -> np.ndarray:
        out = _concat(self.parts)
        if len(out) > self.cap:
            out = np.delete(out, self.rng.choice(len(out), len(out) - self.cap, replace=False))
        return out


def pair_scores(
    embeddings: np.ndarray, labels: Sequence[str], max_impostor_pairs: int = 2_000_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) float64 scores over the unordered pairs i < j of ``embeddings``:
    genuine = every same-label pair, impostor = every different-label pair, or, above
    ``max_impostor_pairs``, a random subsample of that size (the same one for the same seed,
    in pair order: row by row, i then j).
    Computed in blocks of rows: memory is O(block x n), not O(n^2)."""
    e = _as_matrix(embeddings)
    n = len(e)
    codes = _codes(labels, n)
    sizes = np.bincount(codes) if n else np.zeros(0, dtype=np.int64)
    genuine_total = int((sizes * (sizes - 1) // 2).sum())
    impostor_total = n * (n - 1) // 2 - genuine_total
    impostor = _Sampler(impostor_total, max_impostor_pairs, seed)
    genuine: list[np.ndarray] = []
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        sims = e[start:stop] @ e[start:].T  # columns start.. n-1: only the upper triangle is needed
        upper = np.arange(start, n)[None, :] > np.arange(start, stop)[:, None]
        same = codes[start:stop, None] == codes[None, start:]
        genuine.append(sims[upper & same])
        impostor.add(sims[upper & ~same])
    return _concat(genuine), impostor.result()


def person_best_scores(
    embeddings: np.ndarray, labels: Sequence[str], max_impostor_draws: int = 2_000_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores as the gallery search sees them, each example taken in turn as the probe:
    genuine[i] = the best score of example i against the OTHER examples of its own person
    (persons with one example give none); impostor = for every example i and every other person
    P, the best score of i against P's examples (one open-set draw), subsampled above
    ``max_impostor_draws`` like :func:`pair_scores`."""
    e = _as_matrix(embeddings)
    n = len(e)
    codes = _codes(labels, n)
    order = np.argsort(codes, kind="stable")
    e, codes = e[order], codes[order]
    people = int(codes.max()) + 1 if n else 0
    starts = np.searchsorted(codes, np.arange(people))
    sizes = np.bincount(codes, minlength=people)
    impostor_total = n * (people - 1)
    impostor = _Sampler(impostor_total, max_impostor_draws, seed)
    genuine: list[np.ndarray] = []
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        sims = e[start:stop] @ e.T
        local = np.arange(stop - start)
        sims[local, local + start] = -np.inf  # a probe never matches itself
        best = np.maximum.reduceat(sims, starts, axis=1)  # (rows, people): best example of each person
        own = codes[start:stop]
        has_other = sizes[own] >= 2
        genuine.append(best[local, own][has_other])
        best[local, own] = np.nan
        impostor.add(best[~np.isnan(best)])  # row-major, people - 1 per row
    return _concat(genuine), impostor.result()


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0, dtype=np.float64)


def _scores(values: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} scores must be finite")
    return a


def _sorted(a: np.ndarray) -> np.ndarray:
    """``a`` ascending; scores sorted once by the caller are not sorted again."""
    return a if len(a) < 2 or bool((a[1:] >= a[:-1]).all()) else np.sort(a)


# -- rates -----------------------------------------------------------------------------------
def far_frr(
    genuine: np.ndarray | Sequence[float], impostor: np.ndarray | Sequence[float], thresholds: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold t: FAR = share of impostor scores >= t, FRR = share of genuine scores
    < t (NaN where that score set is empty)."""
    g = _sorted(_scores(genuine, "genuine"))
    i = _sorted(_scores(impostor, "impostor"))
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    far = (len(i) - np.searchsorted(i, t, side="left")) / len(i) if len(i) else np.full(len(t), np.nan)
    frr = np.searchsorted(g, t, side="left") / len(g) if len(g) else np.full(len(t), np.nan)
    return np.asarray(far, dtype=np.float64), np.asarray(frr, dtype=np.float64)


def _steps(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct scores u_0 < u_1 < ... and FAR, FRR at each. Both rates are constant on
    every interval (u_{k-1}, u_k], with the values they have at u_k."""
    if not len(genuine) or not len(impostor):
        raise ValueError("needs at least one genuine and one impostor score")
    u = np.unique(np.concatenate([genuine, impostor]))
    far, frr = far_frr(genuine, impostor, u)
    return u, far, frr


def equal_error_rate(genuine: np.ndarray | Sequence[float], impostor: np.ndarray | Sequence[float]) -> tuple[float, float]:
    """(EER, threshold) where FAR and FRR meet. Where they are equal over a range of thresholds
    (e.g. scores that separate perfectly: both 0 between the best impostor and the worst
    genuine score), the threshold is the middle of that range. Where they cross without
    meeting (step functions), the rate and threshold are interpolated linearly between the two
    distinct scores around the crossing."""
    g, i = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    u, far, frr = _steps(g, i)
    # d = FAR - FRR is non-increasing, 1 at the lowest score; a virtual point just above every
    # score (FAR 0, FRR 1) makes it end below 0, so a crossing always exists at some k >= 1
    u = np.append(u, np.nextafter(u[-1], np.inf))
    far, frr = np.append(far, 0.0), np.append(frr, 1.0)
    d = far - frr
    k = int(np.argmax(d <= 0))
    if d[k] == 0:  # equal on (u[k-1], u[last]]: the middle of that range
        last = k + int(np.argmax(d[k:] < 0)) - 1
        return float(far[k]), float((u[k - 1] + u[last]) / 2)
    f = d[k - 1] / (d[k - 1] - d[k])
    return float(far[k - 1] + f * (far[k] - far[k - 1])), float(u[k - 1] + f * (u[k] - u[k - 1]))


def best_accuracy_threshold(genuine: np.ndarray | Sequence[float], impostor: np.ndarray | Sequence[float]) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy with equal class weights,
    1 - (FAR + FRR) / 2. Rates are constant between distinct scores, so the best is a range
    (u_{k-1}, u_k]; the threshold returned is its middle (the lowest such range on ties)."""
    g, i = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    u, far, frr = _steps(g, i)
    # candidate ranges: (-inf, u_0], (u_0, u_1], ..., and (u_last, +inf) where FAR = 0, FRR = 1
    acc = np.append(1 - (far + frr) / 2, 0.5)
    k = int(np.argmax(acc))
    if k == 0:
        return float(u[0]), float(acc[0])
    if k == len(u):
        return float(np.nextafter(u[-1], np.inf)), 0.5
    return float((u[k - 1] + u[k]) / 2), float(acc[k])


def threshold_for_far(impostor: np.ndarray | Sequence[float], far: float) -> float:
    """The smallest threshold t with FAR(t) <= ``far`` for one comparison: with k =
    floor(far x n) impostor scores allowed at or above t, t is the next float above the
    (k+1)-th highest impostor score. ``far`` >= 1 gives the lowest impostor score (FAR = 1).
    When far x n < 1 no impostor score may reach t, and the answer only says "above
    everything seen": see :func:`open_set_threshold_detail`."""
    i = np.sort(_scores(impostor, "impostor"))[::-1]
    if not len(i):
        raise ValueError("needs at least one impostor score")
    if not 0 <= far:
        raise ValueError(f"far must be >= 0, got {far}")
    allowed = math.floor(far * len(i) + 1e-9)
    if allowed >= len(i):
        return float(i[-1])
    return float(np.nextafter(i[allowed], np.inf))


@dataclass(frozen=True)
class OpenSetThreshold:
    """The threshold for a target chance of naming a stranger, and how well the data backs it.

    ``per_draw_far`` = 1 - (1 - target)^(1/gallery_size), the FAR one impostor comparison may
    have; ``expected_above`` = per_draw_far x the number of impostor draws: how many of the
    observed impostor scores may lie at or above the threshold. ``resolved`` is False when that
    is below 1: the data cannot resolve so small a rate, and ``threshold`` is clamped to just
    above the highest impostor score seen (the chance it achieves is unknown, only below about
    1 / draws per comparison); more people or examples would be needed."""

    threshold: float
    target: float
    gallery_size: int
    per_draw_far: float
    impostor_draws: int
    expected_above: float
    resolved: bool


def open_set_threshold_detail(impostor: np.ndarray | Sequence[float], target: float, gallery_size: int) -> OpenSetThreshold:
    """See :class:`OpenSetThreshold` and the module docstring (independent draws assumed)."""
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size}")
    i = _scores(impostor, "impostor")
    # 1 - (1 - a)^(1/N), computed without cancellation for tiny a / huge N
    per_draw = -math.expm1(math.log1p(-target) / gallery_size)
    expected = per_draw * len(i)
    threshold = threshold_for_far(i, per_draw)
    return OpenSetThreshold(threshold, target, gallery_size, per_draw, len(i), expected, expected >= 1 - 1e-9)


def open_set_threshold(impostor: np.ndarray | Sequence[float], target: float, gallery_size: int) -> float:
    """The threshold t with P(best of ``gallery_size`` independent impostor draws >= t) =
    ``target``, from the empirical impostor CDF: the smallest t whose per-draw FAR is at most
    1 - (1 - target)^(1/gallery_size). When the data cannot resolve that rate (fewer impostor
    draws than 1 / per-draw FAR) it logs a warning and returns just above the highest impostor
    score; :func:`open_set_threshold_detail` says so in its result."""
    detail = open_set_threshold_detail(impostor, target, gallery_size)
    if not detail.resolved:
        log.warning(
            "a %.3g chance of naming a stranger among %d people needs a per-comparison FAR of %.3g, below what %d impostor "
            "scores can resolve; threshold clamped to just above the highest impostor score (%.4f)",
            target,
            gallery_size,
            detail.per_draw_far,
            detail.impostor_draws,
            detail.threshold,
        )
    return detail.threshold


def stranger_chance(per_draw_far: float, gallery_size: int) -> float:
    """P(best of ``gallery_size`` independent impostor draws reaches the threshold), given the
    FAR of one draw: 1 - (1 - far)^N."""
    if per_draw_far >= 1:
        return 1.0
    return float(-math.expm1(gallery_size * math.log1p(-per_draw_far)))

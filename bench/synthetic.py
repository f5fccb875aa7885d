"""Synthetic face embeddings shaped like real ones, for search benchmarks and index tests.

Fitted to dlib-resnet-v1 embeddings of the 62 ``shared/faces/deepface`` photos (13 identities):

* Real embeddings are not spread over the sphere: they sit in a cone. Their mean has norm 0.92
  and different people's median cosine similarity is 0.84 (0.87 in this model). Modelled as
  ``mean + N(0, C)``, normalised, with ``|mean| = 0.92`` and C's eigenvalues falling as ``1/k``
  (total variance 0.15, as measured; the measured first ten eigenvalues fall about that fast).
  ``dim=512`` keeps the same shape (facenet's real embeddings are spread wider: a harder case
  only for speed, not for recall).
* A query is a noisy copy of an enrolled vector, as another photo of the same person is:
  intra-person variation is 20% along the population's principal directions and 80% spread
  evenly (the measured share of within-person variance in the top 5 / 10 principal directions
  was 12% / 24%), scaled so the median cosine to the source is 0.967, the measured median of
  same-person pairs. ``hard=True`` puts all of it along the principal directions instead (the
  direction that moves a query across IVF cells most; a pessimistic check).
"""

from __future__ import annotations

import numpy as np

MEAN_NORM = 0.92
TOTAL_VARIANCE = 0.15
ALIGNED_SHARE = 0.2
# Noise scale for a median cosine of 0.967 to the source (found by measurement, dim 128 and 512).
NOISE_SCALE = 0.70


class EmbeddingModel:
    """A random rotation of the fitted distribution; ``seed`` fixes it."""

    def __init__(self, dim: int = 128, seed: int = 0) -> None:
        self.dim = dim
        rng = np.random.default_rng(seed)
        self.basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.basis = self.basis.astype(np.float32)
        k = np.arange(1, dim + 1, dtype=np.float64)
        self.eigen = (TOTAL_VARIANCE / np.sum(1.0 / k)) / k
        self.mean = (self.basis[:, 0] * MEAN_NORM).astype(np.float32)

    def _aligned(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal((n, self.dim), dtype=np.float32) * np.sqrt(self.eigen).astype(np.float32)
        return z @ self.basis.T

    def enrolled(self, n: int, seed: int = 1, chunk: int = 100_000) -> np.ndarray:
        """(n, dim) unit float32 vectors."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), np.float32)
        for start in range(0, n, chunk):
            x = self._aligned(rng, min(chunk, n - start)) + self.mean
            out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    def queries(self, sources: np.ndarray, seed: int = 2, *, hard: bool = False) -> np.ndarray:
        """Unit noisy copies of ``sources`` (another photo of the same person)."""
        rng = np.random.default_rng(seed)
        n = len(sources)
        if hard:
            noise = self._aligned(rng, n)
        else:
            even = rng.standard_normal((n, self.dim), dtype=np.float32) * np.float32(np.sqrt(TOTAL_VARIANCE / self.dim))
            noise = np.sqrt(ALIGNED_SHARE) * self._aligned(rng, n) + np.sqrt(1 - ALIGNED_SHARE) * even
        q = sources + NOISE_SCALE * noise
        return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)

"""In-memory FAISS index over L2-normalised embeddings, keyed by face-example id.

Inner product over unit vectors is cosine similarity. The index is derived state: SQLite is the
record and the index is rebuilt from it at start.

Two layouts, switched automatically by size:

* **exact** (up to ``exact_max`` vectors): ``IndexIDMap2(IndexFlatIP)``, brute force, exact.
* **ivf** (above ``exact_max``): ``IndexIVFFlat`` with inner product, ``nlist`` = the power of
  two nearest ``sqrt(N)`` cells (spherical k-means on a sample), ``nprobe`` cells scanned per
  query (default ``max(32, nlist / 8)``). Vectors are stored uncompressed, so the
  similarities it returns are exact; only which vectors get compared is approximate. Chosen
  over HNSW by measurement: IVF supports ``remove_ids`` (FAISS's HNSW cannot remove), built
  100k vectors in 2 s where HNSW (M=32) took 51 s, and met the recall target at 1M
  (docs/performance.md).

Adding past ``exact_max`` rebuilds the index as IVF in place (the caller holds the gallery
lock, so searches wait for it); an IVF index is retrained when it has grown four-fold since
its training (cells would get too long), and goes back to exact when it shrinks below half
of ``exact_max`` (the gap avoids flapping).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import faiss
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EXACT_MAX = 200_000
MIN_NPROBE = 32
# nprobe = nlist / 8: at 1M faces recall@1 1.000 (realistic queries) / 0.970 (hard ones) in
# about 10 ms; nlist / 16 halves the time but the hard case fell to 0.92 (bench/search.py).
NPROBE_DIVISOR = 8
# Searches of at most this many queries run on one OpenMP thread: fanning a handful of queries
# out costs more than it saves, and collapses when the cores are busy embedding (measured
# 36 ms vs 7.6 ms for one query over 100k vectors on 2 busy cores).
SINGLE_THREAD_MAX_QUERIES = 16
TRAIN_POINTS_PER_CELL = 64
RETRAIN_GROWTH = 4


class VectorIndex:
    """Inner-product search over unit vectors by id, exact up to ``exact_max`` vectors and IVF
    above. Not thread-safe; the gallery serialises access."""

    def __init__(self, dim: int, *, exact_max: int = DEFAULT_EXACT_MAX, nprobe: int = 0, seed: int = 1234) -> None:
        if exact_max < 1:
            raise ValueError("exact_max must be positive")
        self.dim = dim
        self.exact_max = int(exact_max)
        self.nprobe_setting = int(nprobe)  # 0 = automatic
        self.seed = seed
        self._index: faiss.Index = _exact(dim)
        self._kind: Literal["exact", "ivf"] = "exact"
        self._trained_at = 0  # vectors when the IVF index was trained
        self.rebuilds = 0
        self.last_rebuild_seconds = 0.0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def kind(self) -> Literal["exact", "ivf"]:
        return self._kind

    @property
    def nlist(self) -> int:
        return int(self._index.nlist) if self._kind == "ivf" else 0

    @property
    def nprobe(self) -> int:
        return int(self._index.nprobe) if self._kind == "ivf" else 0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        v = _vectors(vectors, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) != len(v):
            raise ValueError(f"{len(ids)} ids for {len(v)} vectors")
        total = len(self) + len(v)
        limit = self.exact_max if self._kind == "exact" else RETRAIN_GROWTH * self._trained_at
        if total > limit:
            old_ids, old_vectors = self.contents()
            self._rebuild_ivf(np.concatenate([old_ids, ids]), np.concatenate([old_vectors, v]))
        else:
            self._index.add_with_ids(v, ids)

    def remove(self, ids: list[int] | np.ndarray) -> None:
        if not len(ids):
            return
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        if self._kind == "ivf" and len(self) < self.exact_max // 2:
            started = time.perf_counter()
            all_ids, vectors = self.contents()
            index = _exact(self.dim)
            index.add_with_ids(vectors, all_ids)
            self._index, self._kind, self._trained_at = index, "exact", 0
            self._rebuilt(started)

    def ids(self) -> np.ndarray:
        return self.contents(with_vectors=False)[0]

    def contents(self, *, with_vectors: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything in the index (vectors empty when not asked for)."""
        if self._kind == "exact":
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            if not with_vectors:
                return ids, np.zeros((0, self.dim), np.float32)
            vectors = self._index.index.reconstruct_n(0, len(ids)) if len(ids) else np.zeros((0, self.dim), np.float32)
            return ids, vectors
        invlists = self._index.invlists
        id_parts, vec_parts = [], []
        for cell in range(self._index.nlist):
            n = invlists.list_size(cell)
            if n == 0:
                continue
            id_parts.append(faiss.rev_swig_ptr(invlists.get_ids(cell), n).copy())
            if with_vectors:
                codes = faiss.rev_swig_ptr(invlists.get_codes(cell), n * invlists.code_size)
                vec_parts.append(np.frombuffer(codes, dtype=np.float32).reshape(n, self.dim).copy())
        ids = np.concatenate(id_parts).astype(np.int64) if id_parts else np.zeros(0, np.int64)
        vectors = np.concatenate(vec_parts) if vec_parts else np.zeros((0, self.dim), np.float32)
        return ids, vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each (Q, k'); k' = min(k, len(self)); missing ids are -1."""
        q = _vectors(queries, self.dim)
        k = min(k, len(self))
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if len(q) > SINGLE_THREAD_MAX_QUERIES:
            return self._index.search(q, k)
        # omp_set_num_threads sets the calling thread's OpenMP setting only: restore it.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._index.search(q, k)
        finally:
            faiss.omp_set_num_threads(threads)

    # -- internals ---------------------------------------------------------------------
    def _rebuild_ivf(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        started = time.perf_counter()
        n = len(vectors)
        nlist = max(1, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        rng = np.random.default_rng(self.seed)
        sample = vectors if n <= TRAIN_POINTS_PER_CELL * nlist else vectors[rng.choice(n, TRAIN_POINTS_PER_CELL * nlist, replace=False)]
        index.train(np.ascontiguousarray(sample))
        index.add_with_ids(vectors, ids)
        index.nprobe = min(nlist, self.nprobe_setting or max(MIN_NPROBE, nlist // NPROBE_DIVISOR))
        self._index, self._kind, self._trained_at = index, "ivf", n
        self._rebuilt(started)

    def _rebuilt(self, started: float) -> None:
        self.rebuilds += 1
        self.last_rebuild_seconds = time.perf_counter() - started
        log.info(
            "vector index rebuilt as %s over %d vectors in %.1f s (nlist %d, nprobe %d)",
            self._kind,
            len(self),
            self.last_rebuild_seconds,
            self.nlist,
            self.nprobe,
        )


def _exact(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (N, {dim}), got {v.shape}")
    return v

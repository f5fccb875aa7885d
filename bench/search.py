"""Gallery search as it grows: build time, single-query latency p50/p95 and recall@1 against
exact search, at 1k, 100k and 1M synthetic enrolled faces (bench/synthetic.py: unit vectors
shaped like real dlib embeddings; queries are noisy copies of enrolled vectors, as another
photo of an enrolled person is). Uses service.index.VectorIndex with the service's settings
(FEWFACE_INDEX_EXACT_MAX, FEWFACE_INDEX_NPROBE): exact up to the threshold, IVF above.

    .venv/bin/python -m bench.search [--sizes 1000,100000,1000000] [--dim 128|512] [--queries 200] [--hard]

Each query is searched alone with k=64 (what the gallery fetches per face). Ground truth is
exact inner-product search over the same vectors, so recall@1 is the share of queries whose
top hit is the exact top hit. Memory is the process's resident-set growth while the index is
built (the vectors themselves are allocated before).
"""

from __future__ import annotations

import argparse
import gc
import time

import faiss
import numpy as np

from bench.common import machine, ms
from bench.synthetic import EmbeddingModel
from service.config import Settings
from service.index import VectorIndex

FETCH = 64  # service.store.gallery.Gallery.search fetches max(64, 16 * top_k) candidates


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    _, ids = flat.search(queries, 1)
    return ids[:, 0]


def bench_size(model: EmbeddingModel, n: int, args: argparse.Namespace, settings: Settings) -> None:
    vectors = model.enrolled(n, seed=n)
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(7)
    sources = rng.choice(n, args.queries, replace=False)
    queries = model.queries(vectors[sources], seed=8, hard=args.hard)
    truth = exact_top1(vectors, queries)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    index = VectorIndex(model.dim, exact_max=settings.index_exact_max, nprobe=settings.index_nprobe)
    index.add(ids, vectors)
    build = time.perf_counter() - started
    gc.collect()
    grown = rss_bytes() - before
    latencies, hits = [], 0
    for i in range(len(queries)):
        t = time.perf_counter()
        _, found = index.search(queries[i : i + 1], FETCH)
        latencies.append(time.perf_counter() - t)
        hits += int(found[0, 0] == truth[i])
    shape = f"IVF nlist {index.nlist} nprobe {index.nprobe}" if index.kind == "ivf" else "exact"
    print(f"{n:>9,d} faces  {shape:<26} build {build:6.1f} s   {ms(latencies)}   recall@1 {hits / len(queries):.3f}")
    measured = f"{grown / n:6.0f} B/face measured (RSS growth {grown / 2**20:.0f} MiB)" if n >= 100_000 else "too small to measure"
    print(f"{'':>9}        index memory {measured}; vectors + ids alone are {4 * model.dim + 8} B/face")
    if index.kind == "ivf" and args.exact_reference:
        flat = faiss.IndexFlatIP(model.dim)
        flat.add(vectors)
        ref = []
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # as VectorIndex searches a few queries
        for i in range(min(20, len(queries))):
            t = time.perf_counter()
            flat.search(queries[i : i + 1], FETCH)
            ref.append(time.perf_counter() - t)
        faiss.omp_set_num_threads(threads)
        print(f"{'':>9}        exact search, for comparison: {ms(ref)}")
        del flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--dim", type=int, default=128, choices=[128, 512])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hard", action="store_true", help="pessimistic queries: all noise along the principal directions")
    parser.add_argument("--no-exact-reference", dest="exact_reference", action="store_false", help="skip exact timing at IVF sizes")
    args = parser.parse_args()
    settings = Settings.from_env()
    model = EmbeddingModel(args.dim)
    print(f"# search latency and recall@1 vs exact, dim {args.dim}, {args.queries} single queries, k={FETCH}")
    print(f"# {machine()}; faiss {faiss.__version__}")
    noise = "hard" if args.hard else "realistic"
    print(f"# FEWFACE_INDEX_EXACT_MAX={settings.index_exact_max}, FEWFACE_INDEX_NPROBE={settings.index_nprobe}; {noise} query noise")
    for n in (int(s) for s in args.sizes.split(",")):
        bench_size(model, n, args, settings)
        gc.collect()


if __name__ == "__main__":
    main()

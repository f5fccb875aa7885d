"""VectorIndex: exact up to a size, IVF above it, switched in place; add/remove/search stay
consistent across the switch; recall against exact search on realistic synthetic embeddings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from bench.synthetic import EmbeddingModel
from service.index import VectorIndex
from service.store.gallery import Gallery, NewFace
from tests.conftest import photo, upload

DIM = 128


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return EmbeddingModel(DIM, seed=3).enrolled(20_000, seed=4)


def exact_top1(base: np.ndarray, base_ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return base_ids[np.argmax(queries @ base.T, axis=1)]


def test_exact_below_the_threshold(vectors: np.ndarray) -> None:
    index = VectorIndex(DIM, exact_max=1000)
    ids = np.arange(1000, dtype=np.int64) * 7
    index.add(ids, vectors[:1000])
    assert index.kind == "exact" and len(index) == 1000 and index.rebuilds == 0
    sims, found = index.search(vectors[:5], 3)
    assert found[:, 0].tolist() == ids[:5].tolist()
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


def test_switches_to_ivf_in_place_and_back(vectors: np.ndarray) -> None:
    index = VectorIndex(DIM, exact_max=2000)
    ids = np.arange(5000, dtype=np.int64) + 100
    index.add(ids[:1500], vectors[:1500])
    assert index.kind == "exact"
    index.add(ids[1500:5000], vectors[1500:5000])  # crosses exact_max: rebuilt as IVF
    assert index.kind == "ivf" and len(index) == 5000 and index.rebuilds == 1
    assert index.nlist == 64 and index.nprobe == 32  # sqrt(5000) ~ 71 -> 64 cells; max(32, 64 / 8)
    got_ids, got_vectors = index.contents()
    order = np.argsort(got_ids)
    assert got_ids[order].tolist() == ids.tolist()
    np.testing.assert_array_equal(got_vectors[order], vectors[:5000])

    index.remove(ids[:2500])  # 2500 left: still above exact_max / 2
    assert index.kind == "ivf" and len(index) == 2500
    index.remove(ids[2500:4100])  # 900 left, below exact_max / 2: back to exact
    assert index.kind == "exact" and len(index) == 900 and index.rebuilds == 2
    assert set(index.ids().tolist()) == set(ids[4100:].tolist())
    _, found = index.search(vectors[4100:4110], 1)
    assert found[:, 0].tolist() == ids[4100:4110].tolist()


def test_add_remove_search_consistent_in_ivf(vectors: np.ndarray) -> None:
    index = VectorIndex(DIM, exact_max=1000, nprobe=8)
    ids = np.arange(4000, dtype=np.int64)
    index.add(ids[:3000], vectors[:3000])
    assert index.kind == "ivf" and index.nprobe == 8
    index.add(ids[3000:], vectors[3000:4000])  # added after training, not yet 4x: no rebuild
    assert index.rebuilds == 1 and len(index) == 4000
    removed = ids[::3]
    index.remove(removed)
    assert set(index.ids().tolist()) == set(ids.tolist()) - set(removed.tolist())
    sims, found = index.search(vectors[:4000:7], 10)
    assert not set(found.ravel().tolist()) & set(removed.tolist())
    kept = found >= 0
    # IVF-Flat stores vectors uncompressed: its similarities are exact dot products
    exact = np.einsum("qd,qkd->qk", vectors[:4000:7], vectors[np.where(kept, found, 0)])
    np.testing.assert_allclose(sims[kept], exact[kept], atol=1e-5)
    # a vector added after training is found, and a removed one is not
    sims, found = index.search(vectors[[3001, 3]], 1)
    assert found[0, 0] == 3001 and found[1, 0] != 3


def test_grows_four_fold_then_retrains(vectors: np.ndarray) -> None:
    index = VectorIndex(DIM, exact_max=500)
    index.add(np.arange(600), vectors[:600])
    assert index.kind == "ivf" and index.nlist == 32 and index.rebuilds == 1
    index.add(np.arange(600, 2400), vectors[600:2400])  # 2400 = 4 x 600: not yet
    assert index.rebuilds == 1
    index.add(np.arange(2400, 2500), vectors[2400:2500])
    assert index.rebuilds == 2 and index.nlist == 64 and len(index) == 2500


def test_recall_at_1_against_exact(vectors: np.ndarray) -> None:
    model = EmbeddingModel(DIM, seed=3)
    index = VectorIndex(DIM, exact_max=2000)
    ids = np.arange(len(vectors), dtype=np.int64)
    index.add(ids, vectors)
    assert index.kind == "ivf" and index.nlist == 128 and index.nprobe == 32
    sources = np.random.default_rng(5).choice(len(vectors), 300, replace=False)
    for hard, floor in ((False, 0.97), (True, 0.9)):
        queries = model.queries(vectors[sources], seed=6, hard=hard)
        _, found = index.search(queries, 1)
        recall = float(np.mean(found[:, 0] == exact_top1(vectors, ids, queries)))
        assert recall >= floor, (hard, recall)


def test_gallery_switches_and_rebuilds_from_sqlite(tmp_path: Path, vectors: np.ndarray) -> None:
    dim = DIM
    path = tmp_path / "g.sqlite3"
    gallery = Gallery(path, "synthetic", dim, index_exact_max=300)
    for p in range(40):
        faces = [NewFace(vectors[p * 10 + j], f"sha-{p}-{j}", (0, 0, 10, 10), 0.99) for j in range(10)]
        gallery.add_faces(f"p{p}", None, faces)
    assert gallery.index_kind == "ivf"
    assert gallery.index_ids() == gallery.database_ids()
    matches = gallery.search(vectors[[5, 155, 399]], 1)
    assert [m[0].person_id for m in matches] == ["p0", "p15", "p39"]
    gallery.delete_person("p15")
    assert gallery.index_ids() == gallery.database_ids()
    assert gallery.search(vectors[[155]], 1)[0][0].person_id != "p15"
    gallery.close()
    reopened = Gallery(path, "synthetic", dim, index_exact_max=300)
    assert reopened.index_kind == "ivf" and reopened.index_ids() == reopened.database_ids()
    assert len(reopened.database_ids()) == 390
    reopened.close()


def test_identify_through_the_api_with_the_approximate_index(make_app: Callable[..., Flask]) -> None:
    app = make_app(index_exact_max=1)
    with app.test_client() as c:
        for person, filename in (("a", "img1.jpg"), ("b", "img26.jpg")):
            r = c.post(f"/v1/people/{person}/faces", data={"file": upload(photo(filename), filename)})
            assert r.status_code == 201, r.json
        assert app.extensions["fewface"].gallery.index_kind == "ivf"
        r = c.post("/v1/identify", data={"file": upload(photo("img2.jpg"), "img2.jpg")})  # img1's person
        assert r.status_code == 200 and r.json["faces"][0]["match"]["person_id"] == "a", r.json

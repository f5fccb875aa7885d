"""The gallery of record (SQLite + FAISS) on its own, with synthetic unit vectors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.store import GALLERY_FILE
from service.store.gallery import Gallery, ModelMismatchError, NewFace, PersonNotFoundError

DIM = 128


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def face(seed: int) -> NewFace:
    return NewFace(vec(seed), f"{seed:064x}", (1.0, 2.0, 30.0, 40.0), 0.99)


def test_persists_and_rebuilds_index(tmp_path: Path) -> None:
    path = tmp_path / GALLERY_FILE
    g = Gallery(path, "dlib-resnet-v1", DIM)
    g.add_faces("a", "Alice", [face(1), face(2)])
    g.add_faces("b", None, [face(3)])
    g.delete_face("a", g.get_person("a")[1][0].id)
    g.close()
    g = Gallery(path, "dlib-resnet-v1", DIM)
    assert g.counts() == (2, 2)
    assert g.index_ids() == g.database_ids()
    best = g.search(np.stack([vec(2), vec(3)]), top_k=2)
    assert [m[0].person_id for m in best] == ["a", "b"]
    assert best[0][0].similarity == pytest.approx(1.0, abs=1e-5)
    assert g.get_person("b")[0].name == "b"  # name defaults to the id


def test_search_returns_best_example_per_person(tmp_path: Path) -> None:
    g = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM)
    g.add_faces("a", "A", [face(s) for s in range(10)])
    g.add_faces("b", "B", [face(99)])
    matches = g.search(vec(99)[None, :], top_k=5)[0]
    assert [m.person_id for m in matches] == ["b", "a"]  # one entry per person, best first


def test_delete_person_removes_from_index(tmp_path: Path) -> None:
    g = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM)
    g.add_faces("a", "A", [face(1)])
    assert g.delete_person("a") == 1
    assert g.search(vec(1)[None, :], 3) == [[]]
    with pytest.raises(PersonNotFoundError):
        g.delete_person("a")
    assert g.index_ids() == g.database_ids() == set()


def test_bad_embedding_stores_nothing(tmp_path: Path) -> None:
    g = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM)
    bad = NewFace(np.full(DIM, np.nan, np.float32), "0" * 64, (0, 0, 1, 1), 0.9)
    with pytest.raises(ValueError):
        g.add_faces("a", "A", [face(1), bad])
    assert g.counts() == (0, 0)


def test_gallery_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / GALLERY_FILE
    Gallery(path, "facenet-vggface2", 512).close()
    with pytest.raises(ModelMismatchError, match="facenet-vggface2"):
        Gallery(path, "dlib-resnet-v1", DIM)


def test_service_refuses_to_start_on_a_foreign_gallery(tmp_path: Path) -> None:
    Gallery(tmp_path / GALLERY_FILE, "facenet-vggface2", 512).close()
    env = {"FEWFACE_DATA_DIR": str(tmp_path), "FEWFACE_PORT": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1]
    )
    assert proc.returncode == 2
    assert "model_mismatch" in proc.stderr and "built with model 'facenet-vggface2'" in proc.stderr

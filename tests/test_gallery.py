"""The gallery of record (a store + FAISS) on its own, with synthetic unit vectors, on both stores:
the embedded SQLite file and a real PostgreSQL server (tests/pgserver.py). Also collections,
the change log, schema migrations (a v1 SQLite gallery made before collections opens and keeps
every face) and the copy of a SQLite gallery into PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.store import GALLERY_FILE
from service.store.base import (
    CollectionExistsError,
    CollectionNotFoundError,
    CollectionProtectedError,
    DatabaseUnavailableError,
    GalleryOpenError,
    InvalidCollectionIdError,
    StoredFace,
)
from service.store.gallery import Gallery, ModelMismatchError, NewFace, PersonNotFoundError
from service.store.migrations import LATEST, SQLITE_V1
from service.store.registry import Galleries
from tests.pgserver import PgServer

DIM = 128
ROOT = Path(__file__).resolve().parents[1]


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def face(seed: int) -> NewFace:
    return NewFace(vec(seed), f"{seed:064x}", (1.0, 2.0, 30.0, 40.0), 0.99)


def answers(g: Gallery, seeds: list[int], top_k: int = 3) -> list[list[tuple[str, str, int, float]]]:
    """Identify answers (person, name, face id, similarity rounded) for these query vectors."""
    return [
        [(m.person_id, m.name, m.face_id, round(m.similarity, 5)) for m in row]
        for row in g.search(np.stack([vec(s) for s in seeds]), top_k)
    ]


def changes(g: Gallery) -> list[tuple[int, str, str, str | None, int | None]]:
    with g.store.read() as tx:
        return [tuple(r) for r in tx.execute("SELECT seq, collection, op, person_id, face_id FROM changes ORDER BY seq")]


def test_persists_and_rebuilds_index(gallery_location: str | Path) -> None:
    g = Gallery(gallery_location, "dlib-resnet-v1", DIM)
    g.add_faces("a", "Alice", [face(1), face(2)])
    g.add_faces("b", None, [face(3)])
    g.delete_face("a", g.get_person("a")[1][0].id)
    g.close()
    g = Gallery(gallery_location, "dlib-resnet-v1", DIM)
    assert g.counts() == (2, 2)
    assert g.index_ids() == g.database_ids()
    best = g.search(np.stack([vec(2), vec(3)]), top_k=2)
    assert [m[0].person_id for m in best] == ["a", "b"]
    assert best[0][0].similarity == pytest.approx(1.0, abs=1e-5)
    assert g.get_person("b")[0].name == "b"  # name defaults to the id
    g.close()


def test_search_returns_best_example_per_person(gallery_location: str | Path) -> None:
    g = Gallery(gallery_location, "dlib-resnet-v1", DIM)
    g.add_faces("a", "A", [face(s) for s in range(10)])
    g.add_faces("b", "B", [face(99)])
    matches = g.search(vec(99)[None, :], top_k=5)[0]
    assert [m.person_id for m in matches] == ["b", "a"]  # one entry per person, best first
    g.close()


def test_delete_person_removes_from_index(gallery_location: str | Path) -> None:
    g = Gallery(gallery_location, "dlib-resnet-v1", DIM)
    g.add_faces("a", "A", [face(1)])
    assert g.delete_person("a") == 1
    assert g.search(vec(1)[None, :], 3) == [[]]
    with pytest.raises(PersonNotFoundError):
        g.delete_person("a")
    assert g.index_ids() == g.database_ids() == set()
    g.close()


def test_bad_embedding_stores_nothing(gallery_location: str | Path) -> None:
    g = Gallery(gallery_location, "dlib-resnet-v1", DIM)
    bad = NewFace(np.full(DIM, np.nan, np.float32), "0" * 64, (0, 0, 1, 1), 0.9)
    with pytest.raises(ValueError):
        g.add_faces("a", "A", [face(1), bad])
    assert g.counts() == (0, 0)
    g.close()


def test_gallery_of_another_model_is_refused(gallery_location: str | Path) -> None:
    Gallery(gallery_location, "facenet-vggface2", 512).close()
    with pytest.raises(ModelMismatchError, match="facenet-vggface2"):
        Gallery(gallery_location, "dlib-resnet-v1", DIM)


def test_service_refuses_to_start_on_a_foreign_gallery(tmp_path: Path, gallery_location: str | Path) -> None:
    Gallery(gallery_location, "facenet-vggface2", 512).close()
    env = {"FEWFACE_DATA_DIR": str(tmp_path / "data"), "FEWFACE_PORT": "1", "PATH": "/usr/bin:/bin"}
    if isinstance(gallery_location, str):
        env["FEWFACE_DATABASE_URL"] = gallery_location
    proc = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    assert "model_mismatch" in proc.stderr and "built with model 'facenet-vggface2'" in proc.stderr


def test_every_write_is_logged_in_its_transaction(gallery_location: str | Path) -> None:
    """The change log gets one row per change, in the write's transaction: a write refused (or
    rolled back) leaves none; seq only grows."""
    g = Gallery(gallery_location, "dlib-resnet-v1", DIM)
    g.add_faces("a", "Alice", [face(1), face(2)])
    first, second = sorted(g.database_ids())
    g.rename("a", "Alicia")
    g.delete_face("a", first)
    with pytest.raises(PersonNotFoundError):
        g.delete_face("nobody", second)
    with pytest.raises(ValueError):
        g.add_faces("b", "B", [face(3), NewFace(np.zeros(DIM, np.float32), "0" * 64, (0, 0, 1, 1), 0.9)])
    g.delete_person("a")
    log = changes(g)
    assert [r[2:] for r in log] == [
        ("collection_create", None, None),
        ("person", "a", None),
        ("face_add", "a", first),
        ("face_add", "a", second),
        ("person", "a", None),
        ("face_delete", "a", first),
        ("person_delete", "a", None),
    ]
    assert [r[0] for r in log] == sorted({r[0] for r in log}) and {r[1] for r in log} == {"default"}
    g.close()


# -- collections -------------------------------------------------------------------------------
def test_collections_are_independent(gallery_location: str | Path) -> None:
    """Two collections with the same person id never see each other's faces (search, person,
    export), and deleting one leaves the other exactly as it was."""
    galleries = Galleries(Gallery(gallery_location, "dlib-resnet-v1", DIM))
    default = galleries.default
    default.add_faces("ann", "Ann (default)", [face(1), face(2)])
    default.add_faces("bob", "Bob", [face(3)])
    other = galleries.create("team-b_2", api_key="s3cret")
    other.add_faces("ann", "Ann (team b)", [face(10)])
    assert galleries.get("team-b_2") is other
    assert {m[2] for row in answers(default, [10, 1, 2, 3]) for m in row} <= default.database_ids()  # never the other's face
    assert answers(default, [10])[0][0][3] < 0.5 and answers(other, [10]) == [[("ann", "Ann (team b)", 4, 1.0)]]
    assert {m[0] for row in answers(other, [1, 2, 3]) for m in row} == {"ann"}
    assert [m[2] for row in answers(other, [1, 2, 3]) for m in row] == [4, 4, 4]  # only its own face id
    assert other.get_person("ann")[0].name == "Ann (team b)" and default.get_person("ann")[0].face_count == 2
    assert [len(x) for x in other.export_snapshot()] == [1, 1] and [len(x) for x in default.export_snapshot()] == [2, 3]
    with pytest.raises(PersonNotFoundError):
        other.get_person("bob")
    assert galleries.key_ok("team-b_2", "s3cret") and galleries.key_ok("team-b_2", "s3cret")  # the second from memory
    assert (
        not galleries.key_ok("team-b_2", "S3cret") and not galleries.key_ok("default", "s3cret") and not galleries.key_ok("nope", "s3cret")
    )
    with galleries.store.read() as tx:
        stored = tx.execute("SELECT key_hash FROM collections WHERE id = 'team-b_2'").fetchone()[0]
    assert "s3cret" not in stored and stored.startswith("pbkdf2_sha256$")
    listing = [(c.id, c.people, c.faces, c.has_key) for c in galleries.list()]
    assert listing == [("default", 2, 3, False), ("team-b_2", 1, 1, True)]

    before = (default.export_snapshot(), answers(default, [1, 2, 3, 10]), default.database_ids())
    with pytest.raises(CollectionExistsError):
        galleries.create("team-b_2")
    with pytest.raises(CollectionProtectedError):
        galleries.delete("default")
    for bad in ["", "Team", "-x", "a" * 65, "a/b", "a b", "é"]:
        with pytest.raises(InvalidCollectionIdError):
            galleries.get(bad)
        with pytest.raises(InvalidCollectionIdError):
            galleries.create(bad)
    with pytest.raises(CollectionNotFoundError):
        galleries.get("missing")
    with pytest.raises(CollectionNotFoundError):
        galleries.delete("missing")
    assert galleries.delete("team-b_2") == (1, 1)
    assert other.search(vec(10)[None, :], 3) == [[]]  # a holder of the deleted gallery finds nothing
    with pytest.raises(CollectionNotFoundError):
        galleries.get("team-b_2")
    after = (default.export_snapshot(), answers(default, [1, 2, 3, 10]), default.database_ids())
    assert repr(after) == repr(before)
    galleries.close()

    reopened = Galleries(Gallery(gallery_location, "dlib-resnet-v1", DIM))  # collections persist; the deleted one stays gone
    assert [c.id for c in reopened.list()] == ["default"]
    reopened.create("again")
    reopened.get("again").add_faces("x", "X", [face(7)])
    reopened.close()
    final = Galleries(Gallery(gallery_location, "dlib-resnet-v1", DIM))
    assert answers(final.get("again"), [7]) == [[("x", "X", final.get("again").get_person("x")[1][0].id, 1.0)]]
    assert [c.id for c in final.list()] == ["default", "again"]
    final.close()


def test_collection_of_another_model_is_refused(gallery_location: str | Path) -> None:
    galleries = Galleries(Gallery(gallery_location, "dlib-resnet-v1", DIM))
    with galleries.store.write() as tx:
        tx.execute(
            "INSERT INTO collections (id, model_id, dim, pipeline, key_hash, created_at)"
            " VALUES ('old', 'facenet-vggface2', 512, 'box', NULL, 1.0)"
        )
    with pytest.raises(ModelMismatchError, match="collection 'old'"):
        galleries.check("old")
    with pytest.raises(ModelMismatchError, match="facenet-vggface2"):
        galleries.get("old")
    galleries.check("default")
    galleries.close()


def test_replace_import_into_a_collection_keeps_ids_unless_taken(gallery_location: str | Path) -> None:
    galleries = Galleries(Gallery(gallery_location, "dlib-resnet-v1", DIM))
    galleries.default.add_faces("a", "A", [face(1), face(2)])
    people, faces = galleries.default.export_snapshot()
    rows = [(p.id, p.name, p.created_at) for p in people]
    other = galleries.create("other")
    assert other.import_snapshot(rows, faces, replace=True) == (1, 2)
    assert other.database_ids().isdisjoint(galleries.default.database_ids())  # taken by default: new ids
    assert answers(other, [1, 2]) == [[("a", "A", min(other.database_ids()), 1.0)], [("a", "A", max(other.database_ids()), 1.0)]]
    moved = [
        StoredFace(100 + i, f.person_id, f.embedding, f.image_sha256, f.box, f.detection_prob, f.created_at) for i, f in enumerate(faces)
    ]
    assert other.import_snapshot(rows, moved, replace=True) == (1, 2)
    assert other.database_ids() == {100, 101}  # free ids are kept
    other.add_faces("b", "B", [face(3)])
    assert max(other.database_ids()) > 101  # and the next id is above them
    galleries.close()


# -- stores ------------------------------------------------------------------------------------
def test_unreachable_postgresql_is_database_unavailable_and_recovers(tmp_path: Path) -> None:
    """A server of its own, stopped under the gallery: writes and reads raise
    DatabaseUnavailableError (HTTP 503 database_unavailable), search keeps answering from the
    index, and once the server is back the same gallery works again without reopening."""
    from tests.pgfixtures import require_postgresql

    require_postgresql()
    with PgServer() as pg:
        url = pg.create_database("down")
        g = Gallery(url, "dlib-resnet-v1", DIM, busy_timeout=1.0)
        g.add_faces("a", "A", [face(1)])
        pg.stop("immediate")
        with pytest.raises(DatabaseUnavailableError):
            g.add_faces("b", "B", [face(2)])
        with pytest.raises(DatabaseUnavailableError):
            g.list_people()
        assert answers(g, [1]) == [[("a", "A", 1, 1.0)]]
        pg.restart()
        g.add_faces("b", "B", [face(2)])
        assert g.counts() == (2, 2) and g.index_ids() == g.database_ids() and 1 in g.index_ids()  # (a crash may skip sequence values)
        g.close()
    with pytest.raises(GalleryOpenError, match="cannot reach the PostgreSQL database"):
        Gallery(url, "dlib-resnet-v1", DIM)


def test_postgresql_database_with_other_tables_is_refused(pg_server: PgServer, pg_url: str) -> None:
    pg_server.psql("CREATE TABLE invoices (id INT)", database=pg_url.rsplit("/", 1)[1])
    with pytest.raises(GalleryOpenError, match="holds other tables"):
        Gallery(pg_url, "dlib-resnet-v1", DIM)


def make_v1_gallery(path: Path) -> dict[int, tuple[str, np.ndarray]]:
    """A gallery file exactly as Fewface wrote it before collections (schema v1, today's SCHEMA
    and meta rows): three people, faces with a gap in the ids and a deleted last face (the id
    high-water mark must survive). Returns face id -> (person, vector)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    for statement in SQLITE_V1:
        db.execute(statement)
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("schema_version", "1"), ("model_id", "dlib-resnet-v1"), ("dim", str(DIM)), ("pipeline", "template")],
    )
    faces: dict[int, tuple[str, np.ndarray]] = {}
    for n, (person, name) in enumerate([("ann", "Ann"), ("bob", "Bob Ünë"), ("cy", "Cy")]):
        db.execute("INSERT INTO people (id, name, created_at) VALUES (?, ?, ?)", (person, name, 1000.0 + n))
        for k in range(4):
            seed = 10 * n + k
            cur = db.execute(
                "INSERT INTO faces (person_id, model_id, embedding, image_sha256, box, detection_prob, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (person, "dlib-resnet-v1", vec(seed).tobytes(), f"{seed:064x}", json.dumps([1.0, 2.0, 30.5, 40.0]), 0.98, 2000.0 + seed),
            )
            faces[int(cur.lastrowid)] = (person, vec(seed))
    for gone in (2, max(faces)):
        db.execute("DELETE FROM faces WHERE id = ?", (gone,))
        del faces[gone]
    db.close()
    return faces


def expected_answers(
    faces: dict[int, tuple[str, np.ndarray]], names: dict[str, str], seeds: list[int]
) -> list[list[tuple[str, str, int, float]]]:
    """Identify by brute force over the file's vectors: the best face per person, best first."""
    out = []
    for seed in seeds:
        best: dict[str, tuple[float, int]] = {}
        for face_id, (person, v) in faces.items():
            sim = float(np.dot(vec(seed), v))
            if person not in best or sim > best[person][0]:
                best[person] = (sim, face_id)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:3]
        out.append([(p, names[p], fid, round(sim, 5)) for p, (sim, fid) in ranked])
    return out


def test_v1_gallery_opens_migrates_and_keeps_every_face(tmp_path: Path) -> None:
    path = tmp_path / "data" / GALLERY_FILE
    faces = make_v1_gallery(path)
    names = {"ann": "Ann", "bob": "Bob Ünë", "cy": "Cy"}
    probes = [0, 3, 11, 22, 5]
    g = Gallery(path, "dlib-resnet-v1", DIM, pipeline="template")
    assert g.counts() == (3, len(faces)) and g.database_ids() == g.index_ids() == set(faces)
    assert g.undecodable() == ({}, {})
    assert answers(g, probes) == expected_answers(faces, names, probes)
    people, stored = g.export_snapshot()
    assert [(p.id, p.name, p.created_at) for p in people] == [("ann", "Ann", 1000.0), ("bob", "Bob Ünë", 1001.0), ("cy", "Cy", 1002.0)]
    assert {f.id: f.embedding.tobytes() for f in stored} == {i: v.tobytes() for i, (_, v) in faces.items()}
    assert {f.box for f in stored} == {(1.0, 2.0, 30.5, 40.0)}
    _, records, _ = g.add_faces("dan", "Dan", [face(99)])
    assert records[0].id == 13  # above the deleted last face (12): ids are never reused
    g.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(LATEST)
    assert db.execute("SELECT id, model_id, dim, pipeline FROM collections").fetchall() == [("default", "dlib-resnet-v1", DIM, "template")]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == [] and db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    faces[13], names["dan"] = ("dan", vec(99)), "Dan"
    again = Gallery(path, "dlib-resnet-v1", DIM, pipeline="template")  # migrated once; opens as v2
    assert answers(again, probes) == expected_answers(faces, names, probes) and again.counts() == (4, len(faces))
    again.close()
    with pytest.raises(ModelMismatchError, match="pipeline 'template'"):
        Gallery(path, "dlib-resnet-v1", DIM, pipeline="dlib5")


def test_v1_gallery_without_recorded_pipeline_keeps_the_legacy_one(tmp_path: Path) -> None:
    path = tmp_path / GALLERY_FILE
    make_v1_gallery(path)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM meta WHERE key = 'pipeline'")
    db.commit()
    db.close()
    Gallery(path, "dlib-resnet-v1", DIM, pipeline="template").close()  # the legacy dlib pipeline
    with pytest.raises(ModelMismatchError):
        Gallery(path, "dlib-resnet-v1", DIM, pipeline="dlib5")


def test_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / GALLERY_FILE
    Gallery(path, "dlib-resnet-v1", DIM).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(GalleryOpenError, match="schema version 99, written by a newer Fewface"):
        Gallery(path, "dlib-resnet-v1", DIM)
    assert path.read_bytes() == before


# -- SQLite -> PostgreSQL ----------------------------------------------------------------------
def test_migrate_store_copies_every_collection_losslessly(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m service migrate-store --to URL``: the same collections, ids, names and
    embedding bytes, and identical identify answers in every collection; a second copy into
    the now filled database is refused and changes nothing."""
    from service.store.copy import migrate_store_main

    data_dir = tmp_path / "data"
    source = Galleries(Gallery(data_dir / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline="template"))
    source.default.add_faces("ann", "Ann Ünë", [face(1), face(2), face(3)])
    source.default.add_faces("bob", "Bob", [face(4)])
    source.default.delete_face("ann", 2)  # a gap in the ids
    source.create("team", api_key="team-key").add_faces("ann", "Ann of team", [face(5), face(6)])
    source.create("empty")
    probes = list(range(1, 8))
    before = {c.id: (answers(source.get(c.id), probes), source.get(c.id).export_snapshot()) for c in source.list()}
    source.close()

    monkeypatch.setenv("FEWFACE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FEWFACE_DATABASE_URL", raising=False)
    assert migrate_store_main(["--to", pg_url]) == 0
    copied = Galleries(Gallery(pg_url, "dlib-resnet-v1", DIM, pipeline="template"))
    assert [c.id for c in copied.list()] == ["default", "empty", "team"]
    for cid, (hits, (people, faces)) in before.items():
        g = copied.get(cid)
        assert answers(g, probes) == hits, cid
        got_people, got_faces = g.export_snapshot()
        assert got_people == people
        assert [(f.id, f.person_id, f.embedding.tobytes(), f.image_sha256, f.box, f.detection_prob, f.created_at) for f in got_faces] == [
            (f.id, f.person_id, f.embedding.tobytes(), f.image_sha256, f.box, f.detection_prob, f.created_at) for f in faces
        ]
    assert copied.key_ok("team", "team-key") and not copied.key_ok("team", "other")
    _, records, _ = copied.default.add_faces("cy", "Cy", [face(9)])
    assert records[0].id > 6  # new ids continue above the copied ones
    copied.close()
    assert migrate_store_main(["--to", pg_url]) == 1  # not empty any more
    assert migrate_store_main(["--to", "sqlite:///x"]) == 2


def test_a_second_replica_follows_the_change_log(gallery_location: str | Path) -> None:
    """Two galleries over one database (as two replicas): what one writes, the other's indexes
    pick up from the change log (``Galleries.apply``), idempotently, in every collection."""
    a = Galleries(Gallery(gallery_location, "dlib-resnet-v1", DIM))
    b = Galleries(Gallery(gallery_location, "dlib-resnet-v1", DIM))
    seq = b.last_seq()
    a.default.add_faces("ann", "Ann", [face(1), face(2)])
    a.default.add_faces("bob", "Bob", [face(3)])
    team_a = a.create("team")
    team_b = b.get("team")  # opened before its writes: it must follow them
    team_a.add_faces("ann", "Ann of team", [face(4)])
    a.default.rename("ann", "Anne")
    a.default.delete_face("ann", 1)
    a.default.delete_person("bob")
    people, faces = a.default.export_snapshot()
    a.create("gone").add_faces("x", "X", [face(9)])
    gone_b = b.get("gone")
    a.delete("gone")
    a.default.import_snapshot([(p.id, p.name, p.created_at) for p in people], faces, replace=False)
    changes = b.changes_since(seq)
    assert [c.seq for c in changes] == sorted(c.seq for c in changes) and len({c.seq for c in changes}) == len(changes)
    b.apply(changes)
    b.apply(changes)  # twice: nothing more
    probes = [1, 2, 3, 4, 9]
    for cid in ("default", "team"):
        assert answers(b.get(cid), probes) == answers(a.get(cid), probes), cid
        assert b.get(cid).index_ids() == b.get(cid).database_ids() == a.get(cid).index_ids()
    assert team_b is b.get("team") and answers(team_b, [4]) == [[("ann", "Ann of team", 4, 1.0)]]
    assert gone_b.search(vec(9)[None, :], 3) == [[]]
    with pytest.raises(CollectionNotFoundError):
        b.get("gone")
    b.close()
    a.close()

"""Storage hardening (issue 11): one owner per data directory, storage errors as retryable or
clear answers (never 500), start-up checks of the gallery file, undecodable rows left out of
search and export but counted, ``python -m service check``.

Every failure is real: a second process holding the lock, a second SQLite connection holding
the write lock, SQLite's own page limit (SQLITE_FULL), damaged and foreign files, a directory
the process may not write. After each failure the service still answers and the gallery is
unchanged (the API's view and the SQLite file, and the index agrees with the database)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from service.config import Settings
from service.store import GALLERY_FILE, gallery_pipeline
from service.store.check import check_main
from service.store.datalock import LOCK_FILE, DataDirInUseError
from service.store.gallery import Gallery, GalleryOpenError, NewFace, StorageFullError, StoreBusyError, StoredFace
from tests.conftest import photo, upload
from tests.hostile import api_state, snapshot, sqlite_state
from tests.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
DIM = 128
PIPELINE = gallery_pipeline(Settings.from_env({}))  # what the service records (crop and flip)
CHILD_TIMEOUT = 300  # seconds: a child imports torch on a busy 2-core machine


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def face(seed: int) -> NewFace:
    return NewFace(vec(seed), f"{seed:064x}", (1.0, 2.0, 30.0, 40.0), 0.99)


def gallery_of(app: Flask) -> Gallery:
    return app.extensions["fewface"].gallery


def consistent(gallery: Gallery) -> bool:
    return gallery.database_ids() == gallery.index_ids()


def holder_process(lock_path: Path) -> subprocess.Popen[str]:
    """Another process holding an exclusive flock on ``lock_path`` until killed."""
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def can_lock(lock_path: Path) -> bool:
    """Whether a separate process can take the lock right now."""
    code = (
        f"import fcntl, os, sys\nfd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


@contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """A second real SQLite connection holding the database's write lock (BEGIN IMMEDIATE)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    finally:
        db.execute("ROLLBACK")
        db.close()


# -- one owner per data directory --------------------------------------------------------------
def test_gallery_refuses_a_directory_another_process_owns(tmp_path: Path) -> None:
    holder = holder_process(tmp_path / LOCK_FILE)
    try:
        with pytest.raises(DataDirInUseError, match=f"in use by process {holder.pid}"):
            Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)
        assert not (tmp_path / GALLERY_FILE).exists()  # refused before touching anything
    finally:
        holder.kill()
        holder.wait(30)
    g = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)  # the OS released the dead holder's lock
    g.close()


def test_lock_is_shared_in_process_and_released_on_close(tmp_path: Path) -> None:
    first = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)
    second = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)  # tests and tools reopen a directory
    assert not can_lock(tmp_path / LOCK_FILE)
    first.close()
    assert not can_lock(tmp_path / LOCK_FILE)  # second still open
    second.close()
    assert can_lock(tmp_path / LOCK_FILE)


def test_second_server_on_one_data_directory_exits_2(tmp_path: Path) -> None:
    """The issue's scenario: a second ``python -m service`` on the same FEWFACE_DATA_DIR is refused
    with one clear line; the first keeps serving, nothing changed, nothing answered 500."""
    data_dir = tmp_path / "data"
    with ServerProcess(data_dir, tmp_path / "first.log") as first:
        r = requests.post(first.url("/v1/people/ann/faces"), files={"file": ("a.jpg", photo("img27.jpg"))}, timeout=60)
        assert r.status_code == 201, r.text
        before = api_state(first.base)
        second = run_service(data_dir)
        assert second.returncode == 2, second.stderr
        assert_one_clear_line(second.stderr, "data_dir_in_use", f"in use by process {first.pid}", str(data_dir))
        assert api_state(first.base) == before
        assert requests.get(first.url("/readyz"), timeout=10).status_code == 200
    assert sqlite_state(data_dir / GALLERY_FILE) == before


# -- SQLite busy: 503 database_busy with Retry-After -------------------------------------------
def test_busy_database_answers_503_and_changes_nothing(make_app: Callable[..., Flask]) -> None:
    app = make_app(db_busy_timeout=0.3)
    client = app.test_client()
    assert client.post("/v1/people/ann/faces", data={"file": upload(photo("img27.jpg")), "name": "Ann"}).status_code == 201
    gallery = gallery_of(app)
    before = snapshot(client)
    with write_lock_held(gallery.path):
        for method, path, kwargs in [
            ("POST", "/v1/people/bob/faces", {"data": {"file": upload(photo("img12.jpg"))}}),
            ("PATCH", "/v1/people/ann", {"json": {"name": "Anne"}}),
            ("DELETE", "/v1/people/ann", {}),
        ]:
            started = time.monotonic()
            r = client.open(path, method=method, **kwargs)
            assert r.status_code == 503, (method, path, r.status_code, r.json)
            assert r.json["code"] == "database_busy" and r.headers["Retry-After"] == "1"
            assert time.monotonic() - started < 30  # waits about the busy timeout, not forever
        # reads and identify keep working while a writer holds the lock (WAL)
        assert client.get("/readyz").status_code == 200
        assert snapshot(client) == before
        r = client.post("/v1/identify", data={"file": upload(photo("img28.jpg"))})
        assert r.status_code == 200 and r.json["faces"][0]["match"]["person_id"] == "ann"
    assert consistent(gallery)
    assert snapshot(client) == before
    assert client.post("/v1/people/bob/faces", data={"file": upload(photo("img12.jpg"))}).status_code == 201  # retry works


def test_busy_gallery_raises_store_busy(tmp_path: Path) -> None:
    g = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE, busy_timeout=0.2)
    g.add_faces("a", "A", [face(1)])
    with write_lock_held(g.path):
        with pytest.raises(StoreBusyError):
            g.add_faces("b", "B", [face(2)])
        with pytest.raises(StoreBusyError):
            g.import_snapshot([("c", "C", 1.0)], [], replace=True)
    assert g.counts() == (1, 1) and consistent(g)
    g.close()


# -- PostgreSQL: busy and unreachable ------------------------------------------------------------
def test_postgresql_writer_lock_held_answers_503_busy(make_app: Callable[..., Flask], pg_url: str) -> None:
    """Another session holding the writers' lock (as a long write of another replica would):
    writes answer 503 database_busy after the busy timeout, reads and identify keep working."""
    import psycopg

    from service.store.postgres import WRITER_LOCK

    app = make_app(db_busy_timeout=0.3, database_url=pg_url)
    client = app.test_client()
    assert client.post("/v1/people/ann/faces", data={"file": upload(photo("img27.jpg")), "name": "Ann"}).status_code == 201
    before = snapshot(client)
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK,))
        for method, path, kwargs in [
            ("POST", "/v1/people/bob/faces", {"data": {"file": upload(photo("img12.jpg"))}}),
            ("PATCH", "/v1/people/ann", {"json": {"name": "Anne"}}),
            ("DELETE", "/v1/people/ann", {}),
        ]:
            r = client.open(path, method=method, **kwargs)
            assert r.status_code == 503 and r.json["code"] == "database_busy" and r.headers["Retry-After"] == "1", (method, r.json)
        assert snapshot(client) == before
        r = client.post("/v1/identify", data={"file": upload(photo("img28.jpg"))})
        assert r.status_code == 200 and r.json["faces"][0]["match"]["person_id"] == "ann"
    assert client.post("/v1/people/bob/faces", data={"file": upload(photo("img12.jpg"))}).status_code == 201  # retry works
    assert consistent(gallery_of(app))


def test_postgresql_down_answers_503_database_unavailable(make_app: Callable[..., Flask]) -> None:
    """PostgreSQL stopped under a running service: writes and listings answer 503
    database_unavailable with Retry-After (never 500), identify answers from the index, and once
    the server is back the same service works again and lost nothing."""
    from tests.pgfixtures import require_postgresql
    from tests.pgserver import PgServer

    require_postgresql()
    with PgServer() as pg:
        app = make_app(db_busy_timeout=1.0, database_url=pg.create_database("svc"))
        client = app.test_client()
        assert client.post("/v1/people/ann/faces", data={"file": upload(photo("img27.jpg")), "name": "Ann"}).status_code == 201
        before = snapshot(client)
        pg.stop("immediate")
        for method, path, kwargs in [
            ("POST", "/v1/people/bob/faces", {"data": {"file": upload(photo("img12.jpg"))}}),
            ("DELETE", "/v1/people/ann", {}),
            ("GET", "/v1/people", {}),
        ]:
            r = client.open(path, method=method, **kwargs)
            assert r.status_code == 503 and r.json["code"] == "database_unavailable", (method, path, r.json)
            assert r.headers["Retry-After"] == "5"
        r = client.post("/v1/identify", data={"file": upload(photo("img28.jpg"))})
        assert r.status_code == 200 and r.json["faces"][0]["match"]["person_id"] == "ann"
        pg.restart()
        assert snapshot(client) == before
        assert client.post("/v1/people/bob/faces", data={"file": upload(photo("img12.jpg"))}).status_code == 201
        assert consistent(gallery_of(app))
        gallery_of(app).close()


# -- full disk: 507 storage_full, nothing acknowledged lost ------------------------------------
def fill(gallery: Gallery) -> int:
    """Cap the database at its current size, then store filler faces until it is full: SQLite
    itself answers SQLITE_FULL, exactly as on a full disk ("database or disk is full").
    Returns how many fillers fitted."""
    db = gallery.store.db  # the real connection (SQLite store): the page limit is a per-connection setting
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    for n in range(1000):
        try:
            gallery.add_faces("filler", "Filler", [face(100_000 + n)])
        except StorageFullError:
            return n
    raise AssertionError("the page limit never filled")


def unfill(gallery: Gallery) -> None:
    gallery.store.db.execute("PRAGMA max_page_count = 1073741823")


def test_full_disk_answers_507_and_loses_nothing(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    assert client.post("/v1/people/ann/faces", data={"file": upload(photo("img27.jpg")), "name": "Ann"}).status_code == 201
    gallery = gallery_of(app)
    assert fill(gallery) >= 0
    before = snapshot(client)
    blobs = [photo(n) for n in ("img12.jpg", "img25.jpg", "img5.jpg", "img28.jpg")]
    r = client.post("/v1/people/bob/faces", data={"file": [upload(b, f"{i}.jpg") for i, b in enumerate(blobs)]})
    assert r.status_code == 507, (r.status_code, r.json)
    assert r.json["code"] == "storage_full" and "free disk space" in r.json["error"]
    state = client.get("/v1/state").data
    r = client.post("/v1/state?mode=replace", data=state, content_type="application/json")
    assert r.status_code in (200, 507), r.json  # replacing with the same content may fit; growing may not
    assert snapshot(client) == before and consistent(gallery)
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/identify", data={"file": upload(photo("img28.jpg"))}).json["faces"][0]["match"]["person_id"] == "ann"
    unfill(gallery)  # space freed: the same request now succeeds
    assert client.post("/v1/people/bob/faces", data={"file": [upload(b, f"{i}.jpg") for i, b in enumerate(blobs)]}).status_code == 201
    assert consistent(gallery) and [p["id"] for p in snapshot(client)["people"]["people"]] == ["ann", "filler", "bob"]


def test_full_gallery_rolls_back_whole_import(tmp_path: Path) -> None:
    g = Gallery(tmp_path / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)
    g.add_faces("a", "A", [face(1)])
    fill(g)
    people = g.export_snapshot()[0]
    many = [(f"p{i}", "P", 1.0) for i in range(300)]
    faces = [StoredFace(None, f"p{i}", vec(i), f"{i:064x}", (1.0, 2.0, 3.0, 4.0), 0.9, 1.0) for i in range(300)]
    counts = g.counts()
    with pytest.raises(StorageFullError):
        g.import_snapshot(many, faces, replace=False)
    assert g.export_snapshot()[0] == people and g.counts() == counts and consistent(g)
    unfill(g)
    assert g.import_snapshot(many, faces, replace=False) == (300, 300)
    g.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system (tmpfs); skipped where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill_disk(path: Path) -> Path:
    """Write a filler file until the file system refuses (ENOSPC); returns it."""
    filler = path / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        chunk = b"\0" * 65536
        while True:
            try:
                fh.write(chunk)
            except OSError:
                break
        while True:  # the last few bytes too
            try:
                fh.write(b"\0" * 512)
            except OSError:
                break
    return filler


def test_really_full_disk_answers_507_and_loses_nothing(make_app: Callable[..., Flask], small_disk: Path) -> None:
    app = make_app(small_disk / "data")
    client = app.test_client()
    assert client.post("/v1/people/ann/faces", data={"file": upload(photo("img27.jpg")), "name": "Ann"}).status_code == 201
    gallery = gallery_of(app)
    filler = fill_disk(small_disk)
    try:
        before = snapshot(client)
        r = client.post("/v1/people/bob/faces", data={"file": [upload(photo(n), n) for n in ("img12.jpg", "img25.jpg", "img5.jpg")]})
        assert r.status_code == 507, (r.status_code, r.json)
        assert r.json["code"] == "storage_full"
        assert snapshot(client) == before and consistent(gallery)
        assert client.get("/readyz").status_code == 200
    finally:
        filler.unlink()
    assert client.post("/v1/people/bob/faces", data={"file": upload(photo("img12.jpg"))}).status_code == 201
    assert consistent(gallery)
    gallery.close()


# -- start-up checks: damaged, foreign, unwritable -> exit 2 with one line ----------------------
def service_cmd(*args: str, drop_root: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "service", *args]
    if drop_root and os.geteuid() == 0:
        # root ignores file modes; without these capabilities it obeys them like any user
        return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search", *cmd]
    return cmd


def service_env(data_dir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FEWFACE_PORT": "1",
        "FEWFACE_HOST": "127.0.0.1",
        "FEWFACE_DATA_DIR": str(data_dir),
    }


def run_service(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(service_cmd(), env=service_env(data_dir), capture_output=True, text=True, timeout=CHILD_TIMEOUT, cwd=ROOT)


def assert_one_clear_line(stderr: str, *parts: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    assert len(errors) == 1, stderr
    for part in parts:
        assert part in errors[0], (part, errors[0])


def make_damaged(data_dir: Path) -> str:
    data_dir.mkdir(parents=True)
    (data_dir / GALLERY_FILE).write_bytes(np.random.default_rng(7).bytes(64 * 1024))
    return "damaged or not a SQLite database"


def make_truncated(data_dir: Path) -> str:
    g = Gallery(data_dir / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)
    g.add_faces("a", "A", [face(s) for s in range(400)])
    g.close()
    path = data_dir / GALLERY_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return "damaged or not a SQLite database"


def make_foreign(data_dir: Path) -> str:
    data_dir.mkdir(parents=True)
    db = sqlite3.connect(data_dir / GALLERY_FILE)
    db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    db.execute("INSERT INTO invoices VALUES (1, 9.5)")
    db.commit()
    db.close()
    return "not a Fewface gallery (tables: invoices)"


def make_unwritable_dir(data_dir: Path) -> str:
    data_dir.mkdir(parents=True)
    data_dir.chmod(0o555)
    return "Permission denied"


def make_read_only_file(data_dir: Path) -> str:
    Gallery(data_dir / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE).close()
    (data_dir / GALLERY_FILE).chmod(0o444)
    return "cannot write the gallery"


BAD_DIRECTORIES: dict[str, Callable[[Path], str]] = {
    "damaged": make_damaged,
    "truncated": make_truncated,
    "foreign": make_foreign,
    "unwritable directory": make_unwritable_dir,
    "read-only file": make_read_only_file,
}
NEEDS_FILE_MODES = {"unwritable directory", "read-only file"}


@pytest.mark.parametrize("kind", ["damaged", "truncated", "foreign"])
def test_gallery_refuses_a_bad_file_and_leaves_it_alone(tmp_path: Path, kind: str) -> None:
    data_dir = tmp_path / "data"
    expected = BAD_DIRECTORIES[kind](data_dir)
    before = (data_dir / GALLERY_FILE).read_bytes()
    with pytest.raises(GalleryOpenError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Gallery(data_dir / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)
    assert (data_dir / GALLERY_FILE).read_bytes() == before  # no schema added to a foreign database
    assert can_lock(data_dir / LOCK_FILE)  # the refused open released the directory


def test_service_exits_2_with_one_line_on_each_bad_data_directory(tmp_path: Path) -> None:
    """Real ``python -m service`` children, run side by side: each exits 2 with one log line naming
    the file and the fix, and no traceback."""
    can_drop = os.geteuid() != 0 or shutil.which("setpriv") is not None
    cases = {kind: make for kind, make in BAD_DIRECTORIES.items() if can_drop or kind not in NEEDS_FILE_MODES}
    procs = {}
    for kind, make in cases.items():
        data_dir = tmp_path / kind.replace(" ", "-")
        expected = make(data_dir)
        cmd = service_cmd(drop_root=kind in NEEDS_FILE_MODES)
        proc = subprocess.Popen(cmd, env=service_env(data_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs[kind] = (proc, expected, data_dir)
    try:
        for kind, (proc, expected, data_dir) in procs.items():
            _, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
            assert proc.returncode == 2, (kind, stderr)
            assert_one_clear_line(stderr, "cannot start (storage)", str(data_dir), expected)
    finally:
        for proc, _, data_dir in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            data_dir.chmod(0o755)
    if not can_drop:
        pytest.skip("running as root without setpriv: the unwritable cases were not run")


# -- rows that do not decode -------------------------------------------------------------------
def corrupt(path: Path) -> None:
    """Damage rows the way a bad external edit or a bug would: each a different way."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys=OFF")
    ids = [r[0] for r in db.execute("SELECT id FROM faces WHERE person_id = 'good' ORDER BY id")]
    db.execute("UPDATE faces SET embedding = x'00ff' WHERE id = ?", (ids[0],))
    db.execute("UPDATE faces SET box = 'not json' WHERE id = ?", (ids[1],))
    db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (np.full(DIM, np.nan, np.float32).tobytes(), ids[2]))
    db.execute("UPDATE people SET created_at = 'yesterday' WHERE id = 'damaged-person'")
    db.execute("DELETE FROM people WHERE id = 'orphaned'")  # its face row stays (foreign keys off)
    db.close()


def test_undecodable_rows_are_left_out_counted_and_repairable(
    make_app: Callable[..., Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    app = make_app(data_dir)
    g = gallery_of(app)
    g.add_faces("good", "Good", [face(s) for s in range(5)])
    g.add_faces("damaged-person", "D", [face(10)])
    g.add_faces("orphaned", "O", [face(11)])
    g.close()
    corrupt(data_dir / GALLERY_FILE)

    restarted = make_app(data_dir)  # the rows pass start-up: they are left out, and logged
    client = restarted.test_client()
    assert gallery_of(restarted).undecodable()[0].keys() == {"damaged-person"}
    assert len(gallery_of(restarted).undecodable()[1]) == 5  # 3 damaged, the damaged person's, the orphan
    r = client.get("/v1/state")  # the only backup path keeps working
    assert r.status_code == 200
    assert (r.headers["X-Fewface-Skipped-People"], r.headers["X-Fewface-Skipped-Faces"]) == ("1", "5")
    assert [p["id"] for p in r.json["people"]] == ["good"] and len(r.json["faces"]) == 2
    assert client.get("/v1/people/good").status_code == 200 and client.get("/v1/people").status_code == 200
    hits = gallery_of(restarted).search(np.stack([vec(3), vec(0)]), 1)
    assert hits[0][0].person_id == "good" and hits[0][0].similarity > 0.99
    assert all(m.similarity < 0.99 for m in hits[1])  # the damaged example is not searchable
    fresh = make_app(tmp_path / "fresh").test_client()  # the export restores
    assert fresh.post("/v1/state", data=r.data, content_type="application/json").status_code == 200
    gallery_of(restarted).close()

    monkeypatch.setenv("FEWFACE_DATA_DIR", str(data_dir))
    assert check_main([]) == 1
    assert check_main(["--repair"]) == 0
    assert check_main([]) == 0
    repaired = Gallery(data_dir / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)
    assert repaired.undecodable() == ({}, {}) and repaired.counts() == (1, 2) and consistent(repaired)
    repaired.close()


def test_check_command(tmp_path: Path) -> None:
    """``python -m service check`` as a command: healthy 0, undecodable rows 1, no gallery 1."""
    healthy, broken = tmp_path / "healthy", tmp_path / "broken"
    for d in (healthy, broken):
        g = Gallery(d / GALLERY_FILE, "dlib-resnet-v1", DIM, pipeline=PIPELINE)
        g.add_faces("good", "Good", [face(s) for s in range(3)])
        g.add_faces("damaged-person", "D", [face(10)])
        g.add_faces("orphaned", "O", [face(11)])
        g.close()
    corrupt(broken / GALLERY_FILE)
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "service", "check"],
            env={"PATH": os.environ.get("PATH", ""), "FEWFACE_DATA_DIR": str(d)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, d in (("healthy", healthy), ("broken", broken), ("missing", tmp_path / "missing"))
    }
    out = {name: (p.communicate(timeout=CHILD_TIMEOUT)[1], p.returncode) for name, p in procs.items()}
    assert out["healthy"][1] == 0 and "3 people, 5 face rows; 0 person rows and 0 face rows do not decode" in out["healthy"][0]
    assert out["broken"][1] == 1 and "1 person rows and 5 face rows do not decode" in out["broken"][0], out["broken"][0]
    assert "embedding is 2 bytes, not 512" in out["broken"][0] and "--repair" in out["broken"][0]
    assert out["missing"][1] == 1 and "no gallery" in out["missing"][0]
    assert not (tmp_path / "missing").exists()
    assert all("Traceback" not in err for err, _ in out.values())


# -- the 500 tally itself ----------------------------------------------------------------------
@pytest.mark.expect_500(1)
def test_every_500_is_counted(app: Flask, client: FlaskClient) -> None:
    """tests/conftest.py fails any test with a 500 it does not declare; this one declares it."""
    from service.http.errors import INTERNAL_ERRORS

    def broken() -> str:
        raise RuntimeError("a bug")

    app.add_url_rule("/test-only/broken", view_func=broken)
    before = INTERNAL_ERRORS.count
    r = client.get("/test-only/broken")
    assert r.status_code == 500 and r.json["code"] == "internal_error"
    assert INTERNAL_ERRORS.count == before + 1

"""Crash safety: a real ``python -m service`` is SIGKILLed at random moments while a client
teaches (and deletes); after each restart every acknowledged write is there, every write in doubt
happened wholly or not at all, the API agrees with a direct read of the database (the SQLite
file, or the PostgreSQL database: the test runs on both stores), and identify finds what was
taught (the index is rebuilt from the database)."""

from __future__ import annotations

import hashlib
import logging
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from service.store import GALLERY_FILE
from tests.conftest import photo
from tests.hostile import api_state, sqlite_state
from tests.serverproc import ServerProcess

log = logging.getLogger(__name__)

KILLS = 4
PHOTOS = ["img27.jpg", "img12.jpg", "img25.jpg", "img5.jpg"]  # one face each, different people, quick to embed
ROUND_MAX_OPS = 60
ROUND_MAX_SECONDS = 20.0


@dataclass
class Op:
    kind: str  # "new" (teach a new person), "more" (teach a person another photo), "delete"
    person: str
    photo: str = ""
    outcome: str = "pending"  # "ack", "refused", "doubt"
    status: int = 0


@dataclass
class Model:
    """What the client knows: person -> {face_id: sha256} for every acknowledged write."""

    people: dict[str, dict[int, str]] = field(default_factory=dict)
    acked_teaches: int = 0
    acked_deletes: int = 0
    doubts: int = 0


SHA = {name: hashlib.sha256(photo(name)).hexdigest() for name in PHOTOS}


def client_loop(base: str, model: Model, ops: list[Op], stop: threading.Event, first_ack: threading.Event, rng: random.Random) -> None:
    """Teach and delete until the server dies (or the round's bounds run out)."""
    session = requests.Session()
    deadline = time.monotonic() + ROUND_MAX_SECONDS
    serial = 0
    while not stop.is_set() and len(ops) < ROUND_MAX_OPS and time.monotonic() < deadline:
        known = sorted(model.people)
        roll = rng.random()
        if known and roll < 0.15:
            op = Op("delete", rng.choice(known))
        elif known and roll < 0.35:
            person = rng.choice(known)
            missing = [p for p in PHOTOS if SHA[p] not in model.people[person].values()]
            if not missing:
                continue
            op = Op("more", person, rng.choice(missing))
        else:
            serial += 1
            op = Op("new", f"r{rng.getrandbits(32):08x}-{serial}", rng.choice(PHOTOS))
        ops.append(op)
        try:
            if op.kind == "delete":
                r = session.delete(f"{base}/v1/people/{op.person}", timeout=60)
            else:
                r = session.post(f"{base}/v1/people/{op.person}/faces", files={"file": (op.photo, photo(op.photo))}, timeout=60)
        except requests.RequestException:
            op.outcome = "doubt"  # the server died with the request in flight
            return
        op.status = r.status_code
        if r.status_code >= 300:
            op.outcome = "refused"
            continue
        op.outcome = "ack"
        if op.kind == "delete":
            del model.people[op.person]
            model.acked_deletes += 1
        else:
            body = r.json()
            face = next(f for f in body["faces"] if f["image_sha256"] == SHA[op.photo])
            model.people.setdefault(op.person, {})[face["id"]] = SHA[op.photo]
            model.acked_teaches += 1
        first_ack.set()


def resolve_doubt(model: Model, op: Op, actual: dict[str, dict[int, str]]) -> None:
    """A write cut off by the kill happened completely or not at all; adopt whichever it was."""
    before = model.people.get(op.person)
    now = actual.get(op.person)
    if op.kind == "delete":
        assert now is None or now == before, (op, before, now)
    elif op.kind == "new":
        assert now is None or list(now.values()) == [SHA[op.photo]], (op, now)
    else:
        assert before is not None
        extra = {k: v for k, v in (now or {}).items() if k not in before}
        assert now is not None and set(before) <= set(now) and list(extra.values()) in ([], [SHA[op.photo]]), (op, before, now)
    if now is None:
        model.people.pop(op.person, None)
    else:
        model.people[op.person] = dict(now)
    model.doubts += 1


def check_identify(base: str, state: dict[str, dict[int, str]]) -> None:
    for name in PHOTOS:
        holders = {pid for pid, faces in state.items() if SHA[name] in faces.values()}
        r = requests.post(f"{base}/v1/identify?top_k=1", data=photo(name), headers={"Content-Type": "image/jpeg"}, timeout=60)
        assert r.status_code == 200, r.text
        face = r.json()["faces"][0]
        if holders:
            assert face["matched"] and face["match"]["person_id"] in holders and face["similarity"] > 0.99, (name, face)
        else:
            assert face["similarity"] is None or face["similarity"] < 0.99, (name, face)


def database_state(data_dir: Path, database_url: str) -> dict[str, dict[int, str]]:
    """person -> {face id: sha256}, read from the store directly (not through the service)."""
    if not database_url:
        return sqlite_state(data_dir / GALLERY_FILE)
    import psycopg

    with psycopg.connect(database_url) as db:
        state: dict[str, dict[int, str]] = {pid: {} for (pid,) in db.execute("SELECT id FROM people WHERE collection = 'default'")}
        for face_id, person_id, sha in db.execute("SELECT id, person_id, image_sha256 FROM faces WHERE collection = 'default'"):
            state[person_id][face_id] = sha
        orphans = db.execute(
            "SELECT COUNT(*) FROM faces f LEFT JOIN people p ON p.collection = f.collection AND p.id = f.person_id WHERE p.id IS NULL"
        )
        assert orphans.fetchone()[0] == 0
    return state


def test_sigkill_loses_no_acknowledged_teach(tmp_path: Path, store_settings: dict[str, str]) -> None:
    rng = random.Random(20250521)
    data_dir = tmp_path / "data"
    database_url = store_settings.get("database_url", "")
    env = {"FEWFACE_DATABASE_URL": database_url} if database_url else {}
    server = ServerProcess(data_dir, tmp_path / "server.log", **env)
    model = Model()
    all_ops: list[Op] = []
    try:
        server.start()
        for round_no in range(KILLS):
            ops: list[Op] = []
            stop, first_ack = threading.Event(), threading.Event()
            worker = threading.Thread(target=client_loop, args=(server.base, model, ops, stop, first_ack, rng), daemon=True)
            worker.start()
            assert first_ack.wait(60), f"round {round_no}: no teach acknowledged; log:\n{server.log_tail()}"
            time.sleep(rng.uniform(0.0, 2.5))  # a random moment while the client keeps writing
            server.signal(signal.SIGKILL)
            server.wait(timeout=30)
            stop.set()
            worker.join(timeout=90)
            assert not worker.is_alive()
            all_ops += ops
            assert [op for op in ops if op.outcome == "refused"] == [], "a valid write was refused"

            server.start()  # the same data directory
            actual = api_state(server.base)
            for op in ops:
                if op.outcome == "doubt":
                    resolve_doubt(model, op, actual)
            assert actual == model.people, "acknowledged writes lost, or phantom writes"
            assert database_state(data_dir, database_url) == actual, "API and database disagree"
            assert all(actual.values()), "a person without any face example"
            info = requests.get(f"{server.base}/v1/info", timeout=30).json()
            assert (info["people"], info["faces"]) == (len(actual), sum(len(f) for f in actual.values()))
            check_identify(server.base, actual)
    finally:
        server.kill()
    acked = sum(op.outcome == "ack" for op in all_ops)
    log.info(
        f"crash ({'postgresql' if database_url else 'sqlite'}): {KILLS} SIGKILLs, {len(all_ops)} writes "
        f"({acked} acknowledged: {model.acked_teaches} teaches, "
        f"{model.acked_deletes} deletes; {model.doubts} cut off in flight), 0 acknowledged writes lost, "
        f"{len(model.people)} people / {sum(len(f) for f in model.people.values())} faces at the end"
    )
    assert model.acked_teaches >= KILLS

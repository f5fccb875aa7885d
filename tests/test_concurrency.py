"""Concurrency: many client threads teach, delete and identify at once against a real waitress
server for a bounded time. No 5xx, nothing lost, nothing phantom, the same image taught twice at
the same moment is stored once, and the FAISS index holds exactly the database's examples."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from flask import Flask

from service.store import GALLERY_FILE
from tests.conftest import photo
from tests.hostile import api_state, served, sqlite_state

log = logging.getLogger(__name__)

PHOTOS = ["img27.jpg", "img12.jpg", "img25.jpg", "img5.jpg"]  # one face each, different people
SHA = {name: hashlib.sha256(photo(name)).hexdigest() for name in PHOTOS}
SECONDS = 15.0
MAX_OPS_PER_THREAD = 40


@dataclass
class Shared:
    base: str
    deadline: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    attempted_ids: set[str] = field(default_factory=set)  # every person id a teach was sent for
    matched_ids: set[str] = field(default_factory=set)  # every person id identify answered with
    lock: threading.Lock = field(default_factory=threading.Lock)

    def running(self, ops: int) -> bool:
        return ops < MAX_OPS_PER_THREAD and time.monotonic() < self.deadline and not self.errors

    def record(self, r: requests.Response, expected: tuple[int, ...]) -> None:
        with self.lock:
            self.statuses[r.status_code] += 1
            if r.status_code not in expected:
                self.errors.append(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}")


def teacher(shared: Shared, name: str, model: dict[str, dict[int, str]], seed: int) -> None:
    """Owns the people it creates: teaches new ones, adds photos, deletes examples and people."""
    rng = random.Random(seed)
    session = requests.Session()
    ops = 0
    while shared.running(ops):
        ops += 1
        roll = rng.random()
        mine = sorted(model)
        if mine and roll < 0.15:
            person = rng.choice(mine)
            r = session.delete(f"{shared.base}/v1/people/{person}", timeout=120)
            shared.record(r, (200,))
            if r.status_code == 200:
                assert r.json()["faces_deleted"] == len(model.pop(person))
        elif mine and roll < 0.25 and any(len(f) > 1 for f in model.values()):
            person = rng.choice([p for p in mine if len(model[p]) > 1])
            face_id = rng.choice(sorted(model[person]))
            r = session.delete(f"{shared.base}/v1/people/{person}/faces/{face_id}", timeout=120)
            shared.record(r, (200,))
            if r.status_code == 200:
                del model[person][face_id]
        elif mine and roll < 0.45:
            person = rng.choice(mine)
            name_ = rng.choice([p for p in PHOTOS if SHA[p] not in model[person].values()] or PHOTOS)
            r = session.post(f"{shared.base}/v1/people/{person}/faces", files={"file": (name_, photo(name_))}, timeout=120)
            shared.record(r, (200,))
            if r.status_code == 200:
                model[person].update({f["id"]: f["image_sha256"] for f in r.json()["faces"]})
        else:
            person = f"{name}-{ops}"
            name_ = rng.choice(PHOTOS)
            with shared.lock:
                shared.attempted_ids.add(person)
            r = session.post(f"{shared.base}/v1/people/{person}/faces", files={"file": (name_, photo(name_))}, timeout=120)
            shared.record(r, (201,))
            if r.status_code == 201:
                model[person] = {f["id"]: f["image_sha256"] for f in r.json()["faces"]}


def identifier(shared: Shared, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    ops = 0
    while shared.running(ops):
        ops += 1
        name_ = rng.choice(PHOTOS)
        r = session.post(f"{shared.base}/v1/identify", data=photo(name_), headers={"Content-Type": "image/jpeg"}, timeout=120)
        shared.record(r, (200,))
        if r.status_code == 200:
            faces = r.json()["faces"]
            assert len(faces) == 1
            with shared.lock:
                shared.matched_ids.update(c["person_id"] for c in faces[0]["candidates"])


def lister(shared: Shared, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    ops = 0
    while shared.running(ops):
        ops += 1
        r = session.get(f"{shared.base}/v1/people", timeout=60)
        shared.record(r, (200,))
        people = r.json()["people"]
        assert all(p["face_count"] >= 1 for p in people), people
        if people:
            r = session.get(f"{shared.base}/v1/people/{rng.choice(people)['id']}", timeout=60)
            shared.record(r, (200, 404))  # 404: deleted since the listing
        time.sleep(0.05)


def duplicate_racer(shared: Shared, results: list[tuple[tuple[int, int], int]]) -> None:
    """Two requests teach the same photo to the same new person at the same moment."""
    ops = 0
    while shared.running(ops):
        ops += 1
        person, name_ = f"dup-{ops}", PHOTOS[ops % len(PHOTOS)]
        with shared.lock:
            shared.attempted_ids.add(person)
        barrier = threading.Barrier(2)
        answers: list[requests.Response] = []
        url = f"{shared.base}/v1/people/{person}/faces"
        pair = [threading.Thread(target=_teach_after, args=(barrier, url, name_, answers)) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join(timeout=240)
        for r in answers:
            shared.record(r, (200, 201))
        statuses = tuple(sorted(r.status_code for r in answers))
        face_ids = {f["id"] for r in answers for f in r.json().get("faces", [])}
        results.append((statuses, len(face_ids)))


def _teach_after(barrier: threading.Barrier, url: str, name: str, answers: list[requests.Response]) -> None:
    barrier.wait(timeout=30)
    answers.append(requests.post(url, files={"file": (name, photo(name))}, timeout=120))


def guarded(shared: Shared, target: Callable[..., None], *args: object) -> Callable[[], None]:
    def run() -> None:
        try:
            target(shared, *args)
        except Exception as exc:  # noqa: BLE001 - reported to the test thread
            with shared.lock:
                shared.errors.append(f"{target.__name__}: {exc!r}")

    return run


def test_concurrent_teach_delete_identify(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app()
    gallery = app.extensions["fewface"].gallery
    with served(app, threads=8) as base:
        shared = Shared(base, time.monotonic() + SECONDS)
        models: list[dict[str, dict[int, str]]] = [{} for _ in range(3)]
        duplicates: list[tuple[tuple[int, int], int]] = []
        threads = [threading.Thread(target=guarded(shared, teacher, f"t{i}", models[i], i)) for i in range(3)]
        threads += [threading.Thread(target=guarded(shared, identifier, 10 + i)) for i in range(2)]
        threads += [threading.Thread(target=guarded(shared, lister, 20))]
        threads += [threading.Thread(target=guarded(shared, duplicate_racer, duplicates))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=SECONDS + 300)
        assert not any(t.is_alive() for t in threads)
        assert shared.errors == [], shared.errors
        assert not any(status >= 500 for status in shared.statuses), shared.statuses

        expected = {person: faces for model in models for person, faces in model.items()}
        actual = api_state(base)
        dup_people = {p: f for p, f in actual.items() if p.startswith("dup-")}
        assert {p: f for p, f in actual.items() if not p.startswith("dup-")} == expected, "lost or phantom examples"
        assert duplicates and all(d == ((200, 201), 1) for d in duplicates), duplicates
        assert len(dup_people) == len(duplicates) and all(len(f) == 1 for f in dup_people.values())
        assert shared.matched_ids <= shared.attempted_ids, "identify answered with a person nobody taught"

        assert gallery.index_ids() == gallery.database_ids(), "FAISS index and SQLite disagree"
        assert sqlite_state(tmp_path / "data" / GALLERY_FILE) == actual
        for name_ in PHOTOS:  # the index finds exactly what the database holds
            holders = {p for p, faces in actual.items() if SHA[name_] in faces.values()}
            r = requests.post(f"{base}/v1/identify?top_k=1", data=photo(name_), headers={"Content-Type": "image/jpeg"}, timeout=60)
            face = r.json()["faces"][0]
            assert (face["match"]["person_id"] in holders) if holders else (face["similarity"] or 0) < 0.99, (name_, face)
    total = sum(shared.statuses.values())
    log.info(f"concurrency: {total} requests in {SECONDS:.0f} s from 7 client threads, statuses {dict(shared.statuses)}")

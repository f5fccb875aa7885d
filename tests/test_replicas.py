"""Replicas that agree: three ``python -m service`` processes on one real PostgreSQL database
behind nginx (tools/cluster.py), each with its own in-memory index kept current by the change
feed (service/store/feed.py).

After every test each replica's index holds exactly the database's face ids (``/readyz``'s
``index.ids_sha256`` against the same digest of a direct read of the database). Writes are
acknowledged (2xx), refused (an error answer: nothing changed) or in doubt (the connection died
with them); no acknowledged write may be lost, and one in doubt happened wholly or not at all."""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.conftest import photo
from tests.pgserver import PgServer
from tools.cluster import Cluster, nginx_binary

PHOTOS = ["img27.jpg", "img12.jpg", "img25.jpg", "img5.jpg"]  # one face each, different people, quick to embed
SHA = {name: hashlib.sha256(photo(name)).hexdigest() for name in PHOTOS}
PROPAGATION_BOUND = 5.0  # seconds; the target is p99 < 1 s on loopback (bench/propagation.py measures it)
CONSISTENT_BOUND = 15.0  # seconds for every index to equal the database after a burst of writes

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def cluster(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = pg_server.create_database("replicas")
    c = Cluster(tmp_path_factory.mktemp("cluster"), replicas=3, database_url=url, FEWFACE_FEED_POLL_INTERVAL="0.5", FEWFACE_THREADS="4")
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def indexes_equal_database_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "cluster" in request.fixturenames:
        c: Cluster = request.getfixturevalue("cluster")
        assert_indexes_equal_database(c)


# -- helpers -------------------------------------------------------------------------------
def database_ids(url: str) -> list[int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM faces WHERE collection = 'default' ORDER BY id")]


def ids_digest(ids: list[int]) -> str:
    return hashlib.sha256(",".join(str(i) for i in sorted(ids)).encode()).hexdigest()


def index_of(base: str) -> dict[str, Any]:
    r = requests.get(f"{base}/readyz?index=digest", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["index"]


def assert_indexes_equal_database(c: Cluster, timeout: float = CONSISTENT_BOUND) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ids = database_ids(str(c.database_url))
        seen = [index_of(r.base) for r in c.replicas]
        if all(s["faces"] == len(ids) and s["ids_sha256"] == ids_digest(ids) for s in seen):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"indexes differ from the database ({len(ids)} faces) after {timeout} s: {seen}")
        time.sleep(0.2)


def teach(base: str, person: str, name: str, timeout: float = 60) -> requests.Response:
    return requests.post(f"{base}/v1/people/{person}/faces", files={"file": (name, photo(name))}, timeout=timeout)


def identify(base: str, name: str) -> dict[str, Any]:
    r = requests.post(f"{base}/v1/identify?top_k=1", data=photo(name), headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["faces"][0]


def matched_person(base: str, name: str) -> str | None:
    face = identify(base, name)
    return face["match"]["person_id"] if face["matched"] and face["similarity"] > 0.99 else None


def wait_for_match(base: str, name: str, expected: str | None, bound: float = PROPAGATION_BOUND) -> float:
    """Seconds until identify of ``name`` through ``base`` names ``expected`` (None: no match)."""
    started = time.monotonic()
    while matched_person(base, name) != expected:
        assert time.monotonic() - started < bound, f"{base} still does not see {expected!r} for {name} after {bound} s"
        time.sleep(0.05)
    return time.monotonic() - started


def clear(c: Cluster) -> None:
    for person in requests.get(f"{c.replicas[0].base}/v1/people?limit=10000", timeout=30).json()["people"]:
        assert requests.delete(f"{c.replicas[0].base}/v1/people/{person['id']}", timeout=30).status_code in (200, 404)


@dataclass
class Ledger:
    """What clients were told: acknowledged face ids (and their person), refusals, writes in doubt."""

    acked: dict[int, str] = field(default_factory=dict)
    doubt: list[tuple[str, str]] = field(default_factory=list)  # (person, photo)
    refused: list[int] = field(default_factory=list)  # statuses
    lock: threading.Lock = field(default_factory=threading.Lock)

    def teach_loop(self, base: str, prefix: str, stop: threading.Event, first_ack: threading.Event, rng: random.Random) -> None:
        serial = 0
        session = requests.Session()
        while not stop.is_set() and serial < 200:
            serial += 1
            person, name = f"{prefix}-{serial}", rng.choice(PHOTOS)
            try:
                r = session.post(f"{base}/v1/people/{person}/faces", files={"file": (name, photo(name))}, timeout=60)
            except requests.RequestException:
                with self.lock:
                    self.doubt.append((person, name))
                return  # the replica died with the request in flight
            with self.lock:
                if r.status_code < 300:
                    for face in r.json()["faces"]:
                        self.acked[face["id"]] = person
                    first_ack.set()
                else:
                    self.refused.append(r.status_code)
                    if r.status_code != 503:
                        raise AssertionError(f"teach refused with {r.status_code}: {r.text}")
                    time.sleep(0.1)

    def check(self, url: str) -> None:
        """Every acknowledged face is in the database, with its person."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            rows = dict(conn.execute("SELECT id, person_id FROM faces WHERE collection = 'default'").fetchall())
        lost = {f: p for f, p in self.acked.items() if rows.get(f) != p}
        assert not lost, f"acknowledged teaches lost: {lost}"


# -- tests ---------------------------------------------------------------------------------
def test_read_your_writes_and_propagation_between_replicas(cluster: Cluster) -> None:
    a, b = cluster.replicas[0].base, cluster.replicas[1].base
    r = teach(a, "alice", "img27.jpg")
    assert r.status_code == 201, r.text
    assert matched_person(a, "img27.jpg") == "alice", "the replica that wrote must see its write at once"
    delay = wait_for_match(b, "img27.jpg", "alice")
    assert requests.delete(f"{b}/v1/people/alice", timeout=30).status_code == 200
    assert matched_person(b, "img27.jpg") is None
    wait_for_match(a, "img27.jpg", None)
    assert delay < PROPAGATION_BOUND


def test_teach_and_identify_through_nginx(cluster: Cluster) -> None:
    r = teach(cluster.url, "bob", "img12.jpg")
    assert r.status_code == 201, r.text
    assert_indexes_equal_database(cluster)
    for _ in range(len(cluster.replicas)):  # round robin: every replica answers once
        assert matched_person(cluster.url, "img12.jpg") == "bob"
    ready = requests.get(f"{cluster.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["feed"]["connected"] is True
    clear(cluster)


def test_concurrent_teach_and_delete_through_three_replicas(cluster: Cluster) -> None:
    rng = random.Random(13)
    people: list[str] = []
    ledger = Ledger()
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - reported by the test's assertion
            errors.append(f"replica {i}: {type(exc).__name__}: {exc}")

    def work(i: int) -> None:
        base, session, local = cluster.replicas[i].base, requests.Session(), random.Random(rng.random())
        for n in range(8):
            roll = local.random()
            with ledger.lock:
                known = list(people)
            if known and roll < 0.25:
                victim = local.choice(known)
                r = session.delete(f"{base}/v1/people/{victim}", timeout=60)
                if r.status_code not in (200, 404):  # 404: another replica deleted them first
                    errors.append(f"delete {victim}: {r.status_code} {r.text}")
                continue
            person = local.choice(known) if known and roll < 0.45 else f"c{i}-{n}"
            r = session.post(f"{base}/v1/people/{person}/faces", files={"file": (f"{n}.jpg", photo(local.choice(PHOTOS)))}, timeout=60)
            if r.status_code >= 300:
                errors.append(f"teach {person}: {r.status_code} {r.text}")
            with ledger.lock:
                if person not in people:
                    people.append(person)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    assert_indexes_equal_database(cluster)
    listings = [requests.get(f"{r.base}/v1/people?limit=10000", timeout=30).json()["people"] for r in cluster.replicas]
    assert listings[0] == listings[1] == listings[2]
    clear(cluster)


def test_sigkill_mid_teach_loses_nothing_and_the_replica_catches_up(cluster: Cluster) -> None:
    rng = random.Random(7)
    ledger = Ledger()
    stop, first_ack, other_ack = threading.Event(), threading.Event(), threading.Event()
    victim = cluster.replicas[2]
    doomed = threading.Thread(target=ledger.teach_loop, args=(victim.base, "k", stop, first_ack, rng))
    other = threading.Thread(target=ledger.teach_loop, args=(cluster.replicas[0].base, "o", stop, other_ack, rng))
    doomed.start()
    other.start()
    try:
        assert first_ack.wait(60), victim.log_tail()
        time.sleep(rng.uniform(0.2, 1.5))
        victim.signal(signal.SIGKILL)
        victim.wait(timeout=30)
        doomed.join(timeout=90)
        assert not doomed.is_alive()
        acked_while_down = len(ledger.acked)
        time.sleep(1.0)  # the other replica goes on teaching while this one is down
        restarted = cluster.restart_replica(2)
    finally:
        stop.set()
        other.join(timeout=90)
    assert len(ledger.acked) > acked_while_down or other_ack.is_set()
    assert ledger.refused == [], "a valid teach was refused"
    ledger.check(str(cluster.database_url))
    for person, name in ledger.doubt:  # cut off by the kill: whole or absent
        faces = requests.get(f"{restarted.base}/v1/people/{person}", timeout=30)
        assert faces.status_code == 404 or [f["image_sha256"] for f in faces.json()["faces"]] == [SHA[name]]
    assert_indexes_equal_database(cluster)
    clear(cluster)


def test_postgresql_restart_under_load(cluster: Cluster, pg_server: PgServer) -> None:
    rng = random.Random(11)
    ledger = Ledger()
    stop = threading.Event()
    acks = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=ledger.teach_loop, args=(cluster.replicas[i].base, f"pg{i}", stop, acks[i], rng)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        assert all(a.wait(60) for a in acks)
        pg_server.restart()  # fast: every connection is cut; committed data stays
        acked_at_restart = len(ledger.acked)
        deadline = time.monotonic() + 20
        while len(ledger.acked) < acked_at_restart + 4:  # the load goes on: writes are acknowledged again
            assert time.monotonic() < deadline, f"no teach acknowledged after the restart ({len(ledger.refused)} refused)"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    ledger.check(str(cluster.database_url))
    assert not ledger.doubt, "a replica dropped a connection instead of answering"
    deadline = time.monotonic() + 20
    while not all(requests.get(f"{r.base}/readyz", timeout=10).status_code == 200 for r in cluster.replicas):
        assert time.monotonic() < deadline, "replicas did not reconnect"
        time.sleep(0.2)
    assert_indexes_equal_database(cluster)
    clear(cluster)


def test_database_down_writes_503_identify_says_how_stale(cluster: Cluster, pg_server: PgServer) -> None:
    base = cluster.replicas[1].base
    assert teach(base, "carol", "img25.jpg").status_code == 201
    assert_indexes_equal_database(cluster)
    pg_server.stop("immediate")
    try:
        time.sleep(1.0)
        ready = requests.get(f"{base}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["code"] == "database_unavailable", ready.text
        assert ready.headers.get("Retry-After")
        r = teach(base, "dave", "img5.jpg")
        assert r.status_code == 503 and r.json()["code"] == "database_unavailable", r.text
        ident = requests.post(f"{base}/v1/identify", data=photo("img25.jpg"), headers={"Content-Type": "image/jpeg"}, timeout=60)
        assert ident.status_code == 200 and ident.json()["faces"][0]["match"]["person_id"] == "carol"
        assert float(ident.headers["X-Fewface-Staleness"]) >= 0.5
    finally:
        pg_server.restart()  # starts it again on the same port
    deadline = time.monotonic() + 20
    while requests.get(f"{base}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the replica did not reconnect"
        time.sleep(0.2)
    while float(requests.get(f"{base}/healthz", timeout=10).headers["X-Fewface-Staleness"]) > 2 * 0.5:  # two poll intervals
        assert time.monotonic() < deadline, "the replica's change feed did not reconnect"
        time.sleep(0.2)
    clear(cluster)

"""The change feed (service/store/feed.py) in-process, on a real PostgreSQL: two registries
(``Galleries``) on one database stand for two replicas (no models needed: embeddings are
synthetic). The writer's index changes with its writes; the follower's only through its feed."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from service.store.base import NewFace
from service.store.feed import ChangeFeed
from service.store.gallery import Gallery
from service.store.registry import Galleries
from tests.pgserver import PgServer

DIM = 128


def face(seed: int) -> NewFace:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return NewFace(v / np.linalg.norm(v), f"{seed:064x}", (0.0, 0.0, 10.0, 10.0), 0.99)


def open_gallery(url: str) -> Gallery:
    return Gallery(url, "dlib-resnet-v1", DIM, pipeline="dlib5+flip")


@pytest.fixture
def pair(pg_url: str):  # type: ignore[no-untyped-def]
    writer, follower = Galleries(open_gallery(pg_url)), Galleries(open_gallery(pg_url))
    feed = ChangeFeed(pg_url, follower, poll_interval=0.2)
    feed._connect()  # polled by hand below: deterministic
    yield writer.default, follower.default, feed
    feed.stop()
    writer.close()
    follower.close()


def in_step(writer: Gallery, follower: Gallery) -> bool:
    db = writer.database_ids()
    return writer.index_ids() == db == follower.index_ids()


def test_follower_applies_teach_rename_delete(pair) -> None:  # type: ignore[no-untyped-def]
    writer, follower, feed = pair
    writer.add_faces("ann", "Ann", [face(1), face(2)])
    writer.add_faces("bob", None, [face(3)])
    assert follower.face_count() == 0  # nothing without the feed
    feed.poll_once()
    assert in_step(writer, follower) and len(follower.index_ids()) == 3
    match = follower.search(face(1).embedding[None, :], 1)[0][0]
    assert (match.person_id, match.name) == ("ann", "Ann")
    writer.rename("ann", "Anna")
    writer.delete_face("bob", next(iter(writer.get_person("bob")[1])).id)
    feed.poll_once()
    assert follower.search(face(1).embedding[None, :], 1)[0][0].name == "Anna"
    assert in_step(writer, follower) and len(follower.index_ids()) == 2
    before, seq = follower.index_ids(), feed.seq
    feed.poll_once()  # nothing new: nothing changes
    follower.apply_changes(writer_changes(feed, 0))  # every change applied again: nothing changes
    assert follower.index_ids() == before and feed.seq == seq


def writer_changes(feed: ChangeFeed, after: int) -> list:  # type: ignore[type-arg]
    registry = feed._registry()
    assert registry is not None
    return registry.changes_since(after)


def test_person_deleted_and_taught_again_between_polls(pair) -> None:  # type: ignore[no-untyped-def]
    writer, follower, feed = pair
    writer.add_faces("cy", None, [face(4), face(5)])
    feed.poll_once()
    writer.delete_person("cy")
    writer.add_faces("cy", None, [face(6)])
    feed.poll_once()
    assert in_step(writer, follower) and len(follower.index_ids()) == 1
    assert follower.search(face(4).embedding[None, :], 1)[0][0].similarity < 0.9


def test_state_import_reloads_and_the_writer_reapplying_its_own_writes_changes_nothing(pg_url: str) -> None:
    registries = [Galleries(open_gallery(pg_url)), Galleries(open_gallery(pg_url))]
    feeds = [ChangeFeed(pg_url, r, poll_interval=0.2) for r in registries]
    writer, follower = (r.default for r in registries)
    try:
        for f in feeds:
            f._connect()
        writer.add_faces("dee", None, [face(7)])
        people, faces = writer.export_snapshot()
        writer.import_snapshot([(p.id, p.name, p.created_at) for p in people], faces, replace=True)
        for f in feeds:
            while f.poll_once():
                pass
        assert in_step(writer, follower)
        assert writer.loaded_seq == follower.loaded_seq == feeds[0].seq == feeds[1].seq > 0
    finally:
        for f in feeds:
            f.stop()
        for r in registries:
            r.close()


def test_collection_deleted_elsewhere_is_forgotten(pg_url: str) -> None:
    a, b = Galleries(open_gallery(pg_url)), Galleries(open_gallery(pg_url))
    feed = ChangeFeed(pg_url, b, poll_interval=0.2)
    try:
        feed._connect()
        a.create("team")
        a.get("team").add_faces("eve", None, [face(8)])
        team_b = b.get("team")
        a.get("team").add_faces("fay", None, [face(9)])
        feed.poll_once()
        assert team_b.index_ids() == a.get("team").database_ids() and len(team_b.index_ids()) == 2
        a.delete("team")
        feed.poll_once()
        assert "team" not in b.opened() and team_b.face_count() == 0
    finally:
        feed.stop()
        a.close()
        b.close()


def test_thread_follows_reconnects_and_reports_staleness(pg_url: str, pg_server: PgServer) -> None:
    registries = [Galleries(open_gallery(pg_url)), Galleries(open_gallery(pg_url))]
    writer, follower = (r.default for r in registries)
    feed = ChangeFeed(pg_url, registries[1], poll_interval=5.0).start()  # a long poll: NOTIFY must wake it
    try:
        writer.add_faces("gus", None, [face(10)])
        deadline = time.monotonic() + 3
        while follower.face_count() < 1:
            assert time.monotonic() < deadline, "a notification did not wake the feed"
            time.sleep(0.01)
        pg_server.restart()  # cuts the feed's connection
        writer.add_faces("hal", None, [face(11)])  # the writer's pool reconnects
        deadline = time.monotonic() + 15
        while not in_step(writer, follower):
            assert time.monotonic() < deadline, f"the feed did not catch up after a restart: {feed.status()}"
            time.sleep(0.05)
        assert feed.status()["connected"] and feed.staleness() < 6
    finally:
        feed.stop()
        for r in registries:
            r.close()


def test_feed_stops_when_its_registry_is_gone(pg_url: str) -> None:
    import gc

    registry = Galleries(open_gallery(pg_url))
    feed = ChangeFeed(pg_url, registry, poll_interval=0.1).start()
    deadline = time.monotonic() + 10
    while not feed.connected():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    registry.close()
    del registry
    gc.collect()
    assert feed._thread is not None
    feed._thread.join(timeout=5)
    assert not feed._thread.is_alive() and not feed.connected()


def test_an_outage_is_one_warning_not_one_per_retry(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A feed whose database cannot be reached retries with backoff; it warns once for the
    outage (the retries are debug lines) and keeps reporting it in its status."""
    registry = Galleries(open_gallery(pg_url))
    feed = ChangeFeed("postgresql://fewface@127.0.0.1:1/nowhere", registry, poll_interval=0.1)
    with caplog.at_level(logging.DEBUG, logger="service.store.feed"):
        feed.start()
        try:
            deadline = time.monotonic() + 10
            while sum(r.message.startswith("change feed:") for r in caplog.records) < 4:
                assert time.monotonic() < deadline, "the feed did not retry"
                time.sleep(0.05)
        finally:
            feed.stop()
            registry.close()
    retries = [r for r in caplog.records if r.message.startswith("change feed:")]
    assert [r.levelno for r in retries][:4] == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.DEBUG]
    assert not feed.status()["connected"]

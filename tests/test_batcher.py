"""The micro-batcher with the real detector and embedder: concurrent requests share batches,
results equal unbatched ones, one faulty request never fails its batch-mates, clean shutdown."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from service.batcher import BatcherClosedError, MicroBatcher, every_core
from service.imaging import decode_image
from service.recognizer import Engine
from tests.conftest import photo

LIMITS = {"max_pixels": 40_000_000, "max_side": 1600}
PHOTOS = ("img1.jpg", "img2.jpg", "img26.jpg", "img27.jpg", "couple.jpg")


@pytest.fixture(scope="module")
def crops(engine: Engine) -> np.ndarray:
    """Real aligned crops: every face of a few photos, (N, 3, 150, 150)."""
    out = []
    for name in PHOTOS:
        image = decode_image(photo(name), max_pixels=LIMITS["max_pixels"], max_side=800).image
        out += [engine.embedder.crop(image, f) for f in engine.detector.detect(image)]
    assert len(out) >= 6
    return np.stack(out)


@pytest.fixture
def batcher(engine: Engine) -> Iterator[MicroBatcher]:
    """Always waits (up to 300 ms) for batch-mates, so jobs submitted together share a batch."""
    b = MicroBatcher(engine.embedder, engine.detector, max_size=32, max_wait_ms=300, skip_wait_when_alone=False)
    yield b
    b.close()


def run_concurrently(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Start ``n`` threads at once (barrier); their results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_embeds_share_batches_and_equal_unbatched(engine: Engine, crops: np.ndarray) -> None:
    n = 12
    requests = [crops[i % len(crops)][None] if i % 3 else crops[i % len(crops) : i % len(crops) + 2] for i in range(n)]
    with MicroBatcher(engine.embedder, max_wait_ms=300) as batcher:  # default behaviour
        results = run_concurrently(n, lambda i: batcher.embed(requests[i]))
        stats = batcher.stats()
    assert stats.embed_requests == n
    assert stats.embed_batches < n, stats  # coalescing happened
    assert stats.largest_embed_batch > 2
    assert stats.faces_embedded == sum(len(r) for r in requests)
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, Exception), result
        expected = engine.embedder.embed(request)  # unbatched, on this thread
        assert result.shape == expected.shape and result.dtype == np.float32
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_request_larger_than_max_size_is_chunked(engine: Engine, crops: np.ndarray) -> None:
    with MicroBatcher(engine.embedder, max_size=4, max_wait_ms=0) as small:
        many = np.concatenate([crops, crops])[:10]
        vectors = small.embed(many)
        assert small.stats().embed_batches == 3  # 4 + 4 + 2
    np.testing.assert_allclose(vectors, engine.embedder.embed(many), atol=1e-5)
    assert small.embed(np.zeros((0, 3, 150, 150), np.float32)).shape == (0, engine.embedder.dim)


def test_bad_requests_are_refused_alone(engine: Engine, batcher: MicroBatcher, crops: np.ndarray) -> None:
    good = [batcher.submit_embed(crops[i : i + 1]) for i in range(3)]
    with pytest.raises(ValueError, match="shape"):
        batcher.submit_embed(crops[:, :, :100, :100])
    nan = crops[:1].copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        batcher.submit_embed(nan)
    with pytest.raises(ValueError, match="RGB"):
        batcher.submit_detect(Image.new("L", (64, 64)))
    for i, future in enumerate(good):
        np.testing.assert_allclose(future.result(60), engine.embedder.embed(crops[i : i + 1]), atol=1e-5)


def test_failing_detection_does_not_fail_its_batch_mates(engine: Engine, batcher: MicroBatcher) -> None:
    """Three same-size images share one MTCNN batch; one is a truncated JPEG whose pixels fail to
    load inside the batch. The batch is retried one by one: only that request fails."""
    data = photo("img26.jpg")
    good = Image.open(io.BytesIO(data)).convert("RGB")
    truncated = Image.open(io.BytesIO(data[: len(data) // 3]))  # lazy: size and mode known, pixels not
    assert truncated.mode == "RGB" and truncated.size == good.size
    futures = [batcher.submit_detect(good), batcher.submit_detect(truncated), batcher.submit_detect(good.copy())]
    assert isinstance(futures[1].exception(120), OSError)
    expected = engine.detector.detect(good)
    for future in (futures[0], futures[2]):
        faces = future.result(120)
        assert len(faces) == len(expected) >= 1
        np.testing.assert_allclose(faces[0].box, expected[0].box, atol=1.0)
    stats = batcher.stats()
    assert stats.retried_batches == 1 and stats.failed_requests == 1


def test_concurrent_detection_of_same_size_images_is_batched_and_equal(engine: Engine, batcher: MicroBatcher) -> None:
    images = [decode_image(photo(n), **LIMITS).image.resize((640, 480)) for n in ("img1.jpg", "img26.jpg", "couple.jpg")]
    images.append(decode_image(photo("img27.jpg"), **LIMITS).image.resize((480, 640)))  # another size: its own group
    results = run_concurrently(len(images), lambda i: batcher.detect(images[i]))
    stats = batcher.stats()
    assert stats.detect_requests == 4 and stats.images_detected == 4
    assert stats.detect_batches < 4 and stats.largest_detect_batch >= 2, stats
    for image, faces in zip(images, results, strict=True):
        assert not isinstance(faces, Exception), faces
        single = engine.detector.detect(image)
        assert len(faces) == len(single)
        for a, b in zip(faces, single, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1.0)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1.0)
            assert abs(a.prob - b.prob) < 1e-3


def test_engine_routes_concurrent_requests_through_its_batcher(engine: Engine) -> None:
    decoded = [decode_image(photo(n), max_pixels=LIMITS["max_pixels"], max_side=640) for n in ("img1.jpg", "img2.jpg", "img26.jpg")]
    sequential = [engine.analyze(d, 10) for d in decoded]
    before = engine.batcher.stats()
    concurrent = run_concurrently(len(decoded), lambda i: engine.analyze(decoded[i], 10))
    after = engine.batcher.stats()
    assert after.embed_requests - before.embed_requests == len(decoded)
    assert after.detect_requests - before.detect_requests == len(decoded)
    for seq, con in zip(sequential, concurrent, strict=True):
        assert not isinstance(con, Exception), con
        assert len(seq) == len(con) >= 1
        for a, b in zip(seq, con, strict=True):
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
            np.testing.assert_allclose(a.face.box, b.face.box, atol=1.0)


def test_lone_client_is_not_kept_waiting(engine: Engine, crops: np.ndarray) -> None:
    """With a minute-long window, a single client's calls still return at once: nothing else is
    in flight, so no batch-mate can come."""
    with MicroBatcher(engine.embedder, engine.detector, max_wait_ms=60_000) as b:
        for i in range(3):
            np.testing.assert_allclose(b.submit_embed(crops[i : i + 1]).result(30), engine.embedder.embed(crops[i : i + 1]), atol=1e-5)
        image = decode_image(photo("img1.jpg"), max_pixels=LIMITS["max_pixels"], max_side=640).image
        assert len(b.submit_detect(image).result(30)) == 1
        assert b.stats().embed_batches == 3


def test_next_batch_expects_the_waiting_requests_plus_the_last_batch_returning(engine: Engine, crops: np.ndarray) -> None:
    """Under steady load the requests of a finished batch come back together. The next batch
    waits for them and for those already waiting, then leaves at once: no minute-long window
    waited out, and no split into alternating half batches."""
    with MicroBatcher(engine.embedder, max_size=4, max_wait_ms=60_000, skip_wait_when_alone=False) as b:
        first = [b.submit_embed(crops[2 * i : 2 * i + 2]) for i in range(2)]  # 4 faces: fills max_size
        waiting = b.submit_embed(crops[4:5])  # does not fit: waits through the first batch
        for future in first:
            future.result(30)
        assert b.stats().embed_batches == 1
        returning = [b.submit_embed(crops[i : i + 1]) for i in range(2)]  # the first batch's 2 requests come back
        for i, future in [(4, waiting), (0, returning[0]), (1, returning[1])]:
            np.testing.assert_allclose(future.result(30), engine.embedder.embed(crops[i : i + 1]), atol=1e-5)
        stats = b.stats()
        assert stats.embed_batches == 2 and stats.faces_embedded == 7, stats


def test_torch_threads_is_each_workers_own(engine: Engine, crops: np.ndarray) -> None:
    """``torch_threads=1``: the workers run on one intra-op thread each, with the same results;
    the calling thread's own torch setting is untouched (torch's count is per thread)."""
    mine = torch.get_num_threads()
    image = decode_image(photo("img1.jpg"), max_pixels=LIMITS["max_pixels"], max_side=640).image
    with MicroBatcher(engine.embedder, engine.detector, torch_threads=1) as b:
        futures = [b.submit_detect(image), b.submit_embed(crops[:2])]
        faces, vectors = (f.result(120) for f in futures)
        assert b.torch_threads == 1
    assert torch.get_num_threads() == mine
    torch.set_num_threads(mine)  # the workers' 1 also became the default of threads started later: put it back
    np.testing.assert_allclose(vectors, engine.embedder.embed(crops[:2]), atol=1e-5)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, engine.detector.detect(image)[0].box, atol=0.5)
    with pytest.raises(ValueError):
        MicroBatcher(engine.embedder, torch_threads=-1)


def test_close_finishes_queued_work_then_refuses(engine: Engine, crops: np.ndarray) -> None:
    b = MicroBatcher(engine.embedder, engine.detector, max_size=32, max_wait_ms=10_000, skip_wait_when_alone=False)
    futures = [b.submit_embed(crops[i : i + 1]) for i in range(4)]
    b.close(timeout=120)  # does not wait out max_wait: closing flushes the queue
    assert b.closed and not b.running
    for i, future in enumerate(futures):
        np.testing.assert_allclose(future.result(0), engine.embedder.embed(crops[i : i + 1]), atol=1e-5)
    assert b.stats().embed_batches == 1
    with pytest.raises(BatcherClosedError):
        b.submit_embed(crops[:1])
    b.close()  # idempotent


def test_a_batch_alone_gets_every_core_and_one_among_others_gets_one(engine: Engine, crops: np.ndarray) -> None:
    """``torch_threads=0`` (the default): a lone request's batch runs on every core; while other
    jobs run or wait, each batch runs on one intra-op thread."""
    cores = every_core()
    seen: list[tuple[str, int]] = []
    image = decode_image(photo("img1.jpg"), max_pixels=LIMITS["max_pixels"], max_side=640).image
    small = decode_image(photo("img1.jpg"), max_pixels=LIMITS["max_pixels"], max_side=600).image
    with MicroBatcher(engine.embedder, engine.detector) as b:
        b.on_batch = lambda lane, requests, items: seen.append((lane, torch.get_num_threads()))  # runs on the worker
        b.detect(image)
        b.embed(crops[:1])
        assert seen == [("detect", cores), ("embed", cores)]
        seen.clear()
        futures = [b.submit_detect(image), b.submit_detect(small), b.submit_embed(crops[:2]), b.submit_embed(crops[2:3])]
        for f in futures:
            f.result(120)
    assert len(seen) >= 3 and ("detect", 1) in seen and ("embed", 1) in seen, seen

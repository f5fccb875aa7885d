"""Dynamic micro-batching of embedding and detection work across concurrent requests.

HTTP worker threads submit work (face crops to embed, images to run the detector on) and block
on a ``Future``; the batcher's own threads run it in batches:

* **Embedding: one worker thread owns the network.** Once it is free and a job is queued, it
  keeps collecting until ``max_size`` faces are queued, or until the requests it expects are
  queued, or ``max_wait_ms`` has passed (counted from when the worker was free to take the
  job, or from the job's arrival if later). It expects the requests that were already waiting
  when the previous batch finished plus as many as that batch held: under steady concurrent
  load the requests of a batch come back together a moment after it finishes. Without that,
  a load of 4 closed-loop clients locked into alternating batches (1 + 3, or 2 + 2), each
  leaving while the other's requests were on their way back; with it they merge into one
  batch of 4. When fewer come, the wait ends at ``max_wait_ms``. A lone client (nothing else
  in flight, and the last batch held one request) is not made to wait at all. The crops of
  every request in the batch go through the network in one forward pass (chunks of
  ``max_size``: a request is never split across batches, a larger one runs alone).
* **Detection: same-size images share an MTCNN pass** (it needs equal-size inputs). Images are
  downscaled to ``FEWFACE_MAX_IMAGE_SIDE`` on decoding, so photos from the same kind of camera
  usually share a working size. ``detect_workers`` threads (default 2) each take the oldest
  image whose size no other worker is gathering, wait for more of that size (up to
  ``max_size`` images or ``max_wait_ms``, counted as above), and run them together; images of
  different sizes run side by side. Detection does not go through the embedding worker:
  with facenet-pytorch's stock MTCNN (single-threaded Python box loops another detection can
  overlap), 8 clients teaching photos of different sizes enrolled 2.7 faces/s with one
  detection thread and 3.5 with two, on 2 CPU cores (not re-measured with models/mtcnn.py).
  Images are not padded to a common size: padding changes MTCNN's scale pyramid and border
  crops (results would only be close to single-image detection), and batching large images
  gained little on CPU (README, Performance).
* **Intra-op threads**: ``torch_threads=N`` makes every worker run its batches on N intra-op
  threads (torch's count is per calling thread with OpenMP, so each worker sets its own).
  ``0`` (the default) decides per batch: a batch that is the only work in the batcher gets
  every core (a lone request's latency), one that runs while other jobs run or wait gets one
  thread, since the other workers then fill the other cores and OpenMP teams of several
  workers only contend for them ("every core": ``OMP_NUM_THREADS`` when set, else the cores the
  process may run on). On a quiet 2-core machine, 8 teaching clients enrolled 1.05-1.25x the
  faces/s with it than with a fixed two threads per worker, at 0.87-0.94x the CPU per face
  (docs/performance.md). An earlier measurement on the same VM shared with several other jobs
  went the other way (the server won less CPU from the other processes with fewer runnable
  threads); a dedicated machine is what a deployment has.
* Each request's results are routed back through its future. Bad input (wrong crop shape,
  non-finite values, a non-RGB image) is refused at submission, for that request alone. When a
  batch raises, its members are retried one by one, so only the faulty request fails.

``close()`` stops accepting work, finishes what is queued and joins the threads.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from models import DetectedFace, Embedder, FaceDetector

log = logging.getLogger(__name__)

# Most pixels run through MTCNN in one call (a 1600x1200 image is 1.9 Mpx); bounds memory.
DETECT_MAX_PIXELS = 16_000_000


class BatcherClosedError(RuntimeError):
    """Work was submitted after ``close()``."""


@dataclass
class BatcherStats:
    """Counters since start (``MicroBatcher.stats()`` returns a copy)."""

    embed_requests: int = 0
    embed_batches: int = 0  # forward passes of the embedding network
    faces_embedded: int = 0
    largest_embed_batch: int = 0
    detect_requests: int = 0
    detect_batches: int = 0  # MTCNN calls
    images_detected: int = 0
    largest_detect_batch: int = 0
    retried_batches: int = 0  # batches that raised and were retried one request at a time
    failed_requests: int = 0


@dataclass
class _Job:
    kind: Literal["embed", "detect"]
    payload: Any  # (n, 3, S, S) float32 crops, or an RGB image
    size: int  # faces (embed) or pixels (detect)
    queued_at: float
    future: Future[Any] = field(default_factory=Future)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.payload.size


def every_core() -> int:
    """The intra-op threads a batch that runs alone gets: ``OMP_NUM_THREADS`` when set (as torch
    honours it), else the cores this process may run on."""
    try:
        configured = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        configured = 0
    if configured > 0:
        return configured
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere the machine's count
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


class MicroBatcher:
    """Coalesces concurrent ``embed`` / ``detect`` calls into batches (see the module doc)."""

    def __init__(
        self,
        embedder: Embedder,
        detector: FaceDetector | None = None,
        *,
        max_size: int = 32,
        max_wait_ms: float = 5.0,
        detect_workers: int = 2,
        skip_wait_when_alone: bool = True,
        torch_threads: int = 0,
        name: str = "fewface-batcher",
    ) -> None:
        if max_size < 1 or detect_workers < 1:
            raise ValueError("max_size and detect_workers must be at least 1")
        if max_wait_ms < 0 or torch_threads < 0:
            raise ValueError("max_wait_ms and torch_threads must not be negative")
        self.embedder = embedder
        self.detector = detector
        self.max_size = int(max_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.skip_wait_when_alone = skip_wait_when_alone
        self.torch_threads = int(torch_threads)  # per worker; 0 = torch's default
        self._embed_queue: deque[_Job] = deque()
        self._detect_queue: deque[_Job] = deque()
        self._gathering: set[tuple[int, int]] = set()  # image sizes a detection worker is collecting
        self._in_flight = 0  # jobs submitted and not finished, both kinds
        self._last_batch = {"embed": 1, "detect": 1}  # requests in each lane's latest batch
        self._embed_done_at: float | None = None  # when the latest embedding batch finished (None: none has)
        self._cond = threading.Condition()
        self._closed = False
        self._stats = BatcherStats()
        self._stats_lock = threading.Lock()
        # Called as on_batch(lane, requests, items) on a worker thread before each batch runs
        # (service/metrics.py); must be quick and must not raise.
        self.on_batch: Callable[[str, int, int], None] | None = None
        self._threads = [threading.Thread(target=self._loop, args=(self._next_embed_batch,), name=f"{name}-embed", daemon=True)]
        if detector is not None:
            self._threads += [
                threading.Thread(target=self._loop, args=(self._next_detect_batch,), name=f"{name}-detect-{i}", daemon=True)
                for i in range(detect_workers)
            ]
        for thread in self._threads:
            thread.start()

    # -- public API --------------------------------------------------------------------
    def submit_embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> Future[np.ndarray]:
        """Queue (n, 3, S, S) crops; the future gives (n, dim) unit float32 vectors. Raises
        ValueError at once for a wrong shape or non-finite values."""
        batch = np.asarray(crops, dtype=np.float32)
        size = self.embedder.spec.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected crops of shape (N, 3, {size}, {size}), got {batch.shape}")
        if not np.isfinite(batch).all():
            raise ValueError("crops must hold finite values")
        if len(batch) == 0:
            done: Future[np.ndarray] = Future()
            done.set_result(np.zeros((0, self.embedder.dim), dtype=np.float32))
            return done
        return self._submit(_Job("embed", batch, len(batch), time.monotonic()))

    def submit_detect(self, image: Image.Image) -> Future[list[DetectedFace]]:
        """Queue one RGB image for the detector; the future gives its faces, largest first."""
        if self.detector is None:
            raise RuntimeError("this batcher has no detector")
        if not isinstance(image, Image.Image) or image.mode != "RGB":
            raise ValueError(f"detector expects an RGB PIL image, got {getattr(image, 'mode', type(image).__name__)!r}")
        return self._submit(_Job("detect", image, image.width * image.height, time.monotonic()))

    def embed(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Blocking ``submit_embed``."""
        return self.submit_embed(crops).result()

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """Blocking ``submit_detect``."""
        return self.submit_detect(image).result()

    def queue_depth(self) -> dict[str, int]:
        """Jobs waiting for a batch now, by lane (``embed``, ``detect``)."""
        with self._cond:
            return {"embed": len(self._embed_queue), "detect": len(self._detect_queue)}

    def stats(self) -> BatcherStats:
        with self._stats_lock:
            return BatcherStats(**vars(self._stats))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        """Whether any of the batcher's threads is alive (False once ``close()`` has drained the queues)."""
        return any(t.is_alive() for t in self._threads)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish the queued jobs, join the threads. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forming batches -----------------------------------------------------------------
    def _submit(self, job: _Job) -> Future[Any]:
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the batcher is closed")
            (self._embed_queue if job.kind == "embed" else self._detect_queue).append(job)
            self._in_flight += 1
            self._cond.notify_all()
        with self._stats_lock:
            if job.kind == "embed":
                self._stats.embed_requests += 1
            else:
                self._stats.detect_requests += 1
        return job.future

    def _wait_for_mates(self, kind: str, deadline: float, enough: Callable[[], bool]) -> None:
        """Wait (holding the condition) until ``enough()``, the deadline, or close. A lone client
        (nothing else in flight, and the lane's last batch held one request) does not wait:
        no batch-mate can come, so waiting would only add latency."""
        if self.skip_wait_when_alone and self._in_flight <= 1 and self._last_batch[kind] <= 1:
            return
        while not self._closed and not enough():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _next_embed_batch(self) -> list[_Job] | None:
        with self._cond:
            free_since = time.monotonic()
            while not self._embed_queue:
                if self._closed:
                    return None
                self._cond.wait()
            queue = self._embed_queue
            done_at = self._embed_done_at
            expected = None
            if done_at is not None:  # those that waited through the last batch, and that batch's own
                expected = sum(j.queued_at <= done_at for j in queue) + self._last_batch["embed"]

            def enough() -> bool:
                return sum(j.size for j in queue) >= self.max_size or (expected is not None and len(queue) >= expected)

            self._wait_for_mates("embed", max(queue[0].queued_at, free_since) + self.max_wait, enough)
            taken, kept, faces = [], deque(), 0
            for job in queue:
                fits = not taken or faces + job.size <= self.max_size
                faces += job.size if fits else 0
                (taken if fits else kept).append(job)
            self._embed_queue = kept
            self._last_batch["embed"] = len(taken)
            return taken

    def _next_detect_batch(self) -> list[_Job] | None:
        with self._cond:
            free_since = time.monotonic()
            while True:
                first = next((j for j in self._detect_queue if j.image_size not in self._gathering), None)
                if first is not None:
                    break
                if self._closed and not self._detect_queue:
                    return None
                self._cond.wait()
            size = first.image_size
            self._gathering.add(size)
            try:
                self._wait_for_mates(
                    "detect",
                    max(first.queued_at, free_since) + self.max_wait,
                    lambda: sum(j.image_size == size for j in self._detect_queue) >= self.max_size,
                )
                taken, kept, pixels = [], deque(), 0
                for job in self._detect_queue:
                    fits = job is first or (
                        job.image_size == size and len(taken) < self.max_size and pixels + job.size <= DETECT_MAX_PIXELS
                    )
                    if fits:
                        pixels += job.size
                    (taken if fits else kept).append(job)
                self._detect_queue = kept
                self._last_batch["detect"] = len(taken)
            finally:
                self._gathering.discard(size)
                self._cond.notify_all()  # leftovers of this size may now be taken by another worker
            return taken

    # -- running batches -----------------------------------------------------------------
    def _loop(self, next_batch: Callable[[], list[_Job] | None]) -> None:
        cores = every_core()
        # torch adopts the process's last set_num_threads in a thread's first parallel op: have that
        # happen now, so the count set before each batch below is the one the batch runs with.
        torch.ones(2).sum()
        while True:
            jobs = next_batch()
            if jobs is None:
                return
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            with self._cond:
                self._in_flight -= len(jobs) - len(live)  # cancelled by their callers
                alone = self._in_flight <= len(live)
            if not live:
                continue
            torch.set_num_threads(self.torch_threads or (cores if alone else 1))  # this worker thread's own count (OpenMP)
            if self.on_batch is not None:
                self.on_batch(live[0].kind, len(live), sum(j.size for j in live) if live[0].kind == "embed" else len(live))
            try:
                self._run_group(live, self._embed_group if live[0].kind == "embed" else self._detect_group)
            except BaseException as exc:  # a bug here must not leave callers blocked forever
                log.exception("batch worker failed")
                for job in live:
                    if not job.future.done():
                        self._finish(job, error=exc)

    def _finish(self, job: _Job, result: Any = None, error: BaseException | None = None) -> None:
        with self._cond:
            self._in_flight -= 1  # before the caller wakes and perhaps submits its next job
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _run_group(self, group: list[_Job], fn: Callable[[list[_Job]], Sequence[Any]]) -> None:
        """Run ``fn`` on the whole group; if it raises, on each member alone."""
        try:
            results = fn(group)
        except Exception as exc:  # isolate the faulty request below
            if len(group) == 1:
                with self._stats_lock:
                    self._stats.failed_requests += 1
                self._finish(group[0], error=exc)
                return
            log.warning("a batch of %d %s requests failed; retrying them one by one", len(group), group[0].kind, exc_info=True)
            with self._stats_lock:
                self._stats.retried_batches += 1
            for job in group:
                self._run_group([job], fn)
            return
        for job, result in zip(group, results, strict=True):
            self._finish(job, result)

    def _embed_group(self, group: list[_Job]) -> list[np.ndarray]:
        crops = group[0].payload if len(group) == 1 else np.concatenate([j.payload for j in group])
        chunks = [self.embedder.embed(crops[i : i + self.max_size]) for i in range(0, len(crops), self.max_size)]
        vectors = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        self._embed_done_at = time.monotonic()  # before any caller gets its result and comes back
        with self._stats_lock:
            self._stats.embed_batches += len(chunks)
            self._stats.faces_embedded += len(crops)
            self._stats.largest_embed_batch = max(self._stats.largest_embed_batch, min(len(crops), self.max_size))
        offsets = np.cumsum([0] + [j.size for j in group])
        return [vectors[a:b].copy() for a, b in itertools.pairwise(offsets)]

    def _detect_group(self, group: list[_Job]) -> list[list[DetectedFace]]:
        assert self.detector is not None
        faces = self.detector.detect_batch([j.payload for j in group])
        with self._stats_lock:
            self._stats.detect_batches += 1
            self._stats.images_detected += len(group)
            self._stats.largest_detect_batch = max(self._stats.largest_detect_batch, len(group))
        return faces

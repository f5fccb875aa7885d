"""Prometheus metrics, recorded without knowing about HTTP.

* ``Recorder``: one app's metrics in its own ``CollectorRegistry`` (tests create many apps in one
  process; the global registry would refuse the second). The HTTP layer binds an app's recorder
  to the request being served (``bind``); domain code times its stages with ``stage("detect")``
  and counts errors with ``count_error(code)``, both no-ops when no recorder is bound (scripts,
  benchmarks, the calibration command).
* ``BatchMetrics``: the sizes of the micro-batches a ``MicroBatcher`` runs. The batcher belongs
  to the engine, which several apps may share, so these are engine-wide and every app sharing the
  engine shows the same figures (in production: one app, one engine per process).
* ``GalleryCollector``: figures read at scrape time (gallery sizes per collection, batcher queue
  depth, model and device), never stored twice.

The metric names are documented in docs/metrics.md.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from service.batcher import MicroBatcher
from service.store.gallery import StorageError

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "embed", "search")
LANES = ("embed", "detect")
# Seconds: a decode or a search takes milliseconds, a detection on CPU up to seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

_current: ContextVar[Recorder | None] = ContextVar("fewface_metrics_recorder", default=None)


class Recorder:
    """One app's request, stage and error metrics, in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fewface_http_requests",
            "HTTP requests answered, by route (URL rule), method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "fewface_http_request_duration_seconds",
            "Time from routing a request to its response, by route (URL rule) and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("fewface_http_requests_in_flight", "Requests being handled now.", registry=r)
        self.stage_seconds = Histogram(
            "fewface_stage_seconds",
            "Time a request spent in each pipeline stage (decode, detect, embed, search); detect and embed include "
            "waiting for a micro-batch.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("fewface_errors", "Error answers by stable error code.", ["code"], registry=r)
        for name in STAGES:
            self.stage_seconds.labels(name)  # every stage's series exists from the start, at 0

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def bind(self) -> Token[Recorder | None]:
        """Make this the recorder of the current request (thread / context); undo with ``unbind``."""
        return _current.set(self)

    @staticmethod
    def unbind(token: Token[Recorder | None]) -> None:
        try:
            _current.reset(token)
        except ValueError:  # bound in another context (never with Flask's sync requests): just clear it
            _current.set(None)

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the enclosed block as pipeline stage ``name`` of the current request, if any."""
    recorder = _current.get()
    if recorder is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        recorder.stage_seconds.labels(name).observe(time.perf_counter() - started)


def count_error(code: str) -> None:
    """Count an error answer with ``code`` for the current request's app, if any."""
    recorder = _current.get()
    if recorder is not None:
        recorder.errors.labels(code).inc()


class BatchMetrics:
    """Micro-batch sizes of one batcher (not registered anywhere: apps' collectors yield them)."""

    def __init__(self) -> None:
        self.size = Histogram(
            "fewface_batch_size",
            "Items per micro-batch: faces (lane embed) or images (lane detect).",
            ["lane"],
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.requests = Histogram(
            "fewface_batch_requests", "Requests coalesced into one micro-batch, by lane.", ["lane"], buckets=BATCH_BUCKETS, registry=None
        )
        for lane in LANES:
            self.size.labels(lane)
            self.requests.labels(lane)

    def observe(self, lane: str, requests: int, items: int) -> None:
        """The batcher's ``on_batch`` hook: it runs on the batcher's threads and must not raise."""
        try:
            self.size.labels(lane).observe(items)
            self.requests.labels(lane).observe(requests)
        except Exception:  # a metrics bug must never stop a batch worker
            log.exception("recording a batch failed")

    def collect(self) -> Iterator[Metric]:
        yield from self.size.collect()
        yield from self.requests.collect()


_batch_metrics: weakref.WeakKeyDictionary[MicroBatcher, BatchMetrics] = weakref.WeakKeyDictionary()
_batch_lock = threading.Lock()


def batch_metrics(batcher: MicroBatcher) -> BatchMetrics:
    """The batcher's ``BatchMetrics``, hooked in on first use (apps sharing an engine share them)."""
    with _batch_lock:
        metrics = _batch_metrics.get(batcher)
        if metrics is None:
            metrics = _batch_metrics[batcher] = BatchMetrics()
            batcher.on_batch = metrics.observe
        return metrics


class GalleryCollector(Collector):
    """Figures read when scraped: gallery sizes per collection, queue depth, model and device.

    ``counts`` returns (collection id, people, face examples) for every collection."""

    def __init__(
        self,
        counts: Callable[[], Iterable[tuple[str, int, int]]],
        batcher: MicroBatcher,
        info: dict[str, str],
    ) -> None:
        self._counts = counts
        self._batcher = batcher
        self._batches = batch_metrics(batcher)
        self._info = info

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("fewface_gallery_people", "")
        yield GaugeMetricFamily("fewface_gallery_faces", "")
        yield GaugeMetricFamily("fewface_batch_queue_depth", "")
        yield InfoMetricFamily("fewface_model", "")
        yield from self._batches.collect()

    def collect(self) -> Iterator[Metric]:
        people = GaugeMetricFamily("fewface_gallery_people", "People in the gallery, by collection.", labels=["collection"])
        faces = GaugeMetricFamily("fewface_gallery_faces", "Face examples in the gallery, by collection.", labels=["collection"])
        try:
            counted = list(self._counts())
        except StorageError as exc:  # the store unavailable: the scrape still answers, without these series
            log.warning("metrics: the galleries could not be counted: %s", exc)
            counted = []
        for collection, n_people, n_faces in counted:
            people.add_metric([collection], n_people)
            faces.add_metric([collection], n_faces)
        yield people
        yield faces
        depth = GaugeMetricFamily("fewface_batch_queue_depth", "Jobs waiting for a micro-batch now, by lane.", labels=["lane"])
        for lane, queued in self._batcher.queue_depth().items():
            depth.add_metric([lane], queued)
        yield depth
        yield InfoMetricFamily("fewface_model", "The running model, pipeline, device and version.", value=self._info)
        yield from self._batches.collect()

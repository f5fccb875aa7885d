"""Short-lived face tokens: identify hands one out per face so a client can teach THAT face later
(``POST /v1/people/<id>/faces`` with ``{"face_token": ...}``) without uploading the photo again.

The server keeps, per token, what teaching needs: the embedding, the box and detection
probability, the quality figures (the teach gate applies as for photos), the image's sha256 (one
example per image per person, as for photos) and, when thumbnails are on, a small JPEG of the face
(service/thumbnails.py). Tokens live in a bounded in-memory table: at most ``max_size`` (the
oldest go first) for ``ttl`` seconds; nothing is written to disk and a restart forgets them all.
An expired token is remembered (the token alone, without its face; at most TOMBSTONES x
``max_size`` of them) so a client can tell "expired" (410) from "never issued / forgotten" (404).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.quality import FaceQuality
from models.types import DetectedFace

TOMBSTONES = 4  # expired tokens remembered, per token the table holds


@dataclass(frozen=True)
class FaceCapture:
    """One face of an identify request, as teach-by-token needs it."""

    face: DetectedFace  # original-image pixel coordinates
    embedding: np.ndarray  # (dim,) unit float32
    quality: FaceQuality
    image_sha256: str
    model_id: str
    pipeline: str
    thumbnail: bytes | None  # JPEG, None when thumbnails are off
    collection: str = "default"  # the collection whose identify made it: teaching elsewhere is refused


class FaceTokenNotFoundError(KeyError):
    """Never issued by this process, or forgotten (table full, restart)."""


class FaceTokenExpiredError(KeyError):
    """Issued, but older than the time to live."""


class FaceTokens:
    """Thread-safe bounded table token -> FaceCapture with a time to live."""

    def __init__(self, ttl: float, max_size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._lock = threading.Lock()
        self._live: OrderedDict[str, tuple[float, FaceCapture]] = OrderedDict()  # oldest first; all share one ttl
        self._expired: OrderedDict[str, float] = OrderedDict()  # token -> when it expired (tombstones, oldest first)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_size > 0

    def issue(self, capture: FaceCapture) -> str | None:
        """A new token for ``capture`` (None when tokens are off)."""
        if not self.enabled:
            return None
        token = "ft_" + secrets.token_urlsafe(18)
        now = self._clock()
        with self._lock:
            self._purge(now)
            self._live[token] = (now + self.ttl, capture)
            while len(self._live) > self.max_size:
                self._live.popitem(last=False)  # forgotten, not expired: 404
        return token

    def get(self, token: str) -> FaceCapture:
        """The capture of a live token; FaceTokenExpiredError / FaceTokenNotFoundError otherwise.
        Using a token does not consume it: the same face may be taught to several people
        (correcting a match) until it expires."""
        now = self._clock()
        with self._lock:
            self._purge(now)
            entry = self._live.get(token)
            if entry is not None:
                return entry[1]
            if token in self._expired:
                raise FaceTokenExpiredError(token)
        raise FaceTokenNotFoundError(token)

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def _purge(self, now: float) -> None:
        """Move expired tokens (the oldest, at the front) to the tombstones; drop the oldest
        tombstones beyond TOMBSTONES x ``max_size``."""
        while self._live:
            token, (expires, _) = next(iter(self._live.items()))
            if expires > now:
                break
            del self._live[token]
            self._expired[token] = expires
        while len(self._expired) > TOMBSTONES * self.max_size:
            self._expired.popitem(last=False)

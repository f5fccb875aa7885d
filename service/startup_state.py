"""Loading a state file at start-up (``FEWFACE_STATE_URL``, or Facebox's ``MB_FACEBOX_STATE_URL``).

Facebox kept its gallery in memory and read ``MB_FACEBOX_STATE_URL`` at every start. Fewface
keeps its gallery on disk, so the file is loaded only into an **empty** gallery: the first start
restores it, and a restart keeps what was taught since instead of going back to the file. The
file gets the same checks as a state upload (service/state.py: format, checksum, model, every
value) and is written all or nothing, so a bad file leaves the gallery untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

from service.errors import ApiError
from service.http.urlfetch import UrlFetcher
from service.state import import_state
from service.store.gallery import Gallery

log = logging.getLogger(__name__)


class StartupStateError(RuntimeError):
    """The start-up state file cannot be read or is not valid; nothing was changed."""


def shown(source: str) -> str:
    """``source`` for logs: a URL without its user and password."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
    return source


def read_source(source: str, max_bytes: int, timeout: float) -> bytes:
    """The bytes of a state file named by a path, a ``file://`` URL or an ``http(s)://`` URL (at
    most ``max_bytes``). The URL is the operator's own setting, so private addresses are allowed
    (a LAN file server); scheme, redirects, size and the ``timeout`` follow service/http/urlfetch.py."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        try:
            return UrlFetcher(max_bytes, timeout, allow_private=True).fetch(source)
        except ApiError as exc:
            raise StartupStateError(exc.message) from None
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
    elif parts.scheme and len(parts.scheme) > 1:  # "C:\\..." style paths have a one-letter "scheme"
        raise StartupStateError(f"unsupported URL scheme {parts.scheme!r}: use a file path, file://, http:// or https://")
    else:
        path = Path(source)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise StartupStateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise StartupStateError(f"{path} is larger than FEWFACE_MAX_UPLOAD_BYTES ({max_bytes} bytes)")
    return data


def load_startup_state(gallery: Gallery, source: str, *, max_bytes: int, timeout: float, thumbnails: bool = True) -> bool:
    """Load ``source`` into ``gallery`` when the gallery is empty; True when loaded, False when
    skipped (the gallery already holds people). StartupStateError when the file cannot be read
    or fails a check; the gallery is then unchanged."""
    people, faces = gallery.counts()
    if people or faces:
        log.info("start-up state %s not loaded: the gallery already holds %d people, %d faces", shown(source), people, faces)
        return False
    data = read_source(source, max_bytes, timeout)
    try:
        summary = import_state(gallery, data, mode="replace", max_bytes=max_bytes, thumbnails=thumbnails)
    except ApiError as exc:
        raise StartupStateError(f"{exc.code}: {exc.message}") from None
    log.info("start-up state %s loaded: %d people, %d faces", shown(source), summary["total"]["people"], summary["total"]["faces"])
    return True

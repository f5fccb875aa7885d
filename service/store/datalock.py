"""One owner per data directory: an exclusive ``flock`` on ``<data dir>/fewface.lock``.

A second process that opens a gallery in a directory another process owns is refused with
``DataDirInUseError`` naming the holder's pid; two processes would each keep their own search
index and drift apart. The lock lives as long as the file descriptor: the OS releases it when
the owner exits, SIGKILL included, so a restart after a crash finds it free.

Within one process, galleries opened on the same directory share the lock (reference-counted):
tests and tools reopen a directory without closing the previous handle.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

LOCK_FILE = "fewface.lock"


class DataDirInUseError(RuntimeError):
    """Another process owns the data directory."""


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0


_held: dict[str, _Held] = {}
_guard = threading.Lock()


class DataDirLock:
    """A handle on the process's exclusive lock of one data directory; ``release()`` once."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._key = os.path.realpath(self.path)
        self._released = False
        with _guard:
            held = _held.get(self._key)
            if held is None:
                held = _Held(_acquire(self.path))
                _held[self._key] = held
            held.users += 1

    def release(self) -> None:
        with _guard:
            if self._released:
                return
            self._released = True
            held = _held[self._key]
            held.users -= 1
            if held.users == 0:
                del _held[self._key]
                os.close(held.fd)  # closing the descriptor releases the flock


def _acquire(path: Path) -> int:
    """Open (creating) the lock file and take an exclusive non-blocking flock; record our pid.
    OSError (PermissionError, read-only file system...) when the file cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            os.close(fd)
            raise
        holder = _read_pid(fd)
        os.close(fd)
        who = f"process {holder}" if holder else "another process"
        raise DataDirInUseError(
            f"data directory {path.parent} is in use by {who} (lock {path}); stop that process "
            "or give this one another FEWFACE_DATA_DIR: two processes on one gallery would drift apart"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is only informative
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

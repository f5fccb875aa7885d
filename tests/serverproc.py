"""A real ``python -m service`` in a child process on 127.0.0.1, for crash, shutdown and load runs.

Each process loads its own models (several seconds, about 1 GB); callers must ``kill()`` it in a
finalizer (``ServerProcess`` is also a context manager).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from service.http.errors import INTERNAL_ERROR_MARK

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120.0  # seconds: importing torch and loading the models on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    internal_errors = 0  # 500 answers logged by every child server so far (tests/conftest.py checks)

    def __init__(self, data_dir: Path, log_path: Path, *, root: Path = ROOT, **env: str) -> None:
        """``root``: the code to run (this checkout, or an older commit's tree: bench/common.py ``checkout``)."""
        self.root = Path(root)
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.extra_env = env
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._marks_seen = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Start and wait until /readyz answers 200; a port taken meanwhile gets one retry."""
        for attempt in range(3):
            self.port = free_port()
            env = {
                **os.environ,
                "FEWFACE_DATA_DIR": str(self.data_dir),
                "FEWFACE_HOST": "127.0.0.1",
                "FEWFACE_PORT": str(self.port),
                "FEWFACE_API_KEY": "",
                "FEWFACE_BASIC_AUTH": "",
                **self.extra_env,
            }
            with open(self.log_path, "ab") as log:
                log.write(f"\n--- start (attempt {attempt + 1}) port {self.port} ---\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "service"], cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            if self._wait_ready(timeout):
                return self
            if self.proc.poll() is None:
                self.kill()
                break
            if "address already in use" not in self.log_tail().lower():
                break
        raise RuntimeError(f"server did not become ready; log:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if requests.get(self.url("/readyz"), timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (no chance to clean up) and reap."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.count_internal_errors()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self.count_internal_errors()
        return code

    def count_internal_errors(self) -> int:
        """Add the 500 answers this server logged since the last count to the class total."""
        try:
            marks = self.log_path.read_text(errors="replace").count(INTERNAL_ERROR_MARK)
        except OSError:
            return 0
        new, self._marks_seen = marks - self._marks_seen, marks
        ServerProcess.internal_errors += new
        return new

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()

    # -- helpers -----------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        """Resident memory of the server process (VmRSS, KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

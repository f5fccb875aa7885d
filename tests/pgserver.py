"""A throwaway PostgreSQL server on loopback for tests, benches and scripts.

Debian's server binaries (``/usr/lib/postgresql/<version>/bin``: ``initdb``, ``pg_ctl``; package
``postgresql``, which scripts/test.sh installs where missing) run a cluster in a fresh temporary
directory: TCP on 127.0.0.1 and a free port only, its unix socket inside that directory, trust
authentication for the one user ``fewface``. PostgreSQL refuses to run as root, so when the tests
run as root the server runs as the unprivileged ``postgres`` user (or ``nobody``), which owns the
directory. ``fsync`` is off by default (a test cluster need not survive a power cut; a killed
server still loses nothing committed, since the OS keeps its writes): pass ``fsync=True`` for
figures that must include it.

    with PgServer() as pg:
        url = pg.create_database("t1")   # postgresql://fewface@127.0.0.1:<port>/t1

``python -m tests.pgserver`` starts one, prints its URL (of the database ``fewface``) and keeps it
until stdin closes or SIGTERM / SIGINT.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

USER = "fewface"
START_TIMEOUT = 60.0
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PgServerError(RuntimeError):
    pass


def pg_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (``FEWFACE_PG_BIN`` overrides)."""
    override = os.environ.get("FEWFACE_PG_BIN")
    if override:
        return Path(override) if (Path(override) / "initdb").is_file() else None
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def available() -> bool:
    return pg_bin_dir() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PgServerError("running as root and there is no 'postgres' or 'nobody' account to run PostgreSQL as")


class PgServer:
    """One PostgreSQL cluster in a temporary directory; ``start()`` / ``stop()`` / ``restart()``."""

    def __init__(self, *, fsync: bool = False, max_connections: int = 200) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise PgServerError("no PostgreSQL server binaries (apt-get install postgresql, or set FEWFACE_PG_BIN)")
        self.bin = bin_dir
        self.fsync = fsync
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="fewface-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "server.log"
        self.port = 0
        self._account = _run_as()
        self._lock = threading.Lock()
        self._initialised = False
        os.chmod(self.root, 0o755)
        self.socket_dir.mkdir()
        if self._account is not None:
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
            os.chown(self.socket_dir, self._account.pw_uid, self._account.pw_gid)

    # -- commands ------------------------------------------------------------------------
    def _cmd(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / args[0]), *args[1:]]
        if self._account is not None:
            argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self._account.pw_name, "--", *argv]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root)
        if proc.returncode != 0:
            raise PgServerError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n{self.log_tail()}")
        return proc

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> PgServer:
        with self._lock:
            if not self._initialised:
                self._cmd("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync", "--locale=C.UTF-8")
                self._initialised = True
            for attempt in range(3):
                self.port = _free_port()
                try:
                    self._pg_ctl_start()
                    break
                except PgServerError:
                    if attempt == 2:
                        raise
                    log.warning("PostgreSQL did not start on port %d; retrying on another port", self.port)
            self.create_database(USER)
        log.info("PostgreSQL %s on 127.0.0.1:%d (%s)", self.bin.parent.name, self.port, self.root)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate, as pg_ctl's -m)."""
        with self._lock:
            if self.running():
                self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port (a client must reconnect, nothing committed is lost)."""
        self.stop(mode)
        with self._lock:
            self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync={'on' if self.fsync else 'off'} "
            f"-c max_connections={self.max_connections} -c shared_buffers=32MB -c log_min_messages=warning"
        )
        wait = str(int(START_TIMEOUT))
        self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "-t", wait, "start")

    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.is_file():
            return False
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (ValueError, OSError):
            return False
        return True

    def destroy(self) -> None:
        """Stop (immediately) and delete the cluster's directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- databases -----------------------------------------------------------------------
    def url(self, database: str = USER) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = USER) -> str:
        """Run SQL through psql over the unix socket; returns its unaligned output."""
        where = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", USER, "-d", database]
        proc = self._cmd("psql", *where, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql)
        return proc.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}")
        self.psql(f'CREATE DATABASE "{name}"', database="postgres")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    server = PgServer(fsync="--fsync" in sys.argv[1:])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server.start()
        print(server.url(), flush=True)  # noqa: T201 (a tool: its one line of output is the URL)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        while not stop.wait(0.5):
            pass
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())

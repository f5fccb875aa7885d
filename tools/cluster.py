"""docker-compose.yml's topology without Docker, on loopback: one PostgreSQL, N Fewface replicas
(``python -m service``, each with its own FEWFACE_DATA_DIR and port, all on one
FEWFACE_DATABASE_URL) and nginx round robin in front, running deploy/nginx.conf with only its
upstream servers, listen address and file paths rewritten.

PostgreSQL is Debian's server started by tests/pgserver.py in the work folder (or any server
given with ``--database-url``); nginx is Debian's ``nginx`` package (``apt-get install nginx``).

    python -m tools.cluster [--replicas 2] [--dir /tmp/fewface-cluster] [--database-url URL]

prints the proxy's URL and runs until Ctrl-C. Tests and benches use ``Cluster`` (a context manager).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.serverproc import ServerProcess, free_port  # noqa: E402

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX_BINARIES = ("/usr/sbin/nginx", "/usr/bin/nginx")


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or next((b for b in NGINX_BINARIES if os.access(b, os.X_OK)), None)


def render_nginx_conf(upstreams: list[str], listen: str, workdir: Path, source: Path = NGINX_CONF) -> str:
    """deploy/nginx.conf for a loopback run: the upstream's ``server`` lines point at
    ``upstreams`` (host:port), ``listen`` replaces the listen address, and every line marked
    ``# cluster: path`` gets a path inside ``workdir``; nothing else changes."""
    text = source.read_text()
    block = re.search(r"upstream fewface \{\n(.*?)\n\s*\}", text, flags=re.DOTALL)
    if block is None:
        raise ValueError(f"{source} has no 'upstream fewface {{ ... }}' block")
    lines = block.group(1).splitlines()
    servers = [line for line in lines if line.strip().startswith("server ")]
    if not servers:
        raise ValueError(f"{source}: the upstream block has no server lines")
    indent = servers[0][: len(servers[0]) - len(servers[0].lstrip())]
    options = servers[0].strip().removesuffix(";").split()[2:]  # e.g. max_fails=1 fail_timeout=5s
    first = lines.index(servers[0])
    kept = [line for line in lines if not line.strip().startswith("server ")]
    new_servers = [f"{indent}server {u} {' '.join(options)};".replace(" ;", ";") for u in upstreams]
    new_block = "\n".join(kept[:first] + new_servers + kept[first:])
    text = text[: block.start(1)] + new_block + text[block.end(1) :]
    text, n = re.subn(r"^(\s*)listen\s+[^;]+;", lambda m: f"{m.group(1)}listen {listen};", text, flags=re.MULTILINE)
    if n != 1:
        raise ValueError(f"{source}: expected one listen line, found {n}")

    def path_line(m: re.Match[str]) -> str:
        directive, old = m.group(2), m.group(3)
        name = Path(old).name.removesuffix(".pid") or directive
        new = workdir / ("nginx.pid" if directive == "pid" else "error.log" if directive == "error_log" else name)
        return f"{m.group(1)}{directive} {new}{m.group(4) or ''};"

    text = re.sub(r"^(\s*)(\w+)\s+(\S+?)(\s+\w+)?;\s*# cluster: path.*$", path_line, text, flags=re.MULTILINE)
    if os.geteuid() == 0 and not re.search(r"^\s*user\s", text, flags=re.MULTILINE):
        text = "user root;  # cluster: root runs the workers too (they read files in a private temp folder)\n" + text
    return text


class Nginx:
    """nginx running a rendered deploy/nginx.conf with its prefix in ``workdir``."""

    def __init__(self, workdir: Path, upstreams: list[str]) -> None:
        self.workdir = Path(workdir)
        self.upstreams = upstreams
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed: apt-get install nginx (scripts/test.sh does it on CI)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            conf = self.workdir / "nginx.conf"
            conf.write_text(render_nginx_conf(self.upstreams, f"127.0.0.1:{self.port}", self.workdir))
            log = open(self.workdir / "nginx.out", "ab")
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    requests.get(f"{self.base}/healthz", timeout=2)
                    return self
                except requests.RequestException:
                    time.sleep(0.05)
            self.stop()
            if attempt == 2 or "address already in use" not in self.log_tail().lower():
                break
        raise RuntimeError(f"nginx did not start:\n{self.log_tail()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        out = []
        for name in ("nginx.out", "error.log"):
            try:
                out.append((self.workdir / name).read_text(errors="replace")[-2000:])
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_all(replicas: list[ServerProcess]) -> None:
    """Start replicas side by side (each loads its models); raises the first failure."""
    errors: list[BaseException] = []

    def one(replica: ServerProcess) -> None:
        try:
            replica.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class Cluster:
    """PostgreSQL + ``replicas`` Fewface processes + nginx, in ``workdir``. Replica i has its
    data folder ``workdir/replica-i`` and log ``workdir/replica-i.log``; ``env`` goes to every
    replica (FEWFACE_* settings)."""

    def __init__(self, workdir: Path, replicas: int = 2, database_url: str | None = None, **env: str) -> None:
        self.workdir = Path(workdir)
        self.replica_count = replicas
        self.database_url = database_url
        self.env = env
        self.pg: Any = None
        self.replicas: list[ServerProcess] = []
        self.nginx: Nginx | None = None

    def start(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self.database_url is None:
                from tests.pgserver import PgServer

                self.pg = PgServer().start()
                self.database_url = self.pg.url()
            self.replicas = [self._replica(i) for i in range(self.replica_count)]
            start_all(self.replicas)
            self.nginx = Nginx(self.workdir / "nginx", [f"127.0.0.1:{r.port}" for r in self.replicas]).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _replica(self, i: int) -> ServerProcess:
        env = {"FEWFACE_DATABASE_URL": str(self.database_url), **self.env}
        return ServerProcess(self.workdir / f"replica-{i}", self.workdir / f"replica-{i}.log", **env)

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        assert self.nginx is not None
        return self.nginx.base

    def restart_replica(self, i: int) -> ServerProcess:
        """Start replica i again (after ``kill``), on a new port; the proxy is pointed at it."""
        replica = self._replica(i)
        replica.start()
        self.replicas[i] = replica
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = Nginx(self.workdir / "nginx", [f"127.0.0.1:{r.port}" for r in self.replicas]).start()
        return replica

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            replica.kill()
        if self.pg is not None:
            self.pg.destroy()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temp folder)")
    parser.add_argument("--database-url", default=None, help="use this PostgreSQL instead of starting one")
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="fewface-cluster-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop everything on SIGTERM too, not only Ctrl-C
    with Cluster(workdir, replicas=args.replicas, database_url=args.database_url) as cluster:
        print(f"database {cluster.database_url}")
        for i, r in enumerate(cluster.replicas):
            print(f"replica {i}: {r.base} (log {r.log_path})")
        print(f"proxy: {cluster.url}   (Ctrl-C stops everything; work folder {workdir})")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

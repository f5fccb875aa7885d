"""docker-compose.yml and deploy/nginx.conf checked against the code (there is no Docker engine
here): every FEWFACE_* variable is a real setting with a valid value, healthchecks probe routes the
app has on the port it listens on, nginx's upstream names the replicas, and the rendered loopback
config of tools/cluster.py passes ``nginx -t``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from flask import Flask

from service.config import Settings, env_table
from tools.cluster import nginx_binary, render_nginx_conf

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"


def _substitute(value: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` with no variable set: the default (or empty)."""
    return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {name: svc for name, svc in compose["services"].items() if "FEWFACE_DATABASE_URL" in (svc.get("environment") or {})}
    assert len(found) >= 2, "two Fewface replicas expected"
    return found


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: _substitute(str(v)) for k, v in (service.get("environment") or {}).items()}


def _routes() -> set[str]:
    """Every URL rule of the native API blueprint (probes live there)."""
    from service.http.api import bp

    app = Flask(__name__)
    app.register_blueprint(bp)
    return {rule.rule for rule in app.url_map.iter_rules()}


def _probe(healthcheck: dict[str, Any]) -> tuple[int | None, str]:
    """(port, path) of the http://127.0.0.1[:port]/path URL a healthcheck fetches."""
    command = " ".join(healthcheck["test"]) if isinstance(healthcheck["test"], list) else healthcheck["test"]
    url = re.search(r"https?://[^\s'\"]+", command)
    assert url is not None, f"healthcheck fetches no URL: {command}"
    parts = urlsplit(url.group(0))
    assert parts.hostname in ("127.0.0.1", "localhost")
    return parts.port, parts.path


def test_services_and_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "proxy"} <= set(services)
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    volume = pg["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data" and volume[0] in compose["volumes"], "PostgreSQL's data on a named volume"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_replica_settings_exist_and_validate(compose: dict[str, Any], replicas: dict[str, dict[str, Any]]) -> None:
    known = {name for name, _, _ in env_table()}
    pg_env = _env(compose["services"]["postgres"])
    for name, service in replicas.items():
        env = _env(service)
        unknown = {k for k in env if k.startswith("FEWFACE_")} - known
        assert not unknown, f"{name}: not settings of service/config.py: {unknown}"
        settings = Settings.from_env(env)  # raises ConfigError on a bad value
        assert settings.host == "0.0.0.0", f"{name} must listen beyond the container's loopback"
        url = urlsplit(env["FEWFACE_DATABASE_URL"])
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
        assert url.username == pg_env["POSTGRES_USER"] and url.password == pg_env["POSTGRES_PASSWORD"]
        assert url.path.lstrip("/") == pg_env["POSTGRES_DB"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_healthchecks_probe_real_routes_on_the_right_port(compose: dict[str, Any], replicas: dict[str, dict[str, Any]]) -> None:
    routes = _routes()
    for name, service in replicas.items():
        port, path = _probe(service["healthcheck"])
        assert port == Settings.from_env(_env(service)).port, name
        assert path == "/readyz" and path in routes, name
    port, path = _probe(compose["services"]["proxy"]["healthcheck"])
    assert path in routes and (port or 80) == _nginx_listen_port()


def _nginx_listen_port() -> int:
    listen = re.findall(r"^\s*listen\s+([^;]+);", NGINX.read_text(), flags=re.MULTILINE)
    assert len(listen) == 1
    return int(listen[0].split(":")[-1].split()[0])


def test_nginx_upstream_is_the_replicas(compose: dict[str, Any], replicas: dict[str, dict[str, Any]]) -> None:
    text = NGINX.read_text()
    upstream = re.search(r"upstream fewface \{(.*?)\}", text, flags=re.DOTALL)
    assert upstream is not None and "proxy_pass http://fewface;" in text
    servers = re.findall(r"^\s*server\s+([^\s;]+)", upstream.group(1), flags=re.MULTILINE)
    expected = sorted(f"{name}:{Settings.from_env(_env(svc)).port}" for name, svc in replicas.items())
    assert sorted(servers) == expected
    proxy = compose["services"]["proxy"]
    assert any(v.split(":")[0] == "./deploy/nginx.conf" and v.split(":")[1] == "/etc/nginx/nginx.conf" for v in proxy["volumes"])
    assert any(str(p).split(":")[-1] == str(_nginx_listen_port()) for p in proxy["ports"])
    for name in replicas:
        assert proxy["depends_on"][name]["condition"] == "service_healthy" and "healthcheck" in replicas[name]
    body = re.search(r"client_max_body_size\s+(\d+)m;", text)
    assert body is not None and int(body.group(1)) * 2**20 > Settings().max_upload_bytes


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (scripts/test.sh installs it)")
def test_rendered_loopback_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(["127.0.0.1:18081", "127.0.0.1:18082"], "127.0.0.1:18080", tmp_path))
    text = conf.read_text()
    assert "fewface-1" not in text and "listen 127.0.0.1:18080;" in text and str(tmp_path / "nginx.pid") in text
    # Apart from the rewritten lines, the file is deploy/nginx.conf as shipped.
    original = {line.strip() for line in NGINX.read_text().splitlines()}
    changed = [line for line in text.splitlines() if line.strip() not in original]
    assert len(changed) <= 2 + 4 + 1 + 1  # upstream servers, marked paths, listen, user (as root)
    result = subprocess.run([str(nginx_binary()), "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_replicas_build_the_dockerfile_and_its_port(replicas: dict[str, dict[str, Any]]) -> None:
    exposed = re.search(r"^EXPOSE (\d+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert exposed is not None
    for name, service in replicas.items():
        assert service["build"] == ".", name
        assert Settings.from_env(_env(service)).port == int(exposed.group(1)), name

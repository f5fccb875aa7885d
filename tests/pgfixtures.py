"""pytest fixtures for a real PostgreSQL server (tests/pgserver.py): one server per test session,
a fresh database per test. Without PostgreSQL's binaries the tests that need one are skipped,
except on CI (``CI`` set), where they must run and fail instead."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import PgServer, available

_databases = itertools.count(1)


def require_postgresql() -> None:
    if not available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing: CI must run the PostgreSQL tests (apt-get install postgresql)")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    require_postgresql()
    server = PgServer()
    try:
        yield server.start()
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty database on the session's server."""
    return pg_server.create_database(f"t{os.getpid()}_{next(_databases)}")


STORES = ["sqlite", "postgresql"]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per store: the embedded SQLite file and a real PostgreSQL."""
    return str(request.param)


@pytest.fixture
def gallery_location(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where a ``Gallery`` opens in this store: a SQLite file in a fresh data directory, or the
    URL of a fresh PostgreSQL database."""
    if store_kind == "sqlite":
        return tmp_path / "data" / "gallery.sqlite3"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store_settings(store_kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings overrides that put a service's gallery in this store (SQLite: none)."""
    if store_kind == "sqlite":
        return {}
    return {"database_url": str(request.getfixturevalue("pg_url"))}

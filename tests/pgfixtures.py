"""pytest fixtures for a real PostgreSQL server (tests/pgserver.py): one server per test session,
a fresh database per test. Without PostgreSQL's binaries the tests that need one are skipped,
except on CI (``CI`` set), where they must run and fail instead."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

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

"""The ``store`` fixture: every storage test runs against every backend.

Real servers come from ``RESILIENCE_TEST_REDIS_URL`` and
``RESILIENCE_TEST_POSTGRES_URL`` (``scripts/servers.sh start`` prints them). Without
them the server backends are skipped, unless ``RESILIENCE_REQUIRE_SERVERS=1`` (set
by CI), which turns a missing server into a failure: nothing is silently skipped
in CI. Each test gets its own key prefix (Redis) or schema (PostgreSQL), removed
afterwards, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest

from resilience.storage import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from resilience.storage import Store

BACKENDS = ["memory", "sqlite", "fakeredis", "redis", "postgres"]


def server_url(name: str) -> str:
    """The URL of a real server for the tests, or skip (fail when servers are required)."""
    variable = f"RESILIENCE_TEST_{name.upper()}_URL"
    url = os.environ.get(variable)
    if url:
        return url
    message = f"{variable} is not set: start the servers with scripts/servers.sh"
    if os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{message} (RESILIENCE_REQUIRE_SERVERS=1 forbids skipping)")
    pytest.skip(message)


def make_store(backend: str, tmp_path: Path) -> Iterator[Store]:
    """Open an isolated store of ``backend``, and clean it up afterwards."""
    isolation = f"t{uuid.uuid4().hex[:12]}"
    if backend == "memory":
        yield MemoryStore()
        return
    if backend == "sqlite":
        from resilience.storage.sqlite import SQLiteStore

        store: Store = SQLiteStore(tmp_path / "store.sqlite3")
        try:
            yield store
        finally:
            store.close()
        return
    if backend in ("redis", "fakeredis"):
        import redis

        from resilience.storage.redis import RedisStore

        if backend == "fakeredis":
            import fakeredis

            client = fakeredis.FakeRedis()
        else:
            client = redis.Redis.from_url(server_url("redis"))
        prefix = f"resilience-test:{isolation}:"
        store = RedisStore(client, prefix=prefix)
        try:
            yield store
        finally:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            store.close()
        return
    if backend == "postgres":
        import psycopg

        from resilience.storage.postgres import PostgresStore

        url = server_url("postgres")
        store = PostgresStore(url, schema=isolation)
        try:
            yield store
        finally:
            store.close()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{isolation}" CASCADE')
        return
    raise AssertionError(f"unknown backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each backend in turn."""
    yield from make_store(request.param, tmp_path)

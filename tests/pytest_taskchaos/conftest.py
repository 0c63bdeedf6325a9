"""Fixtures of the taskchaos tests: the test Redis, an unreachable Redis URL, connections made."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest


@pytest.fixture
def redis_url() -> str:
    """The test Redis URL; skipped without one or when it does not answer (failed in CI).

    CI sets ``RESILIENCE_REQUIRE_SERVERS=1``, under which a missing server fails
    the test instead of skipping it.
    """
    url = os.environ.get("RESILIENCE_TEST_REDIS_URL")
    required = os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1"
    message = "RESILIENCE_TEST_REDIS_URL is not set: start the servers with scripts/servers.sh"
    if not url:
        if required:
            pytest.fail(f"{message} (RESILIENCE_REQUIRE_SERVERS=1 forbids skipping)")
        pytest.skip(message)
    import redis  # only the tests that need the server pay for the import

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unreachable = f"Redis at RESILIENCE_TEST_REDIS_URL is unreachable: {exc}"
        if required:
            pytest.fail(unreachable)
        pytest.skip(unreachable)
    return url


@pytest.fixture
def unreachable() -> str:
    """``redis://127.0.0.1:PORT``: a local port nothing listens on (a connect there is refused)."""
    for port in range(6399, 6420):
        with socket.socket() as probe:
            probe.settimeout(2)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return f"redis://127.0.0.1:{port}"
    pytest.skip("every local port from 6399 to 6419 has a listener")


@pytest.fixture
def connects(unreachable: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The addresses any socket of the process tries to connect to (each refused at once).

    A simulation must connect to no broker and no result backend: a test using the
    ``unreachable`` URL asserts this list stays empty (a retrying client would
    otherwise wait out its reconnects before the test could fail).
    """
    attempted: list[Any] = []

    def refuse(sock: socket.socket, address: Any) -> None:
        attempted.append(address)
        raise ConnectionRefusedError(f"the test refuses connections ({address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempted

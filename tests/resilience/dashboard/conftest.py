"""Fixtures for the dashboard tests: a populated SQLite store, tokens and clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from starlette.testclient import TestClient

from resilience import (
    CircuitBreaker,
    DeadLetterQueue,
    DeadLetterRecord,
    FakeClock,
    OutcomeHistory,
    Store,
    open_store,
)
from resilience.dashboard import create_app
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


T0 = 1_700_000_000.0
OPERATOR = "operator-token-0123456789"
READER = "read-only-token-0123456789"
XSS = "<script>alert(1)</script>"


@dataclass
class Populated:
    """The store, its clock, the records by label and the replays made."""

    store: Store
    clock: FakeClock
    records: dict[str, DeadLetterRecord]
    replayed: list[str] = field(default_factory=list)

    def get(self, record_id: str) -> DeadLetterRecord:
        """The record as stored now."""
        found = DeadLetterQueue(self.store).get(record_id)
        assert found is not None
        return found


@pytest.fixture
def populated(tmp_path: Path) -> Iterator[Populated]:
    """Four dead letters, an open breaker, a closed one and retry outcomes."""
    store = open_store(f"sqlite:///{tmp_path / 'dash.sqlite3'}")
    clock = FakeClock(start=T0)
    dlq = DeadLetterQueue(store, clock=clock)
    records = {
        "net1": dlq.add(
            task_name="send_email",
            exc=ConnectionRefusedError(111, "Connection refused"),
            args=[1],
            kwargs={"password": "hunter2", "to": "a@example.com"},
            now=T0 - 2 * 3600,
        ),
        "net2": dlq.add(
            task_name="send_email",
            exc=ConnectionRefusedError(111, "Connection refused"),
            args=[2],
            now=T0 - 3600,
        ),
        "xss": dlq.add(task_name="charge", exc=ValueError(f"bad amount {XSS}"), now=T0 - 60),
        "oom": dlq.add(task_name="resize", exc=MemoryError("out of memory"), now=T0 - 30),
    }
    breaker = CircuitBreaker("payments", store=store.breakers, clock=clock, failure_threshold=1)
    breaker.record_failure(ConnectionError("down"))
    CircuitBreaker("search", store=store.breakers, clock=clock).record_failure(TimeoutError("slow"))
    history = OutcomeHistory(store.outcomes, clock=clock)
    history.record("send_email", FailureType.TRANSIENT_NETWORK, success=True, now=T0 - 3600)
    history.record("send_email", FailureType.TRANSIENT_NETWORK, success=False, now=T0 - 3600)
    history.record("send_email", FailureType.TRANSIENT_NETWORK, success=False, now=T0 - 10)
    yield Populated(store=store, clock=clock, records=records)
    store.close()


@pytest.fixture
def app_factory(populated: Populated) -> object:
    """Build an app over the populated store; keyword arguments go to create_app."""

    def build(**options: object) -> TestClient:
        options.setdefault("token", OPERATOR)
        options.setdefault("read_token", READER)
        options.setdefault("clock", populated.clock)
        if options.pop("with_replay", True) and "replay" not in options:

            def replay(record: DeadLetterRecord) -> str:
                populated.replayed.append(record.id)
                return f"task-{len(populated.replayed)}"

            options["replay"] = replay
        return TestClient(create_app(populated.store, **options))  # type: ignore[arg-type]

    return build


@pytest.fixture
def api(app_factory: object) -> TestClient:
    """An operator API client (Bearer token) with a replay."""
    client: TestClient = app_factory()  # type: ignore[operator]
    client.headers["Authorization"] = f"Bearer {OPERATOR}"
    return client


def login(client: TestClient, token: str) -> TestClient:
    """Log in through the form; the client keeps the session cookie."""
    form = client.get("/login")
    nonce = form.text.split('name="nonce" value="')[1].split('"')[0]
    answer = client.post("/login", data={"token": token, "nonce": nonce}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return client


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    return html.split('name="csrf" value="')[1].split('"', maxsplit=1)[0]

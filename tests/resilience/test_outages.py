"""Real server outages: stop Redis or PostgreSQL in the middle of a test, then restart it.

Each test runs its own private server (see ``private_servers.py``), never the shared
ones other tests use, and stops it with a real shutdown. Between the stop and the
restart the services must behave as documented: dead letters spool locally and
reach the primary exactly once afterwards; idempotency fails closed (or, opted in,
open with one warning); breakers keep protecting with local state; the retry
engine keeps deciding. Time comes from fake clocks; only the servers are real.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import socket
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from resilience.breaker import CircuitBreaker, CircuitState
from resilience.clock import FakeClock
from resilience.dead_letter import DeadLetterQueue, SpoolingDeadLetterStore
from resilience.engine import RetryEngine
from resilience.errors import CircuitOpenError, IdempotencyInProgress, StorageUnavailable
from resilience.idempotency import IdempotencyGuard, idempotent
from resilience.storage import DeadLetterFilter, DeadLetterOrder, DeadLetterRecord
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Iterator

    from resilience.storage import Store
    from resilience.storage.redis import RedisStore

T0 = 1_700_000_000.0
EVERYTHING = DeadLetterFilter()


def _load_private_servers() -> Any:
    """The private-server helpers, loaded by path (test directories are not packages)."""
    path = Path(__file__).parent / "private_servers.py"
    spec = importlib.util.spec_from_file_location("_outage_private_servers", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


servers = _load_private_servers()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[Any]:
    """A private Redis that keeps its data across a restart (append-only file)."""
    with servers.PrivateRedis(tmp_path, persistent=True) as server:
        yield server


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[Any]:
    """A private Redis without persistence: a restart comes back empty."""
    with servers.PrivateRedis(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[Any]:
    """One private PostgreSQL cluster for the whole module (initdb is the slow part)."""
    cluster = servers.PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres(postgres_cluster: Any) -> Any:
    """The module's private PostgreSQL, running (an earlier failed test may have stopped it)."""
    if not postgres_cluster.running:
        postgres_cluster.start()
    return postgres_cluster


def redis_store(server: Any, *, prefix: str | None = None) -> RedisStore:
    """A store on ``server`` opened the way applications open one (``from_url``)."""
    from resilience.storage.redis import RedisStore

    if prefix is not None:
        return RedisStore.from_url(server.url, prefix=prefix)
    return RedisStore.from_url(server.url, prefix=f"outage:{uuid.uuid4().hex[:8]}:")


@pytest.fixture(params=["redis", "postgres"])
def primary(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Store]]:
    """A private server that keeps its data across restarts, and a store on it."""
    store: Store
    if request.param == "redis":
        server = request.getfixturevalue("durable_redis")
        store = redis_store(server)
    else:
        from resilience.storage.postgres import PostgresStore

        server = request.getfixturevalue("postgres")
        schema = f"t{uuid.uuid4().hex[:12]}"
        store = PostgresStore(server.url, schema=schema, connect_timeout=5)
    try:
        yield server, store
    finally:
        store.close()


def warnings_in(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> list[str]:
    """The WARNING messages of ``logger`` that contain ``text``."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == logger
        and record.levelno == logging.WARNING
        and text in record.getMessage()
    ]


# --------------------------------------------------------------------------- dead letters


def test_dead_letters_spool_during_a_real_outage_and_reach_the_primary_exactly_once(
    primary: tuple[Any, Store], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Adds while the server is down return and spool; after restart each lands once."""
    from resilience.storage.sqlite import SQLiteStore

    server, store = primary
    spool = SQLiteStore(tmp_path / "spool.sqlite3")
    spooling = SpoolingDeadLetterStore(store.dead_letters, spool.dead_letters)
    clock = FakeClock(start=T0)
    dlq = DeadLetterQueue(spooling, clock=clock)
    returned: list[str] = []

    def add(n: int) -> None:
        record = dlq.add(
            task_name="billing.charge", exc=TimeoutError(f"gateway {n}"), kwargs={"order": n}
        )
        returned.append(record.id)
        clock.advance(1)

    try:
        for n in range(4):
            add(n)
        assert spooling.pending() == 0
        assert store.dead_letters.count(EVERYTHING) == 4

        server.stop()
        with caplog.at_level(logging.WARNING, logger="resilience.dead_letter"):
            for n in range(4, 9):
                add(n)  # returns: the record is durable in the spool
        assert spooling.pending() == 5
        assert warnings_in(caplog, "resilience.dead_letter", "spooling")
        with pytest.raises(StorageUnavailable):
            dlq.get(returned[0])  # reads need the primary, and say so

        server.start()
        add(9)  # the first add after the restart flushes the spool before inserting
        assert spooling.pending() == 0

        server.restart()  # a second outage, this time flushed explicitly
        server.stop()
        for n in range(10, 13):
            add(n)
        assert spooling.pending() == 3
        server.start()
        assert spooling.flush() == 3
        assert spooling.flush() == 0

        page = store.dead_letters.query(EVERYTHING, order=DeadLetterOrder.NEWEST, limit=1000)
        stored = [record.id for record in page.records]
        assert sorted(stored) == sorted(returned)
        assert len(stored) == len(set(stored)) == 13
        assert store.dead_letters.count(EVERYTHING) == 13
        assert spool.dead_letters.count(EVERYTHING) == 0
        kept = dlq.get(returned[6])
        assert kept is not None
        assert kept.kwargs == {"order": 6}
    finally:
        spool.close()


# --------------------------------------------------------------------------- idempotency


def test_idempotency_fails_closed_or_open_while_redis_is_down_then_protects_again(
    durable_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Down: fail-closed raises before the body, fail-open runs it with one warning; back: once."""
    store = redis_store(durable_redis)
    clock = FakeClock(start=T0)
    runs: list[tuple[str, int]] = []

    @idempotent(store=store, clock=clock, name="charge")
    def charge(order: int) -> dict[str, int]:
        runs.append(("charge", order))
        return {"order": order}

    @idempotent(store=store, clock=clock, name="notify", on_store_error="fail_open")
    def notify(order: int) -> int:
        runs.append(("notify", order))
        return order

    try:
        assert charge(1) == charge(1) == {"order": 1}
        assert notify(1) == notify(1) == 1
        assert runs == [("charge", 1), ("notify", 1)]

        durable_redis.stop()
        for order in (1, 2):  # a known key too: the store cannot vouch for it now
            with pytest.raises(StorageUnavailable) as caught:
                charge(order)
            assert caught.value.role == "idempotency"
            assert caught.value.store == store.url
        assert runs == [("charge", 1), ("notify", 1)]
        with caplog.at_level(logging.WARNING, logger="resilience.idempotency"):
            assert notify(2) == notify(2) == 2  # unprotected: the duplicate runs too
        assert runs[2:] == [("notify", 2), ("notify", 2)]
        assert len(warnings_in(caplog, "resilience.idempotency", "fail_open")) == 1

        durable_redis.start()
        runs.clear()
        assert charge(1) == {"order": 1}  # completed before the outage: still a duplicate
        assert charge(2) == charge(2) == {"order": 2}
        assert notify(3) == notify(3) == 3
        assert runs == [("charge", 2), ("notify", 3)]
    finally:
        store.close()


def test_a_completion_lost_to_the_outage_leaves_the_key_to_its_lease(
    durable_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """complete() during the outage logs and returns False; the key reopens when the lease ends."""
    store = redis_store(durable_redis)
    clock = FakeClock(start=T0)
    guard = IdempotencyGuard(store, clock=clock, lease=60)
    try:
        with (
            caplog.at_level(logging.ERROR, logger="resilience.idempotency"),
            guard.claim("invoice:7", fingerprint="fp") as claim,
        ):
            assert claim.owned
            durable_redis.stop()
            assert claim.complete("sent") is False  # the work is done: never raise now
        assert any("stays in progress" in r.getMessage() for r in caplog.records)

        durable_redis.start()
        clock.advance(30)
        with (
            pytest.raises(IdempotencyInProgress) as caught,
            guard.claim("invoice:7", fingerprint="fp"),
        ):
            pass
        assert caught.value.retry_after == pytest.approx(30.0)
        clock.advance(31)
        with guard.claim("invoice:7", fingerprint="fp") as again:
            assert again.owned
            assert again.complete("sent again")
        with guard.claim("invoice:7", fingerprint="fp") as duplicate:
            assert duplicate.duplicate
            assert duplicate.result == "sent again"
    finally:
        store.close()


# --------------------------------------------------------------------------- breakers


def test_breaker_protects_with_local_state_while_redis_is_down_then_shares_again(
    volatile_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Down: the breaker still opens (locally), one warning; back after recheck: shared again."""
    store = redis_store(volatile_redis)
    second = redis_store(volatile_redis, prefix=store.prefix)  # another worker's connection
    clock = FakeClock(start=T0)
    settings: dict[str, Any] = {"failure_threshold": 3, "reset_timeout": 600.0, "clock": clock}
    breaker = CircuitBreaker("payments", store=store.breakers, **settings)
    other_worker = CircuitBreaker("payments", store=second.breakers, **settings)
    calls: list[str] = []

    def ok() -> str:
        calls.append("ok")
        return "ok"

    def down() -> str:
        calls.append("down")
        raise ConnectionError("payments-api: connection reset by peer")

    try:
        assert breaker.call(ok) == "ok"
        volatile_redis.stop()
        with caplog.at_level(logging.WARNING, logger="resilience.storage"):
            for _ in range(3):
                with pytest.raises(ConnectionError):
                    breaker.call(down)
            assert breaker.state is CircuitState.OPEN
            for _ in range(3):
                with pytest.raises(CircuitOpenError):
                    breaker.call(ok)  # rejected without calling the dependency
        assert calls == ["ok", "down", "down", "down"]
        assert len(warnings_in(caplog, "resilience.storage", "unavailable")) == 1

        volatile_redis.start()
        caplog.clear()
        clock.advance(10)  # the shared store is not rechecked before 30 s
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)
        clock.advance(21)
        with caplog.at_level(logging.WARNING, logger="resilience.storage"):
            assert breaker.call(ok) == "ok"  # the shared (restarted, empty) state: closed
        assert warnings_in(caplog, "resilience.storage", "available again")

        for _ in range(3):
            with pytest.raises(ConnectionError):
                breaker.call(down)
        assert other_worker.state is CircuitState.OPEN  # the trip is shared again
        with pytest.raises(CircuitOpenError):
            other_worker.call(ok)
        assert calls.count("ok") == 2
    finally:
        second.close()
        store.close()


# --------------------------------------------------------------------------- retry engine


def test_retry_engine_keeps_deciding_while_its_store_is_down(
    durable_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Statistics are best effort: an outage loses counts, never a decision."""
    store = redis_store(durable_redis)
    clock = FakeClock(start=T0)
    engine = RetryEngine(store=store, clock=clock, peak_hours=None, rng=random.Random(7))
    failure = ConnectionError("crm: connection reset by peer")
    try:
        before = engine.decide("sync_contacts", failure, 1, dependency="crm")
        assert before.retry
        durable_redis.stop()
        with caplog.at_level(logging.WARNING):
            during = engine.decide("sync_contacts", failure, 1, dependency="crm")
            engine.record_outcome(
                "sync_contacts",
                success=True,
                retry_count=2,
                failure_type=during.classification.failure_type,
                dependency="crm",
            )
        assert during.retry
        assert during.delay is not None
        assert during.delay > 0
        assert during.classification.failure_type is FailureType.TRANSIENT_NETWORK
        assert during.breaker_state is CircuitState.CLOSED
        assert warnings_in(caplog, "resilience.history", "not counted")
        assert warnings_in(caplog, "resilience.history", "unavailable")

        durable_redis.start()
        engine.record_outcome(
            "sync_contacts",
            success=True,
            retry_count=2,
            failure_type=FailureType.TRANSIENT_NETWORK,
        )
        statistics = engine.statistics("sync_contacts")
        # The failure from before the outage and the success after it; the outage's are lost.
        assert (statistics.failures, statistics.successes) == (1, 1)
    finally:
        store.close()


# --------------------------------------------------------------------------- client retries


def test_a_redis_store_from_a_url_does_not_resend_a_failed_command() -> None:
    """A connection lost mid-command fails the call after one attempt: no hidden retries.

    redis-py's ``Redis(...)`` constructor retries a failed command 10 times with
    backoff (seconds of blocking per call while Redis is down, and writes sent
    twice); the client ``from_url`` builds must not, so the caller decides.
    """
    from resilience.storage.redis import RedisStore

    accepted: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()  # a server that dies as each command arrives

    threading.Thread(target=hang_up, daemon=True).start()
    port = listener.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(StorageUnavailable):
            store.dead_letters.add(
                DeadLetterRecord(id="dl-1", task_name="t", first_failed_at=T0, last_failed_at=T0)
            )
        assert accepted == [1]
    finally:
        store.close()
        listener.close()

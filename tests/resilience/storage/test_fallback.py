"""Breakers keep protecting their dependency while the shared breaker store is down."""

from __future__ import annotations

import logging

import pytest

from resilience.breaker import CircuitBreaker
from resilience.clock import FakeClock
from resilience.errors import CircuitOpenError, StorageUnavailable
from resilience.storage import BreakerRecord, CircuitState, MemoryBreakerStore
from resilience.storage.fallback import FallbackBreakerStore


class FlakyStore:
    """A shared breaker store whose server can be switched off and on."""

    def __init__(self) -> None:
        self.inner = MemoryBreakerStore()
        self.up = True

    def _check(self) -> None:
        if not self.up:
            raise StorageUnavailable("connection refused", store="redis://cache:6379/0")

    def load(self, name: str) -> BreakerRecord | None:
        self._check()
        return self.inner.load(name)

    def compare_and_set(self, name: str, expected: int | None, record: BreakerRecord) -> bool:
        self._check()
        return self.inner.compare_and_set(name, expected, record)


def refuse() -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def test_breaker_trips_on_local_state_during_a_store_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the store down the breaker still opens, and says once that it went local."""
    shared, clock = FlakyStore(), FakeClock(start=1_000)
    breaker = CircuitBreaker("payments", failure_threshold=2, store=shared, clock=clock)
    shared.up = False
    with caplog.at_level(logging.WARNING, logger="resilience.storage"):
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                breaker.call(refuse)
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "not called")
    warnings = [r for r in caplog.records if "local in-process state" in r.getMessage()]
    assert len(warnings) == 1
    assert "redis://cache:6379/0" in warnings[0].getMessage()


def test_shared_state_is_used_again_when_the_store_returns() -> None:
    """After the outage (and the recheck interval) the shared record is the truth again."""
    shared, clock = FlakyStore(), FakeClock(start=1_000)
    store = FallbackBreakerStore(shared, recheck=30, clock=clock)
    breaker = CircuitBreaker("payments", failure_threshold=1, store=store, clock=clock)
    shared.up = False
    with pytest.raises(ConnectionRefusedError):
        breaker.call(refuse)
    assert store.degraded
    assert breaker.state is CircuitState.OPEN
    shared.up = True
    clock.advance(10)
    assert breaker.state is CircuitState.OPEN  # still local until the recheck is due
    clock.advance(25)
    assert breaker.state is CircuitState.CLOSED  # the shared store never saw the failure
    assert not store.degraded


def test_raise_mode_lets_the_outage_through() -> None:
    """on_store_error='raise' surfaces StorageUnavailable to the caller."""
    shared = FlakyStore()
    breaker = CircuitBreaker("payments", store=shared, on_store_error="raise")
    shared.up = False
    with pytest.raises(StorageUnavailable):
        breaker.call(lambda: "x")

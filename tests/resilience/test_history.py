"""Tests for the retry outcome history."""

from __future__ import annotations

import logging

import pytest

from resilience.clock import FakeClock
from resilience.errors import ConfigurationError, StorageUnavailable
from resilience.history import OutcomeHistory
from resilience.storage import MemoryStore, OutcomeCounts
from resilience.taxonomy import FailureType

DB = FailureType.TRANSIENT_DATABASE
NET = FailureType.TRANSIENT_NETWORK


def test_rates_per_task_and_type() -> None:
    """Outcomes are counted per (task, type) and summed per task."""
    history = OutcomeHistory(clock=FakeClock(start=1_000_000))
    for success in (True, True, True, False):
        history.record("charge", DB, success=success)
    history.record("charge", NET, success=False)
    history.record("other", DB, success=True)
    assert history.get("charge", DB).success_rate == 0.75
    stats = history.statistics("charge")
    assert set(stats.by_type) == {DB, NET}
    assert (stats.successes, stats.failures, stats.total) == (3, 2, 5)
    assert stats.success_rate == 0.6


def test_unknown_rate_is_none_not_zero() -> None:
    """With nothing recorded the rate is unknown (None), not 0 %."""
    history = OutcomeHistory(clock=FakeClock())
    assert history.get("charge", DB).success_rate is None
    assert history.statistics("charge").success_rate is None


def test_only_the_window_counts() -> None:
    """Outcomes older than the window fall out, so a recovered dependency is trusted again."""
    clock = FakeClock(start=1_000_000)
    history = OutcomeHistory(window=3600, clock=clock)
    for _ in range(5):
        history.record("t", DB, success=False)
    clock.advance(7200)
    history.record("t", DB, success=True)
    assert history.get("t", DB).success_rate == 1.0


def test_history_is_shared_through_a_store() -> None:
    """Two histories on one store (two workers) see each other's outcomes."""
    store, clock = MemoryStore(), FakeClock(start=1_000_000)
    worker_a = OutcomeHistory(store.outcomes, clock=clock)
    worker_b = OutcomeHistory(store.outcomes, clock=clock)
    worker_a.record("t", DB, success=True)
    worker_b.record("t", DB, success=False)
    assert worker_a.get("t", DB).total == worker_b.get("t", DB).total == 2


def test_window_must_be_positive() -> None:
    """A zero window is rejected with the field named."""
    with pytest.raises(ConfigurationError, match="window"):
        OutcomeHistory(window=0)


class DownStore:
    """An outcome store whose server is unreachable."""

    def add(self, task_name: str, failure_type: str, *, success: bool, now: float) -> None:
        raise StorageUnavailable("refused", store="redis://cache:6379/0", role="outcomes")

    def counts(self, task_name: str, *, since: float) -> dict[str, OutcomeCounts]:
        raise StorageUnavailable("refused", store="redis://cache:6379/0", role="outcomes")


def test_statistics_are_best_effort_when_the_store_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unreachable store costs the history, never the caller: warnings, no exception."""
    history = OutcomeHistory(DownStore(), clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="resilience.history"):
        history.record("t", DB, success=True)
        assert history.get("t", DB).total == 0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("retry outcome of t not counted: refused")
    assert messages[1].startswith("retry history of t unavailable, not adapting: refused")

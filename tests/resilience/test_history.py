"""Tests for the retry outcome history."""

from __future__ import annotations

import pytest

from resilience.errors import ConfigurationError
from resilience.history import OutcomeHistory
from resilience.taxonomy import FailureType

DB = FailureType.TRANSIENT_DATABASE
NET = FailureType.TRANSIENT_NETWORK


def test_rates_per_task_and_type() -> None:
    """Outcomes are counted per (task, type) and summed per task."""
    history = OutcomeHistory()
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
    history = OutcomeHistory()
    assert history.get("charge", DB).success_rate is None
    assert history.statistics("charge").success_rate is None


def test_only_the_last_window_counts() -> None:
    """Old outcomes fall out of the window so a recovered dependency is trusted again."""
    history = OutcomeHistory(window=3)
    for success in (False, False, False, True, True, True):
        history.record("t", DB, success=success)
    assert history.get("t", DB).success_rate == 1.0


def test_window_must_be_positive() -> None:
    """A zero window is rejected with the field named."""
    with pytest.raises(ConfigurationError, match="window"):
        OutcomeHistory(window=0)

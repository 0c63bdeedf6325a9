"""Tests for the retry budget (token bucket over first attempts)."""

from __future__ import annotations

import pytest

from resilience.budget import RetryBudget
from resilience.clock import FakeClock
from resilience.errors import ConfigurationError


def test_retries_limited_to_ratio_of_first_attempts() -> None:
    """Ten first attempts at ratio 0.2 with no floor allow exactly two retries."""
    budget = RetryBudget(ratio=0.2, window=60, min_retries=0, clock=FakeClock())
    for _ in range(10):
        budget.record_first_attempt("charge")
    granted = [budget.try_acquire("charge") for _ in range(5)]
    assert granted == [True, True, False, False, False]
    state = budget.state("charge")
    assert (state.first_attempts, state.retries, state.remaining) == (10, 2, 0.0)


def test_min_retries_lets_a_quiet_task_retry() -> None:
    """A task with no traffic still gets min_retries retries per window."""
    budget = RetryBudget(ratio=0.2, window=60, min_retries=3, clock=FakeClock())
    assert [budget.try_acquire("quiet") for _ in range(4)] == [True, True, True, False]


def test_window_slides_and_budget_refills() -> None:
    """Retries spent leave the window after it passes, so the budget refills."""
    clock = FakeClock(start=1_000.0)
    budget = RetryBudget(ratio=0.0, window=60, min_retries=1, clock=clock)
    assert budget.try_acquire("t") is True
    assert budget.try_acquire("t") is False
    clock.advance(61)
    assert budget.try_acquire("t") is True


def test_budgets_are_per_task() -> None:
    """Spending one task's budget leaves another task's untouched."""
    budget = RetryBudget(ratio=0.0, window=60, min_retries=1, clock=FakeClock())
    assert budget.try_acquire("a") is True
    assert budget.try_acquire("a") is False
    assert budget.try_acquire("b") is True


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"window": 0}, "window"),
        ({"window": float("inf")}, "window"),
        ({"min_retries": -1}, "min_retries"),
        ({"min_retries": 1.5}, "min_retries"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], key: str) -> None:
    """Invalid settings raise ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError, match=key) as info:
        RetryBudget(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key

"""Tests for fault schedules: conditions, composition, validation, determinism."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_taskchaos.schedules import (
    CallInfo,
    Schedule,
    all_of,
    always,
    args_match,
    every,
    first,
    only_first_attempts,
    only_retries,
    probability,
    queue,
    task,
    window,
)
from resilience.errors import ConfigurationError


def _call(**overrides: object) -> CallInfo:
    fields: dict[str, object] = {"task_name": "payments.charge"}
    fields.update(overrides)
    return CallInfo(**fields)  # type: ignore[arg-type]


def _fires(schedule: Schedule, calls: int, *, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [i for i in range(1, calls + 1) if schedule.should_fire(_call(call_index=i), rng)]


def test_always_fires_on_every_call() -> None:
    """always() fires whatever the call."""
    assert _fires(always(), 5) == [1, 2, 3, 4, 5]
    assert always().describe() == "always()"


@given(n=st.integers(1, 50), calls=st.integers(0, 120))
def test_first_fires_exactly_n_times(n: int, calls: int) -> None:
    """first(n) fires on calls 1..n and never after."""
    assert _fires(first(n), calls) == list(range(1, min(n, calls) + 1))


@given(n=st.integers(1, 20), calls=st.integers(0, 120))
def test_every_fires_on_multiples(n: int, calls: int) -> None:
    """every(n) fires on calls n, 2n, 3n, ..."""
    assert _fires(every(n), calls) == list(range(n, calls + 1, n))


@given(p=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_probability_is_reproducible_for_a_seed(p: float, seed: int) -> None:
    """The same seed gives the same firing pattern."""
    assert _fires(probability(p), 60, seed=seed) == _fires(probability(p), 60, seed=seed)


def test_probability_follows_the_rate() -> None:
    """probability(p) fires about p of the time, 0 never and 1 always."""
    assert len(_fires(probability(0.3), 10_000, seed=7)) == pytest.approx(3000, abs=200)
    assert _fires(probability(0.0), 100) == []
    assert len(_fires(probability(1.0), 100)) == 100


def test_probability_needs_a_decision_source() -> None:
    """A random schedule refuses to decide without a seeded source."""
    with pytest.raises(ConfigurationError, match="seeded") as info:
        probability(0.5).should_fire(_call())
    assert info.value.key == "rng"
    assert always().should_fire(_call()) is True


@given(
    t0=st.floats(0, 1e6),
    length=st.floats(1e-3, 1e6),
    now=st.floats(0, 3e6),
)
def test_window_fires_only_inside_half_open_interval(t0: float, length: float, now: float) -> None:
    """window(t0, t1) fires exactly when t0 <= now < t1."""
    t1 = t0 + length
    if t1 <= t0:
        return
    fired = window(t0, t1).should_fire(_call(now=now))
    assert fired == (t0 <= now < t1)


def test_window_accepts_timedelta_and_open_end() -> None:
    """An outage from minute 5 to minute 25, and one that never ends."""
    outage = window(timedelta(minutes=5), timedelta(minutes=25))
    assert not outage.should_fire(_call(now=299.9))
    assert outage.should_fire(_call(now=300.0))
    assert not outage.should_fire(_call(now=1500.0))
    assert window(10, math.inf).should_fire(_call(now=1e12))


def test_attempt_filters() -> None:
    """only_retries fires on retries only, only_first_attempts on first attempts only."""
    assert only_retries().should_fire(_call(retries=2))
    assert not only_retries().should_fire(_call(retries=0))
    assert only_first_attempts().should_fire(_call(retries=0))
    assert not only_first_attempts().should_fire(_call(retries=1))


def test_task_and_queue_filters_use_globs() -> None:
    """task() and queue() match names with fnmatch patterns."""
    assert task("payments.*").should_fire(_call())
    assert not task("emails.*").should_fire(_call())
    assert queue("high*").should_fire(_call(queue="high-priority"))
    assert not queue("high*").should_fire(_call(queue="low"))
    assert not queue("*").should_fire(_call(queue=None))


def test_args_predicate() -> None:
    """args_match() receives the task's args and kwargs."""
    big = args_match(lambda args, kwargs: int(kwargs.get("amount", 0)) > 100)  # type: ignore[call-overload]
    assert big.should_fire(_call(kwargs={"amount": 500}))
    assert not big.should_fire(_call(kwargs={"amount": 5}))
    positional = args_match(lambda args, _kwargs: args[:1] == ("vip",))
    assert positional.should_fire(_call(args=("vip", 1)))


def test_composition_requires_every_condition() -> None:
    """a & b fires only when both hold; all_of() does the same."""
    combined = first(2) & task("payments.*") & only_first_attempts()
    assert combined.should_fire(_call(call_index=2))
    assert not combined.should_fire(_call(call_index=3))
    assert not combined.should_fire(_call(call_index=1, retries=1))
    assert not combined.should_fire(_call(call_index=1, task_name="emails.send"))
    assert all_of(first(2), task("payments.*")).describe() == "first(2) & task('payments.*')"
    assert all_of() == always()


def test_filters_run_before_random_draws() -> None:
    """A probability draws only for calls passing the filters, so other tasks do not shift it."""
    filtered = probability(0.5) & task("payments.*")
    assert filtered.describe().startswith("task(")
    rng = random.Random(3)
    reference = random.Random(3)
    assert not filtered.should_fire(_call(task_name="emails.send"), rng)
    assert rng.random() == reference.random()


@given(seed=st.integers(0, 2**32 - 1), rate=st.floats(0, 1))
def test_composed_random_schedule_is_deterministic(seed: int, rate: float) -> None:
    """Composed schedules with probabilities repeat exactly under the same seed."""
    schedule = probability(rate) & only_first_attempts() & window(0, 50)

    def run() -> list[bool]:
        rng = random.Random(seed)
        return [
            schedule.should_fire(_call(call_index=i, now=float(i), retries=i % 2), rng)
            for i in range(1, 80)
        ]

    assert run() == run()


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: first(0), "times"),
        (lambda: first(-1), "times"),
        (lambda: first(True), "times"),
        (lambda: every(0), "every"),
        (lambda: every(2.5), "every"),  # type: ignore[arg-type]
        (lambda: probability(1.5), "rate"),
        (lambda: probability(-0.1), "rate"),
        (lambda: probability(float("nan")), "rate"),
        (lambda: window(10, 10), "window"),
        (lambda: window(20, 10), "window"),
        (lambda: window(-1, 10), "window"),
        (lambda: window("a", 10), "window"),  # type: ignore[arg-type]
        (lambda: task(""), "task"),
        (lambda: queue(3), "queue"),  # type: ignore[arg-type]
        (lambda: args_match(5), "args"),  # type: ignore[arg-type]
        (lambda: all_of(first(1), "x"), "schedule"),  # type: ignore[arg-type]
    ],
)
def test_invalid_schedules_name_the_parameter(make: object, key: str) -> None:
    """Bad counts, rates, windows and filters raise ConfigurationError naming the parameter."""
    with pytest.raises(ConfigurationError) as info:
        make()  # type: ignore[operator]
    assert info.value.key == key
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"retries": -1}, "retries"),
        ({"call_index": 0}, "call_index"),
        ({"now": float("nan")}, "now"),
        ({"task_name": None}, "task_name"),
    ],
)
def test_call_info_validates(fields: dict[str, object], key: str) -> None:
    """CallInfo rejects negative retries, call indices below 1, non-finite times, bad names."""
    with pytest.raises(ConfigurationError) as info:
        _call(**fields)
    assert info.value.key == key


def test_error_message_shows_the_value() -> None:
    """The error message quotes the rejected value."""
    with pytest.raises(ConfigurationError, match=r"rate must be a number in \[0, 1\], got 1.5"):
        probability(1.5)

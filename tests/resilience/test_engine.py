"""Tests for the retry engine's decisions."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from resilience.breaker import CircuitState
from resilience.budget import RetryBudget
from resilience.clock import FakeClock
from resilience.engine import Priority, RetryEngine
from resilience.errors import ConfigurationError
from resilience.policy import DEFAULT_POLICIES, BreakerSettings, RetryPolicy, default_policy
from resilience.taxonomy import Classification, FailureType, profile

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

DB = FailureType.TRANSIENT_DATABASE
RATE = FailureType.TRANSIENT_RATE_LIMIT
NET = FailureType.TRANSIENT_NETWORK

# 10 s, 20 s, 40 s, 80 s: exact numbers, so adaptations are visible.
EXACT = RetryPolicy(
    max_retries=4, initial_delay=10, strategy="exponential", factor=2, max_delay=1000, jitter="none"
)
NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
NIGHT = datetime(2026, 6, 1, 2, 0, tzinfo=UTC).timestamp()
SPREAD_CAP = 300.0  # the most RetryEngine.spread adds to a shared wait


def fixed(
    failure_type: FailureType, *, retry_after: float | None = None
) -> Callable[[BaseException, Mapping[str, object] | None], Classification]:
    """A classifier that files every exception under ``failure_type``."""
    prof = profile(failure_type)

    def classifier(
        exc: BaseException, context: Mapping[str, object] | None = None
    ) -> Classification:
        return Classification(
            failure_type=failure_type,
            confidence=1.0,
            remediation=prof.remediation,
            remediation_details=prof.remediation_details,
            retry_recommended=prof.retry_recommended,
            retry_delay_seconds=prof.retry_delay_seconds,
            retry_after=retry_after,
            alert_level=prof.alert_level,
            evidence=f"test classifier: {failure_type}",
        )

    return classifier


def engine(failure_type: FailureType = DB, **kwargs: object) -> RetryEngine:
    """An engine with exact (jitter-free) policies and a fake clock at a quiet hour."""
    kwargs.setdefault("clock", FakeClock(start=NIGHT))
    kwargs.setdefault("policies", {failure_type: EXACT})
    kwargs.setdefault("classifier", fixed(failure_type))
    return RetryEngine(**kwargs)  # type: ignore[arg-type]


def test_retries_follow_the_policy_then_stop() -> None:
    """Retries 1..max get the policy's delays; the next failure gives up with delay None."""
    e = engine()
    delays = [e.decide("charge", RuntimeError(), n).delay for n in range(4)]
    assert delays == [10, 20, 40, 80]
    last = e.decide("charge", RuntimeError(), 4)
    assert (last.retry, last.delay, last.eta) == (False, None, None)
    assert "retries exhausted (4 of 4 made)" in last.reason


def test_decision_carries_eta_classification_and_policy() -> None:
    """A decision says when, why, what failed and which policy applied."""
    e = engine()
    d = e.decide("charge", RuntimeError(), 1)
    assert d.retry
    assert d.retry_number == 2
    assert d.eta == NIGHT + 20
    assert d.classification.failure_type is DB
    assert d.policy == EXACT
    assert d.reason == "TRANSIENT_DATABASE: retry 2 of 4 in 20s"
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.retry = False  # type: ignore[misc]


def test_permanent_failures_are_not_retried() -> None:
    """A type whose profile says no retry gives up at once with the remediation."""
    e = engine(FailureType.PERMANENT_VALIDATION, policies={})
    d = e.decide("charge", ValueError("bad amount"), 0)
    assert not d.retry
    assert d.delay is None
    assert "PERMANENT_VALIDATION is not retried" in d.reason
    assert profile(FailureType.PERMANENT_VALIDATION).remediation_details in d.reason


def test_real_classifier_drives_the_default_engine() -> None:
    """With no overrides, a refused connection retries and a ValueError does not."""
    e = RetryEngine(clock=FakeClock(start=NIGHT), rng=random.Random(1))
    refused = e.decide("t", ConnectionRefusedError(111, "Connection refused"), 0)
    assert refused.retry
    assert refused.classification.failure_type is NET
    low, high = default_policy(NET).envelope(1)
    assert refused.delay is not None
    assert low <= refused.delay <= high
    assert not e.decide("t", ValueError("invalid order id 14290"), 0).retry


def test_high_success_history_shortens_delays_without_drift() -> None:
    """Over 80 % past success -> delays x0.7, the same on every call (no compounding)."""
    e = engine()
    for _ in range(10):
        e.record_outcome("charge", success=True, retry_count=1, failure_type=DB)
    first = e.decide("charge", RuntimeError(), 0)
    for _ in range(5):
        again = e.decide("charge", RuntimeError(), 0)
    assert first.delay == again.delay == pytest.approx(7.0)
    assert "delays x0.7 as 100% of 10 past retries succeeded" in first.reason
    assert e.policy_for(DB) == EXACT


def test_low_success_history_waits_longer_and_gives_up_sooner() -> None:
    """Under 30 % past success -> delays x1.5 and one retry fewer."""
    e = engine()
    for _ in range(10):
        e.record_outcome("charge", success=False, retry_count=1, failure_type=DB)
    d = e.decide("charge", RuntimeError(), 0)
    assert d.delay == pytest.approx(15.0)
    assert d.policy.max_retries == 3
    assert not e.decide("charge", RuntimeError(), 3).retry


def test_low_success_never_drops_below_one_retry() -> None:
    """A retryable type keeps at least one retry however bad its history."""
    one = dataclasses.replace(EXACT, max_retries=1)
    e = engine(policies={DB: one})
    for _ in range(20):
        e.record_outcome("charge", success=False, retry_count=1, failure_type=DB)
    assert e.decide("charge", RuntimeError(), 0).retry


def test_history_needs_ten_outcomes() -> None:
    """Nine outcomes are not enough to adapt."""
    e = engine()
    for _ in range(9):
        e.record_outcome("charge", success=True, retry_count=1, failure_type=DB)
    assert e.decide("charge", RuntimeError(), 0).delay == 10


def test_default_policies_are_never_mutated() -> None:
    """Adapting under load many times leaves the shared defaults exactly as they were."""
    before = dict(DEFAULT_POLICIES)
    e = RetryEngine(clock=FakeClock(start=NIGHT), queue_depth=lambda q: 500, classifier=fixed(DB))
    for _ in range(50):
        e.decide("charge", RuntimeError(), 0)
    assert dict(DEFAULT_POLICIES) == before


def test_queue_load_stretches_delays() -> None:
    """A queue deeper than the threshold makes delays x1.3; the queue name is passed on."""
    seen: list[str | None] = []

    def depth(queue: str | None) -> int:
        seen.append(queue)
        return 150 if queue == "busy" else 5

    e = engine(queue_depth=depth)
    assert e.decide("t", RuntimeError(), 0, queue="busy").delay == pytest.approx(13.0)
    assert e.decide("t", RuntimeError(), 0, queue="idle").delay == 10
    assert seen == ["busy", "idle"]


def test_retry_after_wins_and_is_capped() -> None:
    """A Retry-After replaces the policy delay: at least it, spread by half, up to the cap."""
    e = engine(RATE, classifier=fixed(RATE, retry_after=42), policies={RATE: EXACT})
    d = e.decide("sync", RuntimeError(), 0)
    assert d.delay is not None
    assert 42 <= d.delay <= 42 + 21
    assert "as the server asked (Retry-After 42s + " in d.reason
    assert d.eta == NIGHT + d.delay
    capped = engine(RATE, classifier=fixed(RATE, retry_after=10**6), max_retry_after=3600)
    d = capped.decide("sync", RuntimeError(), 0)
    assert d.delay == 3600
    assert "capped at 3600s" in d.reason


def test_retry_after_waits_are_spread_not_synchronised() -> None:
    """50 tasks told Retry-After 30 come back over the following 15 s, not in one instant."""
    e = engine(
        RATE,
        classifier=fixed(RATE, retry_after=30),
        policies={RATE: dataclasses.replace(EXACT, max_retries=100)},
        rng=random.Random(5),
    )
    delays = [e.decide(f"sync-{n}", RuntimeError(), 0).delay for n in range(50)]
    assert all(d is not None and 30.0 <= d <= 45.0 for d in delays)
    assert len(set(delays)) == 50
    assert len({round(d or 0) for d in delays}) > 8, "over many seconds, not one"
    again = engine(
        RATE,
        classifier=fixed(RATE, retry_after=30),
        policies={RATE: dataclasses.replace(EXACT, max_retries=100)},
        rng=random.Random(5),
    )
    assert [again.decide(f"sync-{n}", RuntimeError(), 0).delay for n in range(50)] == delays


def test_a_spread_retry_after_stays_under_max_retry_after() -> None:
    """The spread never pushes a retry past max_retry_after; Retry-After 0 stays 0."""
    e = engine(RATE, classifier=fixed(RATE, retry_after=30), max_retry_after=35)
    delays = [e.decide("sync", RuntimeError(), 0).delay for _ in range(3)]
    assert all(d is not None and 30.0 <= d <= 35.0 for d in delays)
    now = engine(RATE, classifier=fixed(RATE, retry_after=0))
    d = now.decide("sync", RuntimeError(), 0)
    assert d.delay == 0
    assert d.reason.endswith("(Retry-After 0s)")


def test_budget_exhaustion_stops_retries() -> None:
    """When the retry budget is spent the decision is no retry, and says why."""
    clock = FakeClock(start=NIGHT)
    budget = RetryBudget(ratio=0.0, window=60, min_retries=2, clock=clock)
    e = engine(budget=budget, clock=clock)
    assert [e.decide("t", RuntimeError(), 0).retry for _ in range(3)] == [True, True, False]
    d = e.decide("t", RuntimeError(), 0)
    assert "retry budget exhausted for t" in d.reason


def test_first_attempts_fill_the_budget() -> None:
    """Successful first attempts recorded via record_outcome earn retries."""
    clock = FakeClock(start=NIGHT)
    budget = RetryBudget(ratio=0.5, window=60, min_retries=0, clock=clock)
    e = engine(budget=budget, clock=clock)
    for _ in range(3):
        e.record_outcome("t", success=True, retry_count=0)
    # Failed first attempts earn tokens too: the n-th failure sees 3 + n first attempts,
    # so 0.5 * (3 + n) retries are allowed; the fourth retry (4 > 3.5) is refused.
    granted = [e.decide("t", RuntimeError(), 0).retry for _ in range(4)]
    assert granted == [True, True, True, False]


def test_open_breaker_pushes_retry_to_next_probe() -> None:
    """Once the dependency's breaker opens, the retry waits at least until its probe."""
    clock = FakeClock(start=NIGHT)
    policy = dataclasses.replace(EXACT, max_retries=10)
    e = engine(
        FailureType.EXTERNAL_API_DOWN,
        clock=clock,
        policies={FailureType.EXTERNAL_API_DOWN: policy},
        classifier=fixed(FailureType.EXTERNAL_API_DOWN),
    )
    breaker = e.breaker("payments-api")
    for _ in range(breaker.failure_threshold - 1):
        d = e.decide("charge", ConnectionResetError(), 0, dependency="payments-api")
        assert d.breaker_state is CircuitState.CLOSED
        assert d.delay == 10
    d = e.decide("charge", ConnectionResetError(), 0, dependency="payments-api")
    assert d.breaker_state is CircuitState.OPEN
    assert d.delay == pytest.approx(breaker.seconds_until_probe())
    assert d.delay is not None
    assert d.delay > 10
    assert "waits for breaker 'payments-api' to probe" in d.reason


def test_success_closes_the_loop_through_record_outcome() -> None:
    """record_outcome with a dependency feeds a success to its breaker and history."""
    e = engine()
    e.record_outcome("charge", success=True, retry_count=2, failure_type=DB, dependency="db")
    stats = e.statistics("charge")
    assert stats.by_type[DB].successes == 1
    assert e.breaker("db").state is CircuitState.CLOSED


def test_low_priority_retry_in_peak_hours_waits_for_off_peak() -> None:
    """A low-priority retry due at 10:30 local waits for 18:00 local, within 5 min after it."""
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 6, 1, 10, 29, 50, tzinfo=paris).timestamp()
    e = engine(clock=FakeClock(start=now), timezone="Europe/Paris")
    d = e.decide("report", RuntimeError(), 0, priority="low")
    off_peak = datetime(2026, 6, 1, 18, 0, tzinfo=paris).timestamp()
    assert d.eta is not None
    assert off_peak <= d.eta <= off_peak + SPREAD_CAP
    assert d.eta == now + d.delay
    assert "deferred to off-peak 2026-06-01 18:00 CEST + " in d.reason
    assert "s spread (low priority, peak hours 09:00-18:00 Europe/Paris)" in d.reason
    normal = e.decide("report", RuntimeError(), 0, priority=Priority.NORMAL)
    assert normal.delay == 10


def test_deferred_retries_are_spread_after_the_off_peak_start() -> None:
    """100 low-priority failures from 10:00 to 11:40 return over 18:00-18:05, each apart."""
    paris = ZoneInfo("Europe/Paris")
    ten = datetime(2026, 6, 1, 10, 0, tzinfo=paris).timestamp()
    off_peak = datetime(2026, 6, 1, 18, 0, tzinfo=paris).timestamp()

    def etas(seed: int) -> list[float]:
        clock = FakeClock(start=ten)
        e = engine(clock=clock, timezone="Europe/Paris", rng=random.Random(seed))
        found = []
        for n in range(100):
            d = e.decide(f"report-{n}", RuntimeError(), 0, priority="low")
            assert d.eta is not None
            found.append(d.eta)
            clock.advance(60)
        return found

    spread = etas(11)
    assert all(off_peak <= eta <= off_peak + SPREAD_CAP for eta in spread)
    assert len(set(spread)) == 100, "no two deferred retries share an ETA"
    assert max(spread) - min(spread) > SPREAD_CAP / 2, "over minutes, not one second"
    assert etas(11) == spread, "the engine's seeded generator makes it reproducible"


def test_deferral_keeps_minutes() -> None:
    """A retry due at 17:45 waits 15 minutes for 18:00 (plus at most 5 of spread)."""
    now = datetime(2026, 6, 1, 17, 44, 50, tzinfo=UTC).timestamp()
    e = engine(clock=FakeClock(start=now))
    d = e.decide("report", RuntimeError(), 0, priority="low")
    assert d.delay is not None
    assert 15 * 60 + 10 <= d.delay <= 15 * 60 + 10 + SPREAD_CAP


def test_a_short_deferral_is_spread_by_at_most_half_its_wait() -> None:
    """A retry due 10 s before the peak ends is spread over 5 s, not 5 minutes."""
    now = datetime(2026, 6, 1, 17, 59, 40, tzinfo=UTC).timestamp()
    e = engine(clock=FakeClock(start=now))
    d = e.decide("report", RuntimeError(), 0, priority="low")
    assert d.delay is not None
    assert 20 <= d.delay <= 30


def test_peak_window_may_wrap_midnight() -> None:
    """With peak hours 22-06, a retry due at 23:00 waits until 06:00 the next day."""
    now = datetime(2026, 6, 1, 22, 59, 50, tzinfo=UTC).timestamp()
    e = engine(clock=FakeClock(start=now), peak_hours=(22, 6))
    d = e.decide("report", RuntimeError(), 0, priority="low")
    six = datetime(2026, 6, 2, 6, 0, tzinfo=UTC).timestamp()
    assert d.eta is not None
    assert six <= d.eta <= six + SPREAD_CAP


def test_no_peak_hours_defers_nothing() -> None:
    """peak_hours=None: a low-priority retry at noon keeps its delay."""
    e = engine(clock=FakeClock(start=NOON), peak_hours=None)
    assert e.decide("report", RuntimeError(), 0, priority="low").delay == 10


def test_off_peak_retry_is_not_deferred() -> None:
    """A low-priority retry due outside peak hours keeps its delay."""
    e = engine(clock=FakeClock(start=NIGHT))
    assert e.decide("report", RuntimeError(), 0, priority="low").delay == 10


def test_critical_may_not_be_deferred() -> None:
    """Configuring critical retries to be deferred is refused."""
    with pytest.raises(ConfigurationError, match="critical") as info:
        RetryEngine(defer_priorities=("low", "critical"))
    assert info.value.key == "defer_priorities"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"peak_hours": (9, 9)}, "peak_hours"),
        ({"peak_hours": (9, 24)}, "peak_hours"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"max_retry_after": -1}, "max_retry_after"),
    ],
)
def test_bad_engine_settings_name_the_field(kwargs: dict[str, object], key: str) -> None:
    """Invalid engine settings raise ConfigurationError naming the setting."""
    with pytest.raises(ConfigurationError) as info:
        RetryEngine(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key


def test_context_with_none_values_does_not_crash() -> None:
    """None and odd context values reach the classifier without breaking the decision."""
    e = RetryEngine(clock=FakeClock(start=NIGHT))
    d = e.decide(
        "t", TimeoutError("timed out"), 0, context={"task_name": None, "queue": None, "x": object()}
    )
    assert d.classification.failure_type in set(FailureType)


def test_negative_retry_count_is_refused() -> None:
    """A negative retry count is a caller bug and named as such."""
    with pytest.raises(ConfigurationError, match="retry_count"):
        engine().decide("t", RuntimeError(), -1)


def test_engines_on_one_store_share_breakers_and_history() -> None:
    """Two engines (two workers) on one store trip one breaker and learn from each other."""
    from resilience.storage import MemoryStore

    store, clock = MemoryStore(), FakeClock(start=NIGHT)
    api_down = FailureType.EXTERNAL_API_DOWN
    policies = {
        api_down: dataclasses.replace(
            EXACT, breaker=BreakerSettings(failure_threshold=3, reset_timeout=600)
        )
    }
    worker_a = engine(
        api_down, store=store, clock=clock, classifier=fixed(api_down), policies=policies
    )
    worker_b = engine(
        api_down, store=store, clock=clock, classifier=fixed(api_down), policies=policies
    )
    # Same settings on both workers (from the configured policy): 3 failures trip it.
    threshold = worker_a.breaker("payments-api").failure_threshold
    assert worker_b.breaker("payments-api").failure_threshold == threshold == 3
    for n in range(threshold):
        worker = worker_a if n % 2 else worker_b
        worker.decide("charge", ConnectionResetError(), 0, dependency="payments-api")
    assert worker_a.breaker("payments-api").state is CircuitState.OPEN
    assert worker_b.breaker("payments-api").state is CircuitState.OPEN
    for _ in range(10):
        worker_a.record_outcome("charge", success=True, retry_count=1, failure_type=api_down)
    assert worker_b.statistics("charge").by_type[api_down].successes == 10


def test_a_breaker_asked_for_by_name_takes_the_configured_api_down_policy() -> None:
    """breaker(name) and record_outcome build breakers from the configured EXTERNAL_API_DOWN."""
    api_down = FailureType.EXTERNAL_API_DOWN
    tuned = dataclasses.replace(
        default_policy(api_down),
        breaker=BreakerSettings(failure_threshold=10, reset_timeout=60),
    )
    e = RetryEngine(policies={api_down: tuned}, clock=FakeClock(start=NIGHT))
    breaker = e.breaker("payments-api")
    assert (breaker.failure_threshold, breaker.reset_timeout) == (10, 60.0)
    e.record_outcome("charge", success=True, retry_count=0, dependency="mail-api")
    mail = e.breaker("mail-api")
    assert (mail.failure_threshold, mail.reset_timeout) == (10, 60.0)
    # Without policies: the default EXTERNAL_API_DOWN policy's breaker (3 failures, 30 min).
    default = RetryEngine(clock=FakeClock(start=NIGHT)).breaker("payments-api")
    expected = default_policy(api_down).breaker
    assert expected is not None
    assert (default.failure_threshold, default.reset_timeout) == (
        expected.failure_threshold,
        expected.reset_timeout,
    )
    # A policy given explicitly still wins.
    explicit = e.breaker("ledger", policy=default_policy(NET))
    assert (explicit.failure_threshold, explicit.reset_timeout) == (5, 600.0)


def test_with_policies_overrides_types_and_shares_the_rest() -> None:
    """A derived engine applies its policies but shares history and breakers with its parent."""
    parent = engine()
    slow = dataclasses.replace(EXACT, initial_delay=100, max_delay=1000)
    child = parent.with_policies({DB: slow})
    assert child.decide("t", RuntimeError(), 0).delay == 100
    assert parent.decide("t", RuntimeError(), 0).delay == 10
    assert child.breaker("db") is parent.breaker("db")
    child.record_outcome("t", success=True, retry_count=1, failure_type=DB)
    assert parent.statistics("t").by_type[DB].successes == 1


def test_spread_jitters_a_shared_wait_over_the_following_half_and_is_seeded() -> None:
    """spread() never shortens a wait, adds at most half of it (5 min cap), repeats by seed."""
    engine = RetryEngine(rng=random.Random(3))
    waits = [engine.spread(60.0) for _ in range(200)]
    assert all(60.0 <= wait <= 90.0 for wait in waits)
    assert len({round(wait) for wait in waits}) > 20, "spread over many seconds, not one"
    assert max(RetryEngine(rng=random.Random(4)).spread(3600.0) for _ in range(50)) <= 3900.0
    assert engine.spread(0.0) == 0.0
    again = RetryEngine(rng=random.Random(3))
    assert [again.spread(60.0) for _ in range(200)] == waits

"""Tests for resilience.breaker: transitions, probes, counting, sharing, concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from resilience.breaker import (
    DEFAULT_FAILURE_TYPES,
    CircuitBreaker,
    CircuitState,
    Permit,
    PermitKind,
)
from resilience.clock import FakeClock
from resilience.errors import CircuitOpenError, ConfigurationError, ResilienceError
from resilience.storage import BreakerRecord, MemoryBreakerStore
from resilience.taxonomy import Category, Classification, FailureType, profile

START = 1_000_000.0


class OutageError(Exception):
    """Stands for a dependency that is down (classified TRANSIENT_NETWORK below)."""


class BadPayloadError(Exception):
    """Stands for invalid input (classified PERMANENT_VALIDATION below)."""


def classification(failure_type: FailureType) -> Classification:
    """A classification of ``failure_type`` with its profile's defaults."""
    prof = profile(failure_type)
    return Classification(
        failure_type=failure_type,
        confidence=1.0,
        remediation=prof.remediation,
        remediation_details=prof.remediation_details,
        retry_recommended=prof.retry_recommended,
        retry_delay_seconds=prof.retry_delay_seconds,
        retry_after=None,
        alert_level=prof.alert_level,
        evidence="test",
    )


def classifier(exc: BaseException) -> Classification:
    """OutageError is a network outage, BadPayloadError invalid input, the rest unknown."""
    if isinstance(exc, OutageError):
        return classification(FailureType.TRANSIENT_NETWORK)
    if isinstance(exc, BadPayloadError):
        return classification(FailureType.PERMANENT_VALIDATION)
    return classification(FailureType.UNKNOWN)


@pytest.fixture
def clock() -> FakeClock:
    """A virtual clock at a fixed wall time."""
    return FakeClock(start=START)


@pytest.fixture
def store() -> MemoryBreakerStore:
    """A store the test can inspect."""
    return MemoryBreakerStore()


def make(
    clock: FakeClock, store: MemoryBreakerStore | None = None, **options: object
) -> CircuitBreaker:
    """A breaker on ``clock`` with a small threshold and the test classifier."""
    settings: dict[str, object] = {
        "failure_threshold": 3,
        "reset_timeout": 30.0,
        "classifier": classifier,
        "clock": clock,
        "store": store,
    }
    settings.update(options)
    return CircuitBreaker("payments", **settings)  # type: ignore[arg-type]


def fail(breaker: CircuitBreaker, exc: Exception | None = None) -> None:
    """Make one call through ``breaker`` that raises ``exc`` (an OutageError by default)."""
    error = OutageError("connection refused") if exc is None else exc

    def boom() -> None:
        raise error

    with pytest.raises(type(error)):
        breaker.call(boom)


def trip(breaker: CircuitBreaker, times: int = 3) -> None:
    """Fail ``times`` calls in a row."""
    for _ in range(times):
        fail(breaker)


# -- closed -> open ----------------------------------------------------------


def test_closed_breaker_passes_calls_and_writes_nothing(clock: FakeClock, store) -> None:
    """A closed breaker returns the call's result and stores nothing on success."""
    breaker = make(clock, store)
    assert breaker.call(lambda x, *, y: x + y, 2, y=3) == 5
    assert breaker.state is CircuitState.CLOSED
    assert store.load("payments") is None


def test_consecutive_failures_open_the_breaker(clock: FakeClock, store) -> None:
    """failure_threshold consecutive counted failures open the breaker, not fewer."""
    breaker = make(clock, store)
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    assert store.load("payments").consecutive_failures == 2
    fail(breaker)
    record = store.load("payments")
    assert breaker.state is CircuitState.OPEN
    assert record.opened_at == START
    assert record.open_until == START + 30.0
    assert record.trips == 1


def test_success_resets_the_consecutive_count(clock: FakeClock, store) -> None:
    """A success between failures starts the consecutive count again."""
    breaker = make(clock, store)
    trip(breaker, 2)
    breaker.call(lambda: None)
    assert store.load("payments").consecutive_failures == 0
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_open_breaker_blocks_calls(clock: FakeClock) -> None:
    """An open breaker refuses calls without running them (lesson 10: open blocks)."""
    breaker = make(clock)
    trip(breaker)
    clock.advance(12)
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: ran.append(1))
    assert ran == []
    assert info.value.breaker == "payments"
    assert info.value.retry_after == pytest.approx(18.0)


def test_reading_state_never_writes(clock: FakeClock, store) -> None:
    """Reading state after the reset timeout reports half-open but stores nothing (lesson 10)."""
    breaker = make(clock, store)
    trip(breaker)
    before = store.load("payments")
    clock.advance(30)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.seconds_until_probe() == 0.0
    assert breaker.next_probe_at == START + 30
    assert "half_open" in repr(breaker)
    assert store.load("payments") is before
    assert before.state is CircuitState.OPEN


# -- open -> half-open -> closed / open ------------------------------------------


def test_probe_after_reset_timeout_closes_on_success(clock: FakeClock, store) -> None:
    """After reset_timeout the next call is a probe; its success closes the breaker."""
    breaker = make(clock, store)
    trip(breaker)
    clock.advance(timedelta(seconds=30))
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is CircuitState.CLOSED
    record = store.load("payments")
    assert (record.consecutive_failures, record.probes, record.opened_at) == (0, (), None)


def test_failed_probe_reopens_for_another_timeout(clock: FakeClock, store) -> None:
    """A failed probe re-opens the breaker for a full reset_timeout from now."""
    breaker = make(clock, store)
    trip(breaker)
    clock.advance(31)
    fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert store.load("payments").trips == 2
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: None)
    assert info.value.retry_after == pytest.approx(30.0)


def test_half_open_admits_at_most_max_probes(clock: FakeClock) -> None:
    """Half-open admits half_open_max_calls probes at once and rejects the rest (lesson 10)."""
    breaker = make(clock, half_open_max_calls=2, success_threshold=2, probe_timeout=300)
    trip(breaker)
    clock.advance(30)
    first, second = breaker.before_call(), breaker.before_call()
    assert {first.kind, second.kind} == {PermitKind.PROBE}
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(300.0)
    assert breaker.seconds_until_probe() == pytest.approx(300.0)
    breaker.record_success(permit=first)
    assert breaker.state is CircuitState.HALF_OPEN
    third = breaker.before_call()
    assert third.kind is PermitKind.PROBE
    breaker.record_success(permit=second)
    assert breaker.state is CircuitState.CLOSED


def test_success_threshold_needs_that_many_probe_successes(clock: FakeClock) -> None:
    """With success_threshold=3, two successful probes leave the breaker half-open."""
    breaker = make(clock, success_threshold=3)
    trip(breaker)
    clock.advance(30)
    breaker.call(lambda: None)
    breaker.call(lambda: None)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.call(lambda: None)
    assert breaker.state is CircuitState.CLOSED


def test_lost_probe_slot_is_reclaimed_after_probe_timeout(clock: FakeClock, store) -> None:
    """A probe that never reports (its worker died) frees its slot after probe_timeout."""
    breaker = make(clock, store, probe_timeout=5)
    trip(breaker)
    clock.advance(30)
    lost = breaker.before_call()
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.advance(5)
    replacement = breaker.before_call()
    assert replacement.token != lost.token
    breaker.record_failure(OutageError(), permit=lost)
    assert breaker.state is CircuitState.HALF_OPEN, "a reclaimed probe's late report is ignored"
    breaker.record_success(permit=replacement)
    assert breaker.state is CircuitState.CLOSED


def test_keyboard_interrupt_releases_probe_slot(clock: FakeClock, store) -> None:
    """A BaseException in a probe propagates, records nothing and frees the slot."""
    breaker = make(clock, store)
    trip(breaker)
    clock.advance(30)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    record = store.load("payments")
    assert (record.state, record.probes, record.trips) == (CircuitState.HALF_OPEN, (), 1)
    assert breaker.call(lambda: 1) == 1
    assert breaker.state is CircuitState.CLOSED


def test_keyboard_interrupt_does_not_count_while_closed(clock: FakeClock, store) -> None:
    """A BaseException while closed is not a failure of the dependency."""
    breaker = make(clock, store)

    def interrupted() -> None:
        raise KeyboardInterrupt

    for _ in range(5):
        with pytest.raises(KeyboardInterrupt):
            breaker.call(interrupted)
    assert breaker.state is CircuitState.CLOSED
    assert store.load("payments") is None


def test_stale_outcome_from_before_a_trip_is_ignored(clock: FakeClock, store) -> None:
    """A call admitted before the breaker opened and recovered cannot count afterwards."""
    breaker = make(clock, store, failure_threshold=1)
    slow = breaker.before_call()
    trip(breaker, 1)
    clock.advance(30)
    breaker.call(lambda: None)
    version = store.load("payments").version
    breaker.record_failure(OutageError(), permit=slow)
    assert store.load("payments").version == version
    assert breaker.state is CircuitState.CLOSED


# -- what counts -------------------------------------------------------------------


def test_default_counted_types_are_outage_categories() -> None:
    """The default counted set is every TRANSIENT, EXTERNAL, SYSTEM and UNKNOWN type."""
    counted = {Category.TRANSIENT, Category.EXTERNAL, Category.SYSTEM, Category.UNKNOWN}
    assert {t for t in FailureType if t.category in counted} == DEFAULT_FAILURE_TYPES
    assert FailureType.PERMANENT_VALIDATION not in DEFAULT_FAILURE_TYPES
    assert FailureType.CONFIG_INVALID_SETTING not in DEFAULT_FAILURE_TYPES


def test_uncounted_exception_propagates_and_counts_as_success(clock: FakeClock, store) -> None:
    """A validation error propagates, never trips, and resets the consecutive count."""
    breaker = make(clock, store)
    trip(breaker, 2)
    for _ in range(10):
        fail(breaker, BadPayloadError("amount must be positive"))
    assert breaker.state is CircuitState.CLOSED
    assert store.load("payments").consecutive_failures == 0


def test_uncounted_exception_closes_a_half_open_breaker(clock: FakeClock) -> None:
    """A probe answered with a validation error proves the dependency answered."""
    breaker = make(clock)
    trip(breaker)
    clock.advance(30)
    fail(breaker, BadPayloadError("bad"))
    assert breaker.state is CircuitState.CLOSED


def test_failure_types_override_the_default(clock: FakeClock) -> None:
    """failure_types replaces the default set: here only validation errors count."""
    breaker = make(clock, failure_types=[FailureType.PERMANENT_VALIDATION])
    trip(breaker, 5)
    assert breaker.state is CircuitState.CLOSED
    for _ in range(3):
        fail(breaker, BadPayloadError("bad"))
    assert breaker.state is CircuitState.OPEN


def test_is_failure_overrides_classifier_and_types(clock: FakeClock) -> None:
    """is_failure decides alone; the classifier is not consulted."""

    def never_called(exc: BaseException) -> Classification:
        raise AssertionError("classifier consulted")

    breaker = make(
        clock,
        classifier=never_called,
        is_failure=lambda exc: isinstance(exc, BadPayloadError),
    )
    trip(breaker, 5)
    assert breaker.state is CircuitState.CLOSED
    for _ in range(3):
        fail(breaker, BadPayloadError("bad"))
    assert breaker.state is CircuitState.OPEN


def test_broken_classifier_counts_the_failure_and_keeps_the_exception(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A classifier that raises is logged; the caller still sees its own exception."""

    def broken(exc: BaseException) -> Classification:
        raise RuntimeError("classifier bug")

    breaker = make(clock, classifier=broken, failure_threshold=1)
    with caplog.at_level(logging.ERROR, logger="resilience.breaker"):
        fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert "RuntimeError: classifier bug" in caplog.text


def test_broken_is_failure_predicate_counts_the_failure(clock: FakeClock) -> None:
    """A predicate that raises does not replace the caller's exception; it counts."""

    def broken(exc: BaseException) -> bool:
        raise KeyError("predicate bug")

    breaker = make(clock, is_failure=broken, failure_threshold=1)
    fail(breaker, BadPayloadError("bad"))
    assert breaker.state is CircuitState.OPEN


def test_real_classifier_trips_on_outages_not_on_bad_input(clock: FakeClock) -> None:
    """With the real classifier, ValueError never trips and ConnectionRefusedError does."""
    breaker = CircuitBreaker("payments", failure_threshold=2, clock=clock)
    for _ in range(5):
        fail(breaker, ValueError("amount must be positive"))
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, ConnectionRefusedError(111, "Connection refused"))
    fail(breaker, ConnectionRefusedError(111, "Connection refused"))
    assert breaker.state is CircuitState.OPEN


# -- failure-rate window -------------------------------------------------------------


def test_count_window_opens_at_the_rate_once_minimum_calls_seen(clock: FakeClock) -> None:
    """With a count window, the rate opens the breaker only after minimum_calls calls."""
    breaker = make(
        clock, failure_threshold=None, failure_rate_threshold=0.5, window=10, minimum_calls=4
    )
    trip(breaker, 3)
    assert breaker.state is CircuitState.CLOSED, "3 calls < minimum_calls"
    fail(breaker)
    assert breaker.state is CircuitState.OPEN


def test_count_window_forgets_calls_older_than_the_window(clock: FakeClock, store) -> None:
    """Only the last `window` calls count toward the rate."""
    breaker = make(
        clock,
        store,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window=4,
        minimum_calls=4,
    )
    fail(breaker)
    for _ in range(4):
        breaker.call(lambda: None)
    assert store.load("payments").outcomes == "ssss"
    fail(breaker)
    assert breaker.state is CircuitState.CLOSED, "1 failure in the last 4 calls"


def test_time_window_counts_only_recent_calls(clock: FakeClock, store) -> None:
    """With a timedelta window, failures older than the period stop counting."""
    breaker = make(
        clock,
        store,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window=timedelta(seconds=60),
        minimum_calls=4,
    )
    trip(breaker, 3)
    clock.advance(61)
    for _ in range(3):
        breaker.call(lambda: None)
    fail(breaker)
    assert breaker.state is CircuitState.CLOSED, "the three old failures expired"
    assert sum(bad for _, _, bad in store.load("payments").buckets) == 1
    fail(breaker)
    fail(breaker)
    assert breaker.state is CircuitState.OPEN, "3 of 6 recent calls failed"


def test_rate_and_consecutive_thresholds_both_apply(clock: FakeClock) -> None:
    """With both thresholds set, consecutive failures open before the rate is evaluable."""
    breaker = make(clock, failure_threshold=2, failure_rate_threshold=0.9, minimum_calls=50)
    trip(breaker, 2)
    assert breaker.state is CircuitState.OPEN


def test_window_restarts_after_recovery(clock: FakeClock, store) -> None:
    """Closing after a successful probe starts an empty window."""
    breaker = make(
        clock, store, failure_threshold=None, failure_rate_threshold=0.5, minimum_calls=2
    )
    trip(breaker, 2)
    clock.advance(30)
    breaker.call(lambda: None)
    assert store.load("payments").outcomes == ""
    fail(breaker)
    assert breaker.state is CircuitState.CLOSED


# -- listeners ---------------------------------------------------------------------


def test_listeners_see_every_transition_in_order(clock: FakeClock) -> None:
    """Listeners get (breaker, old, new) for open, half-open, re-open and close."""
    seen: list[tuple[str, CircuitState, CircuitState]] = []
    breaker = make(clock, listeners=[lambda b, old, new: seen.append((b.name, old, new))])
    trip(breaker)
    clock.advance(30)
    fail(breaker)
    clock.advance(30)
    breaker.call(lambda: None)
    s = CircuitState
    assert seen == [
        ("payments", s.CLOSED, s.OPEN),
        ("payments", s.OPEN, s.HALF_OPEN),
        ("payments", s.HALF_OPEN, s.OPEN),
        ("payments", s.OPEN, s.HALF_OPEN),
        ("payments", s.HALF_OPEN, s.CLOSED),
    ]


def test_raising_listener_is_logged_and_does_not_break_the_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged; later listeners still run; the call's error stands."""
    seen: list[CircuitState] = []

    def bad(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("listener bug")

    breaker = make(clock, failure_threshold=1, listeners=[bad])
    breaker.add_listener(lambda b, old, new: seen.append(new))
    with caplog.at_level(logging.ERROR, logger="resilience.breaker"):
        fail(breaker)
    assert seen == [CircuitState.OPEN]
    assert "listener" in caplog.text
    assert "RuntimeError: listener bug" in caplog.text


def test_listener_runs_after_the_change_is_stored(clock: FakeClock, store) -> None:
    """When a listener runs, the store already holds the new state."""
    stored: list[CircuitState] = []
    breaker = make(clock, store, failure_threshold=1)
    breaker.add_listener(lambda b, old, new: stored.append(store.load("payments").state))
    fail(breaker)
    assert stored == [CircuitState.OPEN]


# -- operator modes ----------------------------------------------------------------


def test_force_open_rejects_everything_without_a_probe_time(clock: FakeClock) -> None:
    """A forced-open breaker rejects calls with retry_after None, even after any timeout."""
    breaker = make(clock)
    breaker.force_open()
    clock.advance(10_000)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: None)
    assert info.value.retry_after is None
    assert breaker.seconds_until_probe() is None
    assert breaker.next_probe_at is None
    assert breaker.state is CircuitState.FORCED_OPEN


def test_disable_lets_everything_through_and_records_nothing(clock: FakeClock, store) -> None:
    """A disabled breaker runs every call and never counts a failure."""
    breaker = make(clock, store)
    breaker.disable()
    version = store.load("payments").version
    trip(breaker, 10)
    assert breaker.call(lambda: 7) == 7
    assert store.load("payments").version == version
    assert breaker.state is CircuitState.DISABLED


def test_reset_closes_and_forgets_counts(clock: FakeClock, store) -> None:
    """reset() closes any breaker, clears its counts and keeps the trip count."""
    seen: list[tuple[CircuitState, CircuitState]] = []
    breaker = make(clock, store, listeners=[lambda b, old, new: seen.append((old, new))])
    trip(breaker)
    breaker.reset()
    record = store.load("payments")
    assert (record.state, record.consecutive_failures, record.trips) == (CircuitState.CLOSED, 0, 1)
    assert seen[-1] == (CircuitState.OPEN, CircuitState.CLOSED)
    version = record.version
    breaker.reset()
    assert store.load("payments").version == version, "resetting a clean breaker writes nothing"
    breaker.force_open()
    breaker.force_open()
    assert seen.count((CircuitState.CLOSED, CircuitState.FORCED_OPEN)) == 1


# -- state shared through the store (two workers) ------------------------------------------


def test_two_workers_share_one_breaker(clock: FakeClock, store) -> None:
    """Failures seen by one worker open the other; only one probe is admitted across both."""
    worker_a, worker_b = make(clock, store), make(clock, store)
    trip(worker_a, 2)
    fail(worker_b)
    assert worker_a.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        worker_a.call(lambda: None)
    clock.advance(30)
    probe = worker_a.before_call()
    with pytest.raises(CircuitOpenError):
        worker_b.before_call()
    worker_a.record_success(permit=probe)
    assert worker_b.state is CircuitState.CLOSED
    assert worker_b.call(lambda: 1) == 1


class FlakyStore:
    """A store whose first ``losses`` compare-and-sets lose to a concurrent writer."""

    def __init__(self, inner: MemoryBreakerStore, losses: int = 1) -> None:
        self.inner = inner
        self.losses = losses
        self.attempts = 0

    def load(self, name: str) -> BreakerRecord | None:
        """Delegate."""
        return self.inner.load(name)

    def compare_and_set(self, name: str, expected: int | None, record: BreakerRecord) -> bool:
        """Lose the race ``losses`` times (another writer bumps the version), then delegate."""
        self.attempts += 1
        if self.losses > 0:
            self.losses -= 1
            current = self.inner.load(name) or BreakerRecord()
            rival = dataclasses.replace(
                current,
                consecutive_failures=current.consecutive_failures + 1,
                version=current.version + 1,
            )
            assert self.inner.compare_and_set(
                name, None if current.version == 0 else current.version, rival
            )
            return False
        return self.inner.compare_and_set(name, expected, record)


def test_lost_compare_and_set_is_retried_on_fresh_state(clock: FakeClock, store) -> None:
    """After losing a compare-and-set, the breaker re-reads and keeps the rival's update."""
    flaky = FlakyStore(store)
    breaker = make(clock, flaky)
    fail(breaker)
    assert flaky.attempts == 2
    assert store.load("payments").consecutive_failures == 2, "rival's failure + ours"


def test_endless_contention_never_breaks_the_caller(
    clock: FakeClock, store, caplog: pytest.LogCaptureFixture
) -> None:
    """If every try loses: outcomes are dropped with a warning, probes refused, operators told."""
    flaky = FlakyStore(store, losses=10_000)
    breaker = make(clock, flaky)
    with caplog.at_level(logging.WARNING, logger="resilience.breaker"):
        fail(breaker)
    assert "contention" in caplog.text
    store.compare_and_set(
        "payments",
        store.load("payments").version,
        BreakerRecord(
            state=CircuitState.OPEN,
            opened_at=START,
            open_until=START,
            trips=1,
            version=store.load("payments").version + 1,
        ),
    )
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == 0.0
    with pytest.raises(ResilienceError, match="other writers"):
        breaker.force_open()


# -- concurrency -----------------------------------------------------------------------


def test_calls_run_concurrently_through_one_breaker(clock: FakeClock) -> None:
    """Eight threads are inside one breaker at once: no lock is held across the call."""
    breaker = make(clock)
    barrier = threading.Barrier(8, timeout=10)

    def inside() -> int:
        return barrier.wait()

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(breaker.call, inside) for _ in range(8)]
        arrivals = sorted(f.result(timeout=20) for f in futures)
    assert arrivals == list(range(8))


def test_concurrent_outcomes_are_never_lost(clock: FakeClock) -> None:
    """Outcomes recorded from 8 threads all land in the window (no lost updates, lesson 12).

    Without the breaker's own turn-taking, threads queued on the store's lock lost
    every compare-and-set try in about one round of 13: a few rounds catch it.
    """
    for _ in range(4):
        store = MemoryBreakerStore()
        breaker = make(
            clock,
            store,
            failure_threshold=None,
            failure_rate_threshold=1.0,
            window=10_000,
            minimum_calls=10_000,
        )

        def hammer(breaker: CircuitBreaker = breaker) -> None:
            for _ in range(250):
                breaker.call(lambda: None)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(hammer) for _ in range(8)]:
                future.result(timeout=60)
        assert len(store.load("payments").outcomes) == 2_000


# -- async, decorator, context manager ------------------------------------------------------


def test_async_calls_run_concurrently_and_count(clock: FakeClock) -> None:
    """Eight coroutines await inside one breaker at once; async failures count."""
    breaker = make(clock)

    async def scenario() -> None:
        barrier = asyncio.Barrier(8)

        @breaker
        async def inside(i: int) -> int:
            async with asyncio.timeout(10):
                await barrier.wait()
            return i

        assert await asyncio.gather(*(inside(i) for i in range(8))) == list(range(8))

        async def down() -> None:
            raise OutageError("down")

        for _ in range(3):
            with pytest.raises(OutageError):
                await breaker.call_async(down)
        with pytest.raises(CircuitOpenError):
            await inside(0)

    asyncio.run(scenario())
    assert breaker.state is CircuitState.OPEN


def test_cancelled_async_probe_releases_its_slot(clock: FakeClock, store) -> None:
    """Cancelling a half-open probe frees its slot and records no failure."""
    breaker = make(clock, store)
    trip(breaker)
    clock.advance(30)

    async def scenario() -> None:
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(breaker.call_async(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    record = store.load("payments")
    assert (record.state, record.probes, record.trips) == (CircuitState.HALF_OPEN, (), 1)


def test_decorator_keeps_the_function_identity(clock: FakeClock) -> None:
    """@breaker keeps name and docstring and routes calls through the breaker."""
    breaker = make(clock, failure_threshold=1)

    @breaker
    def charge(amount: int) -> int:
        """Charge a card."""
        if amount < 0:
            raise OutageError("down")
        return amount

    assert (charge.__name__, charge.__doc__) == ("charge", "Charge a card.")
    assert charge(5) == 5
    with pytest.raises(OutageError):
        charge(-1)
    with pytest.raises(CircuitOpenError):
        charge(5)


def test_context_manager_records_outcomes(clock: FakeClock) -> None:
    """`with breaker:` records the block's outcome and refuses the block when open."""
    breaker = make(clock, failure_threshold=2)
    with breaker as permit:
        pass
    assert permit.kind is PermitKind.CLOSED
    for _ in range(2):
        with pytest.raises(OutageError), breaker:
            raise OutageError("down")
    ran = False
    with pytest.raises(CircuitOpenError), breaker:
        ran = True
    assert not ran


def test_nested_context_managers_settle_their_own_permits(clock: FakeClock) -> None:
    """Nested `with breaker:` blocks each settle the permit they took."""
    breaker = make(clock, half_open_max_calls=2, success_threshold=2)
    trip(breaker)
    clock.advance(30)
    with breaker as outer:
        with breaker as inner:
            assert inner.token != outer.token
        assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.state is CircuitState.CLOSED


def test_async_context_manager(clock: FakeClock) -> None:
    """`async with breaker:` admits and records like the sync form."""
    breaker = make(clock, failure_threshold=1)

    async def scenario() -> None:
        async with breaker:
            await asyncio.sleep(0)
        with pytest.raises(OutageError):
            async with breaker:
                raise OutageError("down")

    asyncio.run(scenario())
    assert breaker.state is CircuitState.OPEN


# -- outcomes fed by callers that run the work themselves ---------------------------------


def test_unattributed_outcomes_drive_the_breaker(clock: FakeClock) -> None:
    """record_failure/record_success without a permit open, then close after the timeout."""
    seen: list[tuple[CircuitState, CircuitState]] = []
    breaker = make(clock, listeners=[lambda b, old, new: seen.append((old, new))])
    for _ in range(3):
        breaker.record_failure(OutageError("down"))
    assert breaker.state is CircuitState.OPEN
    breaker.record_success()
    assert breaker.state is CircuitState.OPEN, "an early success does not shorten the wait"
    clock.advance(30)
    breaker.record_failure(OutageError("down"))
    assert breaker.seconds_until_probe() == pytest.approx(30.0)
    clock.advance(30)
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    s = CircuitState
    assert seen == [
        (s.CLOSED, s.OPEN),
        (s.OPEN, s.HALF_OPEN),
        (s.HALF_OPEN, s.OPEN),
        (s.OPEN, s.HALF_OPEN),
        (s.HALF_OPEN, s.CLOSED),
    ]


def test_passthrough_permit_records_nothing(clock: FakeClock, store) -> None:
    """A permit taken while disabled settles nothing, even after a reset."""
    breaker = make(clock, store, failure_threshold=1)
    breaker.disable()
    permit = breaker.before_call()
    assert permit == Permit(kind=PermitKind.PASSTHROUGH, trips=0)
    breaker.reset()
    breaker.record_failure(OutageError(), permit=permit)
    assert breaker.state is CircuitState.CLOSED


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"failure_threshold": None}, "failure_threshold"),
        ({"failure_rate_threshold": 0.0}, "failure_rate_threshold"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold"),
        ({"failure_rate_threshold": 0.5, "window": 5, "minimum_calls": 10}, "minimum_calls"),
        ({"window": 2.5}, "window"),
        ({"window": 0}, "window"),
        ({"window": timedelta(0)}, "window"),
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"reset_timeout": -1}, "reset_timeout"),
        ({"reset_timeout": float("inf")}, "reset_timeout"),
        ({"reset_timeout": "60"}, "reset_timeout"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"success_threshold": 0}, "success_threshold"),
        ({"probe_timeout": 0}, "probe_timeout"),
        ({"failure_types": "UNKNOWN"}, "failure_types"),
        ({"failure_types": ["NOT_A_TYPE"]}, "failure_types"),
    ],
)
def test_invalid_settings_name_the_field(
    clock: FakeClock, options: dict[str, object], key: str
) -> None:
    """Each invalid setting raises ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError) as info:
        make(clock, **options)
    assert info.value.key == key


def test_empty_name_is_rejected() -> None:
    """A breaker needs a name to share state by."""
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker("")
    assert info.value.key == "name"


def test_zero_reset_timeout_probes_at_once(clock: FakeClock) -> None:
    """reset_timeout=0 is allowed: the very next call is a probe."""
    breaker = make(clock, reset_timeout=timedelta(0), failure_threshold=1)
    fail(breaker)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.call(lambda: 1) == 1
    assert breaker.state is CircuitState.CLOSED


def test_repr_shows_name_and_state(clock: FakeClock) -> None:
    """repr names the breaker and its effective state."""
    breaker = make(clock, failure_threshold=1)
    assert repr(breaker) == "CircuitBreaker(name='payments', state='closed')"
    fail(breaker)
    assert repr(breaker) == "CircuitBreaker(name='payments', state='open')"


def test_seconds_until_probe_in_each_state(clock: FakeClock) -> None:
    """seconds_until_probe: 0 closed, time left open, 0 once due, 0 disabled."""
    breaker = make(clock)
    assert breaker.seconds_until_probe() == 0.0
    trip(breaker)
    clock.advance(10)
    assert breaker.seconds_until_probe() == pytest.approx(20.0)
    assert breaker.next_probe_at == pytest.approx(START + 30)
    clock.advance(25)
    assert breaker.seconds_until_probe() == 0.0
    breaker.disable()
    assert breaker.seconds_until_probe() == 0.0


def test_listeners_arg_accepts_any_iterable(clock: FakeClock) -> None:
    """listeners= takes any iterable (here a generator), read once."""
    seen: list[CircuitState] = []
    breaker = make(
        clock,
        failure_threshold=1,
        listeners=(lambda b, old, new: seen.append(new) for _ in range(2)),
    )
    fail(breaker)
    assert seen == [CircuitState.OPEN, CircuitState.OPEN]


def test_decorator_binds_as_a_method(clock: FakeClock) -> None:
    """@breaker on a method keeps `self` binding and still guards the call."""
    breaker = make(clock, failure_threshold=1)

    class Client:
        def __init__(self, up: bool) -> None:
            self.up = up

        @breaker
        def fetch(self, key: str) -> str:
            if not self.up:
                raise OutageError("down")
            return key

    assert Client(up=True).fetch("a") == "a"
    with pytest.raises(OutageError):
        Client(up=False).fetch("b")
    with pytest.raises(CircuitOpenError):
        Client(up=True).fetch("c")
    clock.advance(30)
    assert Client(up=True).fetch("d") == "d"
    assert breaker.state is CircuitState.CLOSED


def test_decorated_calls_feed_the_failure_rate_window(clock: FakeClock, store) -> None:
    """Every decorated call records its outcome when a window is configured."""
    breaker = make(clock, store, failure_threshold=None, failure_rate_threshold=0.5, window=10)
    ping = breaker(lambda: "pong")
    for _ in range(3):
        ping()
    assert store.load("payments").outcomes == "sss"


def test_unattributed_success_after_timeout_counts_toward_success_threshold(
    clock: FakeClock,
) -> None:
    """Without permits, successes after the timeout half-open, then close at the threshold."""
    seen: list[tuple[CircuitState, CircuitState]] = []
    breaker = make(
        clock, success_threshold=2, listeners=[lambda b, old, new: seen.append((old, new))]
    )
    for _ in range(3):
        breaker.record_failure(OutageError("down"))
    clock.advance(30)
    breaker.record_success()
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    s = CircuitState
    assert seen == [(s.CLOSED, s.OPEN), (s.OPEN, s.HALF_OPEN), (s.HALF_OPEN, s.CLOSED)]


def test_one_breaker_per_dependency_whatever_the_failure_type(clock: FakeClock) -> None:
    """Failures of different types from different callers add up on one breaker (lesson 15)."""
    shared = MemoryBreakerStore()
    from_billing, from_refunds = make(clock, shared), make(clock, shared)
    fail(from_billing, OutageError("refused"))
    fail(from_refunds, RuntimeError("upstream returned garbage"))
    fail(from_billing, TimeoutError("timed out"))
    assert from_refunds.state is CircuitState.OPEN


def test_settings_are_readable(clock: FakeClock) -> None:
    """The thresholds and timeout a breaker runs with are readable, normalised to seconds."""
    breaker = make(clock, reset_timeout=timedelta(minutes=2), failure_rate_threshold=0.25)
    assert breaker.failure_threshold == 3
    assert breaker.failure_rate_threshold == 0.25
    assert breaker.reset_timeout == 120.0
    assert breaker.name == "payments"


def test_success_after_before_call_on_a_clean_closed_breaker_costs_no_store_call() -> None:
    """before_call + record_success reads once and writes nothing when there is nothing to reset."""
    from resilience.storage import MemoryBreakerStore

    class Counting(MemoryBreakerStore):
        calls = 0

        def load(self, name: str):  # type: ignore[no-untyped-def]
            type(self).calls += 1
            return super().load(name)

    store = Counting()
    breaker = CircuitBreaker("ledger", store=store)
    permit = breaker.before_call()
    breaker.record_success(permit=permit)
    assert Counting.calls == 1
    # After a counted failure the success must reset the count: that one writes.
    permit = breaker.before_call()
    breaker.record_failure(ConnectionResetError(104, "reset"), permit=permit)
    permit = breaker.before_call()
    breaker.record_success(permit=permit)
    assert store.load("ledger").consecutive_failures == 0  # type: ignore[union-attr]

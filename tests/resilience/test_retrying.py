"""Tests for ``resilience.retrying``: the retry decorator, the context form and testing mode."""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import threading
import traceback
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience.clock import FakeClock
from resilience.errors import ConfigurationError
from resilience.policy import RetryPolicy, default_policy
from resilience.retrying import (
    DEFAULT_ON_POLICY,
    RetryState,
    is_testing,
    retry,
    retry_context,
    set_testing,
)
from resilience.taxonomy import Classification, FailureType, classify, profile

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NO_JITTER = RetryPolicy(
    max_retries=3, initial_delay=1.0, factor=2.0, max_delay=100.0, jitter="none"
)
ZERO = RetryPolicy(max_retries=3, initial_delay=0, max_delay=0, jitter="none")
NOTE = re.compile(r"^resilience\.retry: gave up after (\d+) attempts in \d+\.\d\d s \((.+)\)$")


@pytest.fixture(autouse=True)
def _testing_off() -> Iterator[None]:
    """Every test starts and ends with testing mode off (it is process-global)."""
    with set_testing(False):
        yield


def classification(
    failure_type: FailureType, *, retry_after: float | None = None
) -> Classification:
    """A classification of ``failure_type`` with its profile's defaults."""
    prof = profile(failure_type)
    return Classification(
        failure_type=failure_type,
        confidence=0.9,
        remediation=prof.remediation,
        remediation_details=prof.remediation_details,
        retry_recommended=prof.retry_recommended,
        retry_delay_seconds=prof.retry_delay_seconds,
        retry_after=retry_after,
        alert_level=prof.alert_level,
        evidence="test",
    )


def network_or_validation(exc: BaseException) -> Classification:
    """Connection errors are transient network failures; everything else is validation."""
    if isinstance(exc, ConnectionError):
        return classification(FailureType.TRANSIENT_NETWORK)
    return classification(FailureType.PERMANENT_VALIDATION)


class Flaky:
    """A callable that raises the given exceptions in turn, then returns ``"ok"``."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class NoSleepClock(FakeClock):
    """A clock on which any sleep is a test failure."""

    def sleep(self, seconds: float) -> None:
        """Fail: a zero delay must not sleep."""
        raise AssertionError(f"sleep({seconds}) called")

    async def asleep(self, seconds: float) -> None:
        """Fail: a zero delay must not sleep."""
        raise AssertionError(f"asleep({seconds}) called")


# --------------------------------------------------------------------------- decorator


def test_sync_decorator_retries_until_success_with_exact_delays() -> None:
    """on= failures are retried and retry n waits policy.delay(n) exactly (jitter off)."""
    clock = FakeClock()
    flaky = Flaky(ValueError("a"), ValueError("b"))
    wrapped = retry(on=ValueError, policy=NO_JITTER, clock=clock)(flaky)
    assert wrapped() == "ok"
    assert flaky.calls == 3
    assert clock.slept == [1.0, 2.0]


def test_async_decorator_retries_and_stays_a_coroutine_function() -> None:
    """An async function stays a coroutine function and is retried with asleep."""
    clock = FakeClock()
    calls: list[int] = []

    @retry(on=ValueError, policy=NO_JITTER, clock=clock)
    async def fetch(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ValueError(x)
        return x * 2

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(21)) == 42
    assert calls == [21, 21, 21]
    assert clock.slept == [1.0, 2.0]


def test_signature_name_and_doc_are_preserved() -> None:
    """The wrapper has the wrapped function's signature, name and docstring."""

    def f(a: int, /, b: str = "x", *args: int, c: float, **kw: object) -> str:
        """Do f."""
        return f"{a}{b}{c}"

    async def g(a: int, *, b: int = 2) -> int:
        """Do g."""
        return a + b

    wf = retry(on=ValueError)(f)
    wg = retry()(g)
    assert inspect.signature(wf) == inspect.signature(f)
    assert inspect.signature(wg) == inspect.signature(g)
    assert (wf.__name__, wf.__doc__, wg.__name__, wg.__doc__) == ("f", "Do f.", "g", "Do g.")
    assert wf(1, c=2.0) == "1x2.0"


def test_methods_are_retried_with_self_bound() -> None:
    """Decorating sync and async methods binds self as usual."""
    clock = FakeClock()

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @retry(on=OSError, policy=ZERO, clock=clock)
        def get(self, path: str) -> str:
            self.calls += 1
            if self.calls == 1:
                raise OSError(path)
            return path

        @retry(on=OSError, policy=ZERO, clock=clock)
        async def aget(self, path: str) -> str:
            self.calls += 1
            if self.calls % 2:
                raise OSError(path)
            return path.upper()

    client = Client()
    assert client.get("/a") == "/a"
    assert asyncio.run(client.aget("/b")) == "/B"
    assert client.calls == 4


# --------------------------------------------------------------------------- on=


def test_on_tuple_retries_listed_types_only() -> None:
    """A tuple of types retries those; another type propagates at once without a note."""
    clock = FakeClock()
    flaky = Flaky(KeyError("k"), OSError("o"), TypeError("t"))
    wrapped = retry(on=(KeyError, OSError), policy=NO_JITTER, clock=clock)(flaky)
    with pytest.raises(TypeError) as info:
        wrapped()
    assert flaky.calls == 3
    assert clock.slept == [1.0, 2.0]
    (note,) = info.value.__notes__
    match = NOTE.match(note)
    assert match is not None
    assert match.groups() == ("3", "TypeError not matched by on=")


def test_on_predicate_decides() -> None:
    """A predicate on= retries exactly the exceptions it accepts."""
    seen: list[BaseException] = []

    def transient(exc: BaseException) -> bool:
        seen.append(exc)
        return "transient" in str(exc)

    first, second = RuntimeError("transient glitch"), RuntimeError("fatal")
    flaky = Flaky(first, second)
    wrapped = retry(on=transient, policy=ZERO, clock=FakeClock())(flaky)
    with pytest.raises(RuntimeError) as info:
        wrapped()
    assert info.value is second
    assert seen == [first, second]


def test_first_failure_not_matched_propagates_untouched() -> None:
    """A single failed attempt that is not retried carries no note and never sleeps."""
    error = TypeError("bad")
    flaky = Flaky(error)
    with pytest.raises(TypeError) as info:
        retry(on=ValueError, clock=NoSleepClock())(flaky)()
    assert info.value is error
    assert not hasattr(error, "__notes__")
    assert flaky.calls == 1


def test_on_without_policy_uses_the_documented_default() -> None:
    """on= alone uses DEFAULT_ON_POLICY: 3 retries around 0.1, 0.2, 0.4 s."""
    clock = FakeClock()
    flaky = Flaky(*(ValueError(i) for i in range(5)))
    with pytest.raises(ValueError, match="3"):
        retry(on=ValueError, clock=clock, rng=random.Random(1))(flaky)()
    assert DEFAULT_ON_POLICY.max_retries == 3
    assert flaky.calls == 4
    for n, delay in enumerate(clock.slept, start=1):
        low, high = DEFAULT_ON_POLICY.envelope(n)
        assert low <= delay <= high
        assert abs(delay - 0.1 * 2 ** (n - 1)) <= 0.1 * 2 ** (n - 1) * 0.1 + 1e-12


# --------------------------------------------------------------------------- classification


def test_default_mode_follows_the_classified_types_policy() -> None:
    """Without on=, the failure type's default policy gives count and (seeded) delays."""
    clock = FakeClock()
    policy = default_policy(FailureType.TRANSIENT_NETWORK)
    flaky = Flaky(*(ConnectionResetError(i) for i in range(10)))
    wrapped = retry(classifier=network_or_validation, clock=clock, rng=random.Random(7))(flaky)
    with pytest.raises(ConnectionResetError) as info:
        wrapped()
    expected_rng = random.Random(7)
    expected = [policy.delay(n, rng=expected_rng) for n in range(1, policy.max_retries + 1)]
    assert clock.slept == expected
    assert flaky.calls == policy.max_retries + 1
    for n, delay in enumerate(clock.slept, start=1):
        low, high = policy.envelope(n)
        assert low <= delay <= high
    match = NOTE.match(info.value.__notes__[-1])
    assert match is not None
    assert match.groups() == (
        str(policy.max_retries + 1),
        f"TRANSIENT_NETWORK, policy max_retries={policy.max_retries}",
    )


def test_default_mode_does_not_retry_what_the_classifier_calls_permanent() -> None:
    """A failure the classifier calls not retryable propagates after one attempt."""
    flaky = Flaky(ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input") as info:
        retry(classifier=network_or_validation, clock=NoSleepClock())(flaky)()
    assert flaky.calls == 1
    assert not hasattr(info.value, "__notes__")


def test_permanent_failure_after_retries_is_noted_as_not_retryable() -> None:
    """Retrying stops at the first non-retryable failure, and the note says why."""
    clock = FakeClock()
    flaky = Flaky(ConnectionRefusedError(), ValueError("bad"))
    with pytest.raises(ValueError, match="bad") as info:
        retry(classifier=network_or_validation, policy=NO_JITTER, clock=clock)(flaky)()
    assert clock.slept == [1.0]
    match = NOTE.match(info.value.__notes__[0])
    assert match is not None
    assert match.groups() == ("2", "PERMANENT_VALIDATION is not retryable")


def test_default_mode_with_the_real_classifier() -> None:
    """With the real classifier, the retry count is the classified type's policy count."""
    clock = FakeClock()
    exc = ConnectionRefusedError(111, "Connection refused")
    kind = classify(exc).failure_type
    flaky = Flaky(*(ConnectionRefusedError(111, "Connection refused") for _ in range(20)))
    with pytest.raises(ConnectionRefusedError):
        retry(clock=clock)(flaky)()
    assert len(clock.slept) == default_policy(kind).max_retries
    assert flaky.calls == default_policy(kind).max_retries + 1


def test_policy_override_applies_to_every_type() -> None:
    """policy= replaces the per-type policies while the classifier still decides."""
    clock = FakeClock()
    flaky = Flaky(ConnectionResetError(), ConnectionResetError())
    assert retry(classifier=network_or_validation, policy=NO_JITTER, clock=clock)(flaky)() == "ok"
    assert clock.slept == [1.0, 2.0]


def test_max_retries_overrides_the_policy_count() -> None:
    """max_retries= replaces the policy's count; 0 never retries."""
    clock = FakeClock()
    flaky = Flaky(*(ConnectionResetError() for _ in range(10)))
    wrapped = retry(classifier=network_or_validation, policy=NO_JITTER, max_retries=5, clock=clock)
    with pytest.raises(ConnectionResetError) as info:
        wrapped(flaky)()
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert info.value.__notes__[0].endswith("(TRANSIENT_NETWORK, max_retries=5)")
    once = Flaky(ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        retry(classifier=network_or_validation, max_retries=0, clock=NoSleepClock())(once)()
    assert once.calls == 1


def test_retry_after_wins_and_is_capped_by_max_delay() -> None:
    """A classification's Retry-After replaces the curve, capped at the policy's max_delay."""

    def rate_limited(exc: BaseException) -> Classification:
        seconds = float(str(exc))
        return classification(FailureType.TRANSIENT_RATE_LIMIT, retry_after=seconds)

    clock = FakeClock()
    flaky = Flaky(RuntimeError("7"), RuntimeError("250"), RuntimeError("0"))
    assert retry(classifier=rate_limited, policy=NO_JITTER, clock=clock)(flaky)() == "ok"
    # 7 s as asked, 250 s capped at max_delay=100, and 0 s means no sleep call at all.
    assert clock.slept == [7.0, 100.0]


def test_retry_after_with_default_policy() -> None:
    """Without policy=, Retry-After is honoured under the type's default policy."""
    clock = FakeClock()
    flaky = Flaky(RuntimeError("x"))

    def limited(exc: BaseException) -> Classification:
        return classification(FailureType.TRANSIENT_RATE_LIMIT, retry_after=42.0)

    assert retry(classifier=limited, clock=clock)(flaky)() == "ok"
    assert clock.slept == [42.0]


# --------------------------------------------------------------------------- exhaustion


def test_exhaustion_raises_the_same_last_exception_with_a_note() -> None:
    """When retries run out the last original exception object propagates, noted."""
    clock = FakeClock()
    errors = [ValueError(i) for i in range(4)]
    flaky = Flaky(*errors, ValueError("never reached"))
    with pytest.raises(ValueError, match="3") as info:
        retry(on=ValueError, policy=NO_JITTER, clock=clock)(flaky)()
    assert info.value is errors[-1]
    assert flaky.calls == 4
    (note,) = info.value.__notes__
    assert note == (
        "resilience.retry: gave up after 4 attempts in 7.00 s (ValueError, policy max_retries=3)"
    )
    # Earlier attempts' exceptions are not chained onto the one that propagates.
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    # The traceback still ends where the exception was raised.
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "__call__"


def test_async_exhaustion_raises_the_same_exception_with_a_note() -> None:
    """The async path also re-raises the last original exception with a note."""
    clock = FakeClock()
    errors = [OSError(i) for i in range(3)]
    flaky = Flaky(*errors)

    @retry(on=OSError, policy=NO_JITTER, max_retries=2, clock=clock)
    async def run() -> str:
        return flaky()

    with pytest.raises(OSError, match="2") as info:
        asyncio.run(run())
    assert info.value is errors[-1]
    assert info.value.__notes__ == [
        "resilience.retry: gave up after 3 attempts in 3.00 s (OSError, max_retries=2)"
    ]
    assert clock.slept == [1.0, 2.0]


# --------------------------------------------------------------------------- hooks


def test_hooks_receive_each_attempts_state() -> None:
    """after_attempt sees every attempt (success too); before_sleep sees each wait."""
    clock = FakeClock()
    after: list[RetryState] = []
    before: list[RetryState] = []
    first, second = ConnectionResetError("1"), ConnectionAbortedError("2")
    flaky = Flaky(first, second)
    wrapped = retry(
        classifier=network_or_validation,
        policy=NO_JITTER,
        clock=clock,
        after_attempt=after.append,
        before_sleep=before.append,
    )(flaky)
    assert wrapped() == "ok"
    assert [(s.attempt, s.exception, s.delay, s.elapsed) for s in after] == [
        (1, first, 1.0, 0.0),
        (2, second, 2.0, 1.0),
        (3, None, None, 3.0),
    ]
    assert before == after[:2]
    assert [s.will_retry for s in after] == [True, True, False]
    assert after[0].classification is not None
    assert after[0].classification.failure_type is FailureType.TRANSIENT_NETWORK
    assert after[0].policy is NO_JITTER
    assert (after[2].classification, after[2].policy) == (None, None)
    assert {s.name for s in after} == {"Flaky"}


def test_hooks_on_a_failure_that_is_not_retried() -> None:
    """A final failure reaches after_attempt with delay None and never before_sleep."""
    after: list[RetryState] = []
    before: list[RetryState] = []

    def boom() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        retry(
            on=ValueError, clock=FakeClock(), after_attempt=after.append, before_sleep=before.append
        )(boom)()
    assert [(s.attempt, type(s.exception), s.delay, s.classification) for s in after] == [
        (1, KeyError, None, None)
    ]
    assert after[0].name == boom.__qualname__
    assert before == []


def test_success_after_attempt_on_first_try_and_async() -> None:
    """A first-try success reports attempt 1, no exception, elapsed 0, sync and async."""
    after: list[RetryState] = []

    @retry(on=ValueError, after_attempt=after.append, clock=NoSleepClock())
    def ok() -> int:
        return 1

    @retry(on=ValueError, after_attempt=after.append, clock=NoSleepClock())
    async def aok() -> int:
        return 2

    assert ok() == 1
    assert asyncio.run(aok()) == 2
    assert [(s.attempt, s.exception, s.delay, s.elapsed) for s in after] == [
        (1, None, None, 0.0),
        (1, None, None, 0.0),
    ]


def test_retry_state_is_frozen() -> None:
    """RetryState values cannot be changed by a hook."""
    state = RetryState(
        name="f",
        attempt=1,
        exception=None,
        delay=None,
        elapsed=0.0,
        classification=None,
        policy=None,
    )
    with pytest.raises(AttributeError):
        state.attempt = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- zero delay


def test_zero_delay_makes_no_sleep_call_sync_async_and_context() -> None:
    """A zero delay never calls sleep/asleep, in every form."""
    clock = NoSleepClock()
    assert retry(on=ValueError, policy=ZERO, clock=clock)(Flaky(ValueError(), ValueError()))()

    flaky = Flaky(ValueError(), ValueError())

    @retry(on=ValueError, policy=ZERO, clock=clock)
    async def run() -> str:
        return flaky()

    assert asyncio.run(run()) == "ok"

    block = Flaky(ValueError())
    for attempt in retry_context(on=ValueError, policy=ZERO, clock=clock):
        with attempt:
            block()
    assert block.calls == 2

    async def arun() -> int:
        ablock = Flaky(ValueError())
        async for attempt in retry_context(on=ValueError, policy=ZERO, clock=clock):
            with attempt:
                ablock()
        return ablock.calls

    assert asyncio.run(arun()) == 2


# --------------------------------------------------------------------------- context form


def test_retry_context_sync_retries_the_block() -> None:
    """for/with attempts retry the block with the policy's delays and stop on success."""
    clock = FakeClock()
    flaky = Flaky(ValueError(), ValueError())
    numbers = []
    for attempt in retry_context(on=ValueError, policy=NO_JITTER, clock=clock):
        with attempt:
            numbers.append(attempt.number)
            flaky()
    assert numbers == [1, 2, 3]
    assert clock.slept == [1.0, 2.0]


def test_retry_context_async_retries_the_block() -> None:
    """async for over the same kind of object retries with asleep."""
    clock = FakeClock()
    flaky = Flaky(OSError(), OSError())

    async def run() -> list[int]:
        numbers = []
        async for attempt in retry_context(on=OSError, policy=NO_JITTER, clock=clock):
            with attempt:
                numbers.append(attempt.number)
                flaky()
        return numbers

    assert asyncio.run(run()) == [1, 2, 3]
    assert clock.slept == [1.0, 2.0]


def test_retry_context_exhaustion_propagates_the_last_exception() -> None:
    """When the block keeps failing, the last exception leaves the loop with a note."""
    clock = FakeClock()
    errors = [ValueError(i) for i in range(3)]
    flaky = Flaky(*errors)

    def run() -> None:
        for attempt in retry_context(on=ValueError, policy=NO_JITTER, max_retries=2, clock=clock):
            with attempt:
                flaky()

    with pytest.raises(ValueError, match="2") as info:
        run()
    assert info.value is errors[-1]
    assert info.value.__notes__ == [
        "resilience.retry: gave up after 3 attempts in 3.00 s (ValueError, max_retries=2)"
    ]


def test_retry_context_is_reusable_with_fresh_counters() -> None:
    """Each iteration of one RetryContext starts again at attempt 1."""
    context = retry_context(on=ValueError, policy=ZERO, max_retries=1, clock=FakeClock())
    for _ in range(3):
        flaky = Flaky(ValueError())
        for attempt in context:
            with attempt:
                flaky()
        assert flaky.calls == 2


def test_retry_context_hooks_and_classification() -> None:
    """The context form runs the hooks and consults the classifier by default."""
    after: list[RetryState] = []
    flaky = Flaky(ConnectionResetError())
    for attempt in retry_context(
        classifier=network_or_validation,
        policy=NO_JITTER,
        clock=FakeClock(),
        after_attempt=after.append,
    ):
        with attempt:
            flaky()
    assert [(s.name, s.attempt, s.delay) for s in after] == [
        ("retry_context", 1, 1.0),
        ("retry_context", 2, None),
    ]
    assert after[0].classification is not None


# --------------------------------------------------------------------------- BaseException


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_base_exceptions_are_never_retried(exc: BaseException) -> None:
    """KeyboardInterrupt, SystemExit and GeneratorExit propagate at once, unnoted."""
    flaky = Flaky(exc)
    after: list[RetryState] = []
    with pytest.raises(type(exc)) as info:
        retry(on=BaseException, clock=NoSleepClock(), after_attempt=after.append)(flaky)()
    assert info.value is exc
    assert flaky.calls == 1
    assert after == []
    assert not hasattr(exc, "__notes__")
    plain = Flaky(exc)
    with pytest.raises(type(exc)):
        retry(on=BaseException, clock=NoSleepClock())(plain)()
    assert plain.calls == 1
    block = Flaky(exc)

    def run() -> None:
        for attempt in retry_context(clock=NoSleepClock()):
            with attempt:
                block()

    with pytest.raises(type(exc)):
        run()
    assert block.calls == 1


def test_cancelled_error_is_never_retried() -> None:
    """asyncio.CancelledError propagates from an async retry at once."""
    calls = []

    @retry(on=BaseException, clock=NoSleepClock())
    async def cancelled() -> None:
        calls.append(1)
        raise asyncio.CancelledError

    async def run() -> None:
        with pytest.raises(asyncio.CancelledError):
            await cancelled()

    asyncio.run(run())
    assert calls == [1]


def test_base_exception_after_a_retry_propagates_at_once() -> None:
    """A KeyboardInterrupt raised during a retry stops retrying immediately."""
    clock = FakeClock()
    flaky = Flaky(ValueError(), KeyboardInterrupt(), ValueError())
    with pytest.raises(KeyboardInterrupt):
        retry(on=ValueError, policy=NO_JITTER, clock=clock)(flaky)()
    assert flaky.calls == 2
    assert clock.slept == [1.0]


# --------------------------------------------------------------------------- testing mode


def test_set_testing_zeroes_delays_caps_attempts_and_restores() -> None:
    """Inside set_testing(True, attempts=2): no sleep, 2 attempts; previous state after."""
    clock = NoSleepClock()
    assert not is_testing()
    with set_testing(True, attempts=2):
        assert is_testing()
        flaky = Flaky(ValueError(), ValueError("second"))
        with pytest.raises(ValueError, match="second") as info:
            retry(on=ValueError, policy=NO_JITTER, clock=clock)(flaky)()
        assert flaky.calls == 2
        assert info.value.__notes__[0].endswith("(ValueError, testing mode attempts=2)")
    assert not is_testing()
    real = FakeClock()
    assert retry(on=ValueError, policy=NO_JITTER, clock=real)(Flaky(ValueError()))() == "ok"
    assert real.slept == [1.0]


def test_set_testing_nests_and_without_with_keeps_the_setting() -> None:
    """Nested switches restore in order; a bare call keeps its setting."""
    with set_testing(True, attempts=5):
        with set_testing(False):
            assert not is_testing()
        assert is_testing()
        flaky = Flaky(*(ValueError(i) for i in range(10)))
        with pytest.raises(ValueError, match="4"):
            retry(on=ValueError, policy=NO_JITTER, max_retries=9, clock=NoSleepClock())(flaky)()
        assert flaky.calls == 5
    assert not is_testing()
    set_testing(True, attempts=None)
    try:
        assert is_testing()
        flaky = Flaky(ValueError(), ValueError(), ValueError())
        assert retry(on=ValueError, policy=NO_JITTER, clock=NoSleepClock())(flaky)() == "ok"
        assert flaky.calls == 4
    finally:
        set_testing(False)
    assert not is_testing()


def test_set_testing_attempts_one_disables_retries() -> None:
    """The default attempts=1 makes one attempt only, noted nowhere."""
    with set_testing(True):
        flaky = Flaky(ConnectionResetError())
        with pytest.raises(ConnectionResetError) as info:
            retry(classifier=network_or_validation, clock=NoSleepClock())(flaky)()
    assert flaky.calls == 1
    assert not hasattr(info.value, "__notes__")


@pytest.mark.parametrize("attempts", [0, -1, 1.5, True])
def test_set_testing_rejects_bad_attempts(attempts: object) -> None:
    """attempts must be None or an int >= 1; the error names the key."""
    with pytest.raises(ConfigurationError) as info:
        set_testing(True, attempts=attempts)  # type: ignore[arg-type]
    assert info.value.key == "attempts"
    assert not is_testing()


def test_set_testing_is_global_across_threads() -> None:
    """The switch applies to calls made on other threads."""
    results: list[int] = []

    def worker() -> None:
        flaky = Flaky(ValueError(), ValueError())
        try:
            retry(on=ValueError, policy=NO_JITTER, clock=NoSleepClock())(flaky)()
        except ValueError:
            results.append(flaky.calls)

    with set_testing(True, attempts=1):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert results == [1]


# --------------------------------------------------------------------------- concurrency


def test_threads_never_share_counters() -> None:
    """Concurrent calls from many threads each get their own attempt counter."""
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    @retry(on=ValueError, policy=ZERO, max_retries=2, clock=FakeClock())
    def work(ident: int) -> int:
        with lock:
            attempts[ident] = attempts.get(ident, 0) + 1
            count = attempts[ident]
        barrier.wait(timeout=10)
        if count < 3:
            raise ValueError(ident)
        return ident

    results: list[int] = []
    errors: list[BaseException] = []

    def run(ident: int) -> None:
        try:
            results.append(work(ident))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == list(range(threads_count))
    assert attempts == dict.fromkeys(range(threads_count), 3)


def test_coroutines_never_share_counters() -> None:
    """Interleaved coroutines on one loop each get their own attempt counter."""
    clock = FakeClock()
    attempts: dict[int, int] = {}

    @retry(on=ValueError, policy=NO_JITTER, max_retries=2, clock=clock)
    async def work(ident: int) -> int:
        attempts[ident] = attempts.get(ident, 0) + 1
        await asyncio.sleep(0)
        if attempts[ident] < 3:
            raise ValueError(ident)
        return ident

    async def run() -> list[int]:
        return await asyncio.gather(*(work(i) for i in range(20)))

    assert asyncio.run(run()) == list(range(20))
    assert attempts == dict.fromkeys(range(20), 3)
    assert sorted(clock.slept) == [1.0] * 20 + [2.0] * 20


# --------------------------------------------------------------------------- properties


@given(failures=st.integers(min_value=0, max_value=12), limit=st.integers(0, 8))
def test_attempts_are_failures_plus_one_up_to_the_limit(failures: int, limit: int) -> None:
    """k failures under max_retries=m: min(k, m)+1 calls, success iff k <= m, min(k, m) waits."""
    clock = FakeClock()
    flaky = Flaky(*(ValueError(i) for i in range(failures)))
    wrapped = retry(on=ValueError, policy=NO_JITTER, max_retries=limit, clock=clock)(flaky)
    if failures <= limit:
        assert wrapped() == "ok"
    else:
        with pytest.raises(ValueError, match=str(limit)):
            wrapped()
    assert flaky.calls == min(failures, limit) + 1
    assert clock.slept == [NO_JITTER.delay(n) for n in range(1, min(failures, limit) + 1)]


@given(seed=st.integers(0, 2**32 - 1), failures=st.integers(1, 3))
def test_jittered_delays_stay_in_the_envelope(seed: int, failures: int) -> None:
    """With jitter on and a seeded rng, each delay lies in the policy's envelope, reproducibly."""
    policy = RetryPolicy(max_retries=3, initial_delay=2.0, max_delay=10.0, jitter="full")

    def run() -> list[float]:
        clock = FakeClock()
        flaky = Flaky(*(ValueError() for _ in range(failures)))
        retry(on=ValueError, policy=policy, clock=clock, rng=random.Random(seed))(flaky)()
        return clock.slept

    slept = run()
    assert slept == run()
    assert len(slept) == failures
    for n, delay in enumerate(slept, start=1):
        low, high = policy.envelope(n)
        assert low <= delay <= high


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"on": KeyboardInterrupt}, "on"),
        ({"on": (ValueError, SystemExit)}, "on"),
        ({"on": ()}, "on"),
        ({"on": (ValueError, int)}, "on"),
        ({"on": "ValueError"}, "on"),
        ({"policy": {"max_retries": 3}}, "policy"),
        ({"before_sleep": 3}, "before_sleep"),
        ({"after_attempt": "log"}, "after_attempt"),
        ({"classifier": None}, "classifier"),
        ({"clock": object()}, "clock"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, object], key: str) -> None:
    """Bad arguments raise ConfigurationError naming the argument, in both forms."""
    factories: list[Callable[..., object]] = [retry, retry_context]
    for factory in factories:
        with pytest.raises(ConfigurationError) as info:
            factory(**kwargs)
        assert info.value.key == key


def test_decorating_a_non_callable_is_a_type_error() -> None:
    """retry()(x) with a non-callable x raises TypeError."""
    with pytest.raises(TypeError, match="callable"):
        retry()(42)  # type: ignore[arg-type]


def test_bare_retry_decorates_like_retry_with_no_arguments() -> None:
    """`@retry` without parentheses wraps the function (sync and async) with the defaults."""
    calls: list[int] = []

    @retry
    def add(a: int, b: int) -> int:
        calls.append(a)
        return a + b

    @retry
    async def negate(a: int) -> int:
        return -a

    @retry
    def refuse(amount: int) -> None:
        calls.append(amount)
        raise ValueError(f"amount {amount} must be positive")

    assert add(2, 3) == 5
    assert inspect.iscoroutinefunction(negate)
    assert asyncio.run(negate(4)) == -4
    # A permanent failure is not retried: one call, the exception itself.
    with pytest.raises(ValueError, match="amount -5 must be positive"):
        refuse(-5)
    assert calls == [2, -5]
    assert add.__name__ == "add"

"""Retry any call: a decorator and a context/iterator form, for functions and coroutines.

By default the failure taxonomy decides: :func:`resilience.classify` says whether a
failure is worth retrying, and the failure type's default policy says how long to
wait and how often. ``on=`` (exception types or a predicate) and ``policy=`` override
that. See ``docs/retry.md``.

The success path costs one ``try`` block: nothing is read, computed or allocated
until the first failure. All per-call state (attempt counter, start time) lives in
the call, so concurrent calls of one decorated function never share counters.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar, cast, overload

from resilience.clock import Clock, system_clock
from resilience.errors import ConfigurationError
from resilience.policy import RetryPolicy, default_policy
from resilience.taxonomy import Classification, classify

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Awaitable, Iterator
    from contextlib import AbstractContextManager
    from types import TracebackType

__all__ = [
    "DEFAULT_ON_POLICY",
    "Attempt",
    "RetryContext",
    "RetryState",
    "is_testing",
    "retry",
    "retry_context",
    "set_testing",
]

P = ParamSpec("P")
T = TypeVar("T")

ExceptionMatcher = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""What ``on=`` accepts: an exception type, a tuple of them, or a predicate."""

DEFAULT_ON_POLICY: Final = RetryPolicy(max_retries=3, initial_delay=0.1, max_delay=5.0)
"""The policy used with ``on=`` and no ``policy=``: 3 retries, 0.1 s doubling, capped at 5 s.

Jitter and strategy are :class:`RetryPolicy`'s defaults (exponential, proportional
±10 %), so the waits are about 0.1 s, 0.2 s and 0.4 s: short, because a caller
choosing exception types by hand usually retries something local and fast.
"""

_CONTEXT_NAME: Final = "retry_context"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryState:
    """What happened in one attempt, handed to the ``before_sleep`` and ``after_attempt`` hooks.

    Attributes:
        name: the qualified name of the retried function (``"retry_context"`` for the
            context form).
        attempt: the 1-based number of the attempt that just ended.
        exception: the exception it raised, or ``None`` when it succeeded.
        delay: seconds before the next attempt, or ``None`` when no attempt follows
            (success, a failure that is not retried, or retries exhausted).
        elapsed: seconds from the end of the first failed attempt to now, by the
            injected clock's monotonic time (``0.0`` until a failure happened; the
            success path never reads the clock).
        classification: the taxonomy's verdict on ``exception`` when it was
            consulted (default mode, no ``on=``), else ``None``.
        policy: the policy that decided the delay and the retry count, or ``None``
            for a successful attempt.
    """

    name: str
    attempt: int
    exception: Exception | None
    delay: float | None
    elapsed: float
    classification: Classification | None
    policy: RetryPolicy | None

    @property
    def will_retry(self) -> bool:
        """Whether another attempt follows this one."""
        return self.delay is not None


# --------------------------------------------------------------------------- testing mode


@dataclass(frozen=True, slots=True, kw_only=True)
class _TestingMode:
    attempts: int | None


# One reference, replaced whole under the lock and read without it: a reader sees
# either the old or the new mode, never half of one.
_testing: _TestingMode | None = None
_testing_lock = threading.Lock()


class _TestingRestore:
    """Restores the testing mode that was in force before :func:`set_testing`."""

    __slots__ = ("_previous",)

    def __init__(self, previous: _TestingMode | None) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _testing  # noqa: PLW0603 -- the switch is process-global by design
        with _testing_lock:
            _testing = self._previous


def set_testing(testing: bool, *, attempts: int | None = 1) -> AbstractContextManager[None]:
    """Switch testing mode on or off for every retry in the process.

    In testing mode every delay is zero (no sleep is called at all) and each call
    makes at most ``attempts`` attempts. Which failures are retried does not
    change. The setting is process-global (all threads, all event loops); it takes
    effect at once, and the returned object restores the previous setting when
    used as a context manager.

    Args:
        testing: ``True`` to switch testing mode on, ``False`` to switch it off.
        attempts: the maximum number of attempts per call (``1``: no retries);
            ``None`` keeps each call's own limit and only removes the waiting.

    Returns:
        A context manager that restores the previous setting on exit. Calling
        ``set_testing`` without ``with`` keeps the new setting.

    Raises:
        ConfigurationError: when ``attempts`` is not ``None`` or an int >= 1.
    """
    global _testing  # noqa: PLW0603 -- the switch is process-global by design
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
    ):
        raise ConfigurationError(
            f"set_testing: attempts must be None or an int >= 1, got {attempts!r}",
            key="attempts",
            value=attempts,
        )
    mode = _TestingMode(attempts=attempts) if testing else None
    with _testing_lock:
        previous = _testing
        _testing = mode
    return _TestingRestore(previous)


def is_testing() -> bool:
    """Whether testing mode (:func:`set_testing`) is on.

    Returns:
        ``True`` while delays are forced to zero.
    """
    return _testing is not None


# --------------------------------------------------------------------------- the decision


def _refuse(key: str, value: object, message: str) -> ConfigurationError:
    """A ConfigurationError for argument ``key`` of ``retry``/``retry_context``."""
    return ConfigurationError(f"retry: {message}, got {value!r}", key=key, value=value)


def _matcher(on: ExceptionMatcher) -> Callable[[BaseException], bool]:
    """Turn ``on=`` into a predicate, rejecting types that can never be retried."""
    if isinstance(on, type):
        on = (on,)
    if isinstance(on, tuple):
        if not on:
            raise _refuse("on", on, "on= must not be an empty tuple")
        for kind in on:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise _refuse("on", on, "on= must hold exception types only")
            if not issubclass(kind, Exception) and kind is not BaseException:
                raise _refuse(
                    "on",
                    on,
                    f"on={kind.__name__} can never be retried: only Exception subclasses are "
                    "(KeyboardInterrupt, SystemExit, GeneratorExit and CancelledError always "
                    "propagate at once)",
                )
        kinds = on
        return lambda exc: isinstance(exc, kinds)
    if callable(on):
        return on
    raise _refuse("on", on, "on= must be an exception type, a tuple of them or a predicate")


class _Retrier:
    """The immutable configuration of one ``retry(...)``, shared by all its calls."""

    __slots__ = (
        "after_attempt",
        "before_sleep",
        "classifier",
        "clock",
        "match",
        "max_retries",
        "policy",
        "rng",
    )

    def __init__(
        self,
        *,
        on: ExceptionMatcher | None,
        policy: RetryPolicy | None,
        max_retries: int | None,
        before_sleep: Callable[[RetryState], object] | None,
        after_attempt: Callable[[RetryState], object] | None,
        clock: Clock | None,
        rng: random.Random | None,
        classifier: Callable[[BaseException], Classification],
    ) -> None:
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise _refuse("max_retries", max_retries, "max_retries must be None or an int >= 0")
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise _refuse("policy", policy, "policy must be a RetryPolicy")
        for key, hook in (
            ("before_sleep", before_sleep),
            ("after_attempt", after_attempt),
            ("classifier", classifier),
        ):
            if hook is not None and not callable(hook):
                raise _refuse(key, hook, f"{key} must be callable")
        if classifier is None:
            raise _refuse("classifier", classifier, "classifier must be callable")
        if clock is not None and not isinstance(clock, Clock):
            raise _refuse("clock", clock, "clock must provide time, monotonic, sleep and asleep")
        self.match = None if on is None else _matcher(on)
        self.policy = policy
        self.max_retries = max_retries
        self.before_sleep = before_sleep
        self.after_attempt = after_attempt
        self.clock: Clock = system_clock if clock is None else clock
        self.rng = rng
        self.classifier = classifier

    def failed(self, name: str, exc: Exception, attempt: int, start: float) -> float | None:
        """Decide what follows failed attempt number ``attempt``; run the hooks.

        Returns the delay before the next attempt, or ``None`` to give up (after
        adding a note of the attempts to ``exc`` when there was more than one).
        """
        classification: Classification | None = None
        if self.match is None:
            classification = self.classifier(exc)
            retryable = classification.retry_recommended
            policy = self.policy or default_policy(classification.failure_type)
        else:
            retryable = bool(self.match(exc))
            policy = self.policy or DEFAULT_ON_POLICY
        limit = policy.max_retries if self.max_retries is None else self.max_retries
        testing = _testing
        if testing is not None and testing.attempts is not None:
            limit = min(limit, testing.attempts - 1)

        delay: float | None = None
        if retryable and attempt <= limit:
            if testing is not None:
                delay = 0.0
            elif classification is not None and classification.retry_after is not None:
                # The remote side knows when it will take us back; the cap still
                # bounds a hostile or broken Retry-After.
                delay = min(max(classification.retry_after, 0.0), policy.max_delay)
            elif policy.max_delay <= 0:
                # Every delay is capped at max_delay: skip computing the curve.
                delay = 0.0
            else:
                delay = policy.delay(attempt, rng=self.rng)

        if self.after_attempt is not None or self.before_sleep is not None:
            state = RetryState(
                name=name,
                attempt=attempt,
                exception=exc,
                delay=delay,
                elapsed=self.clock.monotonic() - start,
                classification=classification,
                policy=policy,
            )
            if self.after_attempt is not None:
                self.after_attempt(state)
            if delay is not None and self.before_sleep is not None:
                self.before_sleep(state)

        if delay is None and attempt > 1:
            label = type(exc).__name__ if classification is None else classification.failure_type
            if not retryable:
                why = (
                    f"{label} is not retryable"
                    if self.match is None
                    else f"{label} not matched by on="
                )
            elif testing is not None and limit == (testing.attempts or 0) - 1:
                why = f"{label}, testing mode attempts={testing.attempts}"
            elif self.max_retries is not None:
                why = f"{label}, max_retries={limit}"
            else:
                why = f"{label}, policy max_retries={limit}"
            elapsed = self.clock.monotonic() - start
            exc.add_note(
                f"resilience.retry: gave up after {attempt} attempts in {elapsed:.2f} s ({why})"
            )
        return delay

    def succeeded(self, name: str, attempt: int, start: float | None) -> None:
        """Tell ``after_attempt`` (when set) that attempt number ``attempt`` succeeded."""
        if self.after_attempt is not None:
            elapsed = 0.0 if start is None else self.clock.monotonic() - start
            self.after_attempt(
                RetryState(
                    name=name,
                    attempt=attempt,
                    exception=None,
                    delay=None,
                    elapsed=elapsed,
                    classification=None,
                    policy=None,
                )
            )

    def call(
        self,
        name: str,
        fn: Callable[..., T],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        exc: Exception,
    ) -> T:
        """Retry ``fn`` after its first attempt raised ``exc``."""
        clock = self.clock
        start = clock.monotonic()
        attempt = 1
        while True:
            delay = self.failed(name, exc, attempt, start)
            if delay is None:
                # Raised outside any except block so no retry's exception becomes
                # the __context__ of another: the original propagates as it was.
                raise exc
            if delay > 0:
                clock.sleep(delay)
            attempt += 1
            try:
                result = fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 -- classified and re-raised above
                exc = error
            else:
                self.succeeded(name, attempt, start)
                return result

    async def acall(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        exc: Exception,
    ) -> T:
        """Async form of :meth:`call`."""
        clock = self.clock
        start = clock.monotonic()
        attempt = 1
        while True:
            delay = self.failed(name, exc, attempt, start)
            if delay is None:
                raise exc
            if delay > 0:
                await clock.asleep(delay)
            attempt += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 -- classified and re-raised above
                exc = error
            else:
                self.succeeded(name, attempt, start)
                return result


# --------------------------------------------------------------------------- decorator


def _wrap_sync(retrier: _Retrier, fn: Callable[P, T]) -> Callable[P, T]:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    call = retrier.call

    if retrier.after_attempt is None:

        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- handed to the retry loop below
                first = exc
            return call(name, fn, args, kwargs, first)

    else:

        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- handed to the retry loop below
                first = exc
            else:
                retrier.succeeded(name, 1, None)
                return result
            return call(name, fn, args, kwargs, first)

    return functools.wraps(fn)(wrapper)


def _wrap_async(retrier: _Retrier, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    acall = retrier.acall

    if retrier.after_attempt is None:

        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- handed to the retry loop below
                first = exc
            return await acall(name, fn, args, kwargs, first)

    else:

        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- handed to the retry loop below
                first = exc
            else:
                retrier.succeeded(name, 1, None)
                return result
            return await acall(name, fn, args, kwargs, first)

    return functools.wraps(fn)(wrapper)


@overload
def retry(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def retry(
    *,
    on: ExceptionMatcher | None = None,
    policy: RetryPolicy | None = None,
    max_retries: int | None = None,
    before_sleep: Callable[[RetryState], object] | None = None,
    after_attempt: Callable[[RetryState], object] | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    classifier: Callable[[BaseException], Classification] = classify,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def retry(
    fn: Callable[P, T] | None = None,
    /,
    *,
    on: ExceptionMatcher | None = None,
    policy: RetryPolicy | None = None,
    max_retries: int | None = None,
    before_sleep: Callable[[RetryState], object] | None = None,
    after_attempt: Callable[[RetryState], object] | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    classifier: Callable[[BaseException], Classification] = classify,
) -> Callable[P, T] | Callable[[Callable[P, T]], Callable[P, T]]:
    """Retry a function or coroutine function when it raises.

    ``@retry`` and ``@retry()`` are the same: the taxonomy's defaults.

    Without ``on=``, ``classifier`` (the taxonomy) decides: a failure is retried
    when its classification recommends it, and retry number *n* waits
    ``default_policy(failure_type).delay(n)`` (or ``policy.delay(n)``), up to that
    policy's ``max_retries``. A Retry-After carried by the classification wins over
    the curve, capped at the policy's ``max_delay``. Only :class:`Exception` is ever
    retried: ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` and
    ``asyncio.CancelledError`` propagate at once. When no retry follows, the last
    exception propagates itself (not wrapped), with a note of the attempts when
    there was more than one.

    Args:
        on: retry only exceptions of these types (a type or a tuple) or for which
            this predicate returns true; the classifier is then not consulted, and
            the policy defaults to :data:`DEFAULT_ON_POLICY`.
        policy: one policy for every failure, instead of the per-type defaults.
        max_retries: overrides the policy's retry count (0: never retry).
        before_sleep: called with a :class:`RetryState` before each wait (also
            for a zero delay, which sleeps not at all).
        after_attempt: called with a :class:`RetryState` after every attempt,
            successful or not, once the decision is made.
        clock: where time is read and slept; default :data:`~resilience.clock.system_clock`.
        rng: the source of jitter; default the policy module's shared one.
        classifier: maps an exception to a :class:`~resilience.taxonomy.Classification`.

    Returns:
        A decorator keeping the wrapped function's signature (coroutine functions
        stay coroutine functions); used bare, the decorated function.

    Raises:
        ConfigurationError: on an invalid ``on=``, ``policy=``, ``max_retries=`` or hook.
    """
    retrier = _Retrier(
        on=on,
        policy=policy,
        max_retries=max_retries,
        before_sleep=before_sleep,
        after_attempt=after_attempt,
        clock=clock,
        rng=rng,
        classifier=classifier,
    )

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        if not callable(fn):
            raise TypeError(f"retry() decorates a callable, got {fn!r}")
        if inspect.iscoroutinefunction(fn):
            async_fn = cast("Callable[P, Awaitable[object]]", fn)
            return cast("Callable[P, T]", _wrap_async(retrier, async_fn))
        return _wrap_sync(retrier, fn)

    return decorate if fn is None else decorate(fn)


# --------------------------------------------------------------------------- context form


class Attempt:
    """One attempt of a :func:`retry_context` loop: use it as ``with attempt:``.

    Attributes:
        number: the 1-based number of this attempt.
    """

    __slots__ = ("_delay", "_retrier", "_start", "number")

    def __init__(self, retrier: _Retrier, number: int, start: float | None) -> None:
        self._retrier = retrier
        self.number = number
        self._start = start
        self._delay: float | None = None

    def __repr__(self) -> str:
        return f"Attempt(number={self.number})"

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        retrier = self._retrier
        if exc is None:
            retrier.succeeded(_CONTEXT_NAME, self.number, self._start)
            return False
        if not isinstance(exc, Exception):
            return False
        if self._start is None:
            self._start = retrier.clock.monotonic()
        self._delay = retrier.failed(_CONTEXT_NAME, exc, self.number, self._start)
        # Suppress only when another attempt follows; otherwise the exception
        # leaves the with-block (and the loop) untouched but for the note.
        return self._delay is not None


class RetryContext:
    """Attempts of a block of code, for ``for`` and ``async for`` alike.

    Each iteration (each ``for``/``async for`` over the object) is a fresh run with
    its own counter, so one object can be reused and shared between threads.
    Build it with :func:`retry_context`.
    """

    __slots__ = ("_retrier",)

    def __init__(self, retrier: _Retrier) -> None:
        self._retrier = retrier

    def __iter__(self) -> Iterator[Attempt]:
        retrier = self._retrier
        attempt = Attempt(retrier, 1, None)
        while True:
            yield attempt
            delay = attempt._delay
            if delay is None:
                return
            if delay > 0:
                retrier.clock.sleep(delay)
            attempt = Attempt(retrier, attempt.number + 1, attempt._start)

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        retrier = self._retrier
        attempt = Attempt(retrier, 1, None)
        while True:
            yield attempt
            delay = attempt._delay
            if delay is None:
                return
            if delay > 0:
                await retrier.clock.asleep(delay)
            attempt = Attempt(retrier, attempt.number + 1, attempt._start)


def retry_context(
    *,
    on: ExceptionMatcher | None = None,
    policy: RetryPolicy | None = None,
    max_retries: int | None = None,
    before_sleep: Callable[[RetryState], object] | None = None,
    after_attempt: Callable[[RetryState], object] | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    classifier: Callable[[BaseException], Classification] = classify,
) -> RetryContext:
    """Retry a block of code: ``for attempt in retry_context(): with attempt: ...``.

    The same object works with ``async for`` (waits then use ``clock.asleep``).
    The rules are those of :func:`retry`, with the same arguments.

    Args:
        on, policy, max_retries, before_sleep, after_attempt, clock, rng, classifier:
            as for :func:`retry`.

    Returns:
        An iterable (sync and async) of :class:`Attempt`.

    Raises:
        ConfigurationError: on an invalid argument (see :func:`retry`).
    """
    return RetryContext(
        _Retrier(
            on=on,
            policy=policy,
            max_retries=max_retries,
            before_sleep=before_sleep,
            after_attempt=after_attempt,
            clock=clock,
            rng=rng,
            classifier=classifier,
        )
    )

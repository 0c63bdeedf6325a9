"""Circuit breaker: stop calling a dependency that is down, probe it, resume when it answers.

States (see :class:`~resilience.storage.CircuitState`)::

    CLOSED --(failure_threshold consecutive failures, or failure rate >= threshold
              over the window once minimum_calls calls were seen)--> OPEN
    OPEN --(reset_timeout passed; the next admitted call is a probe)--> HALF_OPEN
    HALF_OPEN --(success_threshold successful probes)--> CLOSED
    HALF_OPEN --(a probe fails)--> OPEN for another reset_timeout
    any --force_open()--> FORCED_OPEN    any --disable()--> DISABLED    any --reset()--> CLOSED

What counts as a failure: an ``Exception`` whose classified failure type is in
``failure_types`` (by default every TRANSIENT, EXTERNAL, SYSTEM and UNKNOWN type:
a bad payload, a missing record or a bug is not an outage). Any other exception
still propagates, but counts as a *success* of the dependency, since the
dependency answered. ``BaseException``s that are not ``Exception``s
(``KeyboardInterrupt``, ``asyncio.CancelledError``) record nothing; they only give
back a half-open probe slot.

State lives behind a :class:`~resilience.storage.BreakerStateStore`, so breakers
with the same name in many processes share it. Every change is one
compare-and-set of the record read just before; no lock is held across the
protected call, so calls through one breaker run concurrently. Time is wall time
(``clock.time()``) because the state is read by other processes and machines.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

from resilience._breaker_rules import (
    DEFAULT_FAILURE_TYPES,
    FRESH,
    Outcome,
    Permit,
    PermitKind,
    Rules,
    closed_permit,
)
from resilience._breaker_rules import failure_types as _failure_types
from resilience.clock import Clock, system_clock
from resilience.errors import CircuitOpenError, ConfigurationError, ResilienceError
from resilience.storage.base import BreakerRecord, BreakerStateStore, CircuitState
from resilience.storage.fallback import FallbackBreakerStore
from resilience.storage.memory import MemoryBreakerStore
from resilience.taxonomy import Classification, FailureType, classify

if TYPE_CHECKING:
    from datetime import timedelta
    from types import TracebackType

__all__ = [
    "DEFAULT_FAILURE_TYPES",
    "CircuitBreaker",
    "CircuitState",
    "Listener",
    "Permit",
    "PermitKind",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

_logger = logging.getLogger(__name__)

Listener = Callable[["CircuitBreaker", CircuitState, CircuitState], None]
"""Called as ``listener(breaker, old_state, new_state)`` after a change is stored."""

_MAX_TRIES: Final = 256
_CLOSED: Final = CircuitState.CLOSED


class CircuitBreaker:
    """Guards one dependency: rejects calls while it is down, probes it, resumes.

    Use it as ``breaker.call(fn, *args)``, ``await breaker.call_async(fn, *args)``,
    a decorator (``@breaker`` on sync or async functions), or ``with breaker:`` /
    ``async with breaker:``. Code that runs the work itself uses
    :meth:`before_call` then :meth:`record_success` / :meth:`record_failure`.

    A closed breaker with the default settings writes nothing on a success after a
    success: the call path is one store read, a state check and the call. A
    failure-rate window (``failure_rate_threshold``) records every outcome, so every
    call also pays one compare-and-set write.

    Args:
        name: the dependency's name (``"payments-api"``); breakers with the same name
            and store share their state.
        failure_threshold: consecutive counted failures that open a closed breaker;
            ``None`` to rely on the failure rate only.
        failure_rate_threshold: open when the share of counted failures in the window
            reaches this, in (0, 1]; ``None`` (the default) keeps no window.
        window: the failure-rate window: an ``int`` is the last N calls, a
            ``timedelta`` the calls of the last period (kept in 10 buckets, so the
            oldest tenth expires at once).
        minimum_calls: calls the window must hold before the rate can open the breaker.
        reset_timeout: how long an open breaker rejects calls before admitting a probe.
        half_open_max_calls: probe calls allowed in flight at once while half-open.
        success_threshold: successful probes that close a half-open breaker.
        probe_timeout: how long a probe may hold its slot; after it the slot is
            presumed lost (the process died mid-call) and given to the next caller.
        failure_types: the failure types that count; default
            :data:`DEFAULT_FAILURE_TYPES`.
        is_failure: decides what counts instead of the classifier and
            ``failure_types`` (it sees only ``Exception`` instances).
        classifier: maps an exception to a :class:`~resilience.taxonomy.Classification`.
        store: where the state lives; default a private in-process store. A shared
            store (SQLite, Redis, PostgreSQL) is wrapped in a
            :class:`~resilience.storage.fallback.FallbackBreakerStore` unless
            ``on_store_error="raise"``: while it is unreachable the breaker keeps
            protecting its dependency with local state, and logs a warning.
        on_store_error: ``"local"`` (the default) or ``"raise"`` (let
            :class:`~resilience.errors.StorageUnavailable` reach the caller).
        clock: the time source; its wall time (``time()``) is stored.
        listeners: called as ``listener(breaker, old, new)`` on every state change.

    Raises:
        ConfigurationError: when a setting is out of range (``key`` names it).
    """

    __slots__ = (
        "__weakref__",
        "_classifier",
        "_clock",
        "_failure_types",
        "_is_failure",
        "_listeners",
        "_load",
        "_name",
        "_permits",
        "_rules",
        "_store",
        "_windowed",
        "_writing",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int | None = 5,
        failure_rate_threshold: float | None = None,
        window: int | timedelta = 100,
        minimum_calls: int = 10,
        reset_timeout: float | timedelta = 60.0,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        probe_timeout: float | timedelta = 60.0,
        failure_types: Collection[FailureType] | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        classifier: Callable[[BaseException], Classification] = classify,
        store: BreakerStateStore | None = None,
        on_store_error: str = "local",
        clock: Clock = system_clock,
        listeners: Iterable[Listener] = (),
    ) -> None:
        if on_store_error not in ("local", "raise"):
            raise ConfigurationError(
                f"on_store_error must be 'local' or 'raise', got {on_store_error!r}",
                key="on_store_error",
                value=on_store_error,
            )
        self._rules = Rules.build(
            name=name,
            failure_threshold=failure_threshold,
            failure_rate_threshold=failure_rate_threshold,
            window=window,
            minimum_calls=minimum_calls,
            reset_timeout=reset_timeout,
            half_open_max_calls=half_open_max_calls,
            success_threshold=success_threshold,
            probe_timeout=probe_timeout,
        )
        self._name = name
        self._windowed = failure_rate_threshold is not None
        self._failure_types = _failure_types(failure_types)
        self._is_failure = is_failure
        self._classifier = classifier
        if store is None:
            store = MemoryBreakerStore()
        elif on_store_error == "local" and not isinstance(
            store, MemoryBreakerStore | FallbackBreakerStore
        ):
            store = FallbackBreakerStore(store, clock=clock)
        self._store: BreakerStateStore = store
        self._load = self._store.load
        self._clock = clock
        self._listeners: tuple[Listener, ...] = tuple(listeners)
        # The threads of a process take turns writing this breaker: a compare-and-set
        # then loses only to other processes. Without turns, threads queued on the
        # store's lock invalidated each other's reads until the tries ran out and an
        # outcome went unrecorded (8 threads on one memory store: 1 run in 13).
        self._writing = threading.Lock()
        # One stack of permits per thread / asyncio task, so `with breaker:` nests
        # and runs concurrently without sharing the permit of another caller.
        self._permits: contextvars.ContextVar[tuple[Permit, ...]] = contextvars.ContextVar(
            f"breaker_permits_{name}", default=()
        )

    # -- reading -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The dependency's name."""
        return self._name

    @property
    def failure_threshold(self) -> int | None:
        """Consecutive counted failures that open the breaker (``None``: rate only)."""
        return self._rules.failure_threshold

    @property
    def failure_rate_threshold(self) -> float | None:
        """The failure share over the window that opens the breaker, if any."""
        return self._rules.failure_rate_threshold

    @property
    def reset_timeout(self) -> float:
        """Seconds an open breaker refuses calls before admitting a probe."""
        return self._rules.reset_timeout

    @property
    def state(self) -> CircuitState:
        """The effective state, read without writing anything.

        An open breaker whose reset timeout has passed reports ``HALF_OPEN``: the
        next call will be admitted as a probe. The stored record changes only when
        that call is admitted.
        """
        return self._rules.effective_state(self._load(self._name), self._clock.time())

    def seconds_until_probe(self) -> float | None:
        """Seconds until the breaker admits a call (0 when it would admit one now).

        Returns:
            0.0 while closed, disabled or half-open with a free slot; the time left
            while open (or while every probe slot is taken); ``None`` while forced
            open, since no probe is scheduled.
        """
        return self._rules.wait(self._load(self._name) or FRESH, self._clock.time())

    @property
    def next_probe_at(self) -> float | None:
        """Wall time at which a call will next be admitted (``None`` while forced open)."""
        now = self._clock.time()
        wait = self._rules.wait(self._load(self._name) or FRESH, now)
        return None if wait is None else now + wait

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(breaker, old_state, new_state)`` on every state change.

        Listeners run in the process that stored the change, right after storing it;
        one that raises is logged and does not affect the call.
        """
        self._listeners = (*self._listeners, listener)

    # -- calling -------------------------------------------------------------

    def call(self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Returns:
            What ``fn`` returned.

        Raises:
            CircuitOpenError: when the breaker rejects the call (``fn`` is not called).
        """
        record = self._load(self._name)
        if record is None or record.state is _CLOSED:
            # The hot path, kept inline: a closed breaker admits without writing.
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self.record_failure(exc, permit=closed_permit(record))
                raise
            if self._windowed or (record is not None and record.consecutive_failures):
                self._settle(closed_permit(record), Outcome.SUCCESS)
            return result
        permit = self.before_call()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.record_failure(exc, permit=permit)
            raise
        self.record_success(permit=permit)
        return result

    async def call_async(
        self, fn: Callable[_P, Awaitable[_R]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        Returns:
            What the awaited call returned.

        Raises:
            CircuitOpenError: when the breaker rejects the call (``fn`` is not called).
        """
        permit = self.before_call()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.record_failure(exc, permit=permit)
            raise
        self.record_success(permit=permit)
        return result

    @overload
    def __call__(
        self, fn: Callable[_P, Coroutine[Any, Any, _R]]
    ) -> Callable[_P, Coroutine[Any, Any, _R]]: ...

    @overload
    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]: ...

    def __call__(self, fn: Callable[_P, Any]) -> Callable[_P, Any]:
        """Decorate ``fn`` (sync or ``async def``) so every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return guarded_async

        load, name, call = self._load, self._name, self.call

        @functools.wraps(fn)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            # The closed hot path of call(), inlined: a second call layer would double
            # the overhead of a decorated function.
            record = load(name)
            if record is not None and record.state is not _CLOSED:
                return call(fn, *args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self.record_failure(exc, permit=closed_permit(record))
                raise
            if self._windowed or (record is not None and record.consecutive_failures):
                self._settle(closed_permit(record), Outcome.SUCCESS)
            return result

        return guarded

    def __enter__(self) -> Permit:
        permit = self.before_call()
        self._permits.set((*self._permits.get(), permit))
        return permit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = self._permits.get()
        self._permits.set(stack[:-1])
        if exc is None:
            self.record_success(permit=stack[-1])
        else:
            self.record_failure(exc, permit=stack[-1])

    async def __aenter__(self) -> Permit:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- admission and outcomes for callers that run the work themselves -----

    def before_call(self) -> Permit:
        """Admit one call or refuse it; opening the half-open door happens here.

        Returns:
            The permit to pass to :meth:`record_success` / :meth:`record_failure`.

        Raises:
            CircuitOpenError: when the breaker is open, forced open, or half-open with
                every probe slot taken (``retry_after`` says when to come back).
        """
        record = self._load(self._name)
        if record is None or record.state is _CLOSED:
            return closed_permit(record)
        try:
            old, new, permit = self._transact(self._rules.admit)
        except _ContentionError:
            # Every try lost to another writer taking the same slot: they probe, we wait.
            raise CircuitOpenError(self._name, 0.0) from None
        if new is not None and new.state is not old.state:
            self._notify(((old.state, new.state),))
        return permit

    def record_success(self, *, permit: Permit | None = None) -> None:
        """Record that a call succeeded.

        Args:
            permit: the permit from :meth:`before_call`. Without one, the outcome is
                taken as that of a call admitted now: it counts while closed, acts as
                a probe result once the reset timeout has passed, and is ignored while
                the breaker is open and waiting.
        """
        if permit is None:
            self._settle(permit, Outcome.SUCCESS)
        elif permit.kind is PermitKind.CLOSED and permit.clean and not self._windowed:
            # Nothing to reset: the same shortcut `call()` takes, and no store round trip.
            return
        elif permit.kind is not PermitKind.PASSTHROUGH:
            self._settle(permit, Outcome.SUCCESS)

    def record_failure(self, exc: BaseException, *, permit: Permit | None = None) -> None:
        """Record that a call raised ``exc``.

        Args:
            exc: the exception. A counted failure moves the breaker toward opening;
                an uncounted ``Exception`` counts as a success of the dependency; a
                ``BaseException`` that is not an ``Exception`` only gives back a probe
                slot.
            permit: the permit from :meth:`before_call` (see :meth:`record_success`).
        """
        if permit is not None and permit.kind is PermitKind.PASSTHROUGH:
            return
        if not isinstance(exc, Exception):
            outcome = Outcome.RELEASE
        elif self._counts(exc):
            outcome = Outcome.FAILURE
        else:
            outcome = Outcome.SUCCESS
        self._settle(permit, outcome)

    # -- operator modes ------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until :meth:`reset` (``retry_after`` is ``None``)."""
        self._operate(CircuitState.FORCED_OPEN)

    def disable(self) -> None:
        """Let every call through and record nothing, until :meth:`reset`."""
        self._operate(CircuitState.DISABLED)

    def reset(self) -> None:
        """Close the breaker and forget its counts (the trip count is kept)."""
        self._operate(_CLOSED)

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self._name!r}, state={self.state.value!r})"

    # -- internals -----------------------------------------------------------

    def _counts(self, exc: Exception) -> bool:
        try:
            if self._is_failure is not None:
                return bool(self._is_failure(exc))
            return self._classifier(exc).failure_type in self._failure_types
        except Exception:
            # A broken predicate or classifier must not hide the caller's exception.
            _logger.exception("breaker %r: deciding whether %r counts failed", self._name, exc)
            return True

    def _transact(
        self, step: Callable[[BreakerRecord, float], tuple[BreakerRecord | None, _T]]
    ) -> tuple[BreakerRecord, BreakerRecord | None, _T]:
        with self._writing:
            for _ in range(_MAX_TRIES):
                loaded = self._load(self._name)
                current = FRESH if loaded is None else loaded
                new, result = step(current, self._clock.time())
                if new is None:
                    return current, None, result
                expected = None if loaded is None else loaded.version
                if self._store.compare_and_set(self._name, expected, new):
                    return current, new, result
        raise _ContentionError

    def _settle(self, permit: Permit | None, outcome: Outcome) -> None:
        def step(record: BreakerRecord, now: float) -> tuple[BreakerRecord | None, bool]:
            return self._rules.settle(record, now, permit, outcome)

        try:
            old, new, via_half_open = self._transact(step)
        except _ContentionError:
            # Never turn the caller's result into an error because others kept writing.
            _logger.warning("breaker %r: %s not recorded (store contention)", self._name, outcome)
            return
        if new is None:
            return
        if via_half_open:
            half_open = CircuitState.HALF_OPEN
            changes = [(old.state, half_open)]
            if new.state is not half_open:
                changes.append((half_open, new.state))
            self._notify(changes)
        elif new.state is not old.state:
            self._notify(((old.state, new.state),))

    def _operate(self, target: CircuitState) -> None:
        def step(record: BreakerRecord, now: float) -> tuple[BreakerRecord | None, None]:
            return self._rules.operate(record, now, target), None

        try:
            old, new, _ = self._transact(step)
        except _ContentionError:
            raise ResilienceError(
                f"breaker {self._name!r}: could not store {target.value} after "
                f"{_MAX_TRIES} tries (other writers kept winning); try again"
            ) from None
        if new is not None and new.state is not old.state:
            self._notify(((old.state, new.state),))

    def _notify(self, changes: Iterable[tuple[CircuitState, CircuitState]]) -> None:
        for old, new in changes:
            for listener in self._listeners:
                try:
                    listener(self, old, new)
                except Exception:
                    _logger.exception(
                        "breaker %r: listener %r failed on %s -> %s",
                        self._name,
                        listener,
                        old.value,
                        new.value,
                    )


class _ContentionError(Exception):
    """Every compare-and-set try lost to another writer."""

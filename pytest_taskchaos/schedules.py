"""When an injected fault fires: composable, deterministic schedules.

A :class:`Schedule` is a conjunction of conditions evaluated against a
:class:`CallInfo` (which task, which queue, which attempt, what virtual time,
which call of the fault's injection point). Every condition must hold for the
fault to fire::

    outage = window(300, 1500) & task("payments.*")
    flaky = probability(0.3) & only_first_attempts()
    outage.should_fire(call, rng)

Schedules are pure values: no counters, no clock. Randomness comes only from
the decision source passed to :meth:`Schedule.should_fire` (a seeded
``random.Random`` in the simulation), so a seed reproduces every decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from resilience.clock import seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = [
    "CallInfo",
    "Condition",
    "DecisionSource",
    "Schedule",
    "all_of",
    "always",
    "args_match",
    "every",
    "first",
    "only_first_attempts",
    "only_retries",
    "probability",
    "queue",
    "task",
    "window",
]

_EMPTY: Mapping[str, object] = MappingProxyType({})


class DecisionSource(Protocol):
    """Where probabilistic schedules draw from (``random.Random`` fits)."""

    def random(self) -> float:
        """Return the next float in ``[0.0, 1.0)``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CallInfo:
    """One call reaching a fault's injection point, as a schedule sees it.

    Attributes:
        task_name: the registered task name (``"payments.charge"``).
        queue: the queue the message came from, when known.
        args: the task's positional arguments.
        kwargs: the task's keyword arguments.
        retries: the attempt's retry number (0 on the first attempt).
        now: virtual seconds since the simulation started.
        call_index: 1-based count of calls that reached this fault's injection point.
    """

    task_name: str
    queue: str | None = None
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=lambda: _EMPTY)
    retries: int = 0
    now: float = 0.0
    call_index: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.task_name, str):
            raise ConfigurationError(
                f"task_name must be a string, got {self.task_name!r}",
                key="task_name",
                value=self.task_name,
            )
        _check_int(self.retries, name="retries", minimum=0)
        _check_int(self.call_index, name="call_index", minimum=1)
        if isinstance(self.now, bool) or not math.isfinite(self.now):
            raise ConfigurationError(
                f"now must be finite virtual seconds, got {self.now!r}", key="now", value=self.now
            )


class Condition(Protocol):
    """One requirement of a schedule."""

    @property
    def random(self) -> bool:
        """Whether evaluating it consumes a decision from the source."""
        ...

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        """Whether the call satisfies this requirement."""
        ...

    def describe(self) -> str:
        """A short human-readable form for reports and error messages."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A conjunction of conditions; the fault fires when all of them hold.

    Compose with ``&`` or :func:`all_of`. Deterministic conditions are
    checked first, so a probability draws from the decision source only for
    calls that pass every filter: adding a filtered fault does not shift the
    random stream seen by calls it does not concern.

    Attributes:
        conditions: the requirements, deterministic ones first.
    """

    conditions: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(c for c in self.conditions if not c.random) + tuple(
            c for c in self.conditions if c.random
        )
        object.__setattr__(self, "conditions", ordered)

    def __and__(self, other: Schedule) -> Schedule:
        if not isinstance(other, Schedule):
            return NotImplemented
        return Schedule(conditions=self.conditions + other.conditions)

    @property
    def random(self) -> bool:
        """Whether any condition draws from the decision source."""
        return any(c.random for c in self.conditions)

    def should_fire(self, call: CallInfo, rng: DecisionSource | None = None) -> bool:
        """Decide whether the fault fires on this call.

        Args:
            call: the call reaching the fault's injection point.
            rng: the seeded decision source; required when the schedule is random.

        Returns:
            ``True`` when every condition holds.

        Raises:
            ConfigurationError: when the schedule is random and ``rng`` is ``None``.
        """
        if rng is None and self.random:
            raise ConfigurationError(
                f"schedule {self.describe()} is random and needs a seeded decision source",
                key="rng",
                value=None,
            )
        return all(c.holds(call, rng) for c in self.conditions)

    def describe(self) -> str:
        """A short human-readable form (``"first(2) & task('pay.*')"``)."""
        if not self.conditions:
            return "always()"
        return " & ".join(c.describe() for c in self.conditions)


def _check_int(value: object, *, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}", key=name, value=value)
    if value < minimum:
        raise ConfigurationError(
            f"{name} must be >= {minimum}, got {value!r}", key=name, value=value
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class _First:
    n: int
    random: bool = False

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        return call.call_index <= self.n

    def describe(self) -> str:
        return f"first({self.n})"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Every:
    n: int
    random: bool = False

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        return call.call_index % self.n == 0

    def describe(self) -> str:
        return f"every({self.n})"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Probability:
    p: float
    random: bool = True

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        if rng is None:
            raise ConfigurationError(
                "probability() needs a seeded decision source", key="rng", value=None
            )
        # Always draw, also for p in {0, 1}, so the stream's position depends
        # only on which calls were evaluated, never on the rates chosen.
        return rng.random() < self.p

    def describe(self) -> str:
        return f"probability({self.p!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Window:
    start: float
    end: float
    random: bool = False

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        return self.start <= call.now < self.end

    def describe(self) -> str:
        return f"window({self.start!r}, {self.end!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Attempts:
    retries: bool
    random: bool = False

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        return (call.retries > 0) is self.retries

    def describe(self) -> str:
        return "only_retries()" if self.retries else "only_first_attempts()"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Task:
    pattern: str
    random: bool = False

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        return fnmatchcase(call.task_name, self.pattern)

    def describe(self) -> str:
        return f"task({self.pattern!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Queue:
    pattern: str
    random: bool = False

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        return call.queue is not None and fnmatchcase(call.queue, self.pattern)

    def describe(self) -> str:
        return f"queue({self.pattern!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Args:
    predicate: Callable[[tuple[object, ...], Mapping[str, object]], bool]
    random: bool = False

    def holds(self, call: CallInfo, rng: DecisionSource | None) -> bool:
        return bool(self.predicate(call.args, call.kwargs))

    def describe(self) -> str:
        name = getattr(self.predicate, "__qualname__", repr(self.predicate))
        return f"args_match({name})"


def always() -> Schedule:
    """Fire on every call.

    Returns:
        The empty conjunction.
    """
    return Schedule()


def first(n: int) -> Schedule:
    """Fire on the first ``n`` calls of the injection point, then never again.

    Args:
        n: how many calls fail (at least 1).

    Returns:
        The schedule.

    Raises:
        ConfigurationError: when ``n`` is not an integer >= 1.
    """
    return Schedule(conditions=(_First(n=_check_int(n, name="times", minimum=1)),))


def every(n: int) -> Schedule:
    """Fire on calls ``n``, ``2n``, ``3n``, ... of the injection point.

    Args:
        n: the period (at least 1; 1 means every call).

    Returns:
        The schedule.

    Raises:
        ConfigurationError: when ``n`` is not an integer >= 1.
    """
    return Schedule(conditions=(_Every(n=_check_int(n, name="every", minimum=1)),))


def probability(p: float) -> Schedule:
    """Fire on each call with probability ``p``, drawn from the seeded decision source.

    Args:
        p: the rate, in ``[0, 1]``.

    Returns:
        The schedule.

    Raises:
        ConfigurationError: when ``p`` is not a number in ``[0, 1]``.
    """
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ConfigurationError(f"rate must be a number in [0, 1], got {p!r}", key="rate", value=p)
    return Schedule(conditions=(_Probability(p=float(p)),))


def window(start: float | timedelta, end: float | timedelta) -> Schedule:
    """Fire only while virtual time is in ``[start, end)`` (an outage).

    Args:
        start: virtual seconds since the simulation started (or a ``timedelta``).
        end: when the outage ends, exclusive; ``math.inf`` for "never".

    Returns:
        The schedule.

    Raises:
        ConfigurationError: when a bound is not a duration, ``start`` is negative
            or not finite, or the window is empty or inverted.
    """
    try:
        t0 = seconds_of(start, name="window start")
        t1 = seconds_of(end, name="window end")
    except TypeError as exc:
        raise ConfigurationError(str(exc), key="window", value=(start, end)) from None
    if not math.isfinite(t0) or t0 < 0:
        raise ConfigurationError(
            f"window start must be finite seconds >= 0, got {start!r}", key="window", value=start
        )
    if math.isnan(t1) or t1 <= t0:
        raise ConfigurationError(
            f"window [{t0!r}, {t1!r}) is empty or inverted: end must be after start",
            key="window",
            value=(start, end),
        )
    return Schedule(conditions=(_Window(start=t0, end=t1),))


def only_retries() -> Schedule:
    """Fire only on retries (``retries > 0``), never on a first attempt.

    Returns:
        The schedule.
    """
    return Schedule(conditions=(_Attempts(retries=True),))


def only_first_attempts() -> Schedule:
    """Fire only on first attempts (``retries == 0``).

    Returns:
        The schedule.
    """
    return Schedule(conditions=(_Attempts(retries=False),))


def _pattern(value: object, *, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{name} must be a non-empty glob pattern, got {value!r}", key=name, value=value
        )
    return value


def task(pattern: str) -> Schedule:
    """Fire only for tasks whose name matches the glob ``pattern`` (``"payments.*"``).

    Args:
        pattern: an ``fnmatch`` pattern, case-sensitive.

    Returns:
        The schedule.

    Raises:
        ConfigurationError: when ``pattern`` is not a non-empty string.
    """
    return Schedule(conditions=(_Task(pattern=_pattern(pattern, name="task")),))


def queue(pattern: str) -> Schedule:
    """Fire only for messages from queues matching the glob ``pattern``.

    Args:
        pattern: an ``fnmatch`` pattern, case-sensitive.

    Returns:
        The schedule.

    Raises:
        ConfigurationError: when ``pattern`` is not a non-empty string.
    """
    return Schedule(conditions=(_Queue(pattern=_pattern(pattern, name="queue")),))


def args_match(
    predicate: Callable[[tuple[object, ...], Mapping[str, object]], bool],
) -> Schedule:
    """Fire only when ``predicate(args, kwargs)`` is true for the task's arguments.

    Args:
        predicate: called with the positional and keyword arguments.

    Returns:
        The schedule.

    Raises:
        ConfigurationError: when ``predicate`` is not callable.
    """
    if not callable(predicate):
        raise ConfigurationError(
            f"args predicate must be callable, got {predicate!r}", key="args", value=predicate
        )
    return Schedule(conditions=(_Args(predicate=predicate),))


def all_of(*schedules: Schedule) -> Schedule:
    """Combine schedules: the result fires only when every one of them would.

    Args:
        *schedules: the schedules to combine (none: :func:`always`).

    Returns:
        The conjunction.

    Raises:
        ConfigurationError: when an argument is not a :class:`Schedule`.
    """
    conditions: tuple[Condition, ...] = ()
    for schedule in schedules:
        if not isinstance(schedule, Schedule):
            raise ConfigurationError(
                f"all_of() takes schedules, got {schedule!r}", key="schedule", value=schedule
            )
        conditions += schedule.conditions
    return Schedule(conditions=conditions)

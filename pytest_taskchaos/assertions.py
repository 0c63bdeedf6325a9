"""Assertions over a simulation's history, whose failures show what happened.

Each function takes the history first (the list of
:class:`~pytest_taskchaos._history.Event` a
:class:`~pytest_taskchaos.simulation.Simulation` records), then keyword-only
options, and returns the events it matched. When the history does not satisfy
it, it raises :class:`ChaosAssertionError`: the message says what was expected,
what was measured, and then prints the relevant slice of the history, one
:meth:`Event.describe() <pytest_taskchaos._history.Event.describe>` per line
(see :func:`history_slice`).

A ``task`` argument is a task name or an :mod:`fnmatch` pattern
(``"billing.*"``). A task with no events at all is a failure that lists the
tasks the history does hold: a typo must not pass as "never retried".

Retries are ``RETRIED`` events that are not ``deferred`` (a deferral, by an open
breaker or a busy idempotency key, is not a failure), unless a function says
otherwise.

Example:
    >>> from pytest_taskchaos._history import Event, EventKind
    >>> def ev(kind, at, attempt=1, **details):
    ...     return Event(kind=EventKind(kind), at=at, task_name="billing.charge",
    ...                  task_id="a", attempt=attempt, details=details)
    >>> history = [ev("published", 0.0), ev("started", 0.0), ev("retried", 0.1, countdown=2.0),
    ...            ev("started", 2.1, attempt=2), ev("succeeded", 2.2, attempt=2)]
    >>> len(assert_retried(history, "billing.*", times=1))
    1
    >>> try:
    ...     assert_not_retried(history, "billing.charge")
    ... except ChaosAssertionError as error:
    ...     print(str(error).splitlines()[0])
    expected task 'billing.charge' not to be retried
"""

from __future__ import annotations

import difflib
import math
from bisect import bisect_right
from collections import Counter
from fnmatch import fnmatchcase
from textwrap import indent
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_taskchaos._history import Event, EventKind
from resilience import CircuitState, FailureType, RetryPolicy
from resilience.clock import seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import timedelta

__all__ = [
    "ChaosAssertionError",
    "assert_breaker",
    "assert_breaker_never_opened",
    "assert_budget_held",
    "assert_dead_lettered",
    "assert_effect_once",
    "assert_faults_fired",
    "assert_idempotent",
    "assert_not_dead_lettered",
    "assert_not_retried",
    "assert_retried",
    "assert_retries_spread",
    "assert_retry_delays_within",
    "assert_succeeded",
    "history_slice",
]

_TOLERANCE = 1e-6  # seconds: countdowns are computed by subtracting virtual times
_Run = tuple[str, int]  # (task_id, attempt): one run of a task
_RUN_ENDS = frozenset(
    {EventKind.RAISED, EventKind.FAILED, EventKind.RETRIED, EventKind.WORKER_LOST}
)  # a run that ends so did not succeed: its claim was released or lost


class ChaosAssertionError(AssertionError):
    """A chaos assertion failed; the message shows the relevant slice of the history.

    Attributes:
        events: the events the message shows (the whole slice, before truncation).
    """

    def __init__(self, message: str, *, events: Sequence[Event] = ()) -> None:
        super().__init__(message)
        self.events: tuple[Event, ...] = tuple(events)


# --- the history slice -------------------------------------------------------


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatchcase(name, pattern)


def _run(event: Event) -> _Run:
    return (event.task_id, event.attempt)


def _select(
    events: Iterable[Event],
    *,
    task: str | None = None,
    task_id: str | None = None,
    key: str | None = None,
    breaker: str | None = None,
) -> list[Event]:
    base = [
        event
        for event in events
        if (task is None or _matches(event.task_name, task))
        and (task_id is None or event.task_id == task_id)
    ]
    if key is not None:
        runs = {_run(event) for event in base if event.details.get("key") == key}
        base = [event for event in base if _run(event) in runs]
    if breaker is not None:
        admitted = {
            _run(event)
            for event in base
            if event.kind is EventKind.CALL_ADMITTED and event.details.get("breaker") == breaker
        }
        base = [
            event
            for event in base
            if event.details.get("breaker") == breaker
            or (event.kind is EventKind.RAISED and _run(event) in admitted)
        ]
    return base


def _render(events: Sequence[Event], limit: int) -> str:
    if not events:
        return "(no events)"
    lines = [event.describe() for event in events]
    if len(lines) <= limit:
        return "\n".join(lines)
    head = limit // 2
    tail = limit - head
    hidden = len(lines) - limit
    return "\n".join([*lines[:head], f"... {hidden} more events ...", *lines[-tail:]])


def history_slice(
    events: Sequence[Event],
    *,
    task: str | None = None,
    task_id: str | None = None,
    key: str | None = None,
    breaker: str | None = None,
    limit: int = 40,
) -> str:
    """The part of a history that concerns a task, task id, key or breaker, one event a line.

    Filters combine (an event must pass each one given). Longer slices keep their
    first ``limit // 2`` and last ``limit - limit // 2`` lines with a
    ``... N more events ...`` line between.

    Args:
        events: the history.
        task: events of this task name or fnmatch pattern.
        task_id: events of this task id.
        key: every event of the runs (task id and attempt) that have an event whose
            ``details["key"]`` is ``key`` (idempotency checks, side effects).
        breaker: events whose ``details["breaker"]`` is ``breaker``, and the
            ``RAISED`` events of the runs that breaker admitted.
        limit: the most event lines to print, at least 2.

    Returns:
        One :meth:`Event.describe` per line, or ``"(no events)"``.

    Raises:
        ConfigurationError: ``limit`` is not an int >= 2, or a filter is not a
            string (the error's ``.key`` names the argument).
    """
    for name, value in (("task", task), ("task_id", task_id), ("key", key), ("breaker", breaker)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(
                f"{name} must be a string or None, got {value!r}", key=name, value=value
            )
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2:
        raise ConfigurationError(
            f"limit must be an int >= 2, got {limit!r}", key="limit", value=limit
        )
    selected = _select(events, task=task, task_id=task_id, key=key, breaker=breaker)
    return _render(selected, limit)


def _fail(lines: Iterable[str], shown: Sequence[Event], title: str) -> NoReturn:
    __tracebackhide__ = True
    body = "\n".join(lines)
    history = indent(_render(shown, 40), "  ")
    count = len(shown)
    plural = "event" if count == 1 else "events"
    raise ChaosAssertionError(f"{body}\n{title} ({count} {plural}):\n{history}", events=shown)


# --- argument checks ---------------------------------------------------------


def _name(value: object, *, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{key} must be a non-empty string, got {value!r}", key=key, value=value
        )
    return value


def _count(value: object, *, key: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{key} must be an int >= {minimum} or None, got {value!r}", key=key, value=value
        )
    return value


def _seconds(value: float | timedelta, *, key: str, allow_zero: bool) -> float:
    try:
        seconds = seconds_of(value, name=key)
    except TypeError as error:
        raise ConfigurationError(str(error), key=key, value=value) from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{key} must be a finite number of seconds {bound}, got {value!r}", key=key, value=value
        )
    return seconds


def _required(value: object, *, key: str, minimum: int) -> int:
    count = _count(value, key=key, minimum=minimum)
    if count is None:
        raise ConfigurationError(f"{key} must be an int >= {minimum}, got None", key=key)
    return count


def _times(count: int) -> str:
    return f"{count} time" if count == 1 else f"{count} times"


def _n(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _retries_text(count: int) -> str:
    return _n(count, "retry", "retries")


def _flag(value: object, *, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{key} must be True or False, got {value!r}", key=key, value=value
        )
    return value


def _s(seconds: float) -> str:
    return f"{seconds:g}s"


# --- shared queries ----------------------------------------------------------


def _task_events(events: Sequence[Event], task: object) -> list[Event]:
    """The events of ``task`` (a name or pattern); none at all is a failure."""
    pattern = _name(task, key="task")
    selected = [event for event in events if _matches(event.task_name, pattern)]
    if selected:
        return selected
    names = sorted({event.task_name for event in events})
    if not names:
        measured = "the history is empty"
    else:
        close = difflib.get_close_matches(pattern, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        measured = f"tasks in the history: {', '.join(names)}{hint}"
    _fail([f"no events for task {pattern!r}", measured], [], "history of that task")


def _retries(events: Iterable[Event]) -> list[Event]:
    return [
        event
        for event in events
        if event.kind is EventKind.RETRIED and not event.details.get("deferred", False)
    ]


def _task_ids(events: Iterable[Event]) -> list[str]:
    return list(dict.fromkeys(event.task_id for event in events))


def _of_ids(events: Iterable[Event], ids: Iterable[str]) -> list[Event]:
    wanted = set(ids)
    return [event for event in events if event.task_id in wanted]


# --- retries -----------------------------------------------------------------


def assert_retried(
    events: Sequence[Event],
    task: str,
    *,
    times: int | None = None,
    at_least: int | None = None,
    at_most: int | None = None,
    per_task_id: bool = False,
) -> list[Event]:
    """Assert how many times a task was retried (non-deferred ``RETRIED`` events).

    With no count given, the task must have been retried at least once.

    Args:
        events: the history.
        task: the task name or fnmatch pattern.
        times: the exact number of retries; excludes ``at_least`` and ``at_most``.
        at_least: the fewest retries allowed.
        at_most: the most retries allowed.
        per_task_id: check the count for every task id of the task, not the total.

    Returns:
        The task's non-deferred ``RETRIED`` events.

    Raises:
        ChaosAssertionError: the count is outside the bounds, or the task has no events.
        ConfigurationError: a negative count, ``times`` with another bound, or
            ``at_least > at_most``.
    """
    __tracebackhide__ = True
    exact = _count(times, key="times")
    low = _count(at_least, key="at_least")
    high = _count(at_most, key="at_most")
    if exact is not None and (low is not None or high is not None):
        raise ConfigurationError(
            "times excludes at_least and at_most: give an exact count or bounds, not both",
            key="times",
            value=times,
        )
    if low is not None and high is not None and low > high:
        raise ConfigurationError(
            f"at_most ({high}) must be >= at_least ({low})", key="at_most", value=at_most
        )
    if exact is not None:
        low = high = exact
        wanted = f"exactly {_times(exact)}"
    elif low is not None and high is not None:
        wanted = f"between {low} and {high} times"
    elif high is not None:
        wanted = f"at most {_times(high)}"
    else:
        low = 1 if low is None else low
        wanted = f"at least {_times(low)}"
    by_id = _flag(per_task_id, key="per_task_id")
    mine = _task_events(events, task)
    retried = _retries(mine)

    def outside(count: int) -> bool:
        return (low is not None and count < low) or (high is not None and count > high)

    if not by_id:
        if outside(len(retried)):
            _fail(
                [
                    f"expected task {task!r} to be retried {wanted}",
                    f"measured {_retries_text(len(retried))} (non-deferred retried events)",
                ],
                mine,
                f"history of task {task!r}",
            )
        return retried
    counts = Counter(event.task_id for event in retried)
    bad = [task_id for task_id in _task_ids(mine) if outside(counts[task_id])]
    if bad:
        _fail(
            [
                f"expected every task id of task {task!r} to be retried {wanted}",
                f"measured {len(bad)} task ids outside that:",
                *(f"  {task_id}: retried {_times(counts[task_id])}" for task_id in bad),
            ],
            _of_ids(mine, bad),
            "history of those task ids",
        )
    return retried


def assert_not_retried(events: Sequence[Event], task: str) -> list[Event]:
    """Assert a task was never retried (a permanent failure gives up at once).

    Args:
        events: the history.
        task: the task name or fnmatch pattern.

    Returns:
        The task's events.

    Raises:
        ChaosAssertionError: the task has a non-deferred ``RETRIED`` event, or no events.
    """
    __tracebackhide__ = True
    mine = _task_events(events, task)
    retried = _retries(mine)
    if retried:
        _fail(
            [
                f"expected task {task!r} not to be retried",
                f"measured {_retries_text(len(retried))}:",
                *(f"  {event.describe()}" for event in retried),
            ],
            mine,
            f"history of task {task!r}",
        )
    return mine


def assert_retry_delays_within(
    events: Sequence[Event], task: str, policy: RetryPolicy
) -> list[Event]:
    """Assert every retry waited as ``policy`` says and no task id retried too often.

    The retry after failed attempt ``n`` is retry ``n``: its ``countdown`` must lie
    in ``policy.envelope(n)`` (with 1e-6 s tolerance), and no task id may have more
    than ``policy.max_retries`` retries.

    Args:
        events: the history.
        task: the task name or fnmatch pattern.
        policy: the policy the task should follow.

    Returns:
        The retries checked (non-deferred ``RETRIED`` events).

    Raises:
        ChaosAssertionError: naming each offending retry (task id, retry number,
            countdown, envelope) and each task id over ``max_retries``.
        ConfigurationError: ``policy`` is not a :class:`resilience.RetryPolicy`.
    """
    __tracebackhide__ = True
    if not isinstance(policy, RetryPolicy):
        raise ConfigurationError(
            f"policy must be a RetryPolicy, got {policy!r}", key="policy", value=policy
        )
    mine = _task_events(events, task)
    retried = _retries(mine)
    problems: list[str] = []
    bad_ids: list[str] = []
    for event in retried:
        low, high = policy.envelope(event.attempt)
        countdown = event.details.get("countdown")
        where = f"task id {event.task_id} retry {event.attempt}"
        envelope = f"[{low:g}, {high:g}]"
        if not isinstance(countdown, int | float):
            problems.append(f"  {where}: no countdown recorded (envelope {envelope})")
        elif not low - _TOLERANCE <= countdown <= high + _TOLERANCE:
            problems.append(f"  {where}: countdown {countdown:g}s outside envelope {envelope}")
        else:
            continue
        bad_ids.append(event.task_id)
    for task_id, count in Counter(event.task_id for event in retried).items():
        if count > policy.max_retries:
            problems.append(
                f"  task id {task_id}: {count} retries, above max_retries={policy.max_retries}"
            )
            bad_ids.append(task_id)
    if problems:
        _fail(
            [
                (
                    f"expected every retry of task {task!r} to wait within the policy's envelope "
                    f"and at most max_retries={policy.max_retries} retries per task id"
                ),
                f"measured {len(problems)} offending:",
                *problems,
            ],
            _of_ids(mine, bad_ids),
            "history of those task ids",
        )
    return retried


# --- dead letters and success ------------------------------------------------


def _failure_type(value: object) -> FailureType | None:
    if value is None or isinstance(value, FailureType):
        return value
    if isinstance(value, str):
        for candidate in (value, value.upper()):
            try:
                return FailureType(candidate)
            except ValueError:
                pass  # reported below with the valid types
        valid = [member.value for member in FailureType]
        close = difflib.get_close_matches(value.upper(), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    else:
        valid = [member.value for member in FailureType]
        hint = ""
    raise ConfigurationError(
        f"unknown failure_type {value!r}{hint} (valid: {', '.join(valid)})",
        key="failure_type",
        value=value,
    )


def assert_dead_lettered(
    events: Sequence[Event],
    task: str,
    *,
    failure_type: FailureType | str | None = None,
    count: int | None = None,
) -> list[Event]:
    """Assert a task was stored in the dead-letter queue.

    Args:
        events: the history.
        task: the task name or fnmatch pattern.
        failure_type: count only dead letters of this type (a :class:`FailureType`
            or its value).
        count: the exact number of such dead letters; ``None``: at least one.

    Returns:
        The matching ``DEAD_LETTERED`` events.

    Raises:
        ChaosAssertionError: the number of matching dead letters is wrong.
        ConfigurationError: an unknown ``failure_type`` (the valid ones are listed)
            or a negative ``count``.
    """
    __tracebackhide__ = True
    wanted_type = _failure_type(failure_type)
    exact = _count(count, key="count")
    mine = _task_events(events, task)
    dead = [event for event in mine if event.kind is EventKind.DEAD_LETTERED]
    matching = [
        event
        for event in dead
        if wanted_type is None or event.details.get("failure_type") == wanted_type.value
    ]
    if (exact is None and matching) or len(matching) == exact:
        return matching
    of_type = "" if wanted_type is None else f" with failure type {wanted_type.value}"
    wanted = "at least once" if exact is None else f"exactly {_times(exact)}"
    measured = f"measured {_n(len(matching), 'matching dead letter', 'matching dead letters')}"
    others = Counter(
        str(event.details.get("failure_type")) for event in dead if event not in matching
    )
    if others:
        listed = ", ".join(f"{name} x{number}" for name, number in sorted(others.items()))
        measured += f" (dead letters of other types: {listed})"
    _fail(
        [f"expected task {task!r} to be dead-lettered{of_type} {wanted}", measured],
        mine,
        f"history of task {task!r}",
    )


def assert_not_dead_lettered(events: Sequence[Event], task: str) -> list[Event]:
    """Assert a task never reached the dead-letter queue.

    Args:
        events: the history.
        task: the task name or fnmatch pattern.

    Returns:
        The task's events.

    Raises:
        ChaosAssertionError: the task has a ``DEAD_LETTERED`` event, or no events.
    """
    __tracebackhide__ = True
    mine = _task_events(events, task)
    dead = [event for event in mine if event.kind is EventKind.DEAD_LETTERED]
    if dead:
        _fail(
            [
                f"expected task {task!r} not to be dead-lettered",
                f"measured {_n(len(dead), 'dead letter', 'dead letters')}:",
                *(f"  {event.describe()}" for event in dead),
            ],
            mine,
            f"history of task {task!r}",
        )
    return mine


def assert_succeeded(
    events: Sequence[Event], task: str, *, within: float | timedelta | None = None
) -> list[Event]:
    """Assert every task id of a task succeeded, optionally within a time.

    The task ids are those of the task's events (a simulation publishes each id
    first). A task id's duration runs from its first ``PUBLISHED`` event (or its
    first event, when it has none) to its first ``SUCCEEDED`` event.

    Args:
        events: the history.
        task: the task name or fnmatch pattern.
        within: the longest duration allowed, in seconds or as a ``timedelta``.

    Returns:
        The first ``SUCCEEDED`` event of each task id.

    Raises:
        ChaosAssertionError: naming the ids that did not succeed (with their last
            event) and those too slow (with their durations).
        ConfigurationError: ``within`` is not a finite duration >= 0.
    """
    __tracebackhide__ = True
    limit = None if within is None else _seconds(within, key="within", allow_zero=True)
    mine = _task_events(events, task)
    successes: list[Event] = []
    problems: list[str] = []
    bad: list[str] = []
    for task_id in _task_ids(mine):
        own = [event for event in mine if event.task_id == task_id]
        published = [event for event in own if event.kind is EventKind.PUBLISHED]
        start = (published or own)[0].at
        done = next((event for event in own if event.kind is EventKind.SUCCEEDED), None)
        if done is None:
            problems.append(f"  {task_id} did not succeed; last event: {own[-1].describe()}")
            bad.append(task_id)
            continue
        successes.append(done)
        took = done.at - start
        if limit is not None and took > limit + _TOLERANCE:
            problems.append(f"  {task_id} succeeded after {_s(took)} (limit {_s(limit)})")
            bad.append(task_id)
    if problems:
        when = "" if limit is None else f" within {_s(limit)}"
        _fail(
            [
                f"expected every task id of task {task!r} to succeed{when}",
                f"measured {len(problems)} of {len(_task_ids(mine))} task ids failing that:",
                *problems,
            ],
            _of_ids(mine, bad),
            "history of those task ids",
        )
    return successes


# --- circuit breakers --------------------------------------------------------


def _breaker_events(events: Sequence[Event], breaker: object) -> list[Event]:
    name = _name(breaker, key="breaker")
    mine = [event for event in events if event.details.get("breaker") == name]
    if mine:
        return mine
    names = sorted({str(e.details["breaker"]) for e in events if e.details.get("breaker")})
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    seen = ", ".join(names) if names else "none"
    _fail(
        [f"no events for breaker {name!r}", f"breakers in the history: {seen}{hint}"],
        [],
        "history of that breaker",
    )


def _failed_before_opening(events: Sequence[Event], breaker: str) -> tuple[int | None, int]:
    """(failed admitted calls before the first opening or None, all failed admitted calls)."""
    admitted: set[_Run] = set()
    admitted_before: set[_Run] | None = None
    for event in events:
        if event.details.get("breaker") != breaker:
            continue
        if event.kind is EventKind.CALL_ADMITTED:
            admitted.add(_run(event))
        elif (
            event.kind is EventKind.BREAKER_CHANGED
            and event.details.get("new") == CircuitState.OPEN.value
            and admitted_before is None
        ):
            admitted_before = set(admitted)
    raised = {_run(event) for event in events if event.kind is EventKind.RAISED}
    total = len(admitted & raised)
    return (None if admitted_before is None else len(admitted_before & raised)), total


def assert_breaker(
    events: Sequence[Event],
    breaker: str,
    *,
    opened_after: int | None = None,
    rejected: int | None = None,
    probes: int | None = None,
    closed: bool | None = None,
) -> list[Event]:
    """Assert how a circuit breaker behaved; with no option, only that it was used.

    ``opened_after`` counts the runs (task id and attempt) that the breaker
    admitted before its first transition to ``open`` and that raised. The run
    whose failure opens the breaker may record its ``RAISED`` event after the
    transition, so runs are matched by admission, not by when they raised.

    Args:
        events: the history.
        breaker: the breaker's name (exact).
        opened_after: the breaker first opened after exactly this many failed
            admitted calls.
        rejected: exactly this many ``CALL_REJECTED`` events.
        probes: exactly this many transitions into ``half_open``.
        closed: ``True``: the last state is ``closed`` (the initial state when it
            never changed); ``False``: it is not.

    Returns:
        The events naming the breaker.

    Raises:
        ChaosAssertionError: listing every expectation that does not hold, or when
            no event names the breaker (the breakers seen are listed).
        ConfigurationError: a negative count or a non-bool ``closed``.
    """
    __tracebackhide__ = True
    expected_failures = _count(opened_after, key="opened_after")
    expected_rejections = _count(rejected, key="rejected")
    expected_probes = _count(probes, key="probes")
    if closed is not None and not isinstance(closed, bool):
        raise ConfigurationError(
            f"closed must be True, False or None, got {closed!r}", key="closed", value=closed
        )
    mine = _breaker_events(events, breaker)
    changes = [event for event in mine if event.kind is EventKind.BREAKER_CHANGED]
    problems: list[str] = []
    if expected_failures is not None:
        before, total = _failed_before_opening(events, breaker)
        if before is None:
            problems.append(
                f"  opened after: expected {expected_failures} failed calls, "
                f"but it never opened ({total} failed admitted calls)"
            )
        elif before != expected_failures:
            problems.append(
                f"  opened after: expected {expected_failures} failed calls, measured {before}"
            )
    if expected_rejections is not None:
        count = sum(event.kind is EventKind.CALL_REJECTED for event in mine)
        if count != expected_rejections:
            problems.append(f"  rejected: expected {expected_rejections} calls, measured {count}")
    if expected_probes is not None:
        count = sum(event.details.get("new") == CircuitState.HALF_OPEN.value for event in changes)
        if count != expected_probes:
            problems.append(
                f"  probes: expected {expected_probes} transitions to half_open, measured {count}"
            )
    if closed is not None:
        last = str(changes[-1].details.get("new")) if changes else CircuitState.CLOSED.value
        if (last == CircuitState.CLOSED.value) != closed:
            wanted = "closed" if closed else "not closed"
            problems.append(f"  final state: expected {wanted}, measured {last}")
    if problems:
        _fail(
            [f"breaker {breaker!r} did not behave as expected:", *problems],
            _select(events, breaker=breaker),
            f"history of breaker {breaker!r}",
        )
    return mine


def assert_breaker_never_opened(events: Sequence[Event], breaker: str) -> list[Event]:
    """Assert a circuit breaker never changed to ``open`` or ``forced_open``.

    Args:
        events: the history.
        breaker: the breaker's name (exact).

    Returns:
        The events naming the breaker.

    Raises:
        ChaosAssertionError: the breaker opened, or no event names it.
    """
    __tracebackhide__ = True
    mine = _breaker_events(events, breaker)
    opened = {CircuitState.OPEN.value, CircuitState.FORCED_OPEN.value}
    openings = [
        event
        for event in mine
        if event.kind is EventKind.BREAKER_CHANGED and event.details.get("new") in opened
    ]
    if openings:
        first = _s(openings[0].at)
        _fail(
            [
                f"expected breaker {breaker!r} never to open",
                f"measured {_n(len(openings), 'opening', 'openings')}, first at {first}",
            ],
            _select(events, breaker=breaker),
            f"history of breaker {breaker!r}",
        )
    return mine


# --- side effects and idempotency --------------------------------------------


def assert_effect_once(events: Sequence[Event], name: str, *, per_key: bool = True) -> list[Event]:
    """Assert a side effect happened exactly once per key (or once in total).

    Args:
        events: the history.
        name: the side effect's name (``SIDE_EFFECT`` events' ``details["name"]``).
        per_key: ``True``: every key (``None`` for unkeyed effects) exactly once;
            ``False``: exactly one such event in total.

    Returns:
        The ``SIDE_EFFECT`` events of that name.

    Raises:
        ChaosAssertionError: the effect never executed, or a "duplicate side
            effect" names the key and how many times it ran.
        ConfigurationError: ``name`` is not a non-empty string.
    """
    __tracebackhide__ = True
    wanted = _name(name, key="name")
    keyed = _flag(per_key, key="per_key")
    effects = [event for event in events if event.kind is EventKind.SIDE_EFFECT]
    mine = [event for event in effects if event.details.get("name") == wanted]
    if not mine:
        names = sorted({str(event.details.get("name")) for event in effects})
        close = difflib.get_close_matches(wanted, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _fail(
            [
                f"expected side effect {wanted!r} to execute once",
                (
                    f"it never executed; side effects in the history: "
                    f"{', '.join(names) if names else 'none'}{hint}"
                ),
            ],
            [],
            f"history of side effect {wanted!r}",
        )
    if not keyed:
        if len(mine) > 1:
            runs = {_run(event) for event in mine}
            _fail(
                [
                    f"expected side effect {wanted!r} to execute exactly once in total",
                    f"duplicate side effect {wanted!r}: executed {len(mine)} times",
                ],
                [event for event in events if _run(event) in runs],
                "history of the runs that executed it",
            )
        return mine
    counts = Counter(event.details.get("key") for event in mine)
    duplicated = {key for key, number in counts.items() if number > 1}
    if duplicated:
        runs = {_run(event) for event in mine if event.details.get("key") in duplicated}
        _fail(
            [
                f"expected side effect {wanted!r} to execute exactly once per key",
                *(
                    f"duplicate side effect {wanted!r} for key {key!r}: "
                    f"executed {counts[key]} times"
                    for key in counts
                    if key in duplicated
                ),
            ],
            [event for event in events if _run(event) in runs],
            "history of the runs that executed it",
        )
    return mine


def assert_idempotent(events: Sequence[Event], task: str) -> list[Event]:
    """Assert a task's body ran to success at most once per idempotency key.

    What it checks, exactly: walking the task's events in order, an
    ``IDEMPOTENCY`` event with outcome ``miss`` (the key was claimed and the body
    runs) followed by a ``SUCCEEDED`` event of the same run (task id and attempt),
    with no ``RAISED``, ``FAILED``, ``RETRIED`` or ``WORKER_LOST`` event of that run
    between, is one success of that key. No key may have more than one. Runs
    answered from the store (``hit``) succeed without running the body and are not
    counted; runs that failed released their key and are not counted either. A
    duplicate delivery (same task id and attempt) is a run of its own. A task with
    no ``IDEMPOTENCY`` event at all fails: it is not guarded.

    Args:
        events: the history.
        task: the task name or fnmatch pattern.

    Returns:
        The ``SUCCEEDED`` events of the counted runs.

    Raises:
        ChaosAssertionError: a key succeeded more than once, or the task has no
            ``IDEMPOTENCY`` events (or no events).
    """
    __tracebackhide__ = True
    mine = _task_events(events, task)
    checks = [event for event in mine if event.kind is EventKind.IDEMPOTENCY]
    if not checks:
        _fail(
            [
                f"expected task {task!r} to be guarded by an idempotency key",
                "measured no idempotency events: is it decorated with @idempotent?",
            ],
            mine,
            f"history of task {task!r}",
        )
    # Runs are paired in order, so a duplicate delivery (same task id and attempt)
    # that runs after the first one is a run of its own.
    open_claims: dict[_Run, Any] = {}
    successes: list[Event] = []
    per_key: dict[Any, list[Event]] = {}
    for event in mine:
        run = _run(event)
        if event.kind is EventKind.IDEMPOTENCY:
            if event.details.get("outcome") == "miss":
                open_claims[run] = event.details.get("key")
            else:
                open_claims.pop(run, None)
        elif event.kind is EventKind.SUCCEEDED and run in open_claims:
            successes.append(event)
            per_key.setdefault(open_claims.pop(run), []).append(event)
        elif event.kind in _RUN_ENDS:
            open_claims.pop(run, None)
    duplicated = {key: runs for key, runs in per_key.items() if len(runs) > 1}
    if duplicated:
        lines = [
            f"  key {key!r}: body succeeded {_times(len(runs))} ("
            + ", ".join(f"{e.task_id}#{e.attempt} at {_s(e.at)}" for e in runs)
            + ")"
            for key, runs in duplicated.items()
        ]
        keyed = {_run(event) for event in mine if event.details.get("key") in duplicated}
        _fail(
            [
                (
                    f"expected task {task!r} to run its body to success at most once per "
                    "idempotency key"
                ),
                f"measured {len(duplicated)} keys that succeeded more than once:",
                *lines,
            ],
            [event for event in mine if _run(event) in keyed],
            "history of the runs of those keys",
        )
    return successes


# --- load: budget, herds, faults ---------------------------------------------


def _worst_window(
    retry_times: list[float], first_times: list[float], window: float, allowance: tuple[int, float]
) -> tuple[float, int, int, float] | None:
    """(end, retries, first attempts, excess) of the window most over budget, or None.

    The windows are those a budget consults: the ``window`` seconds up to and
    including each retry. Ties go to the earliest window.
    """
    min_retries, ratio = allowance
    worst: tuple[float, int, int, float] | None = None
    for end in retry_times:
        start = end - window
        retries = bisect_right(retry_times, end) - bisect_right(retry_times, start)
        firsts = bisect_right(first_times, end) - bisect_right(first_times, start)
        excess = retries - (min_retries + ratio * firsts)
        if excess > 1e-9 and (worst is None or excess > worst[3]):
            worst = (end, retries, firsts, excess)
    return worst


def assert_budget_held(
    events: Sequence[Event],
    task: str | None = None,
    *,
    ratio: float,
    min_retries: int = 0,
    window: float | timedelta = 60.0,
) -> list[Event]:
    """Assert retries stayed within a retry budget in every sliding window.

    At every retry (a non-deferred ``RETRIED`` event at time ``t``), the window
    ``(t - window, t]`` of virtual time, the one a budget consults when it grants
    that retry, must hold no more retries than ``min_retries + ratio * first
    attempts`` (``STARTED`` events with ``attempt == 1``). First attempts that come
    after a retry do not pay for it. As :class:`resilience.RetryBudget` does, the
    budget is kept per task name: a pattern or ``None`` (every task) checks each
    matching task name on its own.

    Args:
        events: the history.
        task: the task name or fnmatch pattern; ``None``: every task.
        ratio: retries allowed per first attempt, finite and >= 0.
        min_retries: retries always allowed per window.
        window: the window's length, seconds or ``timedelta``, above 0.

    Returns:
        The retries counted.

    Raises:
        ChaosAssertionError: naming the worst window ``(t0, t1]`` and its counts.
        ConfigurationError: a bad ``ratio``, ``min_retries`` or ``window``.
    """
    __tracebackhide__ = True
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, int | float)
        or not (math.isfinite(ratio) and ratio >= 0)
    ):
        raise ConfigurationError(
            f"ratio must be a finite number >= 0, got {ratio!r}", key="ratio", value=ratio
        )
    floor = _required(min_retries, key="min_retries", minimum=0)
    width = _seconds(window, key="window", allow_zero=False)
    mine = list(events) if task is None else _task_events(events, task)
    retried = _retries(mine)
    worst: tuple[str, tuple[float, int, int, float]] | None = None
    for name in sorted({event.task_name for event in retried}):
        retry_times = sorted(event.at for event in retried if event.task_name == name)
        first_times = sorted(
            event.at
            for event in mine
            if event.task_name == name and event.kind is EventKind.STARTED and event.attempt == 1
        )
        found = _worst_window(retry_times, first_times, width, (floor, float(ratio)))
        if found is not None and (worst is None or found[3] > worst[1][3]):
            worst = (name, found)
    if worst is not None:
        name, (end, retries, firsts, _excess) = worst
        start = end - width
        allowed = floor + ratio * firsts
        expected = (
            f"expected retries of task {name!r} <= min_retries ({floor}) + ratio ({ratio:g})"
            f" x first attempts in every {_s(width)} window"
        )
        measured = (
            f"measured in the worst window ({start:g}s, {end:g}s]: {_retries_text(retries)},"
            f" {firsts} first attempts, {allowed:g} allowed"
        )
        _fail(
            [expected, measured],
            [event for event in mine if event.task_name == name and start < event.at <= end],
            f"history of task {name!r} in that window",
        )
    return retried


def assert_retries_spread(
    events: Sequence[Event],
    task: str | None = None,
    *,
    max_simultaneous: int,
    resolution: float | timedelta = 1.0,
) -> list[Event]:
    """Assert retries do not all come due at once (no thundering herd).

    A retried message is due at its ``RETRIED`` event's time plus its
    ``countdown``. Due times are grouped into buckets ``[k * resolution,
    (k + 1) * resolution)``; no bucket may hold more than ``max_simultaneous``.
    Deferred retries count too: messages an open breaker sends back all at once
    are a herd as well.

    Args:
        events: the history.
        task: the task name or fnmatch pattern; ``None``: every task together.
        max_simultaneous: the most retries due in one bucket, at least 1.
        resolution: the bucket width, seconds or ``timedelta``, above 0.

    Returns:
        The ``RETRIED`` events checked.

    Raises:
        ChaosAssertionError: naming each overfull bucket and its count.
        ConfigurationError: a bad ``max_simultaneous`` or ``resolution``.
    """
    __tracebackhide__ = True
    most = _required(max_simultaneous, key="max_simultaneous", minimum=1)
    width = _seconds(resolution, key="resolution", allow_zero=False)
    mine = list(events) if task is None else _task_events(events, task)
    retried = [event for event in mine if event.kind is EventKind.RETRIED]
    buckets: dict[int, list[Event]] = {}
    for event in retried:
        countdown = event.details.get("countdown")
        due = event.at + (countdown if isinstance(countdown, int | float) else 0.0)
        buckets.setdefault(math.floor(due / width), []).append(event)
    crowded = sorted(index for index, members in buckets.items() if len(members) > most)
    if crowded:
        which = "all tasks" if task is None else f"task {task!r}"
        _fail(
            [
                (
                    f"thundering herd: expected at most {most} retries of {which} due in any "
                    f"{_s(width)} interval"
                ),
                *(
                    f"  {len(buckets[index])} retries due in [{index * width:g}s, "
                    f"{(index + 1) * width:g}s)"
                    for index in crowded
                ),
                (
                    "add jitter to the retry policy (Jitter.FULL or Jitter.PROPORTIONAL) to "
                    "spread the retries"
                ),
            ],
            [event for index in crowded for event in buckets[index]],
            "the retries of those intervals",
        )
    return retried


def assert_faults_fired(
    events: Sequence[Event], faults: Iterable[str] | None = None
) -> list[Event]:
    """Assert the faults a test injects actually fired.

    Args:
        events: the history.
        faults: the fault names (``FAULT_INJECTED`` events' ``details["fault"]``)
            that must each fire at least once; ``None``: at least one fault fired.

    Returns:
        The ``FAULT_INJECTED`` events.

    Raises:
        ChaosAssertionError: listing the faults that never fired and the fired
            counts of the rest.
        ConfigurationError: ``faults`` is a string, empty, or holds a non-string.
    """
    __tracebackhide__ = True
    if isinstance(faults, str):
        raise ConfigurationError(
            f"faults must be a collection of fault names, not the string {faults!r}",
            key="faults",
            value=faults,
        )
    names = None if faults is None else list(faults)
    if names is not None:
        if not names:
            raise ConfigurationError("faults must name at least one fault", key="faults", value=[])
        for name in names:
            _name(name, key="faults")
    fired = [event for event in events if event.kind is EventKind.FAULT_INJECTED]
    counts = Counter(str(event.details.get("fault")) for event in fired)
    fired_text = ", ".join(f"{name!r} x{count}" for name, count in sorted(counts.items()))
    if names is None:
        if not fired:
            _fail(["expected at least one fault to fire", "measured none fired"], [], "faults")
        return fired
    missing = [name for name in dict.fromkeys(names) if counts[name] == 0]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, list(counts), n=1)
            hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
        _fail(
            [
                "expected every named fault to fire at least once",
                f"never fired: {', '.join(hints)}",
                f"fired: {fired_text or 'none'}",
            ],
            fired,
            "faults injected",
        )
    return fired

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
from collections import Counter
from typing import TYPE_CHECKING

from pytest_taskchaos._assert_rules import (
    assert_breaker,
    assert_breaker_never_opened,
    assert_budget_held,
    assert_effect_once,
    assert_idempotent,
    assert_retries_spread,
)
from pytest_taskchaos._assert_support import (
    TOLERANCE,
    ChaosAssertionError,
    check_count,
    check_flag,
    check_name,
    check_seconds,
    counted,
    events_of_ids,
    fail,
    render_events,
    retries_text,
    retry_events,
    seconds_text,
    slice_events,
    task_events,
    task_ids,
    times_text,
)
from pytest_taskchaos._history import Event, EventKind
from resilience import FailureType, RetryPolicy
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import timedelta

# ChaosAssertionError and the breaker, load and side-effect assertions are defined
# in private modules (to keep each module short) and carry this module's name in
# their __module__: this module is where users import every assertion from.
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


# --- the history slice -------------------------------------------------------


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
    selected = slice_events(events, task=task, task_id=task_id, key=key, breaker=breaker)
    return render_events(selected, limit)


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
    exact = check_count(times, key="times")
    low = check_count(at_least, key="at_least")
    high = check_count(at_most, key="at_most")
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
        wanted = f"exactly {times_text(exact)}"
    elif low is not None and high is not None:
        wanted = f"between {low} and {high} times"
    elif high is not None:
        wanted = f"at most {times_text(high)}"
    else:
        low = 1 if low is None else low
        wanted = f"at least {times_text(low)}"
    by_id = check_flag(per_task_id, key="per_task_id")
    mine = task_events(events, task)
    retried = retry_events(mine)

    def outside(count: int) -> bool:
        return (low is not None and count < low) or (high is not None and count > high)

    if not by_id:
        if outside(len(retried)):
            fail(
                [
                    f"expected task {task!r} to be retried {wanted}",
                    f"measured {retries_text(len(retried))} (non-deferred retried events)",
                ],
                mine,
                f"history of task {task!r}",
            )
        return retried
    counts = Counter(event.task_id for event in retried)
    bad = [task_id for task_id in task_ids(mine) if outside(counts[task_id])]
    if bad:
        fail(
            [
                f"expected every task id of task {task!r} to be retried {wanted}",
                f"measured {len(bad)} task ids outside that:",
                *(f"  {task_id}: retried {times_text(counts[task_id])}" for task_id in bad),
            ],
            events_of_ids(mine, bad),
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
    mine = task_events(events, task)
    retried = retry_events(mine)
    if retried:
        fail(
            [
                f"expected task {task!r} not to be retried",
                f"measured {retries_text(len(retried))}:",
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
    mine = task_events(events, task)
    retried = retry_events(mine)
    problems: list[str] = []
    bad_ids: list[str] = []
    for event in retried:
        low, high = policy.envelope(event.attempt)
        countdown = event.details.get("countdown")
        where = f"task id {event.task_id} retry {event.attempt}"
        envelope = f"[{low:g}, {high:g}]"
        if not isinstance(countdown, int | float):
            problems.append(f"  {where}: no countdown recorded (envelope {envelope})")
        elif not low - TOLERANCE <= countdown <= high + TOLERANCE:
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
        fail(
            [
                (
                    f"expected every retry of task {task!r} to wait within the policy's envelope "
                    f"and at most max_retries={policy.max_retries} retries per task id"
                ),
                f"measured {len(problems)} offending:",
                *problems,
            ],
            events_of_ids(mine, bad_ids),
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
    exact = check_count(count, key="count")
    mine = task_events(events, task)
    dead = [event for event in mine if event.kind is EventKind.DEAD_LETTERED]
    matching = [
        event
        for event in dead
        if wanted_type is None or event.details.get("failure_type") == wanted_type.value
    ]
    held = bool(matching) if exact is None else len(matching) == exact
    if not held:
        of_type = "" if wanted_type is None else f" with failure type {wanted_type.value}"
        wanted = "at least once" if exact is None else f"exactly {times_text(exact)}"
        measured = (
            f"measured {counted(len(matching), 'matching dead letter', 'matching dead letters')}"
        )
        others = Counter(
            str(event.details.get("failure_type")) for event in dead if event not in matching
        )
        if others:
            listed = ", ".join(f"{name} x{number}" for name, number in sorted(others.items()))
            measured += f" (dead letters of other types: {listed})"
        fail(
            [f"expected task {task!r} to be dead-lettered{of_type} {wanted}", measured],
            mine,
            f"history of task {task!r}",
        )
    return matching


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
    mine = task_events(events, task)
    dead = [event for event in mine if event.kind is EventKind.DEAD_LETTERED]
    if dead:
        fail(
            [
                f"expected task {task!r} not to be dead-lettered",
                f"measured {counted(len(dead), 'dead letter', 'dead letters')}:",
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
    limit = None if within is None else check_seconds(within, key="within", allow_zero=True)
    mine = task_events(events, task)
    successes: list[Event] = []
    problems: list[str] = []
    bad: list[str] = []
    for task_id in task_ids(mine):
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
        if limit is not None and took > limit + TOLERANCE:
            problems.append(
                f"  {task_id} succeeded after {seconds_text(took)} (limit {seconds_text(limit)})"
            )
            bad.append(task_id)
    if problems:
        when = "" if limit is None else f" within {seconds_text(limit)}"
        fail(
            [
                f"expected every task id of task {task!r} to succeed{when}",
                f"measured {len(problems)} of {len(task_ids(mine))} task ids failing that:",
                *problems,
            ],
            events_of_ids(mine, bad),
            "history of those task ids",
        )
    return successes


# --- faults ------------------------------------------------------------------


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
            check_name(name, key="faults")
    fired = [event for event in events if event.kind is EventKind.FAULT_INJECTED]
    counts = Counter(str(event.details.get("fault")) for event in fired)
    fired_text = ", ".join(f"{name!r} x{count}" for name, count in sorted(counts.items()))
    if names is None:
        if not fired:
            fail(["expected at least one fault to fire", "measured none fired"], [], "faults")
        return fired
    missing = [name for name in dict.fromkeys(names) if counts[name] == 0]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, list(counts), n=1)
            hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
        fail(
            [
                "expected every named fault to fire at least once",
                f"never fired: {', '.join(hints)}",
                f"fired: {fired_text or 'none'}",
            ],
            fired,
            "faults injected",
        )
    return fired

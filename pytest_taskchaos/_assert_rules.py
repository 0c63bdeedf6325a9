"""The assertions about breakers, load and side effects, with their private helpers.

They are part of :mod:`pytest_taskchaos.assertions`, which re-exports them (and
whose ``__module__`` they carry); they live here only to keep each module short.
Import them from :mod:`pytest_taskchaos.assertions`:

- breakers: :func:`assert_breaker`, :func:`assert_breaker_never_opened`;
- side effects and idempotency: :func:`assert_effect_once`,
  :func:`assert_idempotent`;
- load: :func:`assert_budget_held`, :func:`assert_retries_spread`.
"""

from __future__ import annotations

import difflib
import math
from bisect import bisect_right
from collections import Counter
from typing import TYPE_CHECKING, Any

from pytest_taskchaos._assert_support import (
    RUN_ENDS,
    Run,
    check_count,
    check_flag,
    check_name,
    check_required,
    check_seconds,
    counted,
    exported,
    fail,
    retries_text,
    retry_events,
    run_of,
    seconds_text,
    slice_events,
    task_events,
    times_text,
)
from pytest_taskchaos._history import Event, EventKind
from resilience import CircuitState
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

__all__ = [
    "assert_breaker",
    "assert_breaker_never_opened",
    "assert_budget_held",
    "assert_effect_once",
    "assert_idempotent",
    "assert_retries_spread",
]


# --- circuit breakers --------------------------------------------------------


def _breaker_events(events: Sequence[Event], breaker: object) -> list[Event]:
    name = check_name(breaker, key="breaker")
    mine = [event for event in events if event.details.get("breaker") == name]
    if not mine:
        names = sorted({str(e.details["breaker"]) for e in events if e.details.get("breaker")})
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        seen = ", ".join(names) if names else "none"
        fail(
            [f"no events for breaker {name!r}", f"breakers in the history: {seen}{hint}"],
            [],
            "history of that breaker",
        )
    return mine


def _failed_before_opening(events: Sequence[Event], breaker: str) -> tuple[int | None, int]:
    """(failed admitted calls before the first opening or None, all failed admitted calls)."""
    admitted: set[Run] = set()
    admitted_before: set[Run] | None = None
    for event in events:
        if event.details.get("breaker") != breaker:
            continue
        if event.kind is EventKind.CALL_ADMITTED:
            admitted.add(run_of(event))
        elif (
            event.kind is EventKind.BREAKER_CHANGED
            and event.details.get("new") == CircuitState.OPEN.value
            and admitted_before is None
        ):
            admitted_before = set(admitted)
    raised = {run_of(event) for event in events if event.kind is EventKind.RAISED}
    total = len(admitted & raised)
    return (None if admitted_before is None else len(admitted_before & raised)), total


@exported
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
    expected_failures = check_count(opened_after, key="opened_after")
    expected_rejections = check_count(rejected, key="rejected")
    expected_probes = check_count(probes, key="probes")
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
        fail(
            [f"breaker {breaker!r} did not behave as expected:", *problems],
            slice_events(events, breaker=breaker),
            f"history of breaker {breaker!r}",
        )
    return mine


@exported
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
        first = seconds_text(openings[0].at)
        fail(
            [
                f"expected breaker {breaker!r} never to open",
                f"measured {counted(len(openings), 'opening', 'openings')}, first at {first}",
            ],
            slice_events(events, breaker=breaker),
            f"history of breaker {breaker!r}",
        )
    return mine


# --- side effects and idempotency --------------------------------------------


@exported
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
    wanted = check_name(name, key="name")
    keyed = check_flag(per_key, key="per_key")
    effects = [event for event in events if event.kind is EventKind.SIDE_EFFECT]
    mine = [event for event in effects if event.details.get("name") == wanted]
    if not mine:
        names = sorted({str(event.details.get("name")) for event in effects})
        close = difflib.get_close_matches(wanted, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fail(
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
            runs = {run_of(event) for event in mine}
            fail(
                [
                    f"expected side effect {wanted!r} to execute exactly once in total",
                    f"duplicate side effect {wanted!r}: executed {len(mine)} times",
                ],
                [event for event in events if run_of(event) in runs],
                "history of the runs that executed it",
            )
        return mine
    counts = Counter(event.details.get("key") for event in mine)
    duplicated = {key for key, number in counts.items() if number > 1}
    if duplicated:
        runs = {run_of(event) for event in mine if event.details.get("key") in duplicated}
        fail(
            [
                f"expected side effect {wanted!r} to execute exactly once per key",
                *(
                    f"duplicate side effect {wanted!r} for key {key!r}: "
                    f"executed {counts[key]} times"
                    for key in counts
                    if key in duplicated
                ),
            ],
            [event for event in events if run_of(event) in runs],
            "history of the runs that executed it",
        )
    return mine


@exported
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
    mine = task_events(events, task)
    checks = [event for event in mine if event.kind is EventKind.IDEMPOTENCY]
    if not checks:
        fail(
            [
                f"expected task {task!r} to be guarded by an idempotency key",
                "measured no idempotency events: is it decorated with @idempotent?",
            ],
            mine,
            f"history of task {task!r}",
        )
    # Runs are paired in order, so a duplicate delivery (same task id and attempt)
    # that runs after the first one is a run of its own.
    open_claims: dict[Run, Any] = {}
    successes: list[Event] = []
    per_key: dict[Any, list[Event]] = {}
    for event in mine:
        run = run_of(event)
        if event.kind is EventKind.IDEMPOTENCY:
            if event.details.get("outcome") == "miss":
                open_claims[run] = event.details.get("key")
            else:
                open_claims.pop(run, None)
        elif event.kind is EventKind.SUCCEEDED and run in open_claims:
            successes.append(event)
            per_key.setdefault(open_claims.pop(run), []).append(event)
        elif event.kind in RUN_ENDS:
            open_claims.pop(run, None)
    duplicated = {key: runs for key, runs in per_key.items() if len(runs) > 1}
    if duplicated:
        lines = [
            f"  key {key!r}: body succeeded {times_text(len(runs))} ("
            + ", ".join(f"{e.task_id}#{e.attempt} at {seconds_text(e.at)}" for e in runs)
            + ")"
            for key, runs in duplicated.items()
        ]
        keyed = {run_of(event) for event in mine if event.details.get("key") in duplicated}
        fail(
            [
                (
                    f"expected task {task!r} to run its body to success at most once per "
                    "idempotency key"
                ),
                f"measured {len(duplicated)} keys that succeeded more than once:",
                *lines,
            ],
            [event for event in mine if run_of(event) in keyed],
            "history of the runs of those keys",
        )
    return successes


# --- load: budgets and herds -------------------------------------------------


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


@exported
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
    floor = check_required(min_retries, key="min_retries", minimum=0)
    width = check_seconds(window, key="window", allow_zero=False)
    mine = list(events) if task is None else task_events(events, task)
    retried = retry_events(mine)
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
            f" x first attempts in every {seconds_text(width)} window"
        )
        measured = (
            f"measured in the worst window ({start:g}s, {end:g}s]: {retries_text(retries)},"
            f" {firsts} first attempts, {allowed:g} allowed"
        )
        fail(
            [expected, measured],
            [event for event in mine if event.task_name == name and start < event.at <= end],
            f"history of task {name!r} in that window",
        )
    return retried


@exported
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
    most = check_required(max_simultaneous, key="max_simultaneous", minimum=1)
    width = check_seconds(resolution, key="resolution", allow_zero=False)
    mine = list(events) if task is None else task_events(events, task)
    retried = [event for event in mine if event.kind is EventKind.RETRIED]
    buckets: dict[int, list[Event]] = {}
    for event in retried:
        countdown = event.details.get("countdown")
        due = event.at + (countdown if isinstance(countdown, int | float) else 0.0)
        buckets.setdefault(math.floor(due / width), []).append(event)
    crowded = sorted(index for index, members in buckets.items() if len(members) > most)
    if crowded:
        which = "all tasks" if task is None else f"task {task!r}"
        fail(
            [
                (
                    f"thundering herd: expected at most {most} retries of {which} due in any "
                    f"{seconds_text(width)} interval"
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

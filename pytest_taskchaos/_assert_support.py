"""The machinery behind :mod:`pytest_taskchaos.assertions`: history slices, failures, checks.

Every assertion selects events, checks its arguments the same way and fails by
raising :class:`ChaosAssertionError` with the relevant slice of the history;
this module holds those shared parts, so the assertion modules hold only what
each assertion measures. Nothing here is public API: users import from
:mod:`pytest_taskchaos.assertions`.
"""

from __future__ import annotations

import difflib
import math
from fnmatch import fnmatchcase
from textwrap import indent
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

from pytest_taskchaos._history import Event, EventKind
from resilience.clock import seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from datetime import timedelta

__all__ = [
    "PUBLIC_MODULE",
    "RUN_ENDS",
    "TOLERANCE",
    "ChaosAssertionError",
    "Run",
    "check_count",
    "check_flag",
    "check_name",
    "check_required",
    "check_seconds",
    "counted",
    "events_of_ids",
    "exported",
    "fail",
    "name_matches",
    "render_events",
    "retries_text",
    "retry_events",
    "run_of",
    "seconds_text",
    "slice_events",
    "task_events",
    "task_ids",
    "times_text",
]

PUBLIC_MODULE: Final = "pytest_taskchaos.assertions"
"""Where users import the assertions from; what their ``__module__`` says."""
TOLERANCE: Final = 1e-6  # seconds: countdowns are computed by subtracting virtual times
Run = tuple[str, int]  # (task_id, attempt): one run of a task
RUN_ENDS: Final = frozenset(
    {EventKind.RAISED, EventKind.FAILED, EventKind.RETRIED, EventKind.WORKER_LOST}
)  # a run that ends so did not succeed: its claim was released or lost

_F = TypeVar("_F", bound="Callable[..., Any]")


def exported(func: _F) -> _F:
    """Mark an assertion defined here as part of :mod:`pytest_taskchaos.assertions`.

    Tracebacks, ``help()`` and the export test then name the public module, not
    the private one that happens to hold the code.

    Args:
        func: the assertion function.

    Returns:
        ``func`` itself, its ``__module__`` set to the public module.
    """
    func.__module__ = PUBLIC_MODULE
    return func


class ChaosAssertionError(AssertionError):
    """A chaos assertion failed; the message shows the relevant slice of the history.

    Attributes:
        events: the events the message shows (the whole slice, before truncation).
    """

    __module__ = PUBLIC_MODULE  # pytest prints the class by the module users import it from

    def __init__(self, message: str, *, events: Sequence[Event] = ()) -> None:
        super().__init__(message)
        self.events: tuple[Event, ...] = tuple(events)


# --- the history slice -------------------------------------------------------


def name_matches(name: str, pattern: str) -> bool:
    """Whether task ``name`` is ``pattern`` or matches it as an fnmatch pattern."""
    return name == pattern or fnmatchcase(name, pattern)


def run_of(event: Event) -> Run:
    """The run (task id and attempt) ``event`` belongs to."""
    return (event.task_id, event.attempt)


def slice_events(
    events: Iterable[Event],
    *,
    task: str | None = None,
    task_id: str | None = None,
    key: str | None = None,
    breaker: str | None = None,
) -> list[Event]:
    """The events passing every filter given (see ``history_slice`` for each filter)."""
    base = [
        event
        for event in events
        if (task is None or name_matches(event.task_name, task))
        and (task_id is None or event.task_id == task_id)
    ]
    if key is not None:
        runs = {run_of(event) for event in base if event.details.get("key") == key}
        base = [event for event in base if run_of(event) in runs]
    if breaker is not None:
        admitted = {
            run_of(event)
            for event in base
            if event.kind is EventKind.CALL_ADMITTED and event.details.get("breaker") == breaker
        }
        base = [
            event
            for event in base
            if event.details.get("breaker") == breaker
            or (event.kind is EventKind.RAISED and run_of(event) in admitted)
        ]
    return base


def render_events(events: Sequence[Event], limit: int) -> str:
    """One ``describe()`` per line, the middle elided beyond ``limit`` lines."""
    if not events:
        return "(no events)"
    lines = [event.describe() for event in events]
    if len(lines) <= limit:
        return "\n".join(lines)
    head = limit // 2
    tail = limit - head
    hidden = len(lines) - limit
    return "\n".join([*lines[:head], f"... {hidden} more events ...", *lines[-tail:]])


def fail(lines: Iterable[str], shown: Sequence[Event], title: str) -> NoReturn:
    """Raise :class:`ChaosAssertionError`: ``lines``, then ``shown`` under ``title``."""
    __tracebackhide__ = True
    body = "\n".join(lines)
    history = indent(render_events(shown, 40), "  ")
    count = len(shown)
    plural = "event" if count == 1 else "events"
    raise ChaosAssertionError(f"{body}\n{title} ({count} {plural}):\n{history}", events=shown)


# --- argument checks ---------------------------------------------------------


def check_name(value: object, *, key: str) -> str:
    """``value`` if it is a non-empty string; else a ConfigurationError naming ``key``."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{key} must be a non-empty string, got {value!r}", key=key, value=value
        )
    return value


def check_count(value: object, *, key: str, minimum: int = 0) -> int | None:
    """``value`` if it is ``None`` or an int >= ``minimum`` (not a bool)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{key} must be an int >= {minimum} or None, got {value!r}", key=key, value=value
        )
    return value


def check_seconds(value: float | timedelta, *, key: str, allow_zero: bool) -> float:
    """``value`` in seconds, finite and above 0 (or >= 0 with ``allow_zero``)."""
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


def check_required(value: object, *, key: str, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum``; ``None`` is refused."""
    count = check_count(value, key=key, minimum=minimum)
    if count is None:
        raise ConfigurationError(f"{key} must be an int >= {minimum}, got None", key=key)
    return count


def check_flag(value: object, *, key: str) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{key} must be True or False, got {value!r}", key=key, value=value
        )
    return value


# --- message text ------------------------------------------------------------


def times_text(count: int) -> str:
    """``"1 time"``, ``"3 times"``."""
    return f"{count} time" if count == 1 else f"{count} times"


def counted(count: int, singular: str, plural: str) -> str:
    """``count`` followed by the noun in the right number."""
    return f"{count} {singular if count == 1 else plural}"


def retries_text(count: int) -> str:
    """``"1 retry"``, ``"3 retries"``."""
    return counted(count, "retry", "retries")


def seconds_text(seconds: float) -> str:
    """``"2.5s"``."""
    return f"{seconds:g}s"


# --- shared queries ----------------------------------------------------------


def task_events(events: Sequence[Event], task: object) -> list[Event]:
    """The events of ``task`` (a name or pattern); none at all is a failure."""
    pattern = check_name(task, key="task")
    selected = [event for event in events if name_matches(event.task_name, pattern)]
    if selected:
        return selected
    names = sorted({event.task_name for event in events})
    if not names:
        measured = "the history is empty"
    else:
        close = difflib.get_close_matches(pattern, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        measured = f"tasks in the history: {', '.join(names)}{hint}"
    fail([f"no events for task {pattern!r}", measured], [], "history of that task")


def retry_events(events: Iterable[Event]) -> list[Event]:
    """The retries: ``RETRIED`` events that are not deferrals."""
    return [
        event
        for event in events
        if event.kind is EventKind.RETRIED and not event.details.get("deferred", False)
    ]


def task_ids(events: Iterable[Event]) -> list[str]:
    """The task ids of ``events``, each once, in order of first appearance."""
    return list(dict.fromkeys(event.task_id for event in events))


def events_of_ids(events: Iterable[Event], ids: Iterable[str]) -> list[Event]:
    """The events of the task ids ``ids``."""
    wanted = set(ids)
    return [event for event in events if event.task_id in wanted]

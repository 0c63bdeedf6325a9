"""Operator reads and input parsing shared by the ``resilience`` CLI and the dashboard.

Nothing here prints, exits or knows about HTTP: each function returns plain data
(dicts of JSON values) or raises :class:`~resilience.errors.ConfigurationError`
whose message starts with the name of the input (``--status`` for the CLI,
``status`` for the web API) and whose ``key`` is that name. Each front end turns
the error into its own form (an exit status 2, a 400 response).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from resilience.dead_letter import DeadLetterQueue
from resilience.errors import ConfigurationError
from resilience.history import OutcomeHistory
from resilience.storage.base import BreakerRecord, CircuitState
from resilience.storage.records import (
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
)
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from resilience.storage.base import DeadLetterStore, Store

__all__ = [
    "EXECUTIONS_KEY",
    "HOUR",
    "NOT_TRACKED",
    "Executions",
    "all_records",
    "breaker_names",
    "breaker_row",
    "dead_letter_filter",
    "executions",
    "failure_trends",
    "member",
    "parse_duration",
    "parse_instant",
    "stats_report",
    "suggest",
    "task_names",
]

HOUR = 3600.0
"""Seconds in an hour: the failure-trend bucket."""

EXECUTIONS_KEY = "_EXECUTIONS"
"""The outcomes-store row of tracked executions (``track_executions``): one success or
failure per attempt, first attempts and retries alike. It is no failure type, so
retry statistics and their adaptation never see it."""

NOT_TRACKED = "executions not tracked: enable track_executions"
"""What the stats say instead of zeros when no execution was recorded in the window."""

E = TypeVar("E", bound=StrEnum)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PAGE = 1000


def suggest(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def member(kind: type[E], value: str, *, option: str) -> E:
    """Parse an enum member by value or name, case-insensitively.

    Args:
        kind: the enum.
        value: the text given.
        option: the input's name, for the message and the error's ``key``.

    Returns:
        The member.

    Raises:
        ConfigurationError: an unknown name; the message lists the valid ones.
    """
    wanted = value.strip().lower()
    for item in kind:
        if wanted in (item.value.lower(), item.name.lower()):
            return item
    names = [item.name for item in kind]
    raise ConfigurationError(
        f"{option}: unknown value {value!r}{suggest(value.upper(), names)} "
        f"(valid: {', '.join(names)})",
        key=option,
        value=value,
    )


def parse_instant(value: str, *, option: str) -> float:
    """Parse a time: ISO 8601 (naive means UTC) or epoch seconds.

    Args:
        value: the text given.
        option: the input's name, for the message and the error's ``key``.

    Returns:
        Epoch seconds.

    Raises:
        ConfigurationError: neither form.
    """
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"{option}: {value!r} is not a date; expected ISO 8601 such as "
            "'2024-05-01T12:00:00+00:00' or '2024-05-01' (UTC when no offset), "
            "or epoch seconds",
            key=option,
            value=value,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_duration(value: str, *, option: str) -> float:
    """Parse a duration: a number with an optional unit ``s``, ``m``, ``h``, ``d`` or ``w``.

    Args:
        value: the text given (``"90s"``, ``"12h"``, ``"30d"``).
        option: the input's name, for the message and the error's ``key``.

    Returns:
        Seconds.

    Raises:
        ConfigurationError: another form.
    """
    match = _DURATION.match(value)
    if match is None:
        raise ConfigurationError(
            f"{option}: {value!r} is not a duration; expected a number with an optional "
            "unit s, m, h, d or w, such as '90s', '12h' or '30d'",
            key=option,
            value=value,
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def dead_letter_filter(
    *,
    statuses: Iterable[str] = (),
    task: str | None = None,
    types: Iterable[str] = (),
    since: str | None = None,
    until: str | None = None,
    text: str | None = None,
    prefix: str = "",
) -> DeadLetterFilter:
    """Build the filter of a DLQ listing or bulk action from text inputs.

    Args:
        statuses: status names (any case); none means any status.
        task: an exact task name.
        types: failure type names (any case); none means any type.
        since: last failure at or after (ISO 8601 or epoch seconds).
        until: last failure before.
        text: a case-insensitive substring of the message.
        prefix: put before each input's name in errors (``"--"`` for the CLI).

    Returns:
        The filter.

    Raises:
        ConfigurationError: an unknown status or type, a malformed time.
    """
    wanted_statuses = frozenset(
        member(DeadLetterStatus, s, option=f"{prefix}status") for s in statuses
    )
    wanted_types = frozenset(member(FailureType, t, option=f"{prefix}type") for t in types)
    return DeadLetterFilter(
        statuses=wanted_statuses or None,
        task_name=task or None,
        failure_types=wanted_types or None,
        since=None if since is None else parse_instant(since, option=f"{prefix}since"),
        until=None if until is None else parse_instant(until, option=f"{prefix}until"),
        text=text or None,
    )


def all_records(
    store: DeadLetterStore, where: DeadLetterFilter | None = None
) -> Iterator[DeadLetterRecord]:
    """Every record matching ``where``, newest failure first, a page at a time."""
    after: str | None = None
    while True:
        page = store.query(
            where or DeadLetterFilter(), order=DeadLetterOrder.NEWEST, limit=_PAGE, after=after
        )
        yield from page.records
        if page.next_cursor is None:
            return
        after = page.next_cursor


def breaker_names(breakers: object, url: str) -> list[str]:
    """The names of every breaker in a breaker store, through its optional ``names()``.

    Args:
        breakers: the store's ``breakers`` role.
        url: the store's URL, for the message.

    Returns:
        The names.

    Raises:
        ConfigurationError: the store has no ``names()`` method (``key="store"``).
    """
    names = getattr(breakers, "names", None)
    if not callable(names):
        raise ConfigurationError(
            f"the breaker store of {url} cannot list its breakers (it has no names() method)",
            key="store",
            value=url,
        )
    return [str(name) for name in names()]


def breaker_row(name: str, record: BreakerRecord | None, now: float) -> dict[str, object]:
    """What an operator needs of one breaker, read without writing anything.

    An open breaker whose reset timeout has passed shows ``half_open``: its next
    call is a probe. A forced-open breaker has no probe time (``None``).

    Args:
        name: the breaker's name.
        record: its stored record (``None``: never written, so closed).
        now: the current time.

    Returns:
        ``name``, ``state``, ``stored_state``, ``consecutive_failures``,
        ``window_failures``, ``window_calls``, ``trips``, ``opened_at``,
        ``next_probe_at``, ``seconds_until_probe`` and ``probes_in_flight``.
    """
    record = record or BreakerRecord()
    state = record.state
    wait: float | None = 0.0
    if state is CircuitState.OPEN and record.open_until is not None:
        wait = max(0.0, record.open_until - now)
        if wait == 0.0:
            state = CircuitState.HALF_OPEN  # the next call will be admitted as a probe
    elif state is CircuitState.FORCED_OPEN:
        wait = None  # no probe is scheduled until an operator resets it
    window = record.outcomes + "".join("s" * ok + "f" * bad for _, ok, bad in record.buckets)
    return {
        "name": name,
        "state": state.value,
        "stored_state": record.state.value,
        "consecutive_failures": record.consecutive_failures,
        "window_failures": window.count("f"),
        "window_calls": len(window),
        "trips": record.trips,
        "opened_at": record.opened_at,
        "next_probe_at": record.open_until if record.state is CircuitState.OPEN else None,
        "seconds_until_probe": None if wait is None else round(wait, 3),
        "probes_in_flight": record.half_open_in_flight,
    }


def task_names(outcomes: object, since: float) -> list[str]:
    """Tasks with outcomes (retries, tracked executions) since ``since``, via ``task_names()``."""
    listing = getattr(outcomes, "task_names", None)
    return [str(n) for n in listing(since=since)] if callable(listing) else []


@dataclass(frozen=True, slots=True, kw_only=True)
class Executions:
    """Tracked task executions (attempts) over a window, per task and overall.

    An execution is one attempt of a task's body in a worker: a first attempt and
    every retry count once each; deferrals (open breaker, busy idempotency key) and
    idempotent replays of a completed key do not run the body and do not count.

    Attributes:
        by_task: ``{task: (successful attempts, failed attempts)}``; empty when the
            workers do not run with ``track_executions``.
    """

    by_task: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def tracked(self) -> bool:
        """Whether any execution was recorded in the window."""
        return bool(self.by_task)

    @property
    def successes(self) -> int:
        """Successful attempts over every task."""
        return sum(ok for ok, _ in self.by_task.values())

    @property
    def failures(self) -> int:
        """Failed attempts over every task."""
        return sum(bad for _, bad in self.by_task.values())

    @property
    def total(self) -> int:
        """Attempts over every task."""
        return self.successes + self.failures

    @property
    def success_rate(self) -> float | None:
        """Successful attempts / attempts, or ``None`` when nothing was tracked."""
        return self.successes / self.total if self.total else None

    def to_dict(self) -> dict[str, object]:
        """``{"tracked", "executions", "successes", "failures", "success_rate", "note"}``.

        Returns:
            The totals; ``note`` says how to enable tracking when nothing was tracked
            (the counts are then ``None``, not zeros).
        """
        if not self.tracked:
            return {
                "tracked": False,
                "executions": None,
                "successes": None,
                "failures": None,
                "success_rate": None,
                "note": NOT_TRACKED,
            }
        rate = self.success_rate
        return {
            "tracked": True,
            "executions": self.total,
            "successes": self.successes,
            "failures": self.failures,
            "success_rate": None if rate is None else round(rate, 4),
            "note": None,
        }


def executions(outcomes: object, *, window: float, now: float) -> Executions:
    """The executions tracked in the window ending ``now``, read from an outcomes store.

    Args:
        outcomes: the store's ``outcomes`` role (tasks are listed through its optional
            ``task_names()``; a store without it reports nothing tracked).
        window: how far back, in seconds.
        now: the current time.

    Returns:
        The executions per task (bucket resolution of the store).
    """
    by_task: dict[str, tuple[int, int]] = {}
    counts = getattr(outcomes, "counts", None)
    if not callable(counts):
        return Executions()
    for task in task_names(outcomes, now - window):
        found = counts(task, since=now - window).get(EXECUTIONS_KEY)
        if found is not None and found.successes + found.failures:
            by_task[task] = (found.successes, found.failures)
    return Executions(by_task=by_task)


def stats_report(store: Store, *, window: float, now: float) -> dict[str, object]:
    """Executions and retries per task in ``window``, dead letters per task, type and status.

    Executions (attempts, each counted once) are there only when workers run with
    ``track_executions``; otherwise a task's ``executions`` and ``success_rate`` are
    ``None`` and the top-level ``executions.note`` says so.

    Args:
        store: the store bundle.
        window: how far back retry outcomes count, in seconds.
        now: the current time.

    Returns:
        ``{"window_seconds", "executions": Executions.to_dict(), "tasks": [{"task",
        "executions", "successes", "success_rate", "retries", "retry_successes",
        "retry_success_rate", "failed_retries_by_type", "dead_letters",
        "dead_letters_by_type"}], "dead_letters_by_status"}`` (what ``resilience
        stats --json`` prints).
    """
    depth = DeadLetterQueue(store).summary(now=now).by_status
    dead: dict[str, dict[str, int]] = {}
    for record in all_records(store.dead_letters):
        per_task = dead.setdefault(record.task_name, {})
        per_task[record.failure_type.value] = per_task.get(record.failure_type.value, 0) + 1
    history = OutcomeHistory(store.outcomes, window=window)
    tracked = executions(store.outcomes, window=window, now=now)
    rows: list[dict[str, object]] = []
    for task in sorted({*task_names(store.outcomes, now - window), *dead}):
        stats = history.statistics(task, now=now)
        rate = stats.success_rate
        ok, bad = tracked.by_task.get(task, (0, 0))
        rows.append(
            {
                "task": task,
                "executions": ok + bad if tracked.tracked else None,
                "successes": ok if tracked.tracked else None,
                "success_rate": round(ok / (ok + bad), 4) if ok + bad else None,
                "retries": stats.total,
                "retry_successes": stats.successes,
                "retry_success_rate": None if rate is None else round(rate, 4),
                "failed_retries_by_type": {
                    t.value: c.failures for t, c in stats.by_type.items() if c.failures
                },
                "dead_letters": sum(dead.get(task, {}).values()),
                "dead_letters_by_type": dead.get(task, {}),
            }
        )
    return {
        "window_seconds": window,
        "executions": tracked.to_dict(),
        "tasks": rows,
        "dead_letters_by_status": {status.value: depth[status] for status in DeadLetterStatus},
    }


def failure_trends(store: Store, *, hours: int, now: float) -> dict[str, object]:
    """Failures per clock hour and failure type over the last ``hours`` hours.

    Two sources, kept apart because they count different things: dead letters
    (by the hour of their last failure) and failed retries from the outcomes store
    (per task with ``task_names()``; an hour's count is the difference of two
    ``counts(since=)`` reads, so it has the store's bucket resolution).

    Args:
        store: the store bundle.
        hours: the number of hours, the last being the one holding ``now``.
        now: the current time.

    Returns:
        ``{"hours", "hour_starts": [...], "dead_letters": {type: [count per hour]},
        "failed_retries": {type: [count per hour]}}``; types with no failure in
        the window are left out.
    """
    current = math.floor(now / HOUR) * HOUR
    starts = [current - (hours - 1 - index) * HOUR for index in range(hours)]
    dead: dict[str, list[int]] = {}
    first = starts[0]
    for record in all_records(store.dead_letters, DeadLetterFilter(since=first)):
        slot = math.floor((record.last_failed_at - first) / HOUR)
        if 0 <= slot < hours:
            dead.setdefault(record.failure_type.value, [0] * hours)[slot] += 1
    retries: dict[str, list[int]] = {}
    for task in task_names(store.outcomes, first):
        cumulative = [
            {
                name: c.failures
                for name, c in store.outcomes.counts(task, since=s).items()
                if name != EXECUTIONS_KEY
            }
            for s in [*starts, current + HOUR]
        ]
        for index in range(hours):
            for name, failures in cumulative[index].items():
                count = failures - cumulative[index + 1].get(name, 0)
                if count > 0:
                    retries.setdefault(name, [0] * hours)[index] += count
    return {
        "hours": hours,
        "hour_starts": starts,
        "dead_letters": dict(sorted(dead.items())),
        "failed_retries": dict(sorted(retries.items())),
    }

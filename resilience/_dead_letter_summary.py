"""Dead-letter summaries: what an operator's dashboard shows, from one pass over the store."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from resilience.storage.records import DeadLetterFilter, DeadLetterOrder, DeadLetterStatus
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from resilience.storage.base import DeadLetterStore

__all__ = ["DeadLetterSummary", "summarise"]

_HOUR = 3600.0
_PAGE = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterSummary:
    """Counts over every record in the dead-letter store, and recent failures per hour.

    Attributes:
        total: how many records the store holds.
        by_status: records per status (every status present, zeros included).
        by_failure_type: records per failure type, most frequent first (types with
            no record are left out).
        top_tasks: ``(task_name, records)`` of the most frequent tasks, most first
            (ties by name).
        average_retries: mean ``retry_count`` per failure type.
        failures_per_hour: ``(hour_start, failures)`` for each of the last ``hours``
            clock hours, oldest first, zeros included; a record counts in the hour
            of its ``last_failed_at``; the last hour is the one holding ``generated_at``.
        hours: the length of that window.
        generated_at: the time the summary describes.
    """

    total: int
    by_status: Mapping[DeadLetterStatus, int]
    by_failure_type: Mapping[FailureType, int]
    top_tasks: tuple[tuple[str, int], ...]
    average_retries: Mapping[FailureType, float]
    failures_per_hour: tuple[tuple[float, int], ...]
    hours: int
    generated_at: float


def summarise(store: DeadLetterStore, *, hours: int, top: int, now: float) -> DeadLetterSummary:
    """Aggregate every record of ``store`` (arguments already validated by the caller)."""
    by_status: Counter[DeadLetterStatus] = Counter()
    by_type: Counter[FailureType] = Counter()
    by_task: Counter[str] = Counter()
    retries: defaultdict[FailureType, int] = defaultdict(int)
    current_hour = math.floor(now / _HOUR) * _HOUR
    first_hour = current_hour - (hours - 1) * _HOUR
    per_hour = [0] * hours
    total = 0
    after: str | None = None
    while True:
        page = store.query(
            DeadLetterFilter(), order=DeadLetterOrder.NEWEST, limit=_PAGE, after=after
        )
        for record in page.records:
            total += 1
            by_status[record.status] += 1
            by_type[record.failure_type] += 1
            by_task[record.task_name] += 1
            retries[record.failure_type] += record.retry_count
            slot = math.floor((record.last_failed_at - first_hour) / _HOUR)
            if 0 <= slot < hours:
                per_hour[slot] += 1
        if page.next_cursor is None:
            break
        after = page.next_cursor
    ranked_types = sorted(by_type.items(), key=lambda item: (-item[1], item[0].value))
    ranked_tasks = sorted(by_task.items(), key=lambda item: (-item[1], item[0]))
    return DeadLetterSummary(
        total=total,
        by_status=MappingProxyType({status: by_status[status] for status in DeadLetterStatus}),
        by_failure_type=MappingProxyType(dict(ranked_types)),
        top_tasks=tuple(ranked_tasks[:top]),
        average_retries=MappingProxyType(
            {kind: retries[kind] / count for kind, count in ranked_types}
        ),
        failures_per_hour=tuple(
            (first_hour + index * _HOUR, count) for index, count in enumerate(per_hour)
        ),
        hours=hours,
        generated_at=now,
    )

"""Outcome history: how often retries of each (task, failure type) succeed.

The retry engine reads it to adapt delays (retries that usually succeed can come
sooner; retries that usually fail should wait longer and give up earlier). Only
outcomes within the last ``window`` count, so a dependency that recovers is
trusted again. The counts live in an :class:`~resilience.storage.OutcomeStore`:
in process memory by default, or a shared store (SQLite, Redis, PostgreSQL) so
every worker learns from every other worker's retries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from resilience.clock import Clock, seconds_of, system_clock
from resilience.errors import ConfigurationError, StorageUnavailable
from resilience.storage.memory import MemoryOutcomeStore
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from datetime import timedelta

    from resilience.storage.base import OutcomeStore

__all__ = ["OutcomeHistory", "TaskStatistics", "TypeStatistics"]

_log = logging.getLogger("resilience.history")


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeStatistics:
    """Outcomes of retries after one failure type.

    Attributes:
        successes: retries that succeeded.
        failures: retries that failed again.
    """

    successes: int
    failures: int

    @property
    def total(self) -> int:
        """Recorded outcomes."""
        return self.successes + self.failures

    @property
    def success_rate(self) -> float | None:
        """Successes / total, or ``None`` when nothing was recorded (not 0: unknown is not bad)."""
        return self.successes / self.total if self.total else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStatistics:
    """Retry outcomes of one task, per failure type and in total."""

    task_name: str
    by_type: Mapping[FailureType, TypeStatistics]

    @property
    def successes(self) -> int:
        """Successful retries over all types."""
        return sum(s.successes for s in self.by_type.values())

    @property
    def failures(self) -> int:
        """Failed retries over all types."""
        return sum(s.failures for s in self.by_type.values())

    @property
    def total(self) -> int:
        """Recorded outcomes over all types."""
        return self.successes + self.failures

    @property
    def success_rate(self) -> float | None:
        """Overall success rate, or ``None`` when nothing was recorded."""
        return self.successes / self.total if self.total else None


class OutcomeHistory:
    """Retry outcomes per (task, failure type) over a sliding time window.

    Args:
        store: where the counters live; in process memory by default. Pass
            ``open_store(url).outcomes`` to share them between workers.
        window: how far back outcomes count, seconds or ``timedelta`` (24 hours).
        clock: the time source.

    Statistics are best effort: while the store is unavailable, outcomes are not
    counted and reads return no history (so no adaptation), each with a warning;
    a retry decision never fails because its statistics could not be read.

    Raises:
        ConfigurationError: when ``window`` is not a positive, finite duration.
    """

    def __init__(
        self,
        store: OutcomeStore | None = None,
        *,
        window: float | timedelta = 24 * 3600.0,
        clock: Clock = system_clock,
    ) -> None:
        window_s = seconds_of(window, name="window")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ConfigurationError(
                f"OutcomeHistory.window must be a positive number of seconds, got {window!r}",
                key="window",
                value=window,
            )
        self.store: OutcomeStore = store if store is not None else MemoryOutcomeStore()
        self.window = window_s
        self._clock = clock

    def record(
        self, task_name: str, failure_type: FailureType, *, success: bool, now: float | None = None
    ) -> None:
        """Record whether a retry of ``task_name`` after ``failure_type`` succeeded."""
        t = self._clock.time() if now is None else now
        try:
            self.store.add(task_name, failure_type.value, success=success, now=t)
        except StorageUnavailable as exc:
            _log.warning("retry outcome of %s not counted: %s", task_name, exc)

    def get(
        self, task_name: str, failure_type: FailureType, *, now: float | None = None
    ) -> TypeStatistics:
        """Outcomes for one (task, type) in the window ending ``now``."""
        return self.statistics(task_name, now=now).by_type.get(
            failure_type, TypeStatistics(successes=0, failures=0)
        )

    def statistics(self, task_name: str, *, now: float | None = None) -> TaskStatistics:
        """Outcomes of ``task_name`` for every failure type it has records for."""
        t = self._clock.time() if now is None else now
        try:
            counts = self.store.counts(task_name, since=t - self.window)
        except StorageUnavailable as exc:
            _log.warning("retry history of %s unavailable, not adapting: %s", task_name, exc)
            counts = {}
        by_type = {
            FailureType(name): TypeStatistics(successes=c.successes, failures=c.failures)
            for name, c in counts.items()
            if name in FailureType.__members__
        }
        return TaskStatistics(task_name=task_name, by_type=MappingProxyType(by_type))

"""Outcome history: how often retries of each (task, failure type) succeed.

The retry engine reads it to adapt delays (retries that usually succeed can come
sooner; retries that usually fail should wait longer and give up earlier). Only
the last ``window`` outcomes per (task, type) count, so a dependency that recovers
is trusted again. Kept in process memory here; shared stores plug in behind the
same two methods.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from resilience.errors import ConfigurationError
from resilience.taxonomy import FailureType

__all__ = ["OutcomeHistory", "TaskStatistics", "TypeStatistics"]


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
    """The last ``window`` retry outcomes per (task, failure type), in memory, thread-safe.

    Args:
        window: how many recent outcomes count per (task, type).

    Raises:
        ConfigurationError: when ``window`` is not a positive int.
    """

    def __init__(self, *, window: int = 100) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigurationError(
                f"OutcomeHistory.window must be an int >= 1, got {window!r}",
                key="window",
                value=window,
            )
        self.window = window
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, FailureType], deque[bool]] = {}

    def record(self, task_name: str, failure_type: FailureType, *, success: bool) -> None:
        """Record whether a retry of ``task_name`` after ``failure_type`` succeeded."""
        with self._lock:
            key = (task_name, failure_type)
            outcomes = self._outcomes.get(key)
            if outcomes is None:
                outcomes = self._outcomes[key] = deque(maxlen=self.window)
            outcomes.append(success)

    def get(self, task_name: str, failure_type: FailureType) -> TypeStatistics:
        """Outcomes for one (task, type)."""
        with self._lock:
            outcomes = self._outcomes.get((task_name, failure_type), ())
            successes = sum(outcomes)
            return TypeStatistics(successes=successes, failures=len(outcomes) - successes)

    def statistics(self, task_name: str) -> TaskStatistics:
        """Outcomes of ``task_name`` for every failure type it has records for."""
        with self._lock:
            by_type = {}
            for (task, failure_type), outcomes in self._outcomes.items():
                if task == task_name:
                    successes = sum(outcomes)
                    by_type[failure_type] = TypeStatistics(
                        successes=successes, failures=len(outcomes) - successes
                    )
        return TaskStatistics(task_name=task_name, by_type=MappingProxyType(by_type))

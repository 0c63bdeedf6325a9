"""Retry budget: retries may not exceed a fraction of first attempts over a window.

The same idea as the retry quotas of the AWS SDKs, gRPC's retry throttling and
Finagle's ``RetryBudget``: during an outage every task fails, and if every failure
retries, the retries multiply the load on the dependency that is already down.
A budget lets a steady trickle of retries through (``min_retries`` per window,
so a quiet task can always retry) plus ``ratio`` retries per first attempt.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resilience.clock import Clock, seconds_of, system_clock
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = ["BudgetState", "RetryBudget"]

_BUCKETS = 60  # the window is split into this many buckets; old buckets fall out whole


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetState:
    """A snapshot of one task's budget.

    Attributes:
        first_attempts: first attempts seen in the window.
        retries: retries granted in the window.
        allowed: retries the window allows in total (``min_retries + ratio * first_attempts``).
    """

    first_attempts: int
    retries: int
    allowed: float

    @property
    def remaining(self) -> float:
        """Retries still available in the current window (never negative)."""
        return max(0.0, self.allowed - self.retries)


class RetryBudget:
    """Caps retries per task to ``min_retries + ratio * first attempts`` over a sliding window.

    Args:
        ratio: retries allowed per first attempt (0.2: one retry per five tasks).
        window: the sliding window, seconds or ``timedelta``.
        min_retries: retries always allowed per window, whatever the traffic.
        clock: the time source.

    Raises:
        ConfigurationError: a negative or non-finite ratio, window or min_retries.

    Example:
        >>> from resilience.clock import FakeClock
        >>> budget = RetryBudget(ratio=0.5, window=60, min_retries=0, clock=FakeClock())
        >>> for _ in range(4):
        ...     budget.record_first_attempt("charge")
        >>> [budget.try_acquire("charge") for _ in range(3)]
        [True, True, False]
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        window: float | timedelta = 60.0,
        min_retries: int = 10,
        clock: Clock = system_clock,
    ) -> None:
        window_s = seconds_of(window, name="window")
        if not (math.isfinite(ratio) and ratio >= 0):
            raise ConfigurationError(
                f"RetryBudget.ratio must be a finite number >= 0, got {ratio!r}",
                key="ratio",
                value=ratio,
            )
        if not (math.isfinite(window_s) and window_s > 0):
            raise ConfigurationError(
                f"RetryBudget.window must be a finite number of seconds > 0, got {window!r}",
                key="window",
                value=window,
            )
        if isinstance(min_retries, bool) or not isinstance(min_retries, int) or min_retries < 0:
            raise ConfigurationError(
                f"RetryBudget.min_retries must be an int >= 0, got {min_retries!r}",
                key="min_retries",
                value=min_retries,
            )
        self.ratio = float(ratio)
        self.window = window_s
        self.min_retries = min_retries
        self._clock = clock
        self._bucket_width = window_s / _BUCKETS
        self._lock = threading.Lock()
        # task -> deque of [bucket_index, first_attempts, retries]
        self._buckets: dict[str, deque[list[int]]] = {}

    def rebound(self, clock: Clock) -> RetryBudget:
        """A budget with these limits on another clock, its counts empty."""
        return RetryBudget(
            ratio=self.ratio, window=self.window, min_retries=self.min_retries, clock=clock
        )

    def record_first_attempt(self, task_name: str, *, now: float | None = None) -> None:
        """Count a first attempt of ``task_name`` (it earns ``ratio`` retry tokens)."""
        with self._lock:
            self._bucket(task_name, now)[1] += 1

    def try_acquire(self, task_name: str, *, now: float | None = None) -> bool:
        """Take one retry from the budget; ``False`` (and nothing taken) when it is spent."""
        with self._lock:
            current = self._bucket(task_name, now)
            state = self._state(task_name)
            if state.retries + 1 > state.allowed:
                return False
            current[2] += 1
            return True

    def state(self, task_name: str, *, now: float | None = None) -> BudgetState:
        """The budget of ``task_name`` in the window ending ``now``."""
        with self._lock:
            self._bucket(task_name, now)
            return self._state(task_name)

    def _bucket(self, task_name: str, now: float | None) -> list[int]:
        t = self._clock.time() if now is None else now
        index = math.floor(t / self._bucket_width)
        buckets = self._buckets.setdefault(task_name, deque())
        while buckets and buckets[0][0] <= index - _BUCKETS:
            buckets.popleft()
        if not buckets or buckets[-1][0] < index:
            buckets.append([index, 0, 0])
        # A `now` older than the newest bucket (out-of-order callers) counts in the newest one.
        return buckets[-1]

    def _state(self, task_name: str) -> BudgetState:
        buckets = self._buckets.get(task_name, ())
        first = sum(b[1] for b in buckets)
        retries = sum(b[2] for b in buckets)
        return BudgetState(
            first_attempts=first,
            retries=retries,
            allowed=self.min_retries + self.ratio * first,
        )

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, window={self.window}, min_retries={self.min_retries})"
        )

"""Injectable time: every reading of the clock and every sleep in the core goes through here.

Production code uses :data:`system_clock`. Tests pass a :class:`FakeClock`, whose
``sleep`` advances virtual time instantly, so nothing in the test suite sleeps.

Wall time (``time()``) is used for anything that is stored or shared between
processes (breaker open-until, ETAs, history windows), because a monotonic reading
means nothing in another process; ``monotonic()`` is for local durations.
"""

from __future__ import annotations

import asyncio
import time as _time
from datetime import timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "seconds_of", "system_clock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time and a way to wait for it."""

    def time(self) -> float:
        """Seconds since the epoch (wall time)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling coroutine for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.time``, ``time.monotonic``, ``time.sleep``, ``asyncio.sleep``."""

    __slots__ = ()

    def time(self) -> float:
        """Seconds since the epoch."""
        return _time.time()

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return _time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep; a zero or negative delay returns at once (a real sleep(0) costs ~85 µs)."""
        if seconds > 0:
            _time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        """Sleep in the event loop; zero still yields to the loop once."""
        await asyncio.sleep(max(seconds, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


system_clock = SystemClock()
"""The process-wide real clock, the default everywhere a ``clock=`` is accepted."""


class FakeClock:
    """A manual clock for tests: time moves only when told to, and sleeping moves it.

    Args:
        start: the initial wall time, in seconds since the epoch.

    Example:
        >>> clock = FakeClock(start=1_000.0)
        >>> clock.sleep(30)
        >>> clock.time()
        1030.0
        >>> clock.slept
        [30.0]
    """

    __slots__ = ("_monotonic", "_now", "slept")

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._monotonic = 0.0
        self.slept: list[float] = []
        """Every delay passed to ``sleep``/``asleep``, in order."""

    def time(self) -> float:
        """The current virtual wall time."""
        return self._now

    def monotonic(self) -> float:
        """The virtual monotonic time (starts at 0)."""
        return self._monotonic

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward by ``seconds``.

        Raises:
            ValueError: when ``seconds`` is negative (time never goes backwards).
        """
        delta = seconds_of(seconds, name="seconds")
        if delta < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {delta!r}")
        self._now += delta
        self._monotonic += delta

    def sleep(self, seconds: float) -> None:
        """Record the delay and advance time by it, without blocking."""
        self.slept.append(float(seconds))
        if seconds > 0:
            self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        """Async form of :meth:`sleep`; yields to the event loop once."""
        self.sleep(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(time={self._now!r})"


def seconds_of(value: float | timedelta, *, name: str) -> float:
    """Normalise a duration given as seconds or ``timedelta`` to float seconds.

    Args:
        value: the duration.
        name: the parameter name, used in the error message.

    Raises:
        TypeError: when ``value`` is neither a number nor a ``timedelta``.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    return float(value)

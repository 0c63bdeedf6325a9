"""Tests for the injectable clocks."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from resilience.clock import Clock, FakeClock, SystemClock, seconds_of, system_clock


def test_fake_clock_moves_only_when_told() -> None:
    """FakeClock time stands still until advanced or slept on."""
    clock = FakeClock(start=100.0)
    assert clock.time() == 100.0
    clock.advance(timedelta(seconds=5))
    clock.sleep(2.5)
    assert (clock.time(), clock.monotonic()) == (107.5, 7.5)
    assert clock.slept == [2.5]


def test_fake_clock_async_sleep_advances() -> None:
    """asleep advances virtual time and records the delay."""
    clock = FakeClock()
    asyncio.run(clock.asleep(3))
    assert (clock.time(), clock.slept) == (3.0, [3.0])


def test_fake_clock_never_goes_back() -> None:
    """Advancing by a negative amount is refused."""
    with pytest.raises(ValueError, match=">= 0"):
        FakeClock().advance(-1)


def test_system_clock_zero_sleep_returns_immediately(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero or negative delay makes no sleep call at all (sleep(0) costs ~85 µs)."""
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    system_clock.sleep(0)
    system_clock.sleep(-1)
    assert calls == []


def test_clocks_match_the_protocol() -> None:
    """Both clocks satisfy the Clock protocol."""
    assert isinstance(SystemClock(), Clock)
    assert isinstance(FakeClock(), Clock)


def test_seconds_of_normalises_and_rejects() -> None:
    """Durations are floats or timedeltas; anything else names the parameter."""
    assert seconds_of(timedelta(minutes=2), name="d") == 120.0
    assert seconds_of(3, name="d") == 3.0
    with pytest.raises(TypeError, match="reset_timeout"):
        seconds_of("3", name="reset_timeout")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flag"):
        seconds_of(True, name="flag")

"""Resilience for background tasks: classify failures, decide retries, break circuits.

The public API is re-exported here; everything else is internal. See the docs
for one page per concept.
"""

from __future__ import annotations

from resilience.clock import Clock, FakeClock, SystemClock, system_clock
from resilience.errors import CircuitOpenError, ConfigurationError, ResilienceError

__all__ = [
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "FakeClock",
    "ResilienceError",
    "SystemClock",
    "system_clock",
]

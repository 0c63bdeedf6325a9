"""Storage for shared state: narrow protocols of atomic primitives, one module per backend.

``base`` holds the protocols and the JSON-serialisable records; ``memory`` is the
in-process backend that is always available.
"""

from __future__ import annotations

from resilience.storage.base import BreakerRecord, BreakerStateStore, CircuitState
from resilience.storage.memory import MemoryBreakerStore

__all__ = ["BreakerRecord", "BreakerStateStore", "CircuitState", "MemoryBreakerStore"]

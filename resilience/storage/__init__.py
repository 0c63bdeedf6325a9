"""Storage for shared state: narrow protocols of atomic primitives, one module per backend.

``base`` holds the protocols, ``records`` the JSON-serialisable records; ``memory``
is the in-process backend that is always available; ``sqlite`` (the embedded
default), ``redis`` and ``postgres`` are the shared ones. :func:`open_store` picks
one from a URL.
"""

from __future__ import annotations

from resilience.storage._open import DEFAULT_STORE_URL, mask_url, open_store
from resilience.storage.base import (
    BreakerRecord,
    BreakerStateStore,
    CircuitState,
    DeadLetterStore,
    IdempotencyStore,
    OutcomeStore,
    Store,
)
from resilience.storage.memory import MemoryBreakerStore, MemoryStore
from resilience.storage.records import (
    Acquisition,
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterPage,
    DeadLetterRecord,
    DeadLetterStatus,
    HistoryEntry,
    IdempotencyRecord,
    IdempotencyState,
    OutcomeCounts,
)

__all__ = [
    "DEFAULT_STORE_URL",
    "Acquisition",
    "BreakerRecord",
    "BreakerStateStore",
    "CircuitState",
    "DeadLetterFilter",
    "DeadLetterOrder",
    "DeadLetterPage",
    "DeadLetterRecord",
    "DeadLetterStatus",
    "DeadLetterStore",
    "HistoryEntry",
    "IdempotencyRecord",
    "IdempotencyState",
    "IdempotencyStore",
    "MemoryBreakerStore",
    "MemoryStore",
    "OutcomeCounts",
    "OutcomeStore",
    "Store",
    "mask_url",
    "open_store",
]

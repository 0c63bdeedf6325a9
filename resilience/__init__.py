"""Resilience for background tasks: classify failures, decide retries, break circuits.

The public API is re-exported here; everything else is internal. See the docs
for one page per concept.
"""

from __future__ import annotations

from resilience.breaker import CircuitBreaker
from resilience.budget import RetryBudget
from resilience.clock import Clock, FakeClock, SystemClock, system_clock
from resilience.dead_letter import (
    BulkResult,
    DeadLetterQueue,
    DeadLetterSummary,
    Redaction,
    SpoolingDeadLetterStore,
)
from resilience.engine import Priority, RetryDecision, RetryEngine
from resilience.errors import (
    CircuitOpenError,
    ConfigurationError,
    DeadLetterConflict,
    IdempotencyError,
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    ResilienceError,
    StorageUnavailable,
)
from resilience.history import OutcomeHistory, TaskStatistics, TypeStatistics
from resilience.idempotency import IdempotencyGuard, idempotency_key, idempotent
from resilience.policy import (
    DEFAULT_POLICIES,
    BreakerSettings,
    Jitter,
    RetryPolicy,
    Strategy,
    default_policy,
)
from resilience.retrying import RetryState, retry, retry_context, set_testing
from resilience.storage import (
    BreakerRecord,
    BreakerStateStore,
    CircuitState,
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
    MemoryBreakerStore,
    MemoryStore,
    Store,
    open_store,
)
from resilience.taxonomy import (
    AlertLevel,
    Category,
    Classification,
    Classifier,
    FailureType,
    Remediation,
    classify,
    register_rule,
)

__all__ = [
    "DEFAULT_POLICIES",
    "AlertLevel",
    "BreakerRecord",
    "BreakerSettings",
    "BreakerStateStore",
    "BulkResult",
    "Category",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Classification",
    "Classifier",
    "Clock",
    "ConfigurationError",
    "DeadLetterConflict",
    "DeadLetterFilter",
    "DeadLetterOrder",
    "DeadLetterQueue",
    "DeadLetterRecord",
    "DeadLetterStatus",
    "DeadLetterSummary",
    "FailureType",
    "FakeClock",
    "IdempotencyError",
    "IdempotencyGuard",
    "IdempotencyInProgress",
    "IdempotencyKeyMismatch",
    "Jitter",
    "MemoryBreakerStore",
    "MemoryStore",
    "OutcomeHistory",
    "Priority",
    "Redaction",
    "Remediation",
    "ResilienceError",
    "RetryBudget",
    "RetryDecision",
    "RetryEngine",
    "RetryPolicy",
    "RetryState",
    "SpoolingDeadLetterStore",
    "StorageUnavailable",
    "Store",
    "Strategy",
    "SystemClock",
    "TaskStatistics",
    "TypeStatistics",
    "classify",
    "default_policy",
    "idempotency_key",
    "idempotent",
    "open_store",
    "register_rule",
    "retry",
    "retry_context",
    "set_testing",
    "system_clock",
]

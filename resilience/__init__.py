"""Resilience for background tasks: classify failures, decide retries, break circuits.

The public API is re-exported here; everything else is internal. See the docs
for one page per concept.
"""

from __future__ import annotations

from resilience.breaker import CircuitBreaker
from resilience.budget import RetryBudget
from resilience.clock import Clock, FakeClock, SystemClock, system_clock
from resilience.engine import Priority, RetryDecision, RetryEngine
from resilience.errors import CircuitOpenError, ConfigurationError, ResilienceError
from resilience.history import OutcomeHistory, TaskStatistics, TypeStatistics
from resilience.policy import (
    DEFAULT_POLICIES,
    BreakerSettings,
    Jitter,
    RetryPolicy,
    Strategy,
    default_policy,
)
from resilience.retrying import RetryState, retry, retry_context, set_testing
from resilience.storage import BreakerRecord, BreakerStateStore, CircuitState, MemoryBreakerStore
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
    "Category",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Classification",
    "Classifier",
    "Clock",
    "ConfigurationError",
    "FailureType",
    "FakeClock",
    "Jitter",
    "MemoryBreakerStore",
    "OutcomeHistory",
    "Priority",
    "Remediation",
    "ResilienceError",
    "RetryBudget",
    "RetryDecision",
    "RetryEngine",
    "RetryPolicy",
    "RetryState",
    "Strategy",
    "SystemClock",
    "TaskStatistics",
    "TypeStatistics",
    "classify",
    "default_policy",
    "register_rule",
    "retry",
    "retry_context",
    "set_testing",
    "system_clock",
]

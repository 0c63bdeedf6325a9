"""The taxonomy's vocabulary: failure types, categories, remediations, alert levels, profiles.

One table (:data:`PROFILES`) holds, for every one of the 18 failure types, what an
operator should do about it and whether an automatic retry makes sense. Nothing
falls through to a default: the table is checked for completeness at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "PROFILES",
    "AlertLevel",
    "Category",
    "FailureProfile",
    "FailureType",
    "Remediation",
    "profile",
]


class Category(StrEnum):
    """The broad family of a failure type; the first word of its name."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONFIG = "config"
    EXTERNAL = "external"
    SYSTEM = "system"
    UNKNOWN = "unknown"


class FailureType(StrEnum):
    """What went wrong, in 18 types. ``value == name`` so they round-trip through JSON."""

    TRANSIENT_DATABASE = "TRANSIENT_DATABASE"
    TRANSIENT_NETWORK = "TRANSIENT_NETWORK"
    TRANSIENT_RESOURCE = "TRANSIENT_RESOURCE"
    TRANSIENT_RATE_LIMIT = "TRANSIENT_RATE_LIMIT"
    PERMANENT_VALIDATION = "PERMANENT_VALIDATION"
    PERMANENT_NOT_FOUND = "PERMANENT_NOT_FOUND"
    PERMANENT_PERMISSION = "PERMANENT_PERMISSION"
    PERMANENT_LOGIC = "PERMANENT_LOGIC"
    CONFIG_MISSING_SETTING = "CONFIG_MISSING_SETTING"
    CONFIG_INVALID_SETTING = "CONFIG_INVALID_SETTING"
    CONFIG_MISSING_SERVICE = "CONFIG_MISSING_SERVICE"
    EXTERNAL_API_DOWN = "EXTERNAL_API_DOWN"
    EXTERNAL_API_ERROR = "EXTERNAL_API_ERROR"
    EXTERNAL_TIMEOUT = "EXTERNAL_TIMEOUT"
    SYSTEM_OUT_OF_MEMORY = "SYSTEM_OUT_OF_MEMORY"
    SYSTEM_DISK_FULL = "SYSTEM_DISK_FULL"
    SYSTEM_WORKER_CRASH = "SYSTEM_WORKER_CRASH"
    UNKNOWN = "UNKNOWN"

    @property
    def category(self) -> Category:
        """The family this type belongs to (``TRANSIENT_DATABASE`` -> ``transient``)."""
        return PROFILES[self].category

    @property
    def profile(self) -> FailureProfile:
        """Remediation, alert level and retry recommendation for this type."""
        return PROFILES[self]


class Remediation(StrEnum):
    """What should happen next, in 8 actions."""

    AUTO_RETRY = "AUTO_RETRY"
    MANUAL_RETRY = "MANUAL_RETRY"
    FIX_DATA = "FIX_DATA"
    FIX_CONFIG = "FIX_CONFIG"
    SCALE_RESOURCES = "SCALE_RESOURCES"
    ALERT_TEAM = "ALERT_TEAM"
    CHECK_EXTERNAL = "CHECK_EXTERNAL"
    INVESTIGATE = "INVESTIGATE"


class AlertLevel(StrEnum):
    """How loudly to tell a human, from ``info`` (log only) to ``critical`` (page someone)."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 3 for critical, for comparisons (``level.rank >= ERROR.rank``)."""
        return _ALERT_RANK[self]


_ALERT_RANK = {
    AlertLevel.INFO: 0,
    AlertLevel.WARNING: 1,
    AlertLevel.ERROR: 2,
    AlertLevel.CRITICAL: 3,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureProfile:
    """What the taxonomy recommends for one failure type.

    Attributes:
        category: the type's family.
        remediation: the action to take.
        remediation_details: one sentence naming what to do.
        alert_level: how loudly to tell a human.
        retry_recommended: whether an automatic retry can succeed.
        retry_delay_seconds: the first retry delay of the type's default policy
            (0 when no retry is recommended). `resilience.policy` builds its
            default curves from this number, so there is one table, not two.
    """

    category: Category
    remediation: Remediation
    remediation_details: str
    alert_level: AlertLevel
    retry_recommended: bool
    retry_delay_seconds: float


def _p(
    category: Category,
    remediation: Remediation,
    alert_level: AlertLevel,
    retry_delay_seconds: float,
    details: str,
) -> FailureProfile:
    return FailureProfile(
        category=category,
        remediation=remediation,
        remediation_details=details,
        alert_level=alert_level,
        retry_recommended=retry_delay_seconds > 0,
        retry_delay_seconds=float(retry_delay_seconds),
    )


_C, _R, _A, _T = Category, Remediation, AlertLevel, FailureType

PROFILES: Mapping[FailureType, FailureProfile] = MappingProxyType(
    {
        _T.TRANSIENT_DATABASE: _p(
            _C.TRANSIENT,
            _R.AUTO_RETRY,
            _A.WARNING,
            30,
            "Retry with backoff; if deadlocks or lock timeouts persist, review the "
            "transaction's lock order and the connection pool size.",
        ),
        _T.TRANSIENT_NETWORK: _p(
            _C.TRANSIENT,
            _R.AUTO_RETRY,
            _A.WARNING,
            60,
            "Retry with backoff; if connections keep failing, check DNS, routing and "
            "that the remote host is listening.",
        ),
        _T.TRANSIENT_RESOURCE: _p(
            _C.TRANSIENT,
            _R.AUTO_RETRY,
            _A.WARNING,
            30,
            "Retry with backoff; if file descriptors, pool slots or locks stay exhausted, "
            "raise the limit or reduce concurrency.",
        ),
        _T.TRANSIENT_RATE_LIMIT: _p(
            _C.TRANSIENT,
            _R.AUTO_RETRY,
            _A.INFO,
            300,
            "Retry after the provider's Retry-After interval and lower the call rate "
            "(task rate_limit or a shared token bucket).",
        ),
        _T.PERMANENT_VALIDATION: _p(
            _C.PERMANENT,
            _R.FIX_DATA,
            _A.ERROR,
            0,
            "Do not retry: correct the invalid input (arguments or stored record), "
            "then replay the task from the dead-letter queue.",
        ),
        _T.PERMANENT_NOT_FOUND: _p(
            _C.PERMANENT,
            _R.FIX_DATA,
            _A.WARNING,
            0,
            "Do not retry: the referenced object does not exist; restore it or abandon "
            "the task if it was deleted on purpose.",
        ),
        _T.PERMANENT_PERMISSION: _p(
            _C.PERMANENT,
            _R.FIX_CONFIG,
            _A.ERROR,
            0,
            "Do not retry: grant the credentials or role the task runs with the "
            "permission it lacks, then replay it.",
        ),
        _T.PERMANENT_LOGIC: _p(
            _C.PERMANENT,
            _R.INVESTIGATE,
            _A.ERROR,
            0,
            "Do not retry: a bug in the task's code raised this; read the traceback, "
            "fix and deploy, then replay the task.",
        ),
        _T.CONFIG_MISSING_SETTING: _p(
            _C.CONFIG,
            _R.FIX_CONFIG,
            _A.CRITICAL,
            0,
            "Do not retry: set the missing setting or environment variable on every "
            "worker, restart them, then replay the task.",
        ),
        _T.CONFIG_INVALID_SETTING: _p(
            _C.CONFIG,
            _R.FIX_CONFIG,
            _A.CRITICAL,
            0,
            "Do not retry: correct the setting's value on every worker, restart them, "
            "then replay the task.",
        ),
        _T.CONFIG_MISSING_SERVICE: _p(
            _C.CONFIG,
            _R.FIX_CONFIG,
            _A.CRITICAL,
            0,
            "Do not retry: install or register the missing module, task or service the "
            "worker needs, then replay the task.",
        ),
        _T.EXTERNAL_API_DOWN: _p(
            _C.EXTERNAL,
            _R.CHECK_EXTERNAL,
            _A.ERROR,
            900,
            "Retry slowly behind a circuit breaker and check the provider's status page; "
            "escalate to the provider if the outage lasts.",
        ),
        _T.EXTERNAL_API_ERROR: _p(
            _C.EXTERNAL,
            _R.MANUAL_RETRY,
            _A.ERROR,
            0,
            "Do not retry automatically: the external API rejected or failed this request; "
            "read its error, fix the call or contact the provider, then replay it.",
        ),
        _T.EXTERNAL_TIMEOUT: _p(
            _C.EXTERNAL,
            _R.AUTO_RETRY,
            _A.WARNING,
            300,
            "Retry with backoff; if timeouts persist, check the provider's latency and "
            "raise the client timeout or split the work.",
        ),
        _T.SYSTEM_OUT_OF_MEMORY: _p(
            _C.SYSTEM,
            _R.SCALE_RESOURCES,
            _A.CRITICAL,
            120,
            "Retry once on a fresh worker; give workers more memory, lower concurrency or "
            "set worker_max_memory_per_child, and look for unbounded data in the task.",
        ),
        _T.SYSTEM_DISK_FULL: _p(
            _C.SYSTEM,
            _R.ALERT_TEAM,
            _A.CRITICAL,
            0,
            "Do not retry: free or grow the full disk (or quota) on the worker host, "
            "then replay the task.",
        ),
        _T.SYSTEM_WORKER_CRASH: _p(
            _C.SYSTEM,
            _R.ALERT_TEAM,
            _A.CRITICAL,
            60,
            "Retry on another worker; find why the worker process died (OOM killer, "
            "segfault, time limit) in the worker and kernel logs.",
        ),
        _T.UNKNOWN: _p(
            _C.UNKNOWN,
            _R.INVESTIGATE,
            _A.ERROR,
            60,
            "Retry once, then investigate: nothing identified this exception; add a "
            "classification rule for it once its cause is known.",
        ),
    }
)


def profile(failure_type: FailureType) -> FailureProfile:
    """The profile of ``failure_type`` (remediation, alert level, retry recommendation)."""
    return PROFILES[failure_type]


def _check_complete() -> None:
    missing = set(FailureType) - set(PROFILES)
    if missing:  # pragma: no cover - guards edits to the table above
        raise RuntimeError(f"failure types without a profile: {sorted(missing)}")
    for failure_type, prof in PROFILES.items():
        if failure_type.name.split("_")[0].lower() != prof.category.value:
            raise RuntimeError(f"{failure_type} filed under {prof.category}")  # pragma: no cover


_check_complete()

"""The result of classifying one exception."""

from __future__ import annotations

import math
from dataclasses import dataclass

from resilience.errors import ConfigurationError
from resilience.taxonomy._vocabulary import AlertLevel, FailureType, Remediation

__all__ = ["Classification"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """What an exception means and what to do about it.

    Attributes:
        failure_type: one of the 18 types.
        confidence: 0..1; structured evidence (class, errno, SQLSTATE, HTTP status)
            scores higher than message patterns or class-name words.
        remediation: the recommended action.
        remediation_details: one sentence naming what to do.
        retry_recommended: whether an automatic retry can succeed.
        retry_delay_seconds: the recommended first delay (``retry_after`` when the
            failure carried one, else the type's default first delay; 0 if no retry).
        retry_after: seconds the remote side asked us to wait (Retry-After header,
            rate-limit reset), else ``None``.
        alert_level: how loudly to tell a human.
        evidence: which rule decided, in words ("SQLSTATE 40P01 (deadlock_detected)
            on psycopg.errors.DeadlockDetected").
    """

    failure_type: FailureType
    confidence: float
    remediation: Remediation
    remediation_details: str
    retry_recommended: bool
    retry_delay_seconds: float
    retry_after: float | None
    alert_level: AlertLevel
    evidence: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ConfigurationError(
                f"Classification.confidence must be within [0, 1], got {self.confidence!r}",
                key="confidence",
                value=self.confidence,
            )
        if not (math.isfinite(self.retry_delay_seconds) and self.retry_delay_seconds >= 0):
            raise ConfigurationError(
                "Classification.retry_delay_seconds must be finite and >= 0, "
                f"got {self.retry_delay_seconds!r}",
                key="retry_delay_seconds",
                value=self.retry_delay_seconds,
            )

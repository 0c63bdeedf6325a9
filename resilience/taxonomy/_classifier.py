"""Placeholder: the classifier is being written; this returns UNKNOWN for everything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from resilience.taxonomy._classification import Classification
from resilience.taxonomy._vocabulary import FailureType, profile

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["classify"]


def classify(exc: BaseException, context: Mapping[str, object] | None = None) -> Classification:
    """Classify ``exc`` (placeholder)."""
    prof = profile(FailureType.UNKNOWN)
    return Classification(
        failure_type=FailureType.UNKNOWN,
        confidence=0.1,
        remediation=prof.remediation,
        remediation_details=prof.remediation_details,
        retry_recommended=prof.retry_recommended,
        retry_delay_seconds=prof.retry_delay_seconds,
        retry_after=None,
        alert_level=prof.alert_level,
        evidence=f"no rule matched {type(exc).__qualname__}",
    )

"""Failure taxonomy: classify any exception a task can raise into one of 18 types.

See ``docs/taxonomy.md``.
"""

from __future__ import annotations

from resilience.taxonomy._classification import Classification
from resilience.taxonomy._classifier import classify
from resilience.taxonomy._vocabulary import (
    PROFILES,
    AlertLevel,
    Category,
    FailureProfile,
    FailureType,
    Remediation,
    profile,
)

__all__ = [
    "PROFILES",
    "AlertLevel",
    "Category",
    "Classification",
    "FailureProfile",
    "FailureType",
    "Remediation",
    "classify",
    "profile",
]

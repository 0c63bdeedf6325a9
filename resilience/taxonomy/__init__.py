"""Failure taxonomy: classify any exception a task can raise into one of 18 types.

See ``docs/taxonomy.md``.
"""

from __future__ import annotations

from resilience.taxonomy._classification import Classification
from resilience.taxonomy._classifier import Classifier, classify, register_rule
from resilience.taxonomy._rules import Rule, RuleHandle
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
    "Classifier",
    "FailureProfile",
    "FailureType",
    "Remediation",
    "Rule",
    "RuleHandle",
    "classify",
    "profile",
    "register_rule",
]

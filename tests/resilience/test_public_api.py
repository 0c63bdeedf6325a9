"""Tests pinning the public API: exports, contract names, and a stdlib-only import."""

from __future__ import annotations
import __future__

import subprocess
import sys
from types import ModuleType

import resilience


def test_all_matches_public_names_and_is_sorted() -> None:
    """__all__ lists exactly the public, non-module names of the package, sorted."""
    public = {
        name
        for name, value in vars(resilience).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and value is not __future__.annotations
    }
    assert set(resilience.__all__) == public

    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def style(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert resilience.__all__ == sorted(resilience.__all__, key=style)


def test_contract_names_exist() -> None:
    """The names other components rely on exist with the documented shapes."""
    assert len(resilience.FailureType) == 18
    assert all(t.value == t.name for t in resilience.FailureType)
    assert len(resilience.Remediation) == 8
    classification = resilience.classify(ValueError("x"), None)
    for field in (
        "failure_type",
        "confidence",
        "remediation",
        "remediation_details",
        "retry_recommended",
        "retry_delay_seconds",
        "retry_after",
        "alert_level",
        "evidence",
    ):
        assert hasattr(classification, field), field
    policy = resilience.default_policy(resilience.FailureType.TRANSIENT_DATABASE)
    assert isinstance(policy, resilience.RetryPolicy)
    assert policy.delay(1, rng=None) >= 0
    assert callable(resilience.RetryEngine().decide)
    assert issubclass(resilience.CircuitOpenError, resilience.ResilienceError)
    assert callable(resilience.CircuitBreaker("x").call)
    assert callable(resilience.retry)


def test_import_needs_only_the_standard_library() -> None:
    """`import resilience` works when every third-party import is blocked."""
    code = """
import importlib.abc, sys

import importlib.machinery

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        origin = (spec.origin or "") if spec else ""
        if "-packages" in origin and not name.startswith("resilience"):
            raise ImportError(f"blocked third-party import: {name} from {origin}")
        return None

sys.meta_path.insert(0, Block())
import resilience, resilience.cli
resilience.classify(TimeoutError("timed out"))
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

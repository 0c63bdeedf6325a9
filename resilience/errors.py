"""Every error `resilience` raises, under one root.

The tree::

    ResilienceError                      root: catch this to catch anything of ours
    ├── ConfigurationError(ValueError)   bad setting, policy field, rule or URL (.key, .value)
    └── CircuitOpenError                 a breaker refused the call (.breaker, .retry_after)

Errors mix in the matching builtin so code that already catches ``ValueError``
keeps working. When retries run out, the last original exception propagates
(with a note of the attempts); it is never wrapped in an error from this tree.
"""

from __future__ import annotations

__all__ = ["CircuitOpenError", "ConfigurationError", "ResilienceError"]


class ResilienceError(Exception):
    """Root of every error raised by `resilience`."""


class ConfigurationError(ResilienceError, ValueError):
    """A setting, policy field, rule or URL is invalid.

    Attributes:
        key: the name of the offending field or setting (``"initial_delay"``).
        value: the value that was rejected (credentials are never stored here).
        path: the file the setting came from, when it came from a file.
        line: the 1-based line in ``path``, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: object = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.value = value
        self.path = path
        self.line = line


class CircuitOpenError(ResilienceError):
    """A circuit breaker is open (or forced open) and refused the call.

    Attributes:
        breaker: the breaker's name (usually the dependency, ``"payments-api"``).
        retry_after: seconds until the breaker admits its next probe call
            (``None`` while forced open by an operator: no probe is scheduled).
    """

    def __init__(self, breaker: str, retry_after: float | None) -> None:
        if retry_after is None:
            detail = "forced open by an operator"
        else:
            detail = f"next probe in {retry_after:.3f}s"
        super().__init__(f"circuit breaker {breaker!r} is open ({detail})")
        self.breaker = breaker
        self.retry_after = retry_after

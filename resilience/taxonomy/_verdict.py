"""The classifier's internal currency: a verdict about one exception, and its subject.

A :class:`Verdict` is what one rule concluded; the public
:class:`~resilience.taxonomy.Classification` is built from the winning verdict
plus the failure type's profile and the caller's context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resilience.taxonomy._text import message_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from resilience.taxonomy._vocabulary import FailureType

__all__ = ["Subject", "Verdict"]


class Verdict:
    """One rule's conclusion about one exception.

    Attributes:
        failure_type: the type concluded (``None`` only for "no opinion" class entries).
        confidence: 0..1.
        evidence: human-readable, naming the rule kind.
        defer: the exception is a wrapper; a meaningful cause decides instead.
        retry: overrides the profile's retry recommendation when not ``None``.
        retry_after: seconds the remote side asked us to wait.
        exhausted: the exception itself says retries already ran out.
    """

    __slots__ = (
        "confidence",
        "defer",
        "evidence",
        "exhausted",
        "failure_type",
        "retry",
        "retry_after",
    )

    def __init__(
        self,
        failure_type: FailureType,
        confidence: float,
        evidence: str,
        *,
        defer: bool = False,
        retry: bool | None = None,
        retry_after: float | None = None,
        exhausted: bool = False,
    ) -> None:
        self.failure_type = failure_type
        self.confidence = confidence
        self.evidence = evidence
        self.defer = defer
        self.retry = retry
        self.retry_after = retry_after
        self.exhausted = exhausted

    def __repr__(self) -> str:
        return f"Verdict({self.failure_type!s}, {self.confidence}, {self.evidence!r})"


class Subject:
    """The exception under examination, with its name and a lazily read message.

    Args:
        exc: the exception.
        name: its class's qualified name.
        now: returns the current epoch time (for HTTP dates).
    """

    __slots__ = ("_message", "exc", "name", "now", "wait")

    def __init__(self, exc: BaseException, name: str, now: Callable[[], float]) -> None:
        self.exc = exc
        self.name = name
        self.now = now
        self._message: str | None = None
        self.wait: tuple[float, str] | bool | None = False
        """The Retry-After lookup, once done (``False`` until then)."""

    @property
    def message(self) -> str:
        """The head of ``str(exc)``, computed once."""
        if self._message is None:
            self._message = message_of(self.exc)
        return self._message

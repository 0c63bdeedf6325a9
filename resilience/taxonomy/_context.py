"""Context refinement: what the caller knows about the attempt changes the recommendation.

Rules (documented in ``docs/taxonomy.md``; each has a test):

1. Time budget: an exception nothing identified (``UNKNOWN``) raised after
   ``execution_time >= soft_time_limit`` (or ``time_limit``) is
   ``EXTERNAL_TIMEOUT`` (0.6): the task ran out of time and the real error was
   lost. Timeouts stay retryable; no rule turns a retryable type into a
   non-retryable one because the task ran long.
2. Retries exhausted: ``retry_count >= max_retries`` (both given), or the
   exception itself says retries ran out (Celery ``MaxRetriesExceededError``,
   tenacity ``RetryError``): no automatic retry; ``AUTO_RETRY`` becomes
   ``MANUAL_RETRY`` and an info/warning alert becomes an error.
3. Unknown, already retried: ``UNKNOWN`` with ``retry_count >= 1`` is not
   retried again (retry once, then investigate).

Missing, ``None`` or wrongly typed values are ignored, never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from resilience.taxonomy._classification import Classification
from resilience.taxonomy._vocabulary import PROFILES, AlertLevel, FailureType, Remediation

if TYPE_CHECKING:
    from resilience.clock import Clock
    from resilience.taxonomy._verdict import Verdict

__all__ = ["ContextFacts", "apply_context"]


def _get(context: Mapping[str, object], key: str) -> object:
    try:
        return context.get(key)
    except Exception:  # noqa: BLE001 - a caller's mapping may be anything
        return None


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return int(value)
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


class ContextFacts:
    """The context values the classifier understands, validated once per call."""

    __slots__ = (
        "_clock",
        "_now",
        "execution_time",
        "max_retries",
        "retry_count",
        "task_name",
        "time_limit",
    )

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._now: float | None = None
        self.task_name: str | None = None
        self.retry_count: int | None = None
        self.max_retries: int | None = None
        self.execution_time: float | None = None
        self.time_limit: tuple[float, str] | None = None

    @classmethod
    def of(cls, context: object, clock: Clock) -> ContextFacts:
        """Read the known keys of ``context`` (anything; non-mappings count as empty)."""
        facts = cls(clock)
        if not isinstance(context, Mapping) or not context:
            return facts
        task_name = _get(context, "task_name")
        facts.task_name = task_name if isinstance(task_name, str) else None
        facts.retry_count = _count(_get(context, "retry_count"))
        facts.max_retries = _count(_get(context, "max_retries"))
        facts.execution_time = _seconds(_get(context, "execution_time"))
        for key in ("soft_time_limit", "time_limit"):
            limit = _seconds(_get(context, key))
            if limit is not None and limit > 0:
                facts.time_limit = (limit, key)
                break
        now = _get(context, "now")
        if isinstance(now, int | float) and not isinstance(now, bool) and math.isfinite(now):
            facts._now = float(now)
        return facts

    @property
    def inert(self) -> bool:
        """Whether no context rule can fire (task_name only matters to user rules)."""
        return self.retry_count is None and (self.time_limit is None or self.execution_time is None)

    @property
    def now(self) -> Callable[[], float]:
        """Returns the current epoch time: the context's ``now`` or the clock's."""
        if self._now is not None:
            fixed = self._now
            return lambda: fixed
        return self._clock.time


def _details_exhausted(failure_type: FailureType) -> str:
    return (
        f"Automatic retries are exhausted for this {failure_type.value} failure: find out "
        "why it persists, then replay the task by hand (dead-letter queue)."
    )


# Classifications built without context, by what decided them: the same
# verdict always yields the same (frozen) result, so it is built once.
_MEMO: dict[tuple[object, ...], Classification] = {}
_MEMO_SIZE = 4096


def apply_context(
    verdict: Verdict, facts: ContextFacts | None, notes: list[str], *, limit: int
) -> Classification:
    """Build the :class:`Classification` from the winning verdict, the profile and the facts.

    Args:
        verdict: what decided the failure type.
        facts: the caller's context (``None`` for no context).
        notes: extra evidence (user predicates that raised).
        limit: the maximum evidence length.
    """
    if notes or (facts is not None and not facts.inert) or verdict.retry_after is not None:
        return _apply(verdict, facts, notes, limit)
    key = (
        verdict.failure_type,
        verdict.confidence,
        verdict.evidence,
        verdict.retry,
        verdict.exhausted,
        limit,
    )
    found = _MEMO.get(key)
    if found is None:
        found = _apply(verdict, None, notes, limit)
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.clear()
        _MEMO[key] = found
    return found


def _apply(
    verdict: Verdict, facts: ContextFacts | None, notes: list[str], limit: int
) -> Classification:
    failure_type = verdict.failure_type
    confidence = verdict.confidence
    evidence = [verdict.evidence]
    if (
        facts is not None
        and failure_type is FailureType.UNKNOWN
        and verdict.retry is None
        and facts.execution_time is not None
        and facts.time_limit is not None
        and facts.execution_time >= facts.time_limit[0]
    ):
        failure_type = FailureType.EXTERNAL_TIMEOUT
        confidence = 0.6
        evidence.append(
            f"context: execution_time {facts.execution_time:g}s reached "
            f"{facts.time_limit[1]} {facts.time_limit[0]:g}s"
        )
    prof = PROFILES[failure_type]
    retry = prof.retry_recommended if verdict.retry is None else verdict.retry
    remediation = prof.remediation
    details = prof.remediation_details
    alert = prof.alert_level
    exhausted_by = ""
    if verdict.exhausted:
        exhausted_by = "the exception reports retries ran out"
    elif (
        facts is not None
        and facts.retry_count is not None
        and facts.max_retries is not None
        and facts.retry_count >= facts.max_retries
    ):
        exhausted_by = f"retry_count {facts.retry_count} >= max_retries {facts.max_retries}"
    if exhausted_by and retry:
        retry = False
        if remediation is Remediation.AUTO_RETRY:
            remediation = Remediation.MANUAL_RETRY
        details = _details_exhausted(failure_type)
        if alert.rank < AlertLevel.ERROR.rank:
            alert = AlertLevel.ERROR
        evidence.append(f"retries exhausted ({exhausted_by})")
    elif (
        retry
        and failure_type is FailureType.UNKNOWN
        and facts is not None
        and facts.retry_count is not None
        and facts.retry_count >= 1
    ):
        retry = False
        evidence.append(
            f"UNKNOWN failure already retried (retry_count {facts.retry_count}): investigate"
        )
    evidence.extend(notes)
    delay = 0.0
    if retry:
        delay = prof.retry_delay_seconds if verdict.retry_after is None else verdict.retry_after
    text = "; ".join(evidence)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return Classification(
        failure_type=failure_type,
        confidence=max(0.0, min(1.0, confidence)),
        remediation=remediation,
        remediation_details=details,
        retry_recommended=retry,
        retry_delay_seconds=delay,
        retry_after=verdict.retry_after,
        alert_level=alert,
        evidence=text,
    )

"""One attempt of a resilient task: guards before the body, the decision after a failure.

Three message headers travel with a task's retries (Celery copies a request's
headers into the retry message):

``resilience_failures``
    failed attempts so far. Celery's ``request.retries`` also counts deferrals (a
    retry while a breaker is open or a duplicate runs elsewhere); the engine is asked
    with this count instead, so waiting is never mistaken for failing.
``resilience_failure_type`` / ``resilience_first_failed_at``
    the last failure's type (for the retry's success statistics) and when the first
    failure happened (for the dead letter).
``resilience_dead_letter``
    set on a replay: the dead letter to resolve on success, or to put back on failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

from celery.exceptions import Ignore, Reject, Retry  # type: ignore[import-untyped]

from resilience._operations import EXECUTIONS_KEY
from resilience.breaker import CircuitBreaker
from resilience.celery._replay import DEAD_LETTER_HEADER
from resilience.celery._runtime import INSTALLS, Resilience
from resilience.celery.signals import (
    on_breaker_call,
    on_dead_letter,
    on_decision,
    on_idempotency,
)
from resilience.engine import Priority, RetryEngine
from resilience.errors import (
    CircuitOpenError,
    DeadLetterConflict,
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    StorageUnavailable,
)
from resilience.idempotency import IdempotencyGuard, idempotency_key, payload_fingerprint
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from resilience.breaker import Permit
    from resilience.celery._config import TaskOptions
    from resilience.engine import RetryDecision
    from resilience.idempotency import Claim

__all__ = [
    "CONTROL_FLOW",
    "FAILURES_HEADER",
    "FAILURE_TYPE_HEADER",
    "FIRST_FAILED_HEADER",
    "TaskPlan",
    "build_plan",
    "fail",
    "run_guarded",
    "succeeded",
]

FAILURES_HEADER: Final = "resilience_failures"
FAILURE_TYPE_HEADER: Final = "resilience_failure_type"
FIRST_FAILED_HEADER: Final = "resilience_first_failed_at"

CONTROL_FLOW: Final = (Retry, Ignore, Reject)
"""Celery's control-flow exceptions: never classified, never counted, re-raised as they are."""

_log = logging.getLogger("resilience.celery")
_TYPES: Final[Mapping[str, FailureType]] = {t.value: t for t in FailureType}


class _NoOutcome(BaseException):
    """Hands a breaker permit back without an outcome (the body asked Celery to retry)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskPlan:
    """What one task needs at run time, resolved once per task and app installation.

    Attributes:
        runtime: the app's installation.
        engine: the engine deciding this task's retries.
        priority: the task's priority.
        breaker: the dependency's breaker, if any.
        guard: the idempotency guard, if the task has a key.
        key: the task's ``idempotency_key`` option.
        guarded: whether a breaker or idempotency applies (the slower path).
        track_first: whether successes of first attempts must be counted (retry budget,
            or ``track_executions``).
        track_executions: whether every attempt's outcome is recorded as an execution.
        max_retries: the task's ``resilience={"max_retries": N}`` cap, for the
            classifier's context (``None`` without a cap, or when the task's own
            ``policies`` may allow a type more retries than the cap).
        installs: the install count the plan was built at (see ``INSTALLS``).
    """

    runtime: Resilience
    engine: RetryEngine
    priority: Priority
    breaker: CircuitBreaker | None
    guard: IdempotencyGuard | None
    key: bool | str | Callable[..., object] | None
    guarded: bool
    track_first: bool
    track_executions: bool
    max_retries: int | None
    installs: int


def build_plan(runtime: Resilience, task_name: str, options: TaskOptions) -> TaskPlan:
    """Resolve a task's options against the app's installation."""
    engine = runtime.engine_for(task_name, options)
    guard = None
    if options.idempotency_key is not None:
        guard = runtime.guard(
            category=options.idempotency_category,
            ttl=options.idempotency_ttl,
            lease=options.idempotency_lease,
        )
    return TaskPlan(
        runtime=runtime,
        engine=engine,
        priority=runtime.priority_for(options),
        breaker=None if options.breaker is None else runtime.breaker(options.breaker),
        guard=guard,
        key=options.idempotency_key,
        guarded=options.guarded,
        track_first=engine.budget is not None or runtime.settings.track_executions,
        track_executions=runtime.settings.track_executions,
        # The cap holds for every retried type unless the task's own policies set
        # some type's count: then only the engine knows which applies.
        max_retries=None if options.policies else options.max_retries,
        installs=INSTALLS[0],
    )


# --------------------------------------------------------------------------- guarded runs


def run_guarded(
    plan: TaskPlan, task: Any, request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run the body behind the task's idempotency key and breaker.

    In a worker (``request.called_directly`` false) a busy key or an open breaker
    becomes a deferral and a failure goes to the engine; called directly, they raise.
    """
    worker = not request.called_directly
    claim: Claim | None = None
    if plan.guard is not None:
        claim = _enter(plan, plan.guard, task, request, args=args, kwargs=kwargs)
        found = "hit" if claim.duplicate else "miss"
        on_idempotency.send(sender=task, request=request, key=claim.key, outcome=found)
        if claim.duplicate:
            if worker and request.headers:
                _resolve_replay(plan, task, request, duplicate=True)
            return claim.result
        request.idempotency = claim
        request.idempotency_key = claim.key
        request.fencing_token = None if claim.record is None else claim.record.token
    breaker = plan.breaker
    permit = None if breaker is None else _admit(plan, breaker, task, request, claim)
    try:
        result = task.run(*args, **kwargs)
    except BaseException as exc:
        if claim is not None:
            claim.release()
        if breaker is not None:
            # Celery's Retry/Ignore/Reject say nothing about the dependency.
            outcome = _NoOutcome() if isinstance(exc, CONTROL_FLOW) else exc
            breaker.record_failure(outcome, permit=permit)
        if worker and isinstance(exc, Exception) and not isinstance(exc, CONTROL_FLOW):
            fail(plan, task, request, exc, args=args, kwargs=kwargs)
        raise
    if claim is not None:
        claim.complete(result)
    if breaker is not None:
        breaker.record_success(permit=permit)
    if worker and (request.headers or plan.track_first):
        succeeded(plan, task, request)
    return result


def _enter(
    plan: TaskPlan,
    guard: IdempotencyGuard,
    task: Any,
    request: Any,
    *,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Claim:
    """Claim the task's key; a key held elsewhere defers, any other error is a failure."""
    try:
        return _claim(guard, plan.key, task, args, kwargs)
    except IdempotencyInProgress as busy:
        on_idempotency.send(sender=task, request=request, key=busy.key, outcome="in_progress")
        wait = min(busy.retry_after, plan.runtime.settings.in_progress_delay)
        _defer(
            plan, task, request, busy, wait=wait, why=f"idempotency key {busy.key!r} is in progress"
        )
    except CONTROL_FLOW:
        raise
    except Exception as exc:
        if isinstance(exc, IdempotencyKeyMismatch):
            on_idempotency.send(sender=task, request=request, key=exc.key, outcome="conflict")
        if not request.called_directly:
            fail(plan, task, request, exc, args=args, kwargs=kwargs)
        raise


def _admit(
    plan: TaskPlan, breaker: CircuitBreaker, task: Any, request: Any, claim: Claim | None
) -> Permit:
    """The breaker's permit; an open breaker gives the key back and defers."""
    try:
        permit = breaker.before_call()
    except CircuitOpenError as refused:
        if claim is not None:
            claim.release()
        wait = refused.retry_after
        on_breaker_call.send(
            sender=breaker.name, task=task, request=request, admitted=False, retry_after=wait
        )
        _defer(
            plan,
            task,
            request,
            refused,
            wait=plan.runtime.settings.forced_open_delay if wait is None else wait,
            why=f"breaker {breaker.name!r} is open",
        )
    on_breaker_call.send(
        sender=breaker.name, task=task, request=request, admitted=True, retry_after=None
    )
    return permit


def _claim(
    guard: IdempotencyGuard,
    key: bool | str | Callable[..., object] | None,
    task: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Claim:
    spec = None if key is True else key
    derived = idempotency_key(task.name, args, kwargs, key=spec, func=task.run)  # type: ignore[arg-type]
    fingerprint = payload_fingerprint(args, kwargs, func=task.run)
    return guard.claim(derived, fingerprint=fingerprint).__enter__()


def _defer(
    plan: TaskPlan,
    task: Any,
    request: Any,
    reason: CircuitOpenError | IdempotencyInProgress,
    *,
    wait: float,
    why: str,
) -> NoReturn:
    """Reschedule the task without counting a failure; raises ``Retry``.

    Called directly or eagerly, nothing can wait: the reason itself is raised.
    """
    if request.called_directly or request.is_eager:
        raise reason
    # Spread: every task held back by the same breaker or lease waits for the same
    # instant, and would otherwise come back together.
    countdown = plan.engine.spread(max(wait, plan.runtime.settings.min_deferral))
    headers = dict(request.headers or {})
    try:
        task.retry(exc=reason, countdown=countdown, max_retries=None, headers=headers)
    except Retry:
        _report(
            logging.INFO,
            task,
            request,
            failure_type=None,
            decision="deferred",
            text=f"deferred {_seconds(countdown)}, not counted as a failure: {why}",
            delay=countdown,
        )
        raise
    except Reject as unpublished:
        # The broker refused the deferral: keep the run in the dead-letter queue
        # rather than let Celery drop the message.
        _dead_letter(
            plan,
            task,
            request,
            reason,
            args=request.args or (),
            kwargs=request.kwargs or {},
            decision=None,
            failures=_count(headers),
            headers=headers,
            why=f"{why}, and the deferral could not be published ({unpublished.reason!r})",
        )
        raise reason from unpublished
    # task.retry() always raises; this line only tells the type checker so.
    raise reason


# --------------------------------------------------------------------------- outcomes


def succeeded(plan: TaskPlan, task: Any, request: Any) -> None:
    """Count a success (a retried run, a first attempt for the budget); resolve a replay."""
    headers = request.headers or {}
    failures = _count(headers)
    if plan.track_executions:
        _execution(plan, task, success=True)
    if failures or plan.track_first:
        plan.engine.record_outcome(
            task.name,
            success=True,
            retry_count=failures,
            failure_type=_TYPES.get(str(headers.get(FAILURE_TYPE_HEADER))),
        )
    if headers.get(DEAD_LETTER_HEADER):
        _resolve_replay(plan, task, request, duplicate=False)


def fail(
    plan: TaskPlan,
    task: Any,
    request: Any,
    exc: Exception,
    *,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> None:
    """Decide what a failed attempt leads to; call it in the ``except`` block.

    Raises ``Retry`` when the engine retries; returns after dead-lettering (the
    caller re-raises the original exception, so the task ends FAILURE).
    """
    headers = dict(request.headers or {})
    failures = _count(headers)
    queue = _queue(request)
    if plan.track_executions:
        _execution(plan, task, success=False)
    decision = plan.engine.decide(
        task.name,
        exc,
        failures,
        priority=plan.priority,
        queue=queue,
        context=_context(plan, task, request, queue=queue),
    )
    on_decision.send(sender=task, request=request, exception=exc, decision=decision)
    failure_type = decision.classification.failure_type
    replayed = headers.get(DEAD_LETTER_HEADER)
    if replayed:
        _replay_failed(plan, task, request, exc, record_id=str(replayed), decision=decision)
        return
    why = decision.reason
    if decision.retry and decision.delay is not None:
        delay = decision.delay
        breaker = plan.breaker
        if breaker is not None:
            probe_in = breaker.seconds_until_probe()
            if probe_in is None:
                probe_in = plan.runtime.settings.forced_open_delay
            if probe_in > delay:
                delay = plan.engine.spread(probe_in)
                why += f"; waits for breaker {breaker.name!r} to probe in {probe_in:g}s"
        headers[FAILURES_HEADER] = failures + 1
        headers[FAILURE_TYPE_HEADER] = failure_type.value
        headers.setdefault(FIRST_FAILED_HEADER, plan.runtime.clock.time())
        try:
            task.retry(exc=exc, countdown=delay, max_retries=None, headers=headers)
        except Retry:
            _report(
                logging.WARNING,
                task,
                request,
                failure_type=failure_type,
                decision="retry",
                text=f"retry in {_seconds(delay)}: {why}",
                exc=exc,
                delay=delay,
            )
            raise
        except Reject as unpublished:
            why += f"; the retry could not be published ({unpublished.reason!r})"
    _dead_letter(
        plan,
        task,
        request,
        exc,
        args=args,
        kwargs=kwargs,
        decision=decision,
        failures=failures,
        headers=headers,
        why=why,
    )


def _dead_letter(
    plan: TaskPlan,
    task: Any,
    request: Any,
    exc: BaseException,
    *,
    args: Any,
    kwargs: Any,
    decision: RetryDecision | None,
    failures: int,
    headers: Mapping[str, Any],
    why: str,
) -> None:
    delivery = request.delivery_info or {}
    first = headers.get(FIRST_FAILED_HEADER)
    # The task's own policy (its policies and cap), so the dead letter's automatic
    # retry follows what the task is configured to do.
    policy = (
        None if decision is None else plan.engine.policy_for(decision.classification.failure_type)
    )
    try:
        record = plan.runtime.dead_letters.add(
            task_name=task.name,
            exc=exc,
            args=list(args),
            kwargs=dict(kwargs),
            task_id=request.id,
            retry_count=failures,
            classification=None if decision is None else decision.classification,
            priority=_priority(delivery),
            queue=_queue(request),
            correlation_id=request.root_id,
            first_failed_at=first if isinstance(first, int | float) else None,
            policy=policy,
        )
    except Exception:  # noqa: BLE001 - the task's own exception must still propagate
        _log.exception(
            "%s[%s] failed and could not be dead-lettered (%s): %s",
            task.name,
            request.id,
            type(exc).__name__,
            why,
        )
        return
    _report(
        logging.ERROR,
        task,
        request,
        failure_type=record.failure_type,
        decision="dead_letter",
        text=f"dead-lettered as {record.id}: {why}",
        exc=exc,
        dead_letter_id=record.id,
    )
    on_dead_letter.send(sender=task, record=record, exception=exc, decision=decision)


def _replay_failed(
    plan: TaskPlan,
    task: Any,
    request: Any,
    exc: Exception,
    *,
    record_id: str,
    decision: RetryDecision,
) -> None:
    """A replayed run failed: its record goes back to PENDING (no second record)."""
    dead_letters = plan.runtime.dead_letters
    try:
        record = dead_letters.record_retry_failed(
            record_id,
            exc=exc,
            actor="worker",
            classification=decision.classification,
            policy=plan.engine.policy_for(decision.classification.failure_type),
        )
    except DeadLetterConflict as conflict:
        # An operator resolved or abandoned the record meanwhile: the new failure is
        # news, so it gets a record of its own rather than being lost.
        _dead_letter(
            plan,
            task,
            request,
            exc,
            args=request.args or (),
            kwargs=request.kwargs or {},
            decision=decision,
            failures=0,
            headers={},
            why=f"replay of dead letter {record_id} failed and the record is {conflict.status}",
        )
        return
    due = record.next_retry_at
    _report(
        logging.ERROR,
        task,
        request,
        failure_type=record.failure_type,
        decision="dead_letter",
        text=(
            f"replay of dead letter {record_id} failed: back to PENDING, "
            + ("no automatic retry" if due is None else f"next automatic retry at {due:.0f}")
        ),
        exc=exc,
        dead_letter_id=record_id,
    )
    on_dead_letter.send(sender=task, record=record, exception=exc, decision=decision)


def _resolve_replay(plan: TaskPlan, task: Any, request: Any, *, duplicate: bool) -> None:
    record_id = (request.headers or {}).get(DEAD_LETTER_HEADER)
    if not record_id:
        return
    note = f"replayed as task {request.id}: " + (
        "its idempotency key was already completed" if duplicate else "succeeded"
    )
    try:
        plan.runtime.dead_letters.resolve(str(record_id), actor="worker", note=note)
    except DeadLetterConflict as conflict:
        _log.info(
            "%s[%s]: dead letter %s not resolved: it is %s",
            task.name,
            request.id,
            record_id,
            conflict.status,
        )


# --------------------------------------------------------------------------- helpers


def _execution(plan: TaskPlan, task: Any, *, success: bool) -> None:
    """Count one attempt in the outcomes store (best effort, like retry statistics)."""
    try:
        plan.engine.history.store.add(
            task.name, EXECUTIONS_KEY, success=success, now=plan.runtime.clock.time()
        )
    except StorageUnavailable as exc:
        _log.warning("execution of %s not counted: %s", task.name, exc)


def _report(
    level: int,
    task: Any,
    request: Any,
    *,
    failure_type: FailureType | None,
    decision: str,
    text: str,
    exc: BaseException | None = None,
    delay: float | None = None,
    dead_letter_id: str | None = None,
) -> None:
    """The one log line of a failure or deferral (the exception's text stays out: PII)."""
    what = "" if exc is None else f" failed with {type(exc).__name__}:"
    _log.log(
        level,
        "%s[%s]%s %s",
        task.name,
        request.id,
        what,
        text,
        extra={
            "task_id": request.id,
            "task_name": task.name,
            "failure_type": None if failure_type is None else failure_type.value,
            "decision": decision,
            "delay": delay,
            "dead_letter_id": dead_letter_id,
            "retries": request.retries,
        },
    )


def _context(plan: TaskPlan, task: Any, request: Any, *, queue: str | None) -> dict[str, object]:
    """What the classifier's context rules can use from this run (keys it reads, and ids).

    For a capped task ``max_retries`` (retries exhausted); ``soft_time_limit`` /
    ``time_limit`` as the worker applies them: the message's own limits, else the
    task's. The engine adds ``retry_count`` itself. The run's execution time is not
    known here.
    """
    context: dict[str, object] = {"task_id": request.id, "queue": queue}
    if plan.max_retries is not None:
        context["max_retries"] = plan.max_retries
    hard = soft = None
    limits = getattr(request, "timelimit", None)
    if isinstance(limits, list | tuple) and len(limits) == 2:
        hard, soft = limits
    soft = soft or getattr(task, "soft_time_limit", None)
    hard = hard or getattr(task, "time_limit", None)
    if soft:
        context["soft_time_limit"] = soft
    if hard:
        context["time_limit"] = hard
    return context


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 100 else f"{value:.3g}s"


def _count(headers: Mapping[str, Any]) -> int:
    value = headers.get(FAILURES_HEADER)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def _queue(request: Any) -> str | None:
    delivery = request.delivery_info or {}
    queue = delivery.get("routing_key") or None
    return None if queue is None else str(queue)


def _priority(delivery: Mapping[str, Any]) -> int:
    value = delivery.get("priority")
    if isinstance(value, int) and not isinstance(value, bool):
        return min(9, max(0, value))
    return 0

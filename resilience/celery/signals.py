"""Signals sent by resilient tasks, in the style of Celery's own (``celery.signals``).

Connect a receiver the way you connect to ``celery.signals.task_failure``::

    from resilience.celery.signals import on_dead_letter

    @on_dead_letter.connect
    def page_someone(sender, record, exception, **kwargs):
        ...

A receiver that raises is logged by Celery and does not affect the task.

``on_dead_letter``
    Sent after a failed run was stored in the dead-letter queue, in the process that
    stored it. Arguments: ``sender`` (the task), ``record`` (the stored
    :class:`~resilience.storage.DeadLetterRecord`), ``exception`` (what the run
    raised), ``decision`` (the :class:`~resilience.RetryDecision`, or ``None`` when
    the worker process died and no decision was made).

``on_breaker_change``
    Sent when a dependency's circuit breaker changes state, in the process that
    stored the change (breaker state is shared through the store; other workers see
    the new state without receiving the signal). Arguments: ``sender`` (the
    dependency's name, a ``str``), ``breaker`` (the
    :class:`~resilience.CircuitBreaker`), ``old_state`` and ``new_state``
    (:class:`~resilience.CircuitState`).

``on_decision``
    Sent when the retry engine has decided about a failed attempt, before the retry
    is published or the run is dead-lettered. Arguments: ``sender`` (the task),
    ``request`` (Celery's request), ``exception``, ``decision`` (the
    :class:`~resilience.RetryDecision`: classification, retry or not, delay, reason).

``on_idempotency``
    Sent when a task with an idempotency key has checked it. Arguments: ``sender``
    (the task), ``request``, ``key`` (the derived key, a ``str``), ``outcome``:
    ``"miss"`` (claimed: the body runs), ``"hit"`` (a stored result is returned, the
    body does not run), ``"in_progress"`` (another run holds it: the task is
    deferred) or ``"conflict"`` (the key was used with other arguments).

``on_breaker_call``
    Sent when a task with a breaker asks it for a call. Arguments: ``sender`` (the
    dependency's name), ``task``, ``request``, ``admitted`` (``bool``),
    ``retry_after`` (seconds until the next probe when refused, else ``None``).

A signal without receivers costs a dictionary lookup.
"""

from __future__ import annotations

from celery.utils.dispatch import Signal  # type: ignore[import-untyped]

__all__ = [
    "on_breaker_call",
    "on_breaker_change",
    "on_dead_letter",
    "on_decision",
    "on_idempotency",
]

on_dead_letter = Signal(
    name="on_dead_letter",
    providing_args={"record", "exception", "decision"},
)

on_breaker_change = Signal(
    name="on_breaker_change",
    providing_args={"breaker", "old_state", "new_state"},
)

on_decision = Signal(
    name="on_decision",
    providing_args={"request", "exception", "decision"},
)

on_idempotency = Signal(
    name="on_idempotency",
    providing_args={"request", "key", "outcome"},
)

on_breaker_call = Signal(
    name="on_breaker_call",
    providing_args={"task", "request", "admitted", "retry_after"},
)

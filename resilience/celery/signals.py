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
"""

from __future__ import annotations

from celery.utils.dispatch import Signal  # type: ignore[import-untyped]

__all__ = ["on_breaker_change", "on_dead_letter"]

on_dead_letter = Signal(
    name="on_dead_letter",
    providing_args={"record", "exception", "decision"},
)

on_breaker_change = Signal(
    name="on_breaker_change",
    providing_args={"breaker", "old_state", "new_state"},
)

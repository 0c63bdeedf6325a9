"""Celery integration: resilient tasks, dead-letter replay and breakers shared by workers.

::

    from celery import Celery
    from resilience.celery import ResilientTask, install

    app = Celery("billing", broker="redis://localhost:6379/0")
    install(app, store="redis://localhost:6379/1")

    @app.task(base=ResilientTask, bind=True, breaker="payments-api",
              idempotency_key="charge:{order_id}", idempotency_category="payment")
    def charge(self, order_id: int, amount: int) -> dict: ...

See ``docs/celery.md``. This package imports Celery; ``import resilience`` does not.
"""

from __future__ import annotations

from resilience.celery import signals
from resilience.celery._attempt import (
    FAILURE_TYPE_HEADER,
    FAILURES_HEADER,
    FIRST_FAILED_HEADER,
)
from resilience.celery._config import ResilienceSettings, TaskOptions
from resilience.celery._replay import DEAD_LETTER_HEADER, PROCESS_DEAD_LETTERS
from resilience.celery._runtime import Resilience, install, installed, runtime_for
from resilience.celery._task import ResilientTask

__all__ = [
    "DEAD_LETTER_HEADER",
    "FAILURES_HEADER",
    "FAILURE_TYPE_HEADER",
    "FIRST_FAILED_HEADER",
    "PROCESS_DEAD_LETTERS",
    "Resilience",
    "ResilienceSettings",
    "ResilientTask",
    "TaskOptions",
    "install",
    "installed",
    "runtime_for",
    "signals",
]

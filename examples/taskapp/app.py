"""The example Celery app: :func:`make_app` for tests and scenarios, ``app`` for workers.

``celery -A examples.taskapp.app worker`` uses the module-level ``app``, configured
from the environment:

- ``TASKAPP_BROKER_URL`` (default ``redis://localhost:6379/0``),
- ``TASKAPP_RESULT_BACKEND`` (default: the broker URL for Redis, else in-memory),
- ``TASKAPP_DB_PATH`` (default ``taskapp.sqlite3``),
- ``RESILIENCE_STORE_URL`` for breakers, idempotency keys and the dead-letter queue.

``app`` is built on first access, so importing :func:`make_app` has no side
effect. Seed the database first (``python -m examples.taskapp seed``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from celery import Celery  # type: ignore[import-untyped]

from examples.taskapp.tasks import register_tasks
from resilience.celery import ResilientTask, install
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

    from resilience.clock import Clock
    from resilience.storage.base import Store

__all__ = ["DEFAULT_BROKER_URL", "DEFAULT_DB_PATH", "app", "make_app"]

DEFAULT_BROKER_URL: Final = "redis://localhost:6379/0"
DEFAULT_DB_PATH: Final = "taskapp.sqlite3"

app: Any
"""The worker's app, built from the environment on first access (see ``__getattr__``)."""


def make_app(
    *,
    broker_url: str | None = None,
    result_backend: str | None = None,
    store_url: str | Store | None = None,
    db_path: str | Path | None = None,
    clock: Clock | None = None,
) -> Any:
    """Build the Celery app with the six tasks registered as ``ResilientTask``.

    Arguments left ``None`` come from the environment (see the module docstring).

    Args:
        broker_url: e.g. ``"memory://"`` in tests, ``"redis://host:6379/0"`` for workers.
        result_backend: where results go; ``None`` derives it from the broker.
        store_url: the resilience store (URL or ``Store``) shared by every task;
            ``None`` keeps ``install``'s default (``$RESILIENCE_STORE_URL``).
        db_path: the app's SQLite file.
        clock: where task bodies and the resilience layer read "now"; ``None`` is
            the system clock.

    Returns:
        The ``celery.Celery`` app; its tasks are ``app.tasks["taskapp.<name>"]``.

    Raises:
        ConfigurationError: an empty broker URL or database path.
    """
    broker = broker_url or os.environ.get("TASKAPP_BROKER_URL") or DEFAULT_BROKER_URL
    backend = result_backend or os.environ.get("TASKAPP_RESULT_BACKEND")
    if backend is None:
        backend = broker if broker.startswith(("redis://", "rediss://")) else "cache+memory://"
    path = db_path if db_path is not None else os.environ.get("TASKAPP_DB_PATH", DEFAULT_DB_PATH)
    if not str(path):
        raise ConfigurationError("db_path must not be empty", key="db_path", value=path)
    celery_app = Celery("taskapp", broker=broker, backend=backend)
    celery_app.conf.update(
        taskapp_db_path=str(path),
        taskapp_clock=clock,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Late acks hold a message until the body finishes; prefetching one at a
        # time keeps a slow task from sitting on messages another worker could run.
        worker_prefetch_multiplier=1,
    )
    install(celery_app, store=store_url, clock=clock)
    register_tasks(celery_app, base=ResilientTask)
    return celery_app


def __getattr__(name: str) -> Any:
    """Build the worker's ``app`` on first access (``celery -A`` looks it up by name).

    Built lazily so that importing :func:`make_app` opens no store and creates no
    file; the environment is read when ``app`` is first used.
    """
    if name == "app":
        built = globals().get("_app")
        if built is None:
            built = globals()["_app"] = make_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

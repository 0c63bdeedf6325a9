"""Where a simulation stores task results: in memory, never on the app's result server.

While a :class:`~pytest_taskchaos.simulation.Simulation` is active, the app's
result backend (and the backend a task names for itself, ``@app.task(backend=...)``)
is Celery's in-memory one: a :class:`celery.backends.cache.CacheBackend` on
``memory://``, the backend of Celery's own test app. It is a key-value backend
like Redis': results are stored under the same ``celery-task-meta-<id>`` keys,
encoded with the app's ``result_serializer`` and decoded on read, a SUCCESS is
never overwritten, ``result_extended`` and chords (``incr``) work. Unlike
Celery's ``cache+memory://``, whose clients all share one module-wide LRU cache
of 5,000 entries, each simulation has a cache of its own, unbounded: no result
of another simulation (the same seed gives the same task ids) is ever read, and
none is evicted during the run (``result_expires`` is not applied).

Celery builds ``app.backend`` lazily and keeps it per thread (``app._local.backend``)
or, for a thread-safe backend, per app (``app._backend_cache``, Celery >= 5.5,
which wins over the thread's). The in-memory backend goes into ``_backend_cache``
(into a ``_local`` of every thread on older Celery), so every thread reads it and
no real backend is built or connected; a task's own backend (the ``backend`` its
class holds, or ``_backend`` behind Celery's property) is replaced on the task.
Leaving puts each attribute back exactly as it was (on error too): the objects
built before the simulation are the ones used after it. An app with no result
backend (``DisabledBackend``) keeps it: as on its workers, nothing is stored and
reading a state raises. ``task_ignore_result``, a task's ``ignore_result`` and a
call's ``ignore_result=`` are Celery's own business: its tracer then stores
nothing, and a lost worker's FAILURE is stored only as Celery's worker stores it
(``store_errors_even_if_ignored``).
"""

from __future__ import annotations

import inspect
import threading
from typing import TYPE_CHECKING, Any

from celery.app.backends import by_url  # type: ignore[import-untyped]
from celery.backends.base import Backend, DisabledBackend  # type: ignore[import-untyped]
from celery.backends.cache import CacheBackend, DummyClient  # type: ignore[import-untyped]
from celery.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from kombu.utils.functional import LRUCache

from pytest_taskchaos._parts import replace

if TYPE_CHECKING:
    from contextlib import ExitStack

__all__ = ["MEMORY_URL", "memory_backend", "swap_result_backends"]

MEMORY_URL = "memory://"
"""The URL of the in-memory backend (``cache+memory://`` as a ``result_backend`` setting)."""


class _OwnCache(DummyClient):  # type: ignore[misc]
    """Celery's in-memory cache client with a cache of its own, without a size limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.cache = LRUCache(limit=None)  # type: ignore[no-untyped-call]


def memory_backend(app: Any) -> Any:
    """A new in-memory result backend for ``app``, sharing no entry with any other.

    Args:
        app: the Celery app (its result serializer, expiry and key prefix apply).

    Returns:
        A :class:`celery.backends.cache.CacheBackend` on ``memory://``.
    """
    backend = CacheBackend(app=app, url=MEMORY_URL)
    backend.Client = _OwnCache
    return backend


class _EveryThread(threading.local):
    """``app._local`` of older Celery, whose ``backend`` is the in-memory one in every thread."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend


def _built_backend(app: Any) -> Any:
    """The app's result backend if this thread's ``app.backend`` has built it, else ``None``."""
    return getattr(app, "_backend_cache", None) or getattr(app._local, "backend", None)


def _app_backend_class(app: Any) -> type | None:
    """The class of the app's result backend, without building (or connecting) one."""
    built = _built_backend(app)
    if built is not None:
        return type(built)
    try:
        found: type = by_url(app.backend_cls or app.conf.result_backend, app.loader)[0]
    except (ImportError, AttributeError, ImproperlyConfigured):
        # A backend whose library is not installed: never used here, so swapped too.
        return None
    return found


def _own_backend(task: Any) -> tuple[str, Any]:
    """Which attribute holds the task's own backend, and its value (``None``: the app's).

    Celery's ``Task.backend`` is a property over ``_backend``; ``@app.task(backend=x)``
    puts a plain ``backend`` in the task's class instead, which hides the property.
    """
    if isinstance(inspect.getattr_static(task, "backend", None), property):
        return "_backend", getattr(task, "_backend", None)
    return "backend", getattr(task, "backend", None)


def swap_result_backends(stack: ExitStack, app: Any) -> list[Any]:
    """Make the app's and its tasks' result backends in-memory ones until ``stack`` closes.

    Args:
        stack: closing it puts the original backends back.
        app: the simulation's Celery app.

    Returns:
        The backends results are stored in during the simulation (the app's first),
        for the ``result_backend_down`` fault to patch.
    """
    cls = _app_backend_class(app)
    original = _built_backend(app)
    if cls is not None and issubclass(cls, DisabledBackend):
        app_backend = app.backend
    else:
        app_backend = memory_backend(app)
        if "_backend_cache" in vars(app):
            replace(stack, app, "_backend_cache", app_backend)
        else:
            replace(stack, app, "_local", _EveryThread(app_backend))
    used = [app_backend]
    swapped: dict[int, Any] = {} if original is None else {id(original): app_backend}
    for task in app.tasks.values():
        attribute, own = _own_backend(task)
        if not isinstance(own, Backend) or isinstance(own, DisabledBackend):
            continue
        memory = swapped.get(id(own))
        if memory is None:
            memory = swapped[id(own)] = memory_backend(app)
            used.append(memory)
        replace(stack, task, attribute, memory)
    return used

"""``ResilientTask``: the Celery base task that classifies, retries, dead-letters and guards.

The work happens in ``Task.__call__``, which is what a worker's tracer calls for a
task class that defines it, and what ``task(...)`` calls in a test. A run without
idempotency or a breaker that succeeds pays for two attribute reads and one
``headers`` check; everything else (classification, store calls, logging) happens
only on failure, on a retried run's success, or for guarded tasks.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from celery import Task  # type: ignore[import-untyped]
from celery import _state as celery_state

from resilience.celery._attempt import CONTROL_FLOW, TaskPlan, build_plan, fail, run_guarded
from resilience.celery._attempt import succeeded as _succeeded
from resilience.celery._config import TaskOptions, parse_task_options
from resilience.celery._runtime import INSTALLS, runtime_for
from resilience.errors import ConfigurationError

__all__ = ["ResilientTask"]

_OPTION_NAMES = ("breaker", "idempotency_key", "idempotency_category", "resilience")


class ResilientTask(Task):  # type: ignore[misc]
    """A Celery base task whose failures go through the retry engine.

    Use it as ``@app.task(base=ResilientTask, bind=True, ...)`` with these options:

    - ``breaker="payments-api"``: the dependency the task calls. Its breaker's state
      is shared through the store; while it is open the body is not run and the task
      is rescheduled for the breaker's next probe, not counted as a failure.
    - ``idempotency_key="charge:{order_id}"`` (a template over the arguments, a
      callable, or ``True`` for a key derived from every argument): a delivery whose
      key was completed returns the stored result without running the body; one
      whose key is held by a run in progress is retried shortly; a body that raises
      gives the key back so the retry runs. The body reads the key and its fencing
      token as ``self.request.idempotency_key`` / ``self.request.fencing_token``
      (``self.request.idempotency`` is the claim, for ``renew()``). Such tasks
      default to ``acks_late=True`` and ``reject_on_worker_lost=True``.
    - ``idempotency_category="critical"``: the key's TTL category
      (:data:`resilience.idempotency.DEFAULT_TTLS`).
    - ``resilience={"priority": "low", "policies": {...}, "max_retries": 2,
      "idempotency_ttl": 3600, "idempotency_lease": 60}``: per-task overrides.

    A failure is classified and handed to :meth:`RetryEngine.decide`; a retry is
    Celery's own ``self.retry(countdown=...)``; anything else is stored in the
    dead-letter queue and the original exception is re-raised (the task ends
    FAILURE). Celery's ``Retry``, ``Ignore`` and ``Reject`` pass through untouched.

    Raises (when Celery builds the task class):
        ConfigurationError: ``autoretry_for`` or a Celery ``max_retries`` is set
            (two retry engines must not stack), or an option is invalid.
    """

    max_retries = None
    breaker: str | None = None
    idempotency_key: Any = None
    idempotency_category: str = "default"
    resilience: dict[str, Any] | None = None

    _resilience_options: ClassVar[TaskOptions] = TaskOptions()
    _resilience_plan: TaskPlan | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name") or f"{cls.__module__}.{cls.__qualname__}"
        autoretry = getattr(cls, "autoretry_for", None)
        if autoretry:
            raise ConfigurationError(
                f"task {name!r}: autoretry_for is not allowed on a ResilientTask; its "
                "failures are already classified and retried (two retry engines would "
                "stack): remove autoretry_for, or set resilience={'policies': ...}",
                key="autoretry_for",
                value=autoretry,
            )
        if getattr(cls, "max_retries", None) is not None:
            raise ConfigurationError(
                f"task {name!r}: Celery's max_retries does not apply to a ResilientTask; "
                "use resilience={'max_retries': N}",
                key="max_retries",
                value=cls.max_retries,
            )
        options = parse_task_options(name, {attr: getattr(cls, attr) for attr in _OPTION_NAMES})
        cls._resilience_options = options
        cls._resilience_plan = None
        if options.idempotency_key is not None:
            # A redelivered message is answered by the key, so late acks cost nothing
            # and a killed worker's message is run again instead of lost.
            if _set_below_base(cls, "acks_late") is None:
                cls.acks_late = True
            if _set_below_base(cls, "reject_on_worker_lost") is None:
                cls.reject_on_worker_lost = True

    @classmethod
    def bind(cls, app: Any) -> Any:
        """Bind a concrete task to ``app``; the abstract base itself is never configured."""
        if cls is ResilientTask:
            # Reading ResilientTask.app (introspection, doc tools) would otherwise copy
            # the default app's settings onto the base, and every task would inherit
            # them instead of reading its own app's.
            return app
        return super().bind(app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the body as a worker does (engine, dead letters, guards), or as a direct call."""
        stack = self.request_stack.stack
        request = stack[-1] if stack else None
        if request is None or request.called_directly or request._protected:
            return self._call_directly(args, kwargs)
        # Same marker as Celery's stack protection: a nested direct call of this
        # task from its own body is a direct call, not a second worker run.
        request._protected = 1
        plan = self._resilience_plan
        if plan is None or plan.installs != INSTALLS[0]:
            plan = self._plan()
        if plan.guarded:
            return run_guarded(plan, self, request, args, kwargs)
        try:
            result = self.run(*args, **kwargs)
        except CONTROL_FLOW:
            raise
        except Exception as exc:
            fail(plan, self, request, exc, args=args, kwargs=kwargs)
            raise
        if request.headers or plan.track_first:
            _succeeded(plan, self, request)
        return result

    @classmethod
    def on_bound(cls, app: Any) -> None:
        """Give the task a thread-local request stack (Celery's ``USE_FAST_LOCALS`` stack)."""
        super().on_bound(app)
        # Celery's default stack finds the current request through a __getattr__ that
        # fails first (~1.5 us per lookup, more than the whole budget of this class);
        # a threading.local reads it in ~50 ns. Green-thread pools monkey-patch
        # threading.local, so it stays per green thread there too.
        if not isinstance(cls.__dict__.get("request_stack"), _RequestStack):
            cls.request_stack = _RequestStack()

    def _call_directly(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``task(...)`` outside a worker: guards apply, failures simply propagate."""
        # Read at call time: a simulation swaps the stack for a faster one.
        tasks = celery_state._task_stack
        tasks.push(self)
        self.push_request(args=args, kwargs=kwargs)
        try:
            if not self._resilience_options.guarded:
                return self.run(*args, **kwargs)
            return run_guarded(self._plan(), self, self.request, args, kwargs)
        finally:
            self.pop_request()
            tasks.pop()

    def _plan(self) -> TaskPlan:
        runtime = runtime_for(self.app)
        plan = self._resilience_plan
        if plan is None or plan.runtime is not runtime or plan.installs != INSTALLS[0]:
            plan = build_plan(runtime, self.name, self._resilience_options)
            self._resilience_plan = plan
        return plan


def _set_below_base(cls: type, name: str) -> Any:
    """The value of ``name`` set by ``cls`` or a class between it and ResilientTask."""
    for klass in cls.__mro__:
        if klass is ResilientTask:
            return None
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


class _RequestStack(threading.local):
    """A per-thread stack of task requests with the interface of Celery's ``LocalStack``."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[Any] = []
        self.push = self.stack.append
        self.pop = self.stack.pop

    @property
    def top(self) -> Any:
        """The current request, or ``None``."""
        stack = self.stack
        return stack[-1] if stack else None

    def __len__(self) -> int:
        return len(self.stack)

"""Where injected faults fire: task entry and exit, publishing, result storage, dependencies.

The :class:`Injector` holds the active injections by point, patches the app's
tasks and the dependency points they name, and decides, call by call, whether
a fault fires (its schedule, with the seeded decision source). What a firing
*does* (raise, lose the worker, deliver twice, take time) is the simulation's:
the injector hands each firing to a callback.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_taskchaos import _points
from pytest_taskchaos._parts import replace, restore
from pytest_taskchaos.faults import InjectionPoint
from pytest_taskchaos.injection import Injection
from pytest_taskchaos.schedules import CallInfo

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import ExitStack

    from pytest_taskchaos._parts import Message
    from pytest_taskchaos.schedules import DecisionSource

__all__ = ["Active", "Injector"]

_ENTRY = InjectionPoint.ENTRY.value
_EXIT = InjectionPoint.EXIT.value
_RESULT = InjectionPoint.RESULT.value


@dataclass(slots=True)
class Active:
    """An injection in a running simulation, with its counters."""

    injection: Injection
    calls: int = 0
    """Calls of matching tasks that reached its point."""
    fired: int = 0
    """How many of them it fired on."""


class Injector:
    """The simulation's injections, by point, and the patches that make them reachable.

    Args:
        app: the Celery app.
        decisions: the seeded source of probabilistic schedules.
        now: virtual seconds since the simulation began.
        current: the message being run, or ``None`` outside a run.
        on_fire: ``on_fire(active, where, detail)``: does what the fault does
            (raises, most often).
        on_call: ``on_call(spec, detail)``: a watched dependency call went through.

    Attributes:
        result_backends: the backends results are stored in while the simulation
            runs (its in-memory ones; set on entering it), whose ``mark_as_done``
            the ``result`` point patches; empty: the app's ``backend``.
    """

    def __init__(
        self,
        app: Any,
        *,
        decisions: DecisionSource,
        now: Callable[[], float],
        current: Callable[[], Message | None],
        on_fire: Callable[[Active, str, str | None], None],
        on_call: Callable[[str, str], None],
    ) -> None:
        self.app = app
        self.actives: list[Active] = []
        self._by_point: dict[str, list[Active]] = {}
        self._decisions = decisions
        self._now = now
        self._current = current
        self._on_fire = on_fire
        self._on_call = on_call
        self._stack: ExitStack | None = None
        self._tasks: dict[str, tuple[bool, Any]] = {}
        self._points: set[str] = set()
        self._watched: set[str] = set()
        self._result_patched = False
        self.result_backends: list[Any] = []

    # ------------------------------------------------------------------ setup

    def add(self, injection: Injection) -> Active:
        """Register an injection; patch what it needs when the simulation is active."""
        active = Active(injection=injection)
        self.actives.append(active)
        self._by_point.setdefault(injection.at, []).append(active)
        if self._stack is not None:
            self._patch_for(injection)
        return active

    def watch(self, spec: str) -> None:
        """Record every call that reaches a dependency point as a side effect."""
        self._watched.add(spec)
        if self._stack is not None:
            self._patch_point(spec)

    def start(self, stack: ExitStack) -> None:
        """Patch the tasks and points of every registered injection until ``stack`` closes."""
        self._stack = stack
        stack.callback(self._stop)
        for active in self.actives:
            self._patch_for(active.injection)
        for spec in sorted(self._watched):
            self._patch_point(spec)

    def _stop(self) -> None:
        for name, (had, previous) in self._tasks.items():
            restore(self.app.tasks[name], "run", had=had, previous=previous)
        self._tasks.clear()
        self._points.clear()
        self._result_patched = False
        self.result_backends = []
        self._stack = None

    def targets(self, point: str) -> bool:
        """Whether any injection fires at ``point``."""
        return bool(self._by_point.get(point))

    def _patch_for(self, injection: Injection) -> None:
        if injection.at in (_ENTRY, _EXIT):
            for name in sorted(self.app.tasks):
                if not name.startswith("celery.") and injection.matches(name):
                    self._patch_task(name)
        elif injection.at == _RESULT:
            self._patch_result()
        elif injection.dependency:
            self._patch_point(injection.at)

    def _patch_task(self, name: str) -> None:
        if name in self._tasks:
            return
        task = self.app.tasks[name]
        had = "run" in vars(task)
        previous = vars(task).get("run")
        original = task.run
        fire = self.fire

        # wraps: the task's signature binds key templates and payload fingerprints.
        @functools.wraps(original)
        def run(*args: Any, **kwargs: Any) -> Any:
            fire(_ENTRY, name)
            result = original(*args, **kwargs)
            fire(_EXIT, name)
            return result

        task.run = run
        self._tasks[name] = (had, previous)

    def _patch_result(self) -> None:
        if self._result_patched or self._stack is None:
            return
        for backend in self.result_backends or [self.app.backend]:
            replace(self._stack, backend, "mark_as_done", self._storing(backend.mark_as_done))
        self._result_patched = True

    def _storing(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``original`` (a backend's ``mark_as_done``) with the ``result`` point fired first."""
        fire = self.fire

        def mark_as_done(task_id: str, result: Any, request: Any = None, *a: Any, **k: Any) -> Any:
            fire(_RESULT, getattr(request, "task", None) or "")
            return original(task_id, result, request, *a, **k)

        return mark_as_done

    def _patch_point(self, spec: str) -> None:
        if spec in self._points or self._stack is None:
            return
        _points.patch_point(self._stack, spec, self._dependency_call)
        self._points.add(spec)

    # ------------------------------------------------------------------ firing

    def _dependency_call(self, spec: str, detail: str) -> None:
        current = self._current()
        if current is None:
            return
        self.fire(spec, current.task_name, detail)
        if spec in self._watched:
            self._on_call(spec, detail)

    def fire(self, point: str, task_name: str, detail: str | None = None) -> None:
        """Let the injections at ``point`` that concern ``task_name`` decide; fire those that do.

        Outside a task run only the ``publish`` point fires (a test publishing while
        the broker is down).
        """
        actives = self._by_point.get(point)
        if not actives:
            return
        current = self._current()
        for active in actives:
            injection = active.injection
            if not injection.matches(task_name):
                continue
            if injection.fault.duplicate_delivery and current is not None and current.duplicate:
                continue  # a duplicate is not duplicated again
            active.calls = self.count_call(active)
            call = CallInfo(
                task_name=task_name,
                queue=None if current is None else current.queue,
                args=() if current is None else tuple(current.body[0]),
                kwargs={} if current is None else current.body[1],
                retries=0 if current is None else current.attempt - 1,
                now=self._now(),
                call_index=active.calls,
            )
            if injection.schedule.should_fire(call, self._decisions):
                active.fired = self.count_firing(active)
                self._on_fire(active, point, detail)

    def count_call(self, active: Active) -> int:
        """The call's 1-based index among the calls reaching ``active``'s point."""
        return active.calls + 1

    def count_firing(self, active: Active) -> int:
        """How many times ``active`` has fired, this firing included."""
        return active.fired + 1

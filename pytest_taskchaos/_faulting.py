"""What a firing fault does to a simulated run, and how a run ends when its worker is gone.

:class:`FaultEffects` is the ``on_fire`` callback the
:class:`~pytest_taskchaos._injector.Injector` of a
:class:`~pytest_taskchaos.simulation.Simulation` calls: it records the firing, moves
the virtual clock (latency, then the task's time limits), queues a duplicate
delivery, and raises the fault's exception, or :class:`RunEnded` when the worker is
lost. The run loop catches :class:`RunEnded` and hands it back to
:meth:`FaultEffects.run_ended`, which redelivers the message or fails the task as
Celery's main process does.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from celery import signals as celery_signals  # type: ignore[import-untyped]
from celery.app import trace as celery_trace  # type: ignore[import-untyped]
from celery.exceptions import (  # type: ignore[import-untyped]
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)

from pytest_taskchaos._einfo import LightExceptionInfo
from pytest_taskchaos._history import EventKind
from pytest_taskchaos.faults import CATALOG

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_taskchaos._injector import Active
    from pytest_taskchaos._parts import Message, VirtualQueue
    from pytest_taskchaos._recorder import Recorder
    from resilience.clock import FakeClock

_WARM: list[bool] = []


def warm_fault_imports() -> None:
    """Import the libraries the catalog's exceptions come from, once, before freezegun runs.

    A compiled module imported while freezegun has replaced ``datetime.date`` (psycopg's
    binary build, for one) warns that the type's size changed; importing them first
    keeps such imports out of the frozen block.
    """
    if not _WARM:
        for entry in CATALOG.values():
            entry.exception()
        _WARM.append(True)


class RunEnded(BaseException):
    """Ends a run from inside it, past Celery's ``except Exception``: the worker is gone.

    Args:
        exc: why (``WorkerLostError``, ``TimeLimitExceeded``).
        requeue: whether the message goes back to the queue (acks late) or is lost.
    """

    def __init__(self, exc: BaseException, *, requeue: bool) -> None:
        super().__init__(exc)
        self.exc = exc
        self.requeue = requeue


class FaultEffects:
    """What a firing fault does to the running message of one simulation.

    Args:
        app: the simulation's Celery app.
        clock: its virtual clock.
        queue: its virtual queue (redeliveries and duplicates go back there).
        recorder: its history, which also knows the running message.
        move_to: moves the virtual clock (and the freezer) to a time.

    Attributes:
        run_began: when the running message began (virtual clock), for its time
            limits; the run loop sets it.
    """

    __slots__ = ("_app", "_clock", "_move_to", "_queue", "_recorder", "run_began")

    def __init__(
        self,
        app: Any,
        *,
        clock: FakeClock,
        queue: VirtualQueue,
        recorder: Recorder,
        move_to: Callable[[float], None],
    ) -> None:
        self._app = app
        self._clock = clock
        self._queue = queue
        self._recorder = recorder
        self._move_to = move_to
        self.run_began = 0.0

    def on_fire(self, active: Active, where: str, detail: str | None) -> None:
        """Do what a firing fault does: record it, then raise, lose the worker, ...

        Args:
            active: the injection that fired.
            where: the point it fired at.
            detail: the call it fired on, for dependency points.

        Raises:
            BaseException: the fault's exception, or :class:`RunEnded` for a lost worker
                or a run past its hard time limit (``SoftTimeLimitExceeded`` past the soft one).
        """
        fault = active.injection.fault
        recorder = self._recorder
        current = recorder.current
        error = fault.exception()
        recorder.record(
            EventKind.FAULT_INJECTED,
            "" if current is None else current.task_name,
            "" if current is None else current.task_id,
            1 if current is None else current.attempt,
            fault=active.injection.label,
            where=where,
            detail=detail,
            exception=None if error is None else type(error).__name__,
            failure_type=None if fault.failure_type is None else fault.failure_type.value,
        )
        if current is None:
            if error is not None:
                raise error
            return
        if fault.latency:
            self._move_to(self._clock.time() + fault.latency)
            self._check_time_limits(current)
        if fault.duplicate_delivery:
            self._queue.push(
                dataclasses.replace(
                    current, due=self._clock.time(), redelivered=True, duplicate=True
                )
            )
            recorder.record(
                EventKind.REDELIVERED,
                current.task_name,
                current.task_id,
                current.attempt,
                reason="duplicate_delivery",
            )
        if error is None:
            return
        if fault.worker_lost:
            raise RunEnded(error, requeue=self._requeues_lost(current.task_name))
        raise error

    def run_ended(self, message: Message, ended: RunEnded, request: dict[str, Any]) -> None:
        """The worker died (or hit the hard time limit) mid-run: redeliver or fail, as Celery.

        Args:
            message: the message whose run ended.
            ended: how it ended.
            request: the request the run was given (pushed for ``task_failure``'s receivers).
        """
        name, task_id, attempt = message.task_name, message.task_id, message.attempt
        task = self._app.tasks[name]
        exc = ended.exc
        record = self._recorder.record
        record(
            EventKind.WORKER_LOST,
            name,
            task_id,
            attempt,
            exception=type(exc).__name__,
            requeued=ended.requeue,
        )
        if ended.requeue:
            self._queue.push(dataclasses.replace(message, due=self._clock.time(), redelivered=True))
            record(EventKind.REDELIVERED, name, task_id, attempt, reason="worker_lost")
            return
        # Celery's main process: mark FAILURE (stored unless the result is ignored and
        # errors are not kept) and send task_failure with the request pushed.
        einfo = LightExceptionInfo((type(exc), exc, exc.__traceback__))
        context = celery_trace.Context(request)
        ignore_result = request.get("ignore_result")
        if ignore_result is None:
            ignore_result = task.ignore_result
        task.backend.mark_as_failure(
            task_id,
            exc,
            request=context,
            store_result=not ignore_result or task.store_errors_even_if_ignored,
        )
        task.request_stack.push(context)
        try:
            celery_signals.task_failure.send(
                sender=task,
                task_id=task_id,
                exception=exc,
                args=message.body[0],
                kwargs=message.body[1],
                traceback=einfo.traceback,
                einfo=einfo,
            )
        finally:
            task.request_stack.pop()
        record(EventKind.FAILED, name, task_id, attempt, exception=type(exc).__name__)
        record(EventKind.ACKED, name, task_id, attempt)

    def _requeues_lost(self, task_name: str) -> bool:
        task = self._app.tasks[task_name]
        reject = task.reject_on_worker_lost
        if reject is None:
            reject = self._app.conf.task_reject_on_worker_lost
        return bool(task.acks_late and reject)

    def _check_time_limits(self, message: Message) -> None:
        task = self._app.tasks[message.task_name]
        hard, soft = message.headers.get("timelimit") or (None, None)
        hard = task.time_limit if hard is None else hard
        soft = task.soft_time_limit if soft is None else soft
        elapsed = self._clock.time() - self.run_began
        if hard is not None and elapsed >= hard:
            exc = TimeLimitExceeded(hard)
            acks_on_timeout = task.acks_on_timeout
            raise RunEnded(exc, requeue=bool(task.acks_late and not acks_on_timeout))
        if soft is not None and elapsed >= soft:
            raise SoftTimeLimitExceeded(soft)

"""The simulation's history: events stamped with virtual time, against the running message.

:class:`Recorder` owns the history list of a
:class:`~pytest_taskchaos.simulation.Simulation` and knows which message is running,
so an event recorded from anywhere (the run loop, a publish, a firing fault, a
``resilience`` signal) names the task, id and attempt it happened in. It also turns
``resilience``'s signals (decisions, idempotency, breaker calls and changes, dead
letters) into events, for the app the simulation runs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_taskchaos._history import Event, EventKind
from resilience.celery import signals

if TYPE_CHECKING:
    from contextlib import ExitStack

    from pytest_taskchaos._parts import Message
    from resilience.clock import FakeClock

_MESSAGE_CHARS = 200
# The simulation builds its events from its own values: no per-event validation.
_event = Event._trusted


class Recorder:
    """The history of one simulation, and what is running while it grows.

    The run loop sets :attr:`current` (the message being run), :attr:`raised` and
    :attr:`deferred`; everything else reads them.

    Args:
        app: the Celery app whose signals count (others' are ignored).
        clock: the simulation's virtual clock.
        start: the virtual time the simulation began at; events are stamped since then.
    """

    __slots__ = ("app", "clock", "current", "deferred", "history", "raised", "start")

    def __init__(self, app: Any, *, clock: FakeClock, start: float) -> None:
        self.app = app
        self.clock = clock
        self.start = start
        self.history: list[Event] = []
        self.current: Message | None = None
        self.raised: BaseException | None = None
        self.deferred = False

    def record(
        self, kind: EventKind, task_name: str, task_id: str, attempt: int, **details: Any
    ) -> None:
        """Append an event at the current virtual time.

        Args:
            kind: what happened.
            task_name: the task it happened to (``""``: none).
            task_id: that task's id (``""``: none).
            attempt: the attempt it happened in, from 1.
            **details: the event's details.
        """
        # details is this call's own dict: the event may keep it without a copy.
        self.history.append(
            _event(kind, self.clock.time() - self.start, task_name, task_id, attempt, details)
        )

    def record_raised(self, message: Message, exc: BaseException) -> None:
        """Record that a run raised ``exc``, once per exception however many report it.

        Args:
            message: the message whose run raised.
            exc: what it raised.
        """
        if self.raised is exc:
            return
        self.raised = exc
        self.record(
            EventKind.RAISED,
            message.task_name,
            message.task_id,
            message.attempt,
            exception=type(exc).__name__,
            message=str(exc)[:_MESSAGE_CHARS],
        )

    def here(self) -> tuple[str, str, int]:
        """The running message's task name, id and attempt; ``("", "", 1)`` between runs.

        Returns:
            The triple an event recorded now belongs to.
        """
        current = self.current
        if current is None:
            return "", "", 1
        return current.task_name, current.task_id, current.attempt

    def on_watched_call(self, spec: str, detail: str) -> None:
        """Record a call to a watched dependency point as the running task's side effect.

        Args:
            spec: the point watched (``"db"``, an import path).
            detail: the call (``"requests POST https://..."``).
        """
        current = self.current
        if current is not None:
            self.record(
                EventKind.SIDE_EFFECT,
                current.task_name,
                current.task_id,
                current.attempt,
                name=spec,
                key=detail,
            )

    def connect(self, stack: ExitStack, *, uid: str) -> None:
        """Receive ``resilience``'s signals until ``stack`` closes.

        Args:
            stack: closing it disconnects the receivers.
            uid: the dispatch uid the receivers connect under.
        """
        for signal, receiver in (
            (signals.on_dead_letter, self._on_dead_letter),
            (signals.on_decision, self._on_decision),
            (signals.on_idempotency, self._on_idempotency),
            (signals.on_breaker_call, self._on_breaker_call),
            (signals.on_breaker_change, self._on_breaker_change),
        ):
            signal.connect(receiver, weak=False, dispatch_uid=uid)
            stack.callback(signal.disconnect, dispatch_uid=uid)

    def _mine(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app

    def _on_decision(
        self, sender: Any, request: Any, exception: BaseException, decision: Any, **_: Any
    ) -> None:
        current = self.current
        if not self._mine(sender) or current is None:
            return
        self.record_raised(current, exception)
        name, task_id, attempt = self.here()
        verdict = decision.classification
        self.record(
            EventKind.CLASSIFIED,
            name,
            task_id,
            attempt,
            failure_type=verdict.failure_type.value,
            confidence=verdict.confidence,
        )
        self.record(
            EventKind.DECIDED,
            name,
            task_id,
            attempt,
            action="retry" if decision.retry else "dead_letter",
            delay=decision.delay,
            reason=decision.reason,
            failure_type=verdict.failure_type.value,
        )

    def _on_idempotency(self, sender: Any, request: Any, key: str, outcome: str, **_: Any) -> None:
        if not self._mine(sender):
            return
        if outcome == "in_progress":
            self.deferred = True
        self.record(EventKind.IDEMPOTENCY, *self.here(), key=key, outcome=outcome)

    def _on_breaker_call(
        self, sender: str, task: Any, admitted: bool, retry_after: float | None, **_: Any
    ) -> None:
        if not self._mine(task):
            return
        if admitted:
            self.record(EventKind.CALL_ADMITTED, *self.here(), breaker=sender)
            return
        self.deferred = True
        self.record(EventKind.CALL_REJECTED, *self.here(), breaker=sender, retry_after=retry_after)

    def _on_breaker_change(self, sender: str, old_state: Any, new_state: Any, **_: Any) -> None:
        self.record(
            EventKind.BREAKER_CHANGED,
            *self.here(),
            breaker=sender,
            old=str(getattr(old_state, "value", old_state)),
            new=str(getattr(new_state, "value", new_state)),
        )

    def _on_dead_letter(
        self, sender: Any, record: Any, exception: BaseException, decision: Any, **_: Any
    ) -> None:
        if not self._mine(sender):
            return
        current = self.current
        if current is not None:
            self.record_raised(current, exception)
        failure_type = getattr(getattr(record, "failure_type", None), "value", None)
        if decision is not None:
            failure_type = decision.classification.failure_type.value
        task_id, attempt = self.here()[1:]
        self.record(
            EventKind.DEAD_LETTERED,
            sender.name,
            task_id,
            attempt,
            exception=type(exception).__name__,
            failure_type=failure_type,
        )

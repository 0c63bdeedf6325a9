"""The history of a simulation: one frozen :class:`Event` per step, and queries over it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Event", "EventKind", "fingerprint", "select"]


class EventKind(StrEnum):
    """What happened at one step of a simulation.

    The ``details`` each kind carries (all JSON-friendly values) are listed beside it.
    """

    PUBLISHED = "published"
    """A message was queued: ``eta`` (virtual seconds it is due)."""
    DELIVERED = "delivered"
    """A message was handed to the worker: ``redelivered`` (bool), ``duplicate`` (bool)."""
    STARTED = "started"
    """The task's run began."""
    FAULT_INJECTED = "fault_injected"
    """A fault fired: ``fault`` (its name), ``where`` (``entry``, ``exit``, ``publish``,
    ``result``, or the dependency point: ``db``, ``http``, ``redis``, an import path),
    ``exception`` (class name, or ``None``), ``failure_type`` (or ``None``)."""
    RAISED = "raised"
    """The run raised: ``exception`` (class name), ``message`` (first 200 characters)."""
    CLASSIFIED = "classified"
    """``resilience`` classified the failure: ``failure_type``, ``confidence``."""
    DECIDED = "decided"
    """The retry engine decided: ``action`` (``retry`` or ``dead_letter``), ``delay``
    (seconds or ``None``), ``reason``, ``failure_type``."""
    RETRIED = "retried"
    """The run ended in a retry: ``countdown`` (seconds), ``exception`` (class name or ``None``),
    ``deferred`` (bool: an open breaker or a busy idempotency key, not a failure)."""
    DEAD_LETTERED = "dead_lettered"
    """The run was stored in the dead-letter queue: ``exception``, ``failure_type``."""
    BREAKER_CHANGED = "breaker_changed"
    """A circuit breaker changed state: ``breaker``, ``old``, ``new`` (state values)."""
    CALL_ADMITTED = "call_admitted"
    """A breaker let the run's call through: ``breaker``."""
    CALL_REJECTED = "call_rejected"
    """An open breaker refused the run's call: ``breaker``, ``retry_after`` (seconds or None)."""
    IDEMPOTENCY = "idempotency"
    """The run's idempotency key was checked: ``key``, ``outcome`` (``miss``: claimed, the body
    runs; ``hit``: a stored result is returned, the body does not run; ``in_progress``: held by
    another run; ``conflict``: the key was used with other arguments)."""
    SIDE_EFFECT = "side_effect"
    """A side effect happened: ``name``, ``key`` (``None`` when not keyed)."""
    WORKER_LOST = "worker_lost"
    """The worker died during the run: the message was not acked; ``requeued`` (bool)."""
    REDELIVERED = "redelivered"
    """An unacked or duplicated message went back to the queue: ``reason``."""
    ACKED = "acked"
    """The message was acknowledged (the run is over for the broker)."""
    SUCCEEDED = "succeeded"
    """The run returned."""
    FAILED = "failed"
    """The run ended in the FAILURE state: ``exception`` (class name)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One step of a simulation.

    Attributes:
        kind: what happened.
        at: virtual seconds since the simulation began.
        task_name: the task's registered name.
        task_id: the task's id (a retry keeps its task's id).
        attempt: the attempt the step belongs to, from 1 (Celery's
            ``request.retries`` + 1).
        details: what else is known, per kind (see :class:`EventKind`).
    """

    kind: EventKind
    at: float
    task_name: str
    task_id: str
    attempt: int
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            raise ConfigurationError(
                f"kind must be an EventKind, got {self.kind!r}", key="kind", value=self.kind
            )
        if self.attempt < 1:
            raise ConfigurationError(
                f"attempt counts from 1, got {self.attempt!r}", key="attempt", value=self.attempt
            )
        # A frozen event must not change through a dict its creator still holds.
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @classmethod
    def _trusted(  # noqa: PLR0917 -- the fields, in order
        cls,
        kind: EventKind,
        at: float,
        task_name: str,
        task_id: str,
        attempt: int,
        details: dict[str, Any],
    ) -> Event:
        """An event from the simulation's own values: ``kind`` is an :class:`EventKind`.

        The constructor's checks cost more than the rest of a step's bookkeeping,
        and a history holds eight or more events per failing attempt. Here ``kind``
        is not checked and ``details`` is wrapped, not copied: pass a dict nobody
        else keeps (a ``**details`` of the caller). ``attempt`` is still checked.

        Raises:
            ConfigurationError: ``attempt`` is below 1.
        """
        if attempt < 1:
            raise ConfigurationError(
                f"attempt counts from 1, got {attempt!r}", key="attempt", value=attempt
            )
        event = _new(cls)
        _set_kind(event, kind)
        _set_at(event, at)
        _set_task_name(event, task_name)
        _set_task_id(event, task_id)
        _set_attempt(event, attempt)
        _set_details(event, MappingProxyType(details))
        return event

    def describe(self) -> str:
        """One line for a failure message: time, kind, task, attempt and details."""
        extra = " ".join(f"{key}={value!r}" for key, value in sorted(self.details.items()))
        text = f"t={self.at:g}s {self.kind.value} {self.task_name}[{self.task_id}] #{self.attempt}"
        return f"{text} {extra}" if extra else text


# Frozen dataclass fields are slots: their descriptors set them, as the generated
# __init__ does through object.__setattr__, without its name lookups.
_new = object.__new__
_set_kind = Event.__dict__["kind"].__set__
_set_at = Event.__dict__["at"].__set__
_set_task_name = Event.__dict__["task_name"].__set__
_set_task_id = Event.__dict__["task_id"].__set__
_set_attempt = Event.__dict__["attempt"].__set__
_set_details = Event.__dict__["details"].__set__


def select(
    events: Iterable[Event],
    *,
    kind: EventKind | str | None = None,
    task: str | None = None,
    task_id: str | None = None,
) -> list[Event]:
    """The events matching every given filter, in order.

    Args:
        events: the history to read.
        kind: only events of this kind (an :class:`EventKind` or its value).
        task: only events of this task name.
        task_id: only events of this task id.

    Returns:
        The matching events.

    Raises:
        ConfigurationError: ``kind`` names no event kind (``key="kind"``).
    """
    wanted: EventKind | None = None
    if kind is not None:
        try:
            wanted = EventKind(kind)
        except ValueError:
            valid = ", ".join(k.value for k in EventKind)
            raise ConfigurationError(
                f"unknown event kind {kind!r}; valid kinds: {valid}", key="kind", value=kind
            ) from None
    return [
        event
        for event in events
        if (wanted is None or event.kind is wanted)
        and (task is None or event.task_name == task)
        and (task_id is None or event.task_id == task_id)
    ]


def fingerprint(events: Iterable[Event]) -> str:
    """A SHA-256 hex digest of a history: equal histories, equal fingerprints."""
    digest = hashlib.sha256()
    for event in events:
        details = sorted((key, repr(value)) for key, value in event.details.items())
        line = (event.kind.value, repr(event.at), event.task_name, event.task_id, event.attempt)
        digest.update(repr((line, details)).encode())
        digest.update(b"\n")
    return digest.hexdigest()

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
    """What happened at one step of a simulation."""

    PUBLISHED = "published"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    FAULT_INJECTED = "fault_injected"


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
        details: what else is known: ``eta`` of a publish, ``exception`` (class
            name) of a failure, ``countdown`` of a retry, ``fault`` and ``where``
            of an injected fault, ``failure_type`` of a dead letter.
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

    def describe(self) -> str:
        """One line for a failure message: time, kind, task, attempt and details."""
        extra = " ".join(f"{key}={value!r}" for key, value in sorted(self.details.items()))
        text = f"t={self.at:g}s {self.kind.value} {self.task_name}[{self.task_id}] #{self.attempt}"
        return f"{text} {extra}" if extra else text


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

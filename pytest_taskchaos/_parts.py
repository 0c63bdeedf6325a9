"""The pieces a simulation is made of: errors, messages, the queue, patches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from heapq import heappush
from itertools import count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextlib import ExitStack

__all__ = [
    "Message",
    "SimulationError",
    "StepBudgetExceeded",
    "VirtualQueue",
    "replace",
    "restore",
]


class SimulationError(Exception):
    """The simulation cannot go on (misuse, or a message it cannot run)."""


class StepBudgetExceeded(SimulationError):
    """``drain()`` ran its step budget and work remains (most often an endless retry loop).

    Attributes:
        task_names: the tasks still queued, most runs first.
        runs: how many times each task ran during the ``drain()``.
    """

    def __init__(self, message: str, *, task_names: list[str], runs: Mapping[str, int]) -> None:
        super().__init__(message)
        self.task_names = task_names
        self.runs = dict(runs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A captured publish: what a worker would receive, and when it is due."""

    due: float
    task_name: str
    task_id: str
    attempt: int
    headers: dict[str, Any]
    body: tuple[Any, ...]
    delivery_info: dict[str, Any]
    properties: dict[str, Any]
    redelivered: bool = False
    """The broker delivers it again (its worker was lost, or a duplicate delivery)."""
    duplicate: bool = False
    """A second delivery of a message whose first delivery also runs."""

    @property
    def queue(self) -> str | None:
        """The queue it was routed to, when known."""
        routing_key = self.delivery_info.get("routing_key")
        return None if routing_key is None else str(routing_key)


@dataclass(slots=True)
class VirtualQueue:
    """Messages ordered by (due time, publish order)."""

    heap: list[tuple[float, int, Message]] = field(default_factory=list)
    order: Iterator[int] = field(default_factory=count)

    def push(self, message: Message) -> None:
        """Queue a message."""
        heappush(self.heap, (message.due, next(self.order), message))


def replace(stack: ExitStack, owner: Any, name: str, value: Any) -> None:
    """Set ``owner.name`` to ``value`` until ``stack`` closes."""
    had = name in vars(owner)
    previous = vars(owner).get(name)
    setattr(owner, name, value)
    stack.callback(restore, owner, name, had=had, previous=previous)


def restore(owner: Any, name: str, *, had: bool, previous: Any) -> None:
    """Undo a setattr: put back the previous value, or drop the instance attribute."""
    if had:
        setattr(owner, name, previous)
    else:
        vars(owner).pop(name, None)

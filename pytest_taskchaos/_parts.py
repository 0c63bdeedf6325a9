"""The pieces a simulation is made of: injection points, errors, messages, the queue, patches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from heapq import heappush
from itertools import count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextlib import ExitStack

__all__ = [
    "Fault",
    "InjectionPoint",
    "Message",
    "SimulationError",
    "StepBudgetExceeded",
    "VirtualQueue",
    "replace",
    "restore",
]


class InjectionPoint(StrEnum):
    """Where in a task an injected fault fires."""

    ENTRY = "entry"
    """Before the body runs."""
    EXIT = "exit"
    """After the body's side effects, before the message is acknowledged."""


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


@dataclass(slots=True, kw_only=True)
class Fault:
    """A fault injected into a task, and how often it fired."""

    task_name: str
    factory: Callable[[], BaseException] | BaseException
    at: InjectionPoint
    times: int | None
    fired: int = 0

    def make(self) -> BaseException:
        """The exception to raise now."""
        if isinstance(self.factory, BaseException):
            return self.factory
        made = self.factory()
        if not isinstance(made, BaseException):
            raise SimulationError(
                f"fault factory for {self.task_name!r} returned {made!r}, not an exception"
            )
        return made


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

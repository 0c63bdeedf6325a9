"""An injection: which fault, into which tasks, at which point, on which schedule.

This is what ``@pytest.mark.chaos(...)``, ``chaos.inject(...)`` and a scenario
file's ``faults:`` entries all become::

    injection("deadlock", times=2)                       # first 2 calls, any task
    injection("rate_limit", rate=0.3, retry_after=30, task="emails.*")
    injection("api_down", at="http", window=(300, 1500))  # an outage, minute 5 to 25
    injection("read_timeout", at="myapp.payments.charge", retries_only=True)

``at`` is a task-level point (``"entry"``, ``"exit"``, ``"publish"``,
``"result"``) or a dependency the task calls: ``"db"``, ``"http"``,
``"redis"`` or an import path. Unless told, a fault fires where its nature
puts it (:attr:`Fault.point`): at task entry for raised errors, at exit for
worker loss and duplicate delivery, at publish for a broker outage, at the
result store for a result backend outage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from pytest_taskchaos import _points
from pytest_taskchaos import schedules as sched
from pytest_taskchaos.faults import Fault, InjectionPoint, custom, fault
from pytest_taskchaos.schedules import Schedule
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import timedelta

__all__ = ["Injection", "injection"]

_TASK_POINTS = frozenset(point.value for point in InjectionPoint)


@dataclass(frozen=True, slots=True, kw_only=True)
class Injection:
    """One fault wired into the simulation.

    Attributes:
        fault: what happens when it fires.
        at: ``"entry"``, ``"exit"``, ``"publish"``, ``"result"``, or a dependency
            point (``"db"``, ``"http"``, ``"redis"``, an import path).
        task: a glob over task names (``"*"``: every task); calls of other tasks
            neither fire it nor count towards its schedule.
        schedule: when, among the calls that reach the point, it fires.
        label: how reports name it (the fault's name unless given).
    """

    fault: Fault
    at: str
    task: str = "*"
    schedule: Schedule = field(default_factory=Schedule)
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.fault, Fault):
            raise ConfigurationError(
                f"fault must be a Fault, got {self.fault!r}", key="fault", value=self.fault
            )
        if not isinstance(self.schedule, Schedule):
            raise ConfigurationError(
                f"schedule must be a Schedule, got {self.schedule!r}",
                key="schedule",
                value=self.schedule,
            )
        if not isinstance(self.task, str) or not self.task:
            raise ConfigurationError(
                f"task must be a non-empty glob pattern, got {self.task!r}",
                key="task",
                value=self.task,
            )
        object.__setattr__(self, "at", _check_at(self.fault, self.at))
        if not self.label:
            object.__setattr__(self, "label", self.fault.name)

    @property
    def dependency(self) -> bool:
        """Whether it fires inside a call to a dependency rather than at a task-level point."""
        return self.at not in _TASK_POINTS

    def matches(self, task_name: str) -> bool:
        """Whether calls of ``task_name`` concern this injection."""
        return self.task == "*" or fnmatchcase(task_name, self.task)

    def describe(self) -> str:
        """One line for reports: ``deadlock at entry of billing.* when first(2)``."""
        where = self.at if self.task == "*" else f"{self.at} of {self.task}"
        return f"{self.label} at {where} when {self.schedule.describe()}"


def _check_at(fault_: Fault, at: object) -> str:
    if not isinstance(at, str) or not at:
        raise ConfigurationError(
            f"at must be a point name or an import path, got {at!r}", key="at", value=at
        )
    publish, result = InjectionPoint.PUBLISH.value, InjectionPoint.RESULT.value
    if fault_.broker_down != (at == publish):
        raise ConfigurationError(
            f"fault {fault_.name!r} cannot fire at {at!r}: only broker_down fires at 'publish', "
            "and broker_down fires nowhere else",
            key="at",
            value=at,
        )
    if fault_.result_backend_down != (at == result):
        raise ConfigurationError(
            f"fault {fault_.name!r} cannot fire at {at!r}: only result_backend_down fires at "
            "'result', and result_backend_down fires nowhere else",
            key="at",
            value=at,
        )
    if at in _TASK_POINTS:
        return at
    if fault_.worker_lost or fault_.duplicate_delivery:
        raise ConfigurationError(
            f"fault {fault_.name!r} happens to a whole delivery: at must be 'entry' or 'exit', "
            f"got {at!r}",
            key="at",
            value=at,
        )
    return _points.check_point(at)


def _window(value: object) -> Schedule:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigurationError(
            f"window must be (start, end) in virtual seconds, got {value!r}",
            key="window",
            value=value,
        )
    start, end = value
    if end is None:
        end = math.inf
    return sched.window(start, end)


def _custom_name(what: object) -> str:
    if isinstance(what, BaseException):
        return type(what).__name__
    name = getattr(what, "__name__", "")
    return name if isinstance(name, str) and name.isidentifier() else "custom"


def injection(
    what: str | Fault | BaseException | type[BaseException] | Callable[[], BaseException],
    *,
    at: str | None = None,
    task: str = "*",
    times: int | None = None,
    every: int | None = None,
    rate: float | None = None,
    window: tuple[float | timedelta, float | timedelta | None] | None = None,
    queue: str | None = None,
    args: Callable[[tuple[object, ...], Mapping[str, object]], bool] | None = None,
    retries_only: bool = False,
    first_attempts_only: bool = False,
    when: Schedule | None = None,
    label: str = "",
    **params: object,
) -> Injection:
    """Build an injection from a fault and the keywords the marker accepts.

    The schedule keywords combine (all must hold): ``times=2 and rate=0.5`` fires
    with probability 0.5 on the first two calls.

    Args:
        what: a catalog name (``"deadlock"``), a :class:`Fault`, or what
            :func:`~pytest_taskchaos.faults.custom` takes (an exception, its class,
            a factory).
        at: the injection point; default the fault's own (:attr:`Fault.point`).
        task: a glob over task names; default every task.
        times: fire on the first ``times`` calls only.
        every: fire on every n-th call.
        rate: fire with this probability (seeded).
        window: fire only in ``[start, end)`` virtual seconds; ``end`` ``None``: forever.
        queue: fire only for messages from queues matching this glob.
        args: fire only when ``args(args, kwargs)`` is true.
        retries_only: fire only on retries.
        first_attempts_only: fire only on first attempts.
        when: a further :class:`Schedule`, combined with the above.
        label: how reports name it (default the fault's name).
        **params: the catalog fault's parameters (``retry_after=30``, ``status=502``).

    Returns:
        The injection.

    Raises:
        ConfigurationError: an unknown fault or parameter, a bad schedule value or
            point; ``key`` names the keyword.
    """
    if isinstance(what, str):
        made = fault(what, **params)
    else:
        if params:
            key = next(iter(params))
            raise ConfigurationError(
                f"parameter {key!r} configures catalog faults only; {what!r} is not a catalog name",
                key=key,
                value=params[key],
            )
        made = what if isinstance(what, Fault) else custom(what, name=_custom_name(what))
    parts: list[Schedule] = []
    if times is not None:
        parts.append(sched.first(times))
    if every is not None:
        parts.append(sched.every(every))
    if window is not None:
        parts.append(_window(window))
    if queue is not None:
        parts.append(sched.queue(queue))
    if args is not None:
        parts.append(sched.args_match(args))
    if retries_only and first_attempts_only:
        raise ConfigurationError(
            "retries_only and first_attempts_only exclude each other",
            key="retries_only",
            value=True,
        )
    if retries_only:
        parts.append(sched.only_retries())
    if first_attempts_only:
        parts.append(sched.only_first_attempts())
    if rate is not None:
        parts.append(sched.probability(rate))
    if when is not None:
        if not isinstance(when, Schedule):
            raise ConfigurationError(
                f"when must be a Schedule, got {when!r}", key="when", value=when
            )
        parts.append(when)
    schedule = Schedule()
    for part in parts:
        schedule &= part
    return Injection(
        fault=made,
        at=made.point.value if at is None else at,
        task=task,
        schedule=schedule,
        label=label,
    )

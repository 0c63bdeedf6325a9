"""The values scenario files become: the scenario, its workload and its expectations.

Private half of :mod:`pytest_taskchaos.scenario`, which re-exports the public
names. The value classes validate themselves (``ConfigurationError`` whose
``key`` names the field), so a scenario built in Python is checked exactly like
one read from a file.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from pytest_taskchaos._scenario_fields import (
    NUMBER,
    bad_value,
    check_import_path,
    check_int,
    check_name,
    check_placeholders,
    check_text,
    duration,
    failure_type,
    member_of,
    positive,
    show,
)
from pytest_taskchaos.injection import Injection
from resilience.errors import ConfigurationError
from resilience.policy import RetryPolicy
from resilience.taxonomy import FailureType

__all__ = [
    "Arrival",
    "ArrivalPattern",
    "BreakerExpectation",
    "Comparison",
    "Expectations",
    "KeyPattern",
    "Keys",
    "Operator",
    "RealSettings",
    "RetryBudgetSettings",
    "Scenario",
    "TaskCall",
    "Workload",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_POLICIES: Mapping[FailureType, RetryPolicy] = MappingProxyType({})

_seconds = duration  # for Comparison.parse, whose ``duration`` argument hides the name


class Operator(StrEnum):
    """How a measured figure is compared with an expectation's value."""

    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="
    GE = ">="
    GT = ">"


_COMPARE: Final = {
    Operator.LT: operator.lt,
    Operator.LE: operator.le,
    Operator.EQ: operator.eq,
    Operator.NE: operator.ne,
    Operator.GE: operator.ge,
    Operator.GT: operator.gt,
}
_COMPARISON = re.compile(r"\s*(<=|>=|==|!=|<|>)\s*(.*?)\s*")
_MISTYPED: Final = {"=>": ">=", "=<": "<=", "=": "=="}


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """An expectation on one measured figure: ``measured op value``.

    >>> Comparison.parse(">= 0.99").holds(0.995)
    True
    >>> Comparison.parse("<= 10m", duration=True).describe()
    '<= 600'

    Attributes:
        op: the operator.
        value: a finite number (seconds, for durations).
    """

    op: Operator
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", member_of(Operator, self.op, "op"))
        value = self.value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise bad_value(f"expected a finite number, got {show(value)}", "value", value)
        object.__setattr__(self, "value", float(value))

    def holds(self, measured: float) -> bool:
        """Whether ``measured op value`` is true."""
        return bool(_COMPARE[self.op](measured, self.value))

    def describe(self) -> str:
        """The comparison as written: ``">= 0.99"``."""
        shown = str(int(self.value)) if self.value.is_integer() else repr(self.value)
        return f"{self.op.value} {shown}"

    @classmethod
    def parse(
        cls, text: object, *, default: Operator | str = Operator.GE, duration: bool = False
    ) -> Comparison:
        """Read ``">= 0.99"``, ``"<=600"``, ``"== 0"``; a bare number takes ``default``.

        Args:
            text: the comparison, or a bare number.
            default: the operator of a bare number.
            duration: the value is a duration (``"<= 10m"`` is 600 seconds).

        Returns:
            The comparison.

        Raises:
            ConfigurationError: for anything else (``key="comparison"``).
        """
        op, body = Operator(default).value, text
        if isinstance(text, str) and (found := _COMPARISON.fullmatch(text)):
            op, body = found.group(1), found.group(2)
        try:
            value = _seconds(body) if duration else _plain_number(body)
        except ConfigurationError:
            value = math.nan
        if not math.isfinite(value):
            written = str(text).strip()
            hint = next(
                (
                    f"; did you mean {right!r}?"
                    for wrong, right in _MISTYPED.items()
                    if written.startswith(wrong) and not written.startswith(right)
                ),
                "",
            )
            shape = "duration" if duration else "number"
            raise bad_value(
                f"expected a comparison like '<= 600' (one of <, <=, ==, !=, >=, > and a "
                f"{shape}), got {show(text)}{hint}",
                "comparison",
                text,
            )
        return cls(op=Operator(op), value=value)


def _plain_number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and re.fullmatch(rf"[-+]?{NUMBER}(?:[eE][-+]?\d+)?", value):
        return float(value)
    return math.nan


class ArrivalPattern(StrEnum):
    """When the workload's messages are published."""

    BURST = "burst"
    """All at virtual time 0."""
    UNIFORM = "uniform"
    """Evenly spread over ``over`` seconds."""
    POISSON = "poisson"
    """A seeded Poisson process of ``rate`` messages per second."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """How the messages arrive.

    Attributes:
        pattern: burst, uniform or poisson.
        over: uniform only: seconds (or a ``timedelta``) the messages are spread over.
        rate: poisson only: the mean messages per second.
    """

    pattern: ArrivalPattern = ArrivalPattern.BURST
    over: float | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        pattern = member_of(ArrivalPattern, self.pattern, "pattern")
        object.__setattr__(self, "pattern", pattern)
        needs = {ArrivalPattern.UNIFORM: "over", ArrivalPattern.POISSON: "rate"}.get(pattern)
        for key in ("over", "rate"):
            value = getattr(self, key)
            if key == needs and value is None:
                what = "seconds to spread the messages over" if key == "over" else "messages/s"
                raise bad_value(f"{pattern.value} arrival needs {key} ({what})", "pattern", pattern)
            if key == needs:
                object.__setattr__(self, key, positive(value, key))
            elif value is not None:
                raise bad_value(f"{key} does not apply to {pattern.value} arrival", key, value)


class KeyPattern(StrEnum):
    """How the messages' idempotency keys repeat."""

    DISTINCT = "distinct"
    """Every message has its own key."""
    REPEATED = "repeated"
    """Message ``n`` has key ``n % distinct``: the same requests come again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Keys:
    """The messages' idempotency keys: what ``{key}`` in task arguments becomes.

    Attributes:
        pattern: distinct or repeated.
        distinct: repeated only: how many different keys there are.
    """

    pattern: KeyPattern = KeyPattern.DISTINCT
    distinct: int | None = None

    def __post_init__(self) -> None:
        pattern = member_of(KeyPattern, self.pattern, "pattern")
        object.__setattr__(self, "pattern", pattern)
        if pattern is KeyPattern.REPEATED:
            if self.distinct is None:
                raise bad_value("repeated keys need distinct (how many keys)", "pattern", pattern)
            check_int(self.distinct, "distinct", 1)
        elif self.distinct is not None:
            raise bad_value("distinct applies to repeated keys only", "distinct", self.distinct)

    def key_of(self, index: int) -> int:
        """The key index of message ``index`` (from 0)."""
        return index if self.distinct is None else index % self.distinct


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """The messages a scenario sends.

    Attributes:
        count: how many messages in total.
        arrival: when they are published.
        keys: how their idempotency keys repeat.
        duplicate_ratio: the fraction of messages published twice, in [0, 1].
        workers: how many workers consume them.
    """

    count: int
    arrival: Arrival = field(default_factory=Arrival)
    keys: Keys = field(default_factory=Keys)
    duplicate_ratio: float = 0.0
    workers: int = 1

    def __post_init__(self) -> None:
        check_int(self.count, "count", 1)
        check_int(self.workers, "workers", 1)
        ratio = self.duplicate_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise bad_value(
                f"expected a number in [0, 1], got {show(ratio)}", "duplicate_ratio", ratio
            )
        object.__setattr__(self, "duplicate_ratio", float(ratio))
        for key, kind in (("arrival", Arrival), ("keys", Keys)):
            if not isinstance(getattr(self, key), kind):
                raise bad_value(f"expected {kind.__name__}, got {getattr(self, key)!r}", key, None)
        distinct = self.keys.distinct
        if distinct is not None and distinct > self.count:
            message = f"expected at most count ({self.count}) keys, got {distinct}"
            raise bad_value(message, "keys.distinct", distinct)


def _as_object(value: object) -> object:
    """``value`` as the loader may pass it, whatever the annotation promises."""
    return value


def _render(value: object, index: int, key: int) -> object:
    if isinstance(value, str):
        if value in ("{n}", "{key}"):
            return index if value == "{n}" else key
        return value.format(n=index, key=key)
    if isinstance(value, list | tuple):
        return [_render(item, index, key) for item in value]
    if isinstance(value, Mapping):
        return {name: _render(item, index, key) for name, item in value.items()}
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCall:
    """A task the workload sends, with its arguments.

    Attributes:
        name: the registered task name (``"taskapp.send_reminder_email"``).
        args: positional arguments; strings may hold ``{n}`` and ``{key}``.
        kwargs: keyword arguments; strings may hold ``{n}`` and ``{key}``.
        weight: its share of the messages, relative to the other tasks (> 0).
        queue: the queue it is sent to (``None``: the task's own).
    """

    name: str
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=lambda: _EMPTY)
    weight: float = 1.0
    queue: str | None = None

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name or name.split() != [name]:
            message = f"expected a task name like 'taskapp.autoclose_job', got {show(name)}"
            raise bad_value(message, "name", name)
        args, kwargs = _as_object(self.args), _as_object(self.kwargs)
        if not isinstance(args, list | tuple):
            raise bad_value(f"expected a list of arguments, got {show(args)}", "args", args)
        if not isinstance(kwargs, Mapping):
            message = f"expected a mapping of keyword arguments, got {show(kwargs)}"
            raise bad_value(message, "kwargs", kwargs)
        check_placeholders(self.args, "args")
        check_placeholders(self.kwargs, "kwargs")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "weight", positive(self.weight, "weight"))
        if self.queue is not None:
            check_text(self.queue, "queue", empty=False)

    def render(
        self, index: int, *, key: int | None = None
    ) -> tuple[tuple[object, ...], dict[str, object]]:
        """The arguments of message ``index``, placeholders filled in.

        A string that is exactly ``"{n}"`` or ``"{key}"`` becomes the integer;
        other strings are formatted (``"order-{n:04d}"`` gives ``"order-0007"``).

        >>> TaskCall(name="t", kwargs={"order_id": "{n}", "ref": "o-{key}"}).render(7, key=2)
        ((), {'order_id': 7, 'ref': 'o-2'})

        Args:
            index: the message's index, from 0.
            key: its key index (default ``index``).

        Returns:
            ``(args, kwargs)``, fresh objects.
        """
        slot = index if key is None else key
        args = tuple(_render(item, index, slot) for item in self.args)
        return args, {name: _render(item, index, slot) for name, item in self.kwargs.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetSettings:
    """The retry budget a scenario runs with (``resilience.RetryBudget``'s arguments).

    Without one, the app's engine has no budget and no retry is ever refused.

    Attributes:
        ratio: retries allowed per first attempt, >= 0 (0.2: one retry per five tasks).
        window: the sliding window, seconds > 0.
        min_retries: retries always allowed per window, >= 0.
    """

    ratio: float = 0.2
    window: float = 60.0
    min_retries: int = 10

    def __post_init__(self) -> None:
        ratio = self.ratio
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, int | float)
            or not math.isfinite(ratio)
            or ratio < 0
        ):
            raise bad_value(f"expected a number >= 0, got {show(ratio)}", "ratio", ratio)
        object.__setattr__(self, "ratio", float(ratio))
        object.__setattr__(self, "window", positive(self.window, "window"))
        check_int(self.min_retries, "min_retries", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RealSettings:
    """How a scenario runs in real mode (``taskchaos run --mode real``).

    Attributes:
        time_scale: virtual seconds per real second, > 0: with 60, the scenario's
            10 virtual minutes take 10 real seconds on the real worker.
    """

    time_scale: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_scale", positive(self.time_scale, "time_scale"))


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerExpectation:
    """What must hold for one circuit breaker.

    Attributes:
        name: the breaker's name (``"mail-api"``).
        opens_within_calls: it opens within this many failed calls of the outage.
        closes_within: it closes within this many seconds after the outage ends.
    """

    name: str
    opens_within_calls: int | None = None
    closes_within: float | None = None

    def __post_init__(self) -> None:
        check_text(self.name, "name", empty=False)
        if self.opens_within_calls is None and self.closes_within is None:
            message = (
                f"breaker {self.name!r} expects nothing: give opens_within_calls or closes_within"
            )
            raise bad_value(message, "name", self.name)
        if self.opens_within_calls is not None:
            check_int(self.opens_within_calls, "opens_within_calls", 1)
        if self.closes_within is not None:
            object.__setattr__(self, "closes_within", positive(self.closes_within, "closes_within"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectations:
    """What must hold when the scenario ends (``None``, empty or ``False``: not checked).

    Attributes:
        completion_ratio: the fraction of messages whose task succeeded.
        max_dlq: dead-lettered messages (``<= n``).
        dlq_only_types: the only failure types allowed in the dead-letter queue.
        breakers: expectations on circuit breakers (the file's ``breaker`` key).
        duplicate_side_effects: side effects that happened more than once.
        max_attempts_per_task: attempts of any one message (``<= n``).
        completion_time: seconds from publish to success, by percentile
            (``"p50"``, ``"p99"``, ``"p99.9"``) or ``"max"``.
        retries_within_budget: no retry was refused by the retry budget.
        all_faults_fired: every injected fault fired at least once.
        min_retry_delay: the shortest wait between a failed run and its retry, in
            seconds (deferrals by an open breaker or a busy key are not retries).
        max_retries_per_second: retries due in any one second of virtual time.
    """

    completion_ratio: Comparison | None = None
    max_dlq: Comparison | None = None
    dlq_only_types: tuple[FailureType, ...] | None = None
    breakers: tuple[BreakerExpectation, ...] = ()
    duplicate_side_effects: Comparison | None = None
    max_attempts_per_task: Comparison | None = None
    completion_time: Mapping[str, Comparison] = field(default_factory=lambda: _EMPTY)
    retries_within_budget: bool = False
    all_faults_fired: bool = False
    min_retry_delay: Comparison | None = None
    max_retries_per_second: Comparison | None = None

    def __post_init__(self) -> None:
        if self.dlq_only_types is not None:
            kinds = tuple(failure_type(kind, "dlq_only_types") for kind in self.dlq_only_types)
            object.__setattr__(self, "dlq_only_types", kinds)
        object.__setattr__(self, "breakers", tuple(self.breakers))
        object.__setattr__(self, "completion_time", MappingProxyType(dict(self.completion_time)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One scenario, validated, with its injections built.

    Attributes:
        name: unique among the scenarios loaded together.
        app: ``"module:attribute"`` of a Celery app or of a zero-argument factory
            returning one (checked for its form; never imported here).
        tasks: what the workload sends.
        workload: how many messages, when, with which keys, on how many workers.
        description: one line for reports.
        tags: for selecting scenarios.
        seed: the seed of every random choice (``None``: the runner's).
        faults: the injections, in file order.
        policies: retry policy overrides by failure type.
        retry_budget: the retry budget of the run (``None``: no budget).
        real: how it runs in real mode (``None``: only with ``--time-scale``).
        expect: what must hold at the end.
        source: the file it came from.
        line: the line where it starts.
    """

    name: str
    app: str
    tasks: tuple[TaskCall, ...]
    workload: Workload
    description: str = ""
    tags: tuple[str, ...] = ()
    seed: int | None = None
    faults: tuple[Injection, ...] = ()
    policies: Mapping[FailureType, RetryPolicy] = field(default_factory=lambda: _NO_POLICIES)
    retry_budget: RetryBudgetSettings | None = None
    real: RealSettings | None = None
    expect: Expectations = field(default_factory=Expectations)
    source: str = "<string>"
    line: int = 1

    def __post_init__(self) -> None:
        check_name(self.name)
        check_import_path(self.app)
        check_text(self.description, "description")
        object.__setattr__(self, "tags", tuple(check_name(tag, "tags") for tag in self.tags))
        if self.seed is not None:
            check_int(self.seed, "seed")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise bad_value("a scenario needs at least one task", "tasks", ())
        object.__setattr__(self, "faults", tuple(self.faults))
        policies = {
            failure_type(kind, "policies"): policy for kind, policy in self.policies.items()
        }
        object.__setattr__(self, "policies", MappingProxyType(policies))

    @property
    def location(self) -> str:
        """``"scenarios/payments.yaml:3"``, for reports."""
        return f"{self.source}:{self.line}"

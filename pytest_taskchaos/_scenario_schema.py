"""The schema of scenario files: the values they become, and reading YAML with positions.

Private half of :mod:`pytest_taskchaos.scenario`, which re-exports the public
names. The value classes validate themselves (``ConfigurationError`` whose
``key`` names the field), so a scenario built in Python is checked exactly like
one read from a file.

:func:`read` composes YAML safely (``yaml.compose`` with the safe loader: no
constructor for Python objects ever runs) and builds plain data from the node
tree itself. That records the line and column of every mapping key and list
item, rejects duplicate keys (PyYAML keeps the last one silently) and rejects
every tag that is not plain data. :class:`Checker` collects problems at those
positions, so one pass reports the mistakes of a whole file.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from string import Formatter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import yaml  # type: ignore[import-untyped, unused-ignore]  # its stubs are optional

from pytest_taskchaos.injection import Injection
from resilience.errors import ConfigurationError
from resilience.policy import RetryPolicy
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "Arrival",
    "ArrivalPattern",
    "BreakerExpectation",
    "Checker",
    "Comparison",
    "Document",
    "Expectations",
    "KeyPath",
    "KeyPattern",
    "Keys",
    "Operator",
    "Problem",
    "RealSettings",
    "RetryBudgetSettings",
    "Scenario",
    "TaskCall",
    "Workload",
    "check_import_path",
    "check_int",
    "check_name",
    "did_you_mean",
    "duration",
    "failure_type",
    "format_key_path",
    "is_duration_text",
    "read",
    "show",
]

KeyPath: TypeAlias = tuple[str | int, ...]
"""Where a value sits: mapping keys and list indexes from the document's root."""

_T = TypeVar("_T")
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_POLICIES: Mapping[FailureType, RetryPolicy] = MappingProxyType({})

# --------------------------------------------------------------------------- messages


def _flow(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    return repr(value)


def show(value: object, *, limit: int = 80) -> str:
    """A value as messages quote it: YAML flow style, strings quoted, shortened."""
    text = _flow(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def format_key_path(path: KeyPath) -> str:
    """``("faults", 0, "window")`` as ``"faults[0].window"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _bad(message: str, key: str | None, value: object) -> ConfigurationError:
    return ConfigurationError(message, key=key, value=value)


# --------------------------------------------------------------------------- field checks

_NAME = re.compile(r"[a-z0-9_-]+")
_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_PATH = re.compile(rf"{_IDENTIFIERS}:{_IDENTIFIERS}")


def check_name(value: object, key: str = "name") -> str:
    """A scenario name or tag: lowercase letters, digits, ``-`` and ``_``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        message = f"expected a name of lowercase letters, digits, '-' and '_', got {show(value)}"
        raise _bad(message, key, value)
    return value


def check_import_path(value: object, key: str = "app") -> str:
    """``"module:attribute"``, checked for its form only (nothing is imported)."""
    if not isinstance(value, str) or not _IMPORT_PATH.fullmatch(value):
        raise _bad(
            "expected an import path 'module:attribute' (like 'examples.taskapp.app:make_app'), "
            f"got {show(value)}",
            key,
            value,
        )
    return value


def check_int(value: object, key: str, minimum: int | None = None) -> int:
    """An integer (not a bool), at least ``minimum``."""
    bound = "" if minimum is None else f" >= {minimum}"
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
    ):
        raise _bad(f"expected an integer{bound}, got {show(value)}", key, value)
    return value


def _positive(value: object, key: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise _bad(f"expected a number > 0, got {show(value)}", key, value)
    return float(seconds)


def _text(value: object, key: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise _bad(
            f"expected {'a' if empty else 'a non-empty'} string, got {show(value)}", key, value
        )
    return value


_E = TypeVar("_E", bound=StrEnum)


def _member(enum: type[_E], value: object, key: str) -> _E:
    valid = [member.value for member in enum]
    if isinstance(value, str) and value in valid:
        return enum(value)
    raise _bad(
        f"expected one of {', '.join(valid)}, got {show(value)}{did_you_mean(value, valid)}",
        key,
        value,
    )


def failure_type(value: object, key: str | None = None) -> FailureType:
    """A :class:`FailureType` by name; the error suggests one and lists them all."""
    if isinstance(value, FailureType):
        return value
    valid = [member.value for member in FailureType]
    if isinstance(value, str) and value in valid:
        return FailureType(value)
    hint = did_you_mean(str(value).upper(), valid)
    raise _bad(
        f"unknown failure type {show(value)}{hint} Valid types: {', '.join(valid)}", key, value
    )


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_NUMBER}\s*(?:ms|s|m|h|d)\s*)+")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def is_duration_text(value: object) -> bool:
    """Whether ``value`` is a duration written with units (``"30s"``, ``"1h30m"``)."""
    return isinstance(value, str) and _DURATION.fullmatch(value.strip()) is not None


def duration(value: object, key: str | None = None) -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"2d"``."""
    seconds: float | None = None
    plain = isinstance(value, str) and re.fullmatch(_NUMBER, value.strip())
    if (isinstance(value, int | float) and not isinstance(value, bool)) or plain:
        seconds = float(value)  # type: ignore[arg-type]  # a number or a number's text
    elif is_duration_text(value):
        parts = _PART.findall(str(value))
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        message = "expected a duration >= 0 (seconds, or text like '90s', '5m', '1h30m')"
        raise _bad(f"{message}, got {show(value)}", key, value)
    return seconds


_seconds = duration  # for Comparison.parse, whose ``duration`` argument hides the name

_PLACEHOLDERS: Final = ("n", "key")


def _check_placeholders(value: object, key: str) -> None:
    """Every string in ``value`` may use ``{n}`` and ``{key}`` only (``key``: dotted path)."""
    items: Iterable[tuple[object, object]] = ()
    if isinstance(value, list | tuple):
        items = enumerate(value)
    elif isinstance(value, Mapping):
        items = value.items()
    for name, item in items:
        _check_placeholders(item, f"{key}.{name}")
    if not isinstance(value, str):
        return
    problem = ""
    try:
        names = [name for _, name, _, _ in Formatter().parse(value) if name is not None]
    except ValueError as exc:
        names, problem = [], f"bad placeholder ({exc})"
    unknown = [name for name in names if name not in _PLACEHOLDERS]
    if unknown:
        problem = f"unknown placeholder {{{unknown[0]}}}"
    elif not problem:
        try:
            value.format(n=0, key=0)
        except (ValueError, TypeError) as exc:
            problem = f"bad placeholder ({exc})"
    if problem:
        raise _bad(
            f"{problem} in {value!r}: the placeholders are {{n}} (the message's index) and "
            "{key} (its key's index); write {{ and }} for literal braces",
            key,
            value,
        )


# --------------------------------------------------------------------------- values


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
        object.__setattr__(self, "op", _member(Operator, self.op, "op"))
        value = self.value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _bad(f"expected a finite number, got {show(value)}", "value", value)
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
            raise _bad(
                f"expected a comparison like '<= 600' (one of <, <=, ==, !=, >=, > and a "
                f"{shape}), got {show(text)}{hint}",
                "comparison",
                text,
            )
        return cls(op=Operator(op), value=value)


def _plain_number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and re.fullmatch(rf"[-+]?{_NUMBER}(?:[eE][-+]?\d+)?", value):
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
        pattern = _member(ArrivalPattern, self.pattern, "pattern")
        object.__setattr__(self, "pattern", pattern)
        needs = {ArrivalPattern.UNIFORM: "over", ArrivalPattern.POISSON: "rate"}.get(pattern)
        for key in ("over", "rate"):
            value = getattr(self, key)
            if key == needs and value is None:
                what = "seconds to spread the messages over" if key == "over" else "messages/s"
                raise _bad(f"{pattern.value} arrival needs {key} ({what})", "pattern", pattern)
            if key == needs:
                object.__setattr__(self, key, _positive(value, key))
            elif value is not None:
                raise _bad(f"{key} does not apply to {pattern.value} arrival", key, value)


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
        pattern = _member(KeyPattern, self.pattern, "pattern")
        object.__setattr__(self, "pattern", pattern)
        if pattern is KeyPattern.REPEATED:
            if self.distinct is None:
                raise _bad("repeated keys need distinct (how many keys)", "pattern", pattern)
            check_int(self.distinct, "distinct", 1)
        elif self.distinct is not None:
            raise _bad("distinct applies to repeated keys only", "distinct", self.distinct)

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
            raise _bad(f"expected a number in [0, 1], got {show(ratio)}", "duplicate_ratio", ratio)
        object.__setattr__(self, "duplicate_ratio", float(ratio))
        for key, kind in (("arrival", Arrival), ("keys", Keys)):
            if not isinstance(getattr(self, key), kind):
                raise _bad(f"expected {kind.__name__}, got {getattr(self, key)!r}", key, None)
        distinct = self.keys.distinct
        if distinct is not None and distinct > self.count:
            message = f"expected at most count ({self.count}) keys, got {distinct}"
            raise _bad(message, "keys.distinct", distinct)


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
            raise _bad(message, "name", name)
        args, kwargs = _as_object(self.args), _as_object(self.kwargs)
        if not isinstance(args, list | tuple):
            raise _bad(f"expected a list of arguments, got {show(args)}", "args", args)
        if not isinstance(kwargs, Mapping):
            message = f"expected a mapping of keyword arguments, got {show(kwargs)}"
            raise _bad(message, "kwargs", kwargs)
        _check_placeholders(self.args, "args")
        _check_placeholders(self.kwargs, "kwargs")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "weight", _positive(self.weight, "weight"))
        if self.queue is not None:
            _text(self.queue, "queue", empty=False)

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
            raise _bad(f"expected a number >= 0, got {show(ratio)}", "ratio", ratio)
        object.__setattr__(self, "ratio", float(ratio))
        object.__setattr__(self, "window", _positive(self.window, "window"))
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
        object.__setattr__(self, "time_scale", _positive(self.time_scale, "time_scale"))


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
        _text(self.name, "name", empty=False)
        if self.opens_within_calls is None and self.closes_within is None:
            message = (
                f"breaker {self.name!r} expects nothing: give opens_within_calls or closes_within"
            )
            raise _bad(message, "name", self.name)
        if self.opens_within_calls is not None:
            check_int(self.opens_within_calls, "opens_within_calls", 1)
        if self.closes_within is not None:
            object.__setattr__(
                self, "closes_within", _positive(self.closes_within, "closes_within")
            )


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
        _text(self.description, "description")
        object.__setattr__(self, "tags", tuple(check_name(tag, "tags") for tag in self.tags))
        if self.seed is not None:
            check_int(self.seed, "seed")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise _bad("a scenario needs at least one task", "tasks", ())
        object.__setattr__(self, "faults", tuple(self.faults))
        policies = {
            failure_type(kind, "policies"): policy for kind, policy in self.policies.items()
        }
        object.__setattr__(self, "policies", MappingProxyType(policies))

    @property
    def location(self) -> str:
        """``"scenarios/payments.yaml:3"``, for reports."""
        return f"{self.source}:{self.line}"


# --------------------------------------------------------------------------- reading YAML

_YAML: Final = "tag:yaml.org,2002:"
_MAP: Final = _YAML + "map"
_SEQ: Final = _YAML + "seq"
_MERGE: Final = _YAML + "merge"
_TIMESTAMP: Final = _YAML + "timestamp"
_PLAIN: Final = frozenset(_YAML + name for name in ("str", "int", "float", "bool", "null"))
_PLAIN_DATA: Final = (
    "scenario files hold plain data (strings, numbers, booleans, null, lists, mappings)"
)
# Aliases can make a tiny file expand exponentially ("billion laughs").
_MAX_VALUES: Final = 100_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake: where (1-based line and column) and what is wrong."""

    key_path: KeyPath
    line: int
    column: int
    message: str
    value: object = None


@dataclass(frozen=True, slots=True)
class Document:
    """A file's plain data, the position of each key and list item, reading problems."""

    data: object
    marks: Mapping[KeyPath, tuple[int, int]]
    problems: tuple[Problem, ...]
    rejected: frozenset[KeyPath] = frozenset()


class _TooBig(Exception):
    pass


def _position(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag


class _Reader:
    def __init__(self) -> None:
        self.marks: dict[KeyPath, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.count = 0
        self.active: set[int] = set()
        self.rejected: set[KeyPath] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def reject(self, path: KeyPath, node: Any, message: str) -> None:
        """Report a value that is left out of the data (``None`` in its place)."""
        self.rejected.add(path)
        self.problems.append(Problem(path, *_position(node.start_mark), message))

    def node(self, node: Any, path: KeyPath) -> object:
        self.count += 1
        if self.count > _MAX_VALUES:
            raise _TooBig
        if id(node) in self.active:
            self.reject(path, node, "an alias refers to a value that contains it (a cycle)")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if node.tag != (_MAP if isinstance(node, yaml.MappingNode) else _SEQ):
            self.reject(path, node, f"tag {_tag(node.tag)!r} is not allowed: {_PLAIN_DATA}")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            items: list[object] = []
            for index, child in enumerate(node.value):
                self.marks[(*path, index)] = _position(child.start_mark)
                items.append(self.node(child, (*path, index)))
            return items
        finally:
            self.active.discard(id(node))

    def scalar(self, node: Any, path: KeyPath) -> object:
        if node.tag == _TIMESTAMP:
            # Dates stay text: task arguments travel as JSON, and a task taking a
            # date takes "2025-10-01".
            return str(node.value)
        if node.tag not in _PLAIN:
            self.reject(path, node, f"tag {_tag(node.tag)!r} is not allowed: {_PLAIN_DATA}")
            return None
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, KeyError, TypeError):
            self.reject(path, node, f"{node.value!r} is not a valid {_tag(node.tag)}")
            return None

    def mapping(self, node: Any, path: KeyPath) -> dict[str, object]:
        result: dict[str, object] = {}
        # Merge keys first, so that the mapping's own keys override what they bring.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in reversed(sources):  # the first source wins
                    if not isinstance(source, yaml.MappingNode):
                        self.reject((*path, "<<"), source, "'<<' merges mappings only")
                        continue
                    built = self.node(source, path)
                    result.update(built if isinstance(built, dict) else {})
        first: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            at = _position(key_node.start_mark)
            if not isinstance(key, str):
                self.reject((*path, show(key)), key_node, f"keys must be strings, got {show(key)}")
            elif key in first:
                line, column = first[key]
                message = f"duplicate key {key!r} (first at line {line}, column {column})"
                self.problems.append(Problem((*path, key), *at, message))
            else:
                first[key] = self.marks[(*path, key)] = at
                result[key] = self.node(value_node, (*path, key))
        return result


def _syntax_problem(exc: Exception, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        message = f"invalid YAML: {exc.problem}"
        if exc.context:
            line, column = _position(exc.context_mark)
            message += f" ({exc.context} that starts at line {line}, column {column})"
        return Problem((), *_position(exc.problem_mark), message)
    position = int(getattr(exc, "position", 0))
    column = position - text.rfind("\n", 0, position)
    first = str(exc).splitlines()[0]
    return Problem((), text.count("\n", 0, position) + 1, column, f"invalid YAML: {first}")


def read(text: str) -> Document:
    """Compose ``text`` safely and build its plain data with positions.

    Returns:
        The document; ``data`` is ``None`` for an empty file or a syntax error
        (then ``problems`` says where).
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return Document(None, {}, (_syntax_problem(exc, text),))
    if root is None:
        return Document(None, {}, ())
    reader = _Reader()
    reader.marks[()] = _position(root.start_mark)
    try:
        data = reader.node(root, ())
    except _TooBig:
        message = f"the file expands to more than {_MAX_VALUES} values (through aliases)"
        return Document(None, {}, (Problem((), 1, 1, message),))
    return Document(data, reader.marks, tuple(reader.problems), frozenset(reader.rejected))


class Checker:
    """Collects problems at a document's positions.

    A value the reader rejected (a forbidden tag, a cycle) is ``None`` in the
    data; problems at or below its path are not reported again.
    """

    def __init__(self, document: Document) -> None:
        self.marks = document.marks
        self.read_problems = document.problems
        self.rejected = document.rejected
        self.problems: list[Problem] = []

    def all_problems(self) -> list[Problem]:
        """Every problem, reading and checking, in document order."""
        found = [*self.read_problems, *self.problems]
        return sorted(found, key=lambda problem: (problem.line, problem.column))

    def failed(self, path: KeyPath, since: int) -> bool:
        """Whether a check failed after ``since`` problems, or reading failed under ``path``."""
        return len(self.problems) > since or any(
            problem.key_path[: len(path)] == path for problem in self.read_problems
        )

    def position(self, path: KeyPath) -> tuple[int, int]:
        """The position of ``path``, or of its closest recorded ancestor."""
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, (1, 1))

    def fail(self, path: KeyPath, message: str, value: object = None) -> None:
        """Record a problem at ``path``, unless reading already rejected that value."""
        if not any(path[: len(rejected)] == rejected for rejected in self.rejected):
            self.problems.append(Problem(path, *self.position(path), message, value))

    def locate(self, path: KeyPath, key: str | None) -> KeyPath:
        """The value named by an error's dotted ``key``, at or below ``path``."""
        if not key:
            return path
        parts = tuple(int(part) if part.isdigit() else part for part in key.split("."))
        if (*path, *parts) in self.marks:
            return (*path, *parts)
        for candidate in self.marks:
            if candidate[: len(path)] == path and candidate[-len(parts) :] == parts:
                return candidate
        return path

    def mapping(
        self,
        value: object,
        path: KeyPath,
        *,
        what: str,
        keys: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """``value`` as a mapping, reporting unknown and missing keys (``None``: not one)."""
        if not isinstance(value, dict):
            self.fail(path, f"expected {what}, got {show(value)}", value)
            return None
        for key in value:
            if key not in keys:
                hint = did_you_mean(key, keys)
                message = f"unknown key {key!r}{hint} (valid keys: {', '.join(keys)})"
                self.fail((*path, key), message, value[key])
        for key in required:
            if key not in value:
                self.fail(path, f"missing required key {key!r}")
        return {key: item for key, item in value.items() if key in keys}

    def attempt(self, path: KeyPath, make: Callable[[], _T]) -> _T | None:
        """``make()``, or ``None`` with its ``ConfigurationError`` recorded where its key points."""
        try:
            return make()
        except ConfigurationError as exc:
            self.fail(self.locate(path, exc.key), str(exc), exc.value)
            return None

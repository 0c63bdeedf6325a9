"""Scenario files: whole fault scenarios written in YAML, loaded and validated.

A scenario names a Celery app, the tasks its workload sends and how, the faults
to inject (built with :func:`~pytest_taskchaos.injection.injection`, so a file
entry is validated exactly like ``@pytest.mark.chaos(...)``), retry policy
overrides and what must hold at the end. This module is the file format only:
it never imports the app and runs nothing::

    scenarios = load_scenarios("scenarios/payments.yaml")   # list[Scenario]
    problems = validate(["scenarios/"])                     # list[ScenarioError]

Every mistake is reported as ``file:line:column: key.path: message``, and a
file with any mistake loads nothing. The format is documented in
``docs/scenarios.md`` and, for editors, as JSON Schema in :data:`SCHEMA_PATH`.
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pytest_taskchaos import _scenario_reader as _s
from pytest_taskchaos._scenario_fields import (
    check_import_path,
    check_int,
    check_name,
    did_you_mean,
    duration,
    failure_type,
    is_duration_text,
    show,
)
from pytest_taskchaos._scenario_values import (
    Arrival,
    ArrivalPattern,
    BreakerExpectation,
    Comparison,
    Expectations,
    KeyPattern,
    Keys,
    Operator,
    RealSettings,
    RetryBudgetSettings,
    Scenario,
    TaskCall,
    Workload,
)
from pytest_taskchaos.faults import CATALOG
from pytest_taskchaos.injection import Injection, injection
from resilience.errors import ConfigurationError
from resilience.policy import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from resilience.taxonomy import FailureType

__all__ = [
    "SCHEMA_PATH",
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
    "ScenarioError",
    "TaskCall",
    "Workload",
    "load_scenarios",
    "load_scenarios_text",
    "validate",
]

SCHEMA_PATH: Final = Path(__file__).with_name("scenario.schema.json")
"""The JSON Schema (draft 2020-12) of scenario files, for editors and linters."""

_Path = _s.KeyPath
_Checker = _s.Checker


# --------------------------------------------------------------------------- errors


class ScenarioError(ConfigurationError):
    """A scenario file is invalid: ``file:line:column: key.path: message``.

    When a file has several mistakes, the error raised is the first one and
    :attr:`errors` lists them all, in file order.

    Args:
        message: what is wrong, without the location.
        path: the file (``"<string>"`` in messages when ``None``).
        line: the 1-based line, when known.
        column: the 1-based column, when known.
        key_path: where in the file (``"faults[0].window"``); ``""`` for the whole file.
        value: the rejected value.
        errors: every mistake found, when there are several (the first is this one).

    Attributes:
        detail: the message without the location.
        column: the 1-based column, when known.
        key_path: where in the file; ``""`` for the whole file.
        errors: every mistake found (this error alone when there is one).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key_path: str = "",
        value: object = None,
        errors: Sequence[ScenarioError] = (),
    ) -> None:
        self.detail = message
        self.column = column
        self.key_path = key_path
        self._errors = list(errors)
        where = path or "<string>"
        if line is not None:
            where += f":{line}:{column or 1}"
        text = f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}"
        if len(self._errors) > 1:
            text = "\n".join(str(error) for error in self._errors)
        super().__init__(text, key=key_path or None, value=value, path=path, line=line)

    @property
    def errors(self) -> list[ScenarioError]:
        """Every mistake found, in file order."""
        return list(self._errors) if self._errors else [self]

    def __reduce__(self) -> tuple[object, ...]:
        fields = {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "key_path": self.key_path,
            "value": self.value,
            "errors": self._errors,
        }
        return (_rebuild, (type(self), self.detail, fields))


def _rebuild(cls: type[ScenarioError], message: str, fields: dict[str, Any]) -> ScenarioError:
    """Unpickle a :class:`ScenarioError` (its constructor takes keyword-only fields)."""
    return cls(message, **fields)


def _error(problem: _s.Problem, source: str) -> ScenarioError:
    return ScenarioError(
        problem.message,
        path=source,
        line=problem.line,
        column=problem.column,
        key_path=_s.format_key_path(problem.key_path),
        value=problem.value,
    )


def _combined(errors: list[ScenarioError]) -> ScenarioError:
    first = errors[0]
    if len(errors) == 1:
        return first
    return ScenarioError(
        first.detail,
        path=first.path,
        line=first.line,
        column=first.column,
        key_path=first.key_path,
        value=first.value,
        errors=errors,
    )


# --------------------------------------------------------------------------- sections


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"expected a string, got {show(value)}", value=value)
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"expected true or false, got {show(value)}", value=value)
    return value


def _tags(ctx: _Checker, value: object, path: _Path) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        ctx.fail(path, f"expected a list of tags, got {show(value)}", value)
        return None
    tags = [ctx.attempt((*path, i), partial(check_name, tag)) for i, tag in enumerate(value)]
    return tuple(tag for tag in tags if tag is not None)


def _tasks(ctx: _Checker, value: object, path: _Path) -> tuple[TaskCall, ...] | None:
    if not isinstance(value, list) or not value:
        ctx.fail(path, f"expected a non-empty list of tasks (- name: ...), got {show(value)}")
        return None
    calls: list[TaskCall | None] = []
    for index, item in enumerate(value):
        sub = (*path, index)
        data = ctx.mapping(
            item,
            sub,
            what="a task (a mapping with name, args, kwargs, weight, queue)",
            keys=("name", "args", "kwargs", "weight", "queue"),
            required=("name",),
        )
        if data is not None and "name" in data:
            calls.append(ctx.attempt(sub, partial(TaskCall, **data)))
    return tuple(call for call in calls if call is not None)


def _patterned(ctx: _Checker, value: object, path: _Path, kind: str) -> Arrival | Keys | None:
    options = ("over", "rate") if kind == "arrival" else ("distinct",)
    patterns = ArrivalPattern if kind == "arrival" else KeyPattern
    shape = " | ".join(patterns)
    data = ctx.mapping(
        {"pattern": value} if isinstance(value, str) else value,
        path,
        what=f"{shape}, or a mapping {{pattern: {shape}, {', '.join(options)}}}",
        keys=("pattern", *options),
        required=("pattern",),
    )
    if data is None or "pattern" not in data:
        return None
    if "over" in data:
        data["over"] = ctx.attempt((*path, "over"), lambda: duration(data["over"]))
        if data["over"] is None:
            return None
    make = Arrival if kind == "arrival" else Keys
    return ctx.attempt(path, lambda: make(**data))


def _workload(ctx: _Checker, value: object, path: _Path) -> Workload | None:
    before = len(ctx.problems)
    data = ctx.mapping(
        value,
        path,
        what="a mapping with count, arrival, keys, duplicate_ratio, workers",
        keys=("count", "arrival", "keys", "duplicate_ratio", "workers"),
        required=("count",),
    )
    if data is None:
        return None
    for key in ("arrival", "keys"):
        if key in data:
            data[key] = _patterned(ctx, data[key], (*path, key), key)
    for key, minimum in (("count", 1), ("workers", 1)):
        if key in data:
            ctx.attempt((*path, key), partial(check_int, data[key], key, minimum))
    if ctx.failed(path, before):
        return None
    return ctx.attempt(path, lambda: Workload(**data))


_SCHEDULE_KEYS: Final = (
    "at",
    "task",
    "times",
    "every",
    "rate",
    "window",
    "queue",
    "retries_only",
    "first_attempts_only",
    "label",
)
_CHECKED: Final[dict[str, Callable[[object], object]]] = {
    "retries_only": _boolean,
    "first_attempts_only": _boolean,
    "label": _string,
}


def _window(value: object) -> tuple[float, float | None]:
    if isinstance(value, list) and len(value) == 2:
        (start, end), keys = value, ("0", "1")
    elif isinstance(value, dict) and "start" in value and set(value) <= {"start", "end"}:
        (start, end), keys = (value["start"], value.get("end")), ("start", "end")
    else:
        raise ConfigurationError(
            f"expected [start, end] or {{start: ..., end: ...}} (end null: no end), "
            f"got {show(value)}",
            value=value,
        )
    begins = duration(start, keys[0])
    ends = None if end is None else duration(end, keys[1])
    if ends is not None and ends <= begins:
        message = f"expected [start, end] with start < end, got {show(value)}"
        raise ConfigurationError(message, value=value)
    return begins, ends


def _fault(ctx: _Checker, value: object, path: _Path) -> Injection | None:
    data = ctx.mapping(
        value,
        path,
        what="a fault entry (a mapping with fault: <name> and schedule keys)",
        keys=tuple(value) if isinstance(value, dict) else (),
        required=("fault",),
    )
    if data is None or "fault" not in data:
        return None
    before = len(ctx.problems)
    name = data.pop("fault")
    if not isinstance(name, str):
        valid = ", ".join(sorted(CATALOG))
        ctx.fail((*path, "fault"), f"expected a fault name, got {show(name)}. Valid: {valid}")
    schedule: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, raw in data.items():
        sub = (*path, key)
        if key in ("args", "when"):
            message = f"{key!r} takes a Python callable and has no YAML form; filter with task, "
            ctx.fail(sub, message + "queue, window, times, every or rate")
        elif key == "window":
            schedule[key] = ctx.attempt(sub, partial(_window, raw))
        elif key in _CHECKED:
            schedule[key] = ctx.attempt(sub, partial(_CHECKED[key], raw))
        else:
            (schedule if key in _SCHEDULE_KEYS else params)[key] = raw
    if ctx.failed(path, before) or not isinstance(name, str):
        return None
    while True:
        try:
            return injection(name, **schedule, **params)
        except ConfigurationError as exc:
            key = exc.key or ""
            if key in params and is_duration_text(params[key]):
                params[key] = duration(params[key])  # a parameter in seconds, written "30s"
                continue
            message = str(exc)
            takes = [taken for taken, _ in CATALOG[name].params] if name in CATALOG else []
            if key in params and key not in takes:
                message += did_you_mean(key, [*takes, *_SCHEDULE_KEYS, "fault"])
            ctx.fail(ctx.locate(path, key), message, exc.value)
            return None
        except TypeError:  # a key that is one of injection()'s own arguments ("what")
            ctx.fail(path, f"unknown keys in a fault entry: {', '.join(map(repr, params))}")
            return None


def _faults(ctx: _Checker, value: object, path: _Path) -> tuple[Injection, ...] | None:
    if not isinstance(value, list):
        ctx.fail(path, f"expected a list of fault entries (- fault: ...), got {show(value)}")
        return None
    built = [_fault(ctx, item, (*path, index)) for index, item in enumerate(value)]
    return tuple(item for item in built if item is not None)


def _policy(value: object) -> RetryPolicy:
    if not isinstance(value, dict):
        message = f"expected a mapping of RetryPolicy fields (max_retries, ...), got {show(value)}"
        raise ConfigurationError(message, value=value)
    data = dict(value)
    for key in ("initial_delay", "max_delay"):
        if isinstance(data.get(key), str):
            data[key] = duration(data[key], key)
    breaker = data.get("breaker")
    if isinstance(breaker, dict) and isinstance(breaker.get("reset_timeout"), str):
        timeout = duration(breaker["reset_timeout"], "breaker.reset_timeout")
        data["breaker"] = {**breaker, "reset_timeout": timeout}
    return RetryPolicy.from_dict(data)


def _policies(ctx: _Checker, value: object, path: _Path) -> dict[FailureType, RetryPolicy] | None:
    if not isinstance(value, dict):
        ctx.fail(path, f"expected a mapping of failure type to policy, got {show(value)}")
        return None
    found: dict[FailureType, RetryPolicy] = {}
    for key, raw in value.items():
        kind = ctx.attempt((*path, key), partial(failure_type, key))
        policy = ctx.attempt((*path, key), partial(_policy, raw))
        if kind is not None and policy is not None:
            found[kind] = policy
    return found


def _ratio(value: object) -> Comparison:
    found = Comparison.parse(value, default=Operator.GE)
    if not 0 <= found.value <= 1:
        message = f"expected a comparison with a fraction in [0, 1], got {show(value)}"
        raise ConfigurationError(message, value=value)
    return found


def _types(value: object) -> tuple[FailureType, ...]:
    if not isinstance(value, list):
        raise ConfigurationError(f"expected a list of failure types, got {show(value)}")
    return tuple(failure_type(item, str(index)) for index, item in enumerate(value))


def _times(ctx: _Checker, value: object, path: _Path) -> dict[str, Comparison] | None:
    if not isinstance(value, dict):
        ctx.fail(path, f"expected a mapping like {{p50: '<= 10m'}}, got {show(value)}")
        return None
    found: dict[str, Comparison | None] = {}
    for key, raw in value.items():
        if not re.fullmatch(r"p(?:100|[1-9]?\d(?:\.\d+)?)|max", key):
            message = f"unknown key {key!r}: expected a percentile (p50, p99, p99.9) or max"
            ctx.fail((*path, key), message)
            continue
        parse = partial(Comparison.parse, raw, default=Operator.LE, duration=True)
        found[key] = ctx.attempt((*path, key), parse)
    return {key: made for key, made in found.items() if made is not None}


def _breakers(ctx: _Checker, value: object, path: _Path) -> tuple[BreakerExpectation, ...]:
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    found: list[BreakerExpectation | None] = []
    for index, item in items:
        sub = path if index is None else (*path, index)
        data = ctx.mapping(
            item,
            sub,
            what="a breaker expectation (name, opens_within_calls, closes_within), or a list",
            keys=("name", "opens_within_calls", "closes_within"),
            required=("name",),
        )
        if data is None or "name" not in data:
            continue
        if "closes_within" in data:
            data["closes_within"] = ctx.attempt(
                (*sub, "closes_within"), partial(duration, data["closes_within"])
            )
            if data["closes_within"] is None:
                continue
        found.append(ctx.attempt(sub, partial(BreakerExpectation, **data)))
    return tuple(made for made in found if made is not None)


_EXPECT_KEYS: Final = (
    "completion_ratio",
    "max_dlq",
    "dlq_only_types",
    "breaker",
    "duplicate_side_effects",
    "max_attempts_per_task",
    "completion_time",
    "retries_within_budget",
    "all_faults_fired",
    "min_retry_delay",
    "max_retries_per_second",
)
_EXPECT: Final[dict[str, Callable[[object], object]]] = {
    "completion_ratio": _ratio,
    "max_dlq": lambda v: Comparison(op=Operator.LE, value=check_int(v, "max_dlq", 0)),
    "dlq_only_types": _types,
    "duplicate_side_effects": lambda v: Comparison.parse(v, default=Operator.LE),
    "max_attempts_per_task": lambda v: Comparison(
        op=Operator.LE, value=check_int(v, "max_attempts_per_task", 1)
    ),
    "retries_within_budget": _boolean,
    "all_faults_fired": _boolean,
    "min_retry_delay": lambda v: Comparison.parse(v, default=Operator.GE, duration=True),
    "max_retries_per_second": lambda v: Comparison(
        op=Operator.LE, value=check_int(v, "max_retries_per_second", 1)
    ),
}


def _expect(ctx: _Checker, value: object, path: _Path) -> Expectations | None:
    before = len(ctx.problems)
    data = ctx.mapping(value, path, what="a mapping of expectations", keys=_EXPECT_KEYS)
    if data is None:
        return None
    values: dict[str, Any] = {}
    for key, raw in data.items():
        sub = (*path, key)
        if key == "breaker":
            values["breakers"] = _breakers(ctx, raw, sub)
        elif key == "completion_time":
            values[key] = _times(ctx, raw, sub)
        else:
            values[key] = ctx.attempt(sub, partial(_EXPECT[key], raw))
    if ctx.failed(path, before):
        return None
    return ctx.attempt(path, lambda: Expectations(**values))


def _retry_budget(ctx: _Checker, value: object, path: _Path) -> RetryBudgetSettings | None:
    data = ctx.mapping(
        value,
        path,
        what="a retry budget (a mapping with ratio, window, min_retries)",
        keys=("ratio", "window", "min_retries"),
    )
    if data is None:
        return None
    if "window" in data:
        data["window"] = ctx.attempt((*path, "window"), partial(duration, data["window"]))
        if data["window"] is None:
            return None
    return ctx.attempt(path, lambda: RetryBudgetSettings(**data))


def _real(ctx: _Checker, value: object, path: _Path) -> RealSettings | None:
    data = ctx.mapping(
        value,
        path,
        what="real-mode settings (a mapping with time_scale)",
        keys=("time_scale",),
        required=("time_scale",),
    )
    if data is None or "time_scale" not in data:
        return None
    return ctx.attempt(path, lambda: RealSettings(**data))


def _checked(check: Callable[[object], object]) -> Callable[[_Checker, object, _Path], object]:
    def section(ctx: _Checker, value: object, path: _Path) -> object:
        return ctx.attempt(path, lambda: check(value))

    return section


_SECTIONS: Final[dict[str, Callable[[_Checker, object, _Path], object]]] = {
    "name": _checked(check_name),
    "description": _checked(_string),
    "tags": _tags,
    "seed": _checked(lambda v: check_int(v, "seed")),
    "app": _checked(check_import_path),
    "tasks": _tasks,
    "workload": _workload,
    "faults": _faults,
    "policies": _policies,
    "retry_budget": _retry_budget,
    "real": _real,
    "expect": _expect,
}


def _scenario(ctx: _Checker, value: object, path: _Path, source: str) -> Scenario | None:
    before = len(ctx.problems)
    if isinstance(value, dict):  # x-... keys hold YAML anchors for other keys to use
        value = {key: item for key, item in value.items() if not key.startswith("x-")}
    data = ctx.mapping(
        value,
        path,
        what="a scenario (a mapping with name, app, tasks, workload, ...)",
        keys=tuple(_SECTIONS),
        required=("name", "app", "tasks", "workload"),
    )
    if data is None:
        return None
    values: dict[str, Any] = {"source": source, "line": ctx.position(path)[0]}
    for key, raw in data.items():
        values[key] = _SECTIONS[key](ctx, raw, (*path, key))
    expect = values.get("expect")
    if isinstance(expect, Expectations) and expect.all_faults_fired and not data.get("faults"):
        where = (*path, "expect", "all_faults_fired")
        ctx.fail(where, "all_faults_fired needs at least one fault in faults")
    if ctx.failed(path, before):
        return None
    return ctx.attempt(path, lambda: Scenario(**values))


# --------------------------------------------------------------------------- loading

_EMPTY_FILE: Final = (
    "the file is empty: expected a scenario (a mapping with name, app, tasks, workload, ...) "
    "or 'scenarios:' and a list of them"
)


def _parse(text: str, source: str) -> tuple[list[Scenario], list[ScenarioError]]:
    document = _s.read(text)
    if document.data is None:
        problems = list(document.problems) or [_s.Problem((), 1, 1, _EMPTY_FILE)]
        return [], [_error(problem, source) for problem in problems]
    ctx = _s.Checker(document)
    data = document.data
    entries: list[tuple[_Path, object]] = []
    if isinstance(data, dict) and "scenarios" in data:
        for key in data:
            if key != "scenarios" and not key.startswith("x-"):
                ctx.fail(
                    (key,),
                    f"unknown key {key!r}: a file with 'scenarios:' holds only that list "
                    "(and x-... keys for anchors); put every scenario's keys inside it",
                )
        items = data["scenarios"]
        if isinstance(items, list) and items:
            entries = [(("scenarios", index), item) for index, item in enumerate(items)]
        else:
            ctx.fail(("scenarios",), f"expected a non-empty list of scenarios, got {show(items)}")
    elif isinstance(data, dict):
        entries = [((), data)]
    else:
        ctx.fail(
            (), f"expected a scenario (a mapping) or 'scenarios:' at the top, got {show(data)}"
        )
    scenarios = [_scenario(ctx, item, path, source) for path, item in entries]
    first: dict[str, int] = {}
    for path, item in entries:
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in first:
            where = (*path, "name")
            ctx.fail(where, f"duplicate scenario name {name!r} (first at line {first[name]})")
        elif isinstance(name, str):
            first[name] = ctx.position((*path, "name"))[0]
    errors = [_error(problem, source) for problem in ctx.all_problems()]
    return [scenario for scenario in scenarios if scenario is not None], errors


def load_scenarios_text(text: str, *, source: str = "<string>") -> list[Scenario]:
    """Load the scenarios of a YAML text.

    Args:
        text: the file's content.
        source: how messages name the file.

    Returns:
        The scenarios, in file order.

    Raises:
        ScenarioError: the first mistake, with :attr:`ScenarioError.errors` listing
            every mistake found; nothing is loaded when there is any.
    """
    scenarios, errors = _parse(text, source)
    if errors:
        raise _combined(errors)
    return scenarios


def _files(target: Path) -> list[Path]:
    if target.is_dir():
        found = [*target.rglob("*.yaml"), *target.rglob("*.yml")]
        return sorted(path for path in found if path.is_file())
    return [target]


def _load(files: Iterable[Path | ScenarioError]) -> tuple[list[Scenario], list[ScenarioError]]:
    scenarios: list[Scenario] = []
    errors: list[ScenarioError] = []
    seen: dict[str, Scenario] = {}
    for file in files:
        if isinstance(file, ScenarioError):
            errors.append(file)
            continue
        source = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            errors.append(ScenarioError("no such file or directory", path=source))
            continue
        except UnicodeDecodeError as exc:
            errors.append(ScenarioError(f"not UTF-8 text ({exc.reason})", path=source))
            continue
        except OSError as exc:
            errors.append(ScenarioError(f"cannot read the file: {exc.strerror}", path=source))
            continue
        found, problems = _parse(text, source)
        errors.extend(problems)
        for scenario in [] if problems else found:
            other = seen.setdefault(scenario.name, scenario)
            if other is not scenario:
                errors.append(
                    ScenarioError(
                        f"duplicate scenario name {scenario.name!r} (also in {other.location})",
                        path=source,
                        line=scenario.line,
                        column=1,
                        key_path="name",
                        value=scenario.name,
                    )
                )
            else:
                scenarios.append(scenario)
    return scenarios, errors


def _targets(paths: Iterable[str | os.PathLike[str]]) -> list[Path | ScenarioError]:
    files: list[Path | ScenarioError] = []
    for raw in paths:
        target = Path(raw)
        found = _files(target)
        if not found:
            message = "no scenario files (*.yaml, *.yml) in this directory"
            files.append(ScenarioError(message, path=str(target)))
        files.extend(found)
    return files


def load_scenarios(path: str | os.PathLike[str]) -> list[Scenario]:
    """Load the scenarios of a file, or of every ``*.yaml`` / ``*.yml`` file under a directory.

    Args:
        path: a scenario file, or a directory searched recursively (files in
            name order). Names must be unique across the files loaded together.

    Returns:
        The scenarios, in file order.

    Raises:
        ScenarioError: the first mistake, with :attr:`ScenarioError.errors` listing
            every mistake found; nothing is loaded when there is any.
    """
    scenarios, errors = _load(_targets([path]))
    if errors:
        raise _combined(errors)
    return scenarios


def validate(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[ScenarioError]:
    """Check scenario files and directories without loading anything else.

    The app import paths are checked for their form only: validation runs no
    user code.

    Args:
        paths: files, and directories searched recursively for ``*.yaml`` and
            ``*.yml`` (a directory without any is reported).

    Returns:
        Every mistake, one error each, in file and line order; empty when all is valid.
    """
    targets = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    return _load(_targets(targets))[1]

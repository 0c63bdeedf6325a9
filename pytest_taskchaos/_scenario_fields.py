"""Checks of single fields of scenario files, and how their messages quote values.

Shared by the value classes (:mod:`pytest_taskchaos._scenario_values`), the YAML
reader (:mod:`pytest_taskchaos._scenario_reader`) and
:mod:`pytest_taskchaos.scenario`. A check that fails raises ``ConfigurationError``
whose ``key`` names the field.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from string import Formatter
from typing import TYPE_CHECKING, Final, TypeVar

from resilience.errors import ConfigurationError
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "NUMBER",
    "bad_value",
    "check_import_path",
    "check_int",
    "check_name",
    "check_placeholders",
    "check_text",
    "did_you_mean",
    "duration",
    "failure_type",
    "is_duration_text",
    "member_of",
    "positive",
    "show",
]

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


def bad_value(message: str, key: str | None, value: object) -> ConfigurationError:
    """The error of a bad field: ``message``, naming ``key`` and carrying ``value``."""
    return ConfigurationError(message, key=key, value=value)


# --------------------------------------------------------------------------- field checks

_NAME = re.compile(r"[a-z0-9_-]+")
_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_PATH = re.compile(rf"{_IDENTIFIERS}:{_IDENTIFIERS}")


def check_name(value: object, key: str = "name") -> str:
    """A scenario name or tag: lowercase letters, digits, ``-`` and ``_``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        message = f"expected a name of lowercase letters, digits, '-' and '_', got {show(value)}"
        raise bad_value(message, key, value)
    return value


def check_import_path(value: object, key: str = "app") -> str:
    """``"module:attribute"``, checked for its form only (nothing is imported)."""
    if not isinstance(value, str) or not _IMPORT_PATH.fullmatch(value):
        raise bad_value(
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
        raise bad_value(f"expected an integer{bound}, got {show(value)}", key, value)
    return value


def positive(value: object, key: str) -> float:
    """``value`` (seconds or a ``timedelta``) as a finite number of seconds > 0."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise bad_value(f"expected a number > 0, got {show(value)}", key, value)
    return float(seconds)


def check_text(value: object, key: str, *, empty: bool = True) -> str:
    """``value`` as a string; with ``empty=False``, one with more than blanks."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise bad_value(
            f"expected {'a' if empty else 'a non-empty'} string, got {show(value)}", key, value
        )
    return value


_E = TypeVar("_E", bound=StrEnum)


def member_of(enum: type[_E], value: object, key: str) -> _E:
    """The member of ``enum`` whose value is ``value``; the error lists the valid ones."""
    valid = [member.value for member in enum]
    if isinstance(value, str) and value in valid:
        return enum(value)
    raise bad_value(
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
    raise bad_value(
        f"unknown failure type {show(value)}{hint} Valid types: {', '.join(valid)}", key, value
    )


NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
"""A plain decimal number, as durations and comparisons write it."""
_PART = re.compile(rf"({NUMBER})\s*(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{NUMBER}\s*(?:ms|s|m|h|d)\s*)+")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def is_duration_text(value: object) -> bool:
    """Whether ``value`` is a duration written with units (``"30s"``, ``"1h30m"``)."""
    return isinstance(value, str) and _DURATION.fullmatch(value.strip()) is not None


def duration(value: object, key: str | None = None) -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"2d"``."""
    seconds: float | None = None
    plain = isinstance(value, str) and re.fullmatch(NUMBER, value.strip())
    if (isinstance(value, int | float) and not isinstance(value, bool)) or plain:
        seconds = float(value)  # type: ignore[arg-type]  # a number or a number's text
    elif is_duration_text(value):
        parts = _PART.findall(str(value))
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        message = "expected a duration >= 0 (seconds, or text like '90s', '5m', '1h30m')"
        raise bad_value(f"{message}, got {show(value)}", key, value)
    return seconds


_PLACEHOLDERS: Final = ("n", "key")


def check_placeholders(value: object, key: str) -> None:
    """Every string in ``value`` may use ``{n}`` and ``{key}`` only (``key``: dotted path)."""
    items: Iterable[tuple[object, object]] = ()
    if isinstance(value, list | tuple):
        items = enumerate(value)
    elif isinstance(value, Mapping):
        items = value.items()
    for name, item in items:
        check_placeholders(item, f"{key}.{name}")
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
        raise bad_value(
            f"{problem} in {value!r}: the placeholders are {{n}} (the message's index) and "
            "{key} (its key's index); write {{ and }} for literal braces",
            key,
            value,
        )

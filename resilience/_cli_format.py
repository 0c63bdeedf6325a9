"""What every store-reading ``resilience`` subcommand shares: errors, input parsing, output.

Exit statuses (documented in ``docs/cli.md``): :data:`OK`, :data:`NOTHING` (not
found, nothing done, a conflict), :data:`USAGE` (bad input, refused prompt
without ``--yes``), :data:`UNAVAILABLE` (the store did not answer).
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ParamSpec, TextIO, TypeVar

from resilience import _operations
from resilience.errors import ConfigurationError
from resilience.storage import open_store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from resilience.storage.base import Store

__all__ = [
    "NOTHING",
    "OK",
    "UNAVAILABLE",
    "USAGE",
    "CommandError",
    "confirm",
    "dump_json",
    "iso",
    "member",
    "open_cli_store",
    "parse_duration",
    "parse_instant",
    "suggest",
    "table",
    "usage_errors",
]

OK = 0
"""Success."""
NOTHING = 1
"""Not found, nothing done, or a conflict (someone acted on the record first)."""
USAGE = 2
"""Bad input: an unknown name, a malformed date or duration, a refused prompt."""
UNAVAILABLE = 3
"""The store could not be reached."""

E = TypeVar("E", bound=StrEnum)
P = ParamSpec("P")
R = TypeVar("R")


class CommandError(Exception):
    """A subcommand failed in a way the user must hear about: a message and an exit status.

    Args:
        message: what went wrong, naming the input.
        status: the exit status (:data:`NOTHING`, :data:`USAGE`, :data:`UNAVAILABLE`).
    """

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def open_cli_store(url: str | None) -> Store:
    """Open ``--store URL`` (default: ``$RESILIENCE_STORE_URL``, then the library default).

    Raises:
        CommandError: a malformed URL or unknown scheme (status :data:`USAGE`).
    """
    try:
        return open_store(url)
    except ConfigurationError as exc:
        raise CommandError(f"--store: {exc}", status=USAGE) from None


def suggest(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the closest of ``choices``, or ``""``."""
    return _operations.suggest(value, choices)


def usage_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Turn the :class:`ConfigurationError` of a shared parser into a :data:`USAGE` error."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except ConfigurationError as exc:
            raise CommandError(str(exc), status=USAGE) from None

    return wrapper


def member(kind: type[E], value: str, *, option: str) -> E:
    """Parse an enum member by value or name, case-insensitively.

    Raises:
        CommandError: an unknown name; the message lists the valid ones (:data:`USAGE`).
    """
    return usage_errors(_operations.member)(kind, value, option=option)


def parse_instant(value: str, *, option: str) -> float:
    """Parse ``--since``/``--until``: ISO 8601 (naive means UTC) or epoch seconds.

    Raises:
        CommandError: neither form (:data:`USAGE`).
    """
    return usage_errors(_operations.parse_instant)(value, option=option)


def parse_duration(value: str, *, option: str) -> float:
    """Parse a duration: a number with an optional unit ``s``, ``m``, ``h``, ``d`` or ``w``.

    Raises:
        CommandError: another form (:data:`USAGE`).
    """
    return usage_errors(_operations.parse_duration)(value, option=option)


def iso(seconds: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), or ``-`` for ``None``."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows as aligned, left-justified columns under a header line."""
    cells = [list(headers)] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def dump_json(data: Any) -> str:
    """``data`` as indented JSON (what ``--json`` prints)."""
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False)


def confirm(question: str, *, yes: bool, stdin: TextIO | None = None) -> None:
    """Ask before a destructive action, unless ``--yes``.

    Args:
        question: the question, stating what will happen to how many records.
        yes: ``--yes`` was given.
        stdin: where the answer comes from (default: ``sys.stdin``).

    Raises:
        CommandError: stdin is not a terminal and ``--yes`` is missing (:data:`USAGE`),
            or the user did not answer yes (:data:`NOTHING`).
    """
    if yes:
        return
    source = sys.stdin if stdin is None else stdin
    if not source.isatty():
        raise CommandError(
            "this needs confirmation and stdin is not a terminal: pass --yes to confirm; "
            "nothing done",
            status=USAGE,
        )
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = source.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CommandError("not confirmed; nothing done", status=NOTHING)

"""A light ``ExceptionInfo`` for Celery's tracer inside a simulation.

Celery's tracer wraps every failed or retried attempt in billiard's
``ExceptionInfo``, which copies every frame's code positions into picklable
objects and renders the traceback with source lines and caret anchors: about a
millisecond per failure, for pickling that a simulation (one process, nothing
crosses a pipe) never does. This one keeps the real traceback object and renders
file, line and function per frame, without source lines. The text is made at
once: Celery's tracer reads it for every retry and failure (the backend call takes
it as an argument, ``traceback_clear(einfo.exception)`` reads the wrapper), so a
lazy one would never be skipped.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from billiard.einfo import (  # type: ignore[import-untyped]
    ExceptionInfo,
    ExceptionWithTraceback,
)

__all__ = ["LightExceptionInfo", "render"]


def render(exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> str:
    """A traceback's text: one line per frame (file, line, function), then the exception."""
    lines = ["Traceback (most recent call last):\n"]
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
        tb = tb.tb_next
    lines.extend(_exception_only(exc_type, exc))
    return "".join(lines)


def _exception_only(exc_type: type[BaseException] | None, exc: BaseException | None) -> list[str]:
    # traceback.format_exception_only builds a TracebackException, walking the whole
    # chain of causes and their stacks only to print the last line: most of a
    # failure's cost here. The common case gets the same text directly.
    if (
        exc_type is None
        or exc is None
        or issubclass(exc_type, SyntaxError)
        or hasattr(exc, "__notes__")
    ):
        return traceback.format_exception_only(exc_type, exc)
    name = exc_type.__qualname__
    module = exc_type.__module__
    if module not in {"__main__", "builtins"}:
        name = f"{module}.{name}"
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 -- what the traceback module prints for a broken __str__
        text = "<exception str() failed>"
    return [f"{name}: {text}\n" if text else f"{name}\n"]


class LightExceptionInfo(ExceptionInfo):  # type: ignore[misc]
    """billiard's ``ExceptionInfo`` without the frame copies (same attributes)."""

    def __init__(self, exc_info: Any = None, internal: bool = False) -> None:
        exc_type, exception, tb = exc_info or sys.exc_info()
        self.type = exc_type
        self.tb = tb
        self.traceback = render(exc_type, exception, tb)
        self.internal = internal
        self.exception = ExceptionWithTraceback(exception, self.traceback)

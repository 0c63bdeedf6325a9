"""A light ``ExceptionInfo`` for Celery's tracer inside a simulation.

Celery's tracer wraps every failed or retried attempt in billiard's
``ExceptionInfo``, which copies every frame's code positions into picklable
objects and renders the traceback with source lines and caret anchors: about a
millisecond per failure, for pickling that a simulation (one process, nothing
crosses a pipe) never does. This one keeps the real traceback object and renders
file, line and function per frame, without source lines.
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
    lines.extend(
        f'  File "{frame.f_code.co_filename}", line {lineno}, in {frame.f_code.co_name}\n'
        for frame, lineno in traceback.walk_tb(tb)
    )
    lines.extend(traceback.format_exception_only(exc_type, exc))
    return "".join(lines)


class LightExceptionInfo(ExceptionInfo):  # type: ignore[misc]
    """billiard's ``ExceptionInfo`` without the frame copies (same attributes)."""

    def __init__(self, exc_info: Any = None, internal: bool = False) -> None:
        exc_type, exception, tb = exc_info or sys.exc_info()
        self.type = exc_type
        self.tb = tb
        self.traceback = render(exc_type, exception, tb)
        self.internal = internal
        self.exception = ExceptionWithTraceback(exception, self.traceback)

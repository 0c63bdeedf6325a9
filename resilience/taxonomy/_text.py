"""Safe text extraction from exceptions: names, messages and class-name words.

Everything here must survive hostile input: ``__str__`` that raises, megabyte
messages, bytes that are not UTF-8, ``args`` holding arbitrary objects.
"""

from __future__ import annotations

import re

__all__ = [
    "MESSAGE_LIMIT",
    "class_words",
    "message_of",
    "qualified_name",
    "short_text",
]

# Patterns only ever look at the head of a message: a 1 MB message costs the
# same as a 4 KB one, and every phrase we match appears in the first lines.
MESSAGE_LIMIT = 4096

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def qualified_name(cls: type) -> str:
    """``module.QualName`` of ``cls``, tolerant of classes with odd attributes.

    Args:
        cls: any class.

    Returns:
        The qualified name, for example ``"requests.exceptions.ConnectionError"``.
    """
    try:
        module: object = cls.__module__
        qualname: object = cls.__qualname__
    except Exception:  # noqa: BLE001 - a metaclass may raise on attribute access
        return "<unnamed>"
    if not isinstance(module, str) or not isinstance(qualname, str):
        return "<unnamed>"
    return f"{module}.{qualname}"


def _text_of(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value[:MESSAGE_LIMIT]).decode("utf-8", errors="replace")
    return repr(value)


def message_of(exc: BaseException) -> str:
    """The head of ``str(exc)``, never raising and never longer than :data:`MESSAGE_LIMIT`.

    Args:
        exc: the exception.

    Returns:
        ``str(exc)`` cut to the limit; when ``__str__`` raises or returns a
        non-string, the ``args`` rendered one by one instead (bytes decoded with
        replacement characters); ``""`` when even that fails.
    """
    try:
        text = exc.__str__()
    except Exception:  # noqa: BLE001 - any __str__ may raise; the args are the fallback
        text = None
    if isinstance(text, str):
        return text[:MESSAGE_LIMIT]
    try:
        args: object = exc.args
        if not isinstance(args, tuple):
            return ""
        parts: list[str] = []
        size = 0
        for arg in args[:8]:
            part = _text_of(arg)[:MESSAGE_LIMIT]
            parts.append(part)
            size += len(part)
            if size >= MESSAGE_LIMIT:
                break
        return " ".join(parts)[:MESSAGE_LIMIT]
    except Exception:  # noqa: BLE001 - a hostile __repr__ inside args
        return ""


def short_text(text: str, *, limit: int = 80) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1] + "\u2026"


def class_words(name: str) -> tuple[str, ...]:
    """Lower-case words of a class name, splitting CamelCase, acronyms and underscores.

    Args:
        name: a class ``__name__`` (``"PaymentGatewayTimeout"``, ``"HTTPError"``).

    Returns:
        The words (``("payment", "gateway", "timeout")``, ``("http", "error")``).
    """
    return tuple(word.lower() for word in _WORD.findall(name[:200]))

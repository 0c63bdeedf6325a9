"""What a dead letter stores about a failure: JSON arguments, scrubbed texts, size caps, flags.

Also the argument checks shared by the queue's methods, so each rejects a bad
value with a :class:`~resilience.errors.ConfigurationError` naming it.
"""

from __future__ import annotations

import math
import secrets
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from resilience._redaction import truncate_data, truncate_text
from resilience._serialization import to_jsonable
from resilience.clock import seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from enum import StrEnum

    from resilience._redaction import Redaction

__all__ = [
    "FLAG_ORDER",
    "Payload",
    "capture",
    "check_count",
    "check_duration",
    "check_failure",
    "check_finite",
    "check_instant",
    "check_limit",
    "check_member",
    "check_members",
    "check_optional_text",
    "check_text",
    "new_id",
    "qualified_name",
    "safe_message",
]

FLAG_ORDER = ("non_json", "redacted", "truncated")
"""Every flag a record can carry, in the order records list them."""

_E = TypeVar("_E", bound="StrEnum")


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """A failure made ready to store.

    Attributes:
        exception_class: the exception's qualified class name.
        message: the scrubbed, capped message.
        traceback: the scrubbed, capped traceback (with the cause chain).
        args: JSON positional arguments, redacted and capped.
        kwargs: JSON keyword arguments, redacted and capped.
        notes: the extra texts, scrubbed (not capped).
        flags: which of :data:`FLAG_ORDER` apply.
    """

    exception_class: str
    message: str
    traceback: str
    args: list[Any]
    kwargs: dict[str, Any]
    notes: tuple[str, ...]
    flags: tuple[str, ...]


def capture(
    exc: BaseException,
    *,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    traceback_text: str | None,
    notes: tuple[str, ...],
    redaction: Redaction,
    max_bytes: int,
) -> Payload:
    """Encode, redact and cap one failure (redaction first, so no cut splits a secret)."""
    args_data, args_lossy = to_jsonable(list(args))
    kwargs_data, kwargs_lossy = to_jsonable(dict(kwargs or {}))
    formatted = traceback_text if traceback_text is not None else _format_traceback(exc)
    redacted = redaction.apply(
        args=args_data, kwargs=kwargs_data, texts=(safe_message(exc), formatted, *notes)
    )
    message, cut_message = truncate_text(redacted.texts[0], max_bytes)
    tb_text, cut_traceback = truncate_text(redacted.texts[1], max_bytes)
    stored_args, cut_args = truncate_data(redacted.args, max_bytes)
    stored_kwargs, cut_kwargs = truncate_data(redacted.kwargs, max_bytes)
    present = (
        args_lossy or kwargs_lossy,
        redacted.changed,
        cut_message or cut_traceback or cut_args or cut_kwargs,
    )
    return Payload(
        exception_class=qualified_name(type(exc)),
        message=message,
        traceback=tb_text,
        args=stored_args,
        kwargs=stored_kwargs,
        notes=redacted.texts[2:],
        flags=tuple(name for name, on in zip(FLAG_ORDER, present, strict=True) if on),
    )


def new_id(at: float) -> str:
    """A time-ordered id unique across processes: ``<epoch ms, 13 digits>-<16 hex>``."""
    # Millisecond prefix: ids sort by creation time; 64 random bits: no collisions.
    return f"{max(0, round(at * 1000)):013d}-{secrets.token_hex(8)}"


def qualified_name(kind: type[BaseException]) -> str:
    """``module.QualName`` of an exception class (bare for builtins)."""
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def safe_message(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when its ``__str__`` itself fails."""
    try:
        return str(exc)
    except Exception as error:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<unprintable {type(exc).__name__}: {type(error).__name__}>"


def _format_traceback(exc: BaseException) -> str:
    # From the exception object, never format_exc(): outside an except block that
    # returns "NoneType: None" and the traceback is lost.
    try:
        return "".join(traceback.format_exception(exc))
    except Exception as error:  # noqa: BLE001 - a broken exception must not lose the record
        return (
            f"{qualified_name(type(exc))}: {safe_message(exc)}\n"
            f"(traceback could not be formatted: {type(error).__name__})\n"
        )


# --------------------------------------------------------------------------- checks


def check_failure(
    *,
    task_name: object,
    exc: object,
    args: object,
    kwargs: object,
    retry_count: object,
    priority: object,
    optional_texts: Mapping[str, object],
) -> None:
    """Reject bad arguments of ``DeadLetterQueue.add`` (each error names its argument)."""
    check_text("task_name", task_name)
    if not isinstance(exc, BaseException):
        raise ConfigurationError(f"exc must be an exception, got {exc!r}", key="exc", value=exc)
    check_count("retry_count", retry_count)
    check_limit(priority, key="priority", minimum=0, maximum=9)
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise ConfigurationError(f"args must be a list or tuple, got {args!r}", key="args")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"kwargs must be a mapping, got {kwargs!r}", key="kwargs")
    for key, value in optional_texts.items():
        check_optional_text(key, value)


def check_duration(key: str, value: object) -> float:
    """Seconds from a number or a ``timedelta``, finite and >= 0."""
    try:
        seconds = seconds_of(value, name=key)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(str(exc), key=key, value=value) from exc
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(
            f"{key} must be finite and >= 0, got {value!r}", key=key, value=value
        )
    return seconds


def check_text(key: str, value: object) -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"{key} must be a non-empty string, got {value!r}", key=key, value=value
        )
    return value


def check_optional_text(key: str, value: object) -> str | None:
    """``value`` if it is a string or ``None``."""
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            f"{key} must be a str or None, got {value!r}", key=key, value=value
        )
    return value


def check_count(key: str, value: object) -> int:
    """``value`` if it is an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{key} must be an int >= 0, got {value!r}", key=key, value=value)
    return value


def check_finite(key: str, value: object) -> float:
    """``value`` as a float if it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(
            f"{key} must be a finite number of seconds, got {value!r}", key=key, value=value
        )
    return float(value)


def check_limit(value: object, *, key: str, maximum: int, minimum: int = 1) -> int:
    """``value`` if it is an int in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigurationError(
            f"{key} must be an int in {minimum}..{maximum}, got {value!r}", key=key, value=value
        )
    return value


def check_instant(key: str, value: object) -> float | None:
    """Epoch seconds from a number or an aware datetime; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError(
                f"{key} must be an aware datetime (a naive one names no instant), got {value!r}",
                key=key,
                value=value,
            )
        return value.timestamp()
    return check_finite(key, value)


def check_member(enum: type[_E], value: object, *, key: str) -> _E:
    """The member of ``enum`` whose value is ``value``."""
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    choices = ", ".join(member.value for member in enum)
    raise ConfigurationError(f"{key} must be one of {choices}; got {value!r}", key=key, value=value)


def check_members(enum: type[_E], value: object, *, key: str) -> frozenset[_E] | None:
    """One member or several (any iterable of them), as a set; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({check_member(enum, value, key=key)})
    if not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{key} must be a {enum.__name__}, a string or several of them, got {value!r}",
            key=key,
            value=value,
        )
    return frozenset(check_member(enum, item, key=key) for item in value)

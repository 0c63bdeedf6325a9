"""HTTP evidence: status codes to failure types, and how long the server asked us to wait.

Statuses are read as numbers from response objects (``requests``, ``httpx``,
``aiohttp``, ``urllib``, botocore's response dict, any SDK exposing
``status_code``); the mapping lives in :data:`STATUS_TYPES` and is documented
in ``docs/taxonomy.md``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import TYPE_CHECKING

from resilience.taxonomy._vocabulary import FailureType

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "STATUS_TYPES",
    "headers_retry_after",
    "parse_retry_after",
    "status_failure_type",
    "status_label",
    "status_of",
]

_T = FailureType

STATUS_TYPES: Mapping[int, FailureType] = {
    400: _T.PERMANENT_VALIDATION,
    401: _T.PERMANENT_PERMISSION,
    403: _T.PERMANENT_PERMISSION,
    404: _T.PERMANENT_NOT_FOUND,
    405: _T.PERMANENT_LOGIC,
    407: _T.PERMANENT_PERMISSION,
    408: _T.EXTERNAL_TIMEOUT,
    409: _T.PERMANENT_VALIDATION,
    410: _T.PERMANENT_NOT_FOUND,
    411: _T.PERMANENT_VALIDATION,
    412: _T.PERMANENT_VALIDATION,
    413: _T.PERMANENT_VALIDATION,
    414: _T.PERMANENT_VALIDATION,
    415: _T.PERMANENT_VALIDATION,
    422: _T.PERMANENT_VALIDATION,
    423: _T.TRANSIENT_RESOURCE,
    429: _T.TRANSIENT_RATE_LIMIT,
    500: _T.EXTERNAL_API_ERROR,
    502: _T.EXTERNAL_API_DOWN,
    503: _T.EXTERNAL_API_DOWN,
    504: _T.EXTERNAL_TIMEOUT,
    # Cloudflare's origin statuses: 521/523 mean the origin is unreachable,
    # 522/524 that it did not answer in time.
    521: _T.EXTERNAL_API_DOWN,
    522: _T.EXTERNAL_TIMEOUT,
    523: _T.EXTERNAL_API_DOWN,
    524: _T.EXTERNAL_TIMEOUT,
}

_NUMBER = re.compile(r"-?\d{1,15}(?:\.\d{1,9})?")
# Reset headers above this are epoch timestamps (GitHub style), below it deltas.
_EPOCH_THRESHOLD = 1_000_000_000.0


def status_of(value: object) -> int | None:
    """``value`` as an HTTP status (100..599), or ``None`` when it is not one.

    Args:
        value: an ``int`` (``HTTPStatus`` included) or a three-digit string.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) == 3 and value.isdigit()):
        status = int(value)
    else:
        return None
    return status if 100 <= status <= 599 else None


def status_failure_type(status: int) -> FailureType | None:
    """The failure type an HTTP error status means, ``None`` for 1xx-3xx."""
    mapped = STATUS_TYPES.get(status)
    if mapped is not None:
        return mapped
    if 500 <= status <= 599:
        return _T.EXTERNAL_API_ERROR
    if 400 <= status <= 499:
        # Any other client error: the API refused this request as sent.
        return _T.EXTERNAL_API_ERROR
    return None


def status_label(status: int) -> str:
    """``"429 (Too Many Requests)"`` for a known status, else just the number."""
    try:
        return f"{status} ({HTTPStatus(status).phrase})"
    except ValueError:
        return str(status)


def parse_retry_after(value: object, now: Callable[[], float]) -> float | None:
    """Seconds to wait from a Retry-After-like value; ``None`` for garbage, never raises.

    Args:
        value: delta-seconds (number, numeric string or bytes), an HTTP-date
            string, a ``timedelta`` or an aware ``datetime``.
        now: returns the current epoch time; called only for dates.

    Returns:
        Seconds (a date or negative number in the past gives ``0.0``), or ``None``.
    """
    try:
        return _parse(value, now)
    except Exception:  # noqa: BLE001 - a server's header must never break classification
        return None


def _finite(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _parse(value: object, now: Callable[[], float]) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _finite(float(value))
    if isinstance(value, timedelta):
        return _finite(value.total_seconds())
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return None
        return _finite(value.timestamp() - now())
    if isinstance(value, bytes):
        value = value[:128].decode("latin-1")
    if not isinstance(value, str):
        return None
    text = value.strip()[:128]
    if not text:
        return None
    if _NUMBER.fullmatch(text):
        return _finite(float(text))
    moment = parsedate_to_datetime(text)
    if moment.tzinfo is None:
        return None
    return _finite(moment.timestamp() - now())


def _lookup(headers: object) -> Callable[[str], object] | None:
    if type(headers) is dict:
        # Plain dicts (botocore's HTTPHeaders, hand-made ones) are case-sensitive:
        # index them by lower-case name once.
        lowered = {str(key).lower(): value for key, value in list(headers.items())[:64]}
        return lambda name: lowered.get(name.lower())
    getter = getattr(headers, "get", None)
    # requests', httpx's and aiohttp's header containers and email.Message
    # are case-insensitive already.
    return getter if callable(getter) else None


def headers_retry_after(headers: object, now: Callable[[], float]) -> tuple[float, str] | None:
    """How long a response's headers ask us to wait, and which header said so.

    Reads ``Retry-After`` (delta-seconds or HTTP-date), then ``RateLimit-Reset``
    and ``X-RateLimit-Reset-After`` (deltas), then ``X-RateLimit-Reset``
    (an epoch timestamp when larger than 10^9, else a delta).

    Args:
        headers: any mapping-like object with ``get`` (case-insensitive or not).
        now: returns the current epoch time.

    Returns:
        ``(seconds, header_name)`` or ``None``; never raises.
    """
    if headers is None:
        return None
    try:
        get = _lookup(headers)
        if get is None:
            return None
        for name in ("Retry-After", "RateLimit-Reset", "X-RateLimit-Reset-After"):
            seconds = parse_retry_after(get(name), now)
            if seconds is not None:
                return seconds, name
        raw = get("X-RateLimit-Reset")
        seconds = parse_retry_after(raw, now)
        if seconds is not None:
            if seconds > _EPOCH_THRESHOLD:
                remaining = _finite(seconds - now())
                if remaining is None:
                    return None
                seconds = remaining
            return seconds, "X-RateLimit-Reset"
    except Exception:  # noqa: BLE001 - header containers from any library, any behaviour
        return None
    return None

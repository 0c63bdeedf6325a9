"""Class-scoped refinements: evidence that only means something on one library's class.

"database is locked" on ``sqlite3.OperationalError``, ``OOM`` at the start of a
redis ``ResponseError``, a ``KeyError`` raised by ``os.environ.__getitem__``:
each refiner runs only for the classes whose table entry lists it, so its
patterns can be specific without over-matching elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from resilience.taxonomy._http import parse_retry_after, status_failure_type, status_label
from resilience.taxonomy._text import short_text
from resilience.taxonomy._verdict import Subject, Verdict
from resilience.taxonomy._vocabulary import FailureType

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resilience.taxonomy._probes import Probe

__all__ = [
    "REFINED",
    "attribute_settings_probe",
    "celery_retry_probe",
    "django_config_probe",
    "environ_key_probe",
    "message_refiner",
    "psycopg_message_probe",
    "pydantic_settings_probe",
    "redis_response_probe",
    "sqlalchemy_url_probe",
    "sqlite_message_probe",
    "urllib3_response_probe",
]

_T = FailureType
# A specific phrase on a specific class: above a bare class name, below a code.
REFINED = 0.9


def message_refiner(
    rules: Sequence[tuple[str, FailureType, str]],
    *,
    confidence: float = REFINED,
    needs: str = "",
) -> Probe:
    """A probe trying ``(regex, failure_type, label)`` rules in order on the message head.

    Args:
        rules: case-insensitive patterns with the type they mean and a short label.
        confidence: the confidence of a match.
        needs: a lower-case substring without which no rule can match (skips the
            regexes cheaply on the common path).

    Returns:
        The probe.
    """
    compiled = tuple(
        (re.compile(pattern, re.IGNORECASE), ft, label) for pattern, ft, label in rules
    )

    def probe(subject: Subject) -> Verdict | None:
        text = subject.message
        if not text or (needs and needs not in text.lower()):
            return None
        for regex, failure_type, label in compiled:
            if regex.search(text):
                return Verdict(
                    failure_type, confidence, f"message pattern {label!r} on {subject.name}"
                )
        return None

    return probe


sqlite_message_probe = message_refiner(
    [
        (r"database (?:table )?is locked", _T.TRANSIENT_DATABASE, "database is locked"),
        (r"database or disk is full", _T.SYSTEM_DISK_FULL, "database or disk is full"),
        (
            r"no such (?:table|column|function)|syntax error|has no column",
            _T.PERMANENT_LOGIC,
            "no such table/column",
        ),
        (r"unable to open database file", _T.CONFIG_INVALID_SETTING, "unable to open database"),
        (r"attempt to write a readonly database", _T.PERMANENT_PERMISSION, "readonly database"),
        (r"constraint failed", _T.PERMANENT_VALIDATION, "constraint failed"),
    ]
)

psycopg_message_probe = message_refiner(
    [
        (
            r"password authentication failed|no pg_hba\.conf entry|role \S+ does not exist",
            _T.PERMANENT_PERMISSION,
            "authentication failed",
        ),
        (r"database \S+ does not exist", _T.CONFIG_INVALID_SETTING, "database does not exist"),
        (
            r"temporary failure in name resolution",
            _T.TRANSIENT_NETWORK,
            "temporary failure in name resolution",
        ),
        (
            (
                r"could not translate host name|failed to resolve host|name or service not known"
                r"|nodename nor servname"
            ),
            _T.CONFIG_INVALID_SETTING,
            "unknown host name",
        ),
        (
            r"no space left on device|could not extend file",
            _T.SYSTEM_DISK_FULL,
            "no space left on device",
        ),
        (r"out of memory", _T.SYSTEM_OUT_OF_MEMORY, "out of memory"),
        (
            (
                r"deadlock detected|could not serialize access|could not obtain lock|"
                r"lock timeout|too many connections|remaining connection slots|"
                r"server closed the connection unexpectedly|terminating connection|"
                r"connection refused|could not connect|connection timed out|"
                r"the database system is|connection (?:is|already) closed|ssl syscall error"
            ),
            _T.TRANSIENT_DATABASE,
            "connection or contention failure",
        ),
    ]
)

redis_response_probe = message_refiner(
    [
        (r"^OOM\b", _T.SYSTEM_OUT_OF_MEMORY, "OOM command not allowed"),
        (
            r"^(?:LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|MOVED|ASK|BUSY)\b",
            _T.TRANSIENT_DATABASE,
            "server busy, failing over or resharding",
        ),
        (r"max number of clients reached", _T.TRANSIENT_DATABASE, "max number of clients"),
        (r"^MISCONF\b", _T.SYSTEM_DISK_FULL, "MISCONF unable to persist to disk"),
        (
            r"^(?:NOAUTH|WRONGPASS|NOPERM)\b|invalid password|invalid username-password",
            _T.PERMANENT_PERMISSION,
            "authentication or ACL refused",
        ),
        (
            r"^(?:WRONGTYPE|NOSCRIPT|EXECABORT)\b|unknown command|wrong number of arguments",
            _T.PERMANENT_LOGIC,
            "command misuse",
        ),
        (
            r"is not an integer|is not a valid float|out of range",
            _T.PERMANENT_VALIDATION,
            "invalid value",
        ),
    ]
)

django_config_probe = message_refiner(
    [
        (
            (
                r"settings are not configured|must not be empty|must be set|is not set|"
                r"environment variable|you must (?:either )?define|is missing"
            ),
            _T.CONFIG_MISSING_SETTING,
            "setting missing",
        ),
    ]
)

sqlalchemy_url_probe = message_refiner(
    [
        (
            r"could not parse (?:sqlalchemy|rfc1738) url|invalid url",
            _T.CONFIG_INVALID_SETTING,
            "could not parse database URL",
        ),
    ]
)

attribute_settings_probe = message_refiner(
    [
        (
            (
                r"'(?:LazySettings|Settings|UserSettingsHolder)' object has no attribute|"
                r"module 'django\.conf\.global_settings' has no attribute"
            ),
            _T.CONFIG_MISSING_SETTING,
            "settings object has no attribute",
        ),
    ],
    confidence=0.85,
    needs="has no attribute",
)

_TOO_MANY_RESPONSES = re.compile(r"too many (\d{3}) error responses", re.IGNORECASE)


def urllib3_response_probe(subject: Subject) -> Verdict | None:
    """urllib3 ``ResponseError("too many 503 error responses")``: the status in its fixed text."""
    match = _TOO_MANY_RESPONSES.search(subject.message)
    if match is None:
        return None
    status = int(match.group(1))
    failure_type = status_failure_type(status)
    if failure_type is None:
        return None
    return Verdict(
        failure_type,
        REFINED,
        f"HTTP status {status_label(status)} in urllib3's retry message on {subject.name}",
    )


# --------------------------------------------------------------------------- settings

_SETTING_SUFFIXES = re.compile(
    r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_(?:URL|URI|DSN|KEY|SECRET|TOKEN|HOST|PORT|USER|USERNAME|"
    r"PASSWORD|PATH|DIR|REGION|BUCKET|ENDPOINT|API_KEY|SETTINGS|CONFIG|ENV)$"
)


def environ_key_probe(subject: Subject) -> Verdict | None:
    """A ``KeyError`` raised by ``os.environ[...]``: a missing environment variable.

    The traceback's last frame is ``__getitem__`` in module ``os`` (``os._Environ``).
    Without a traceback, a key shaped like a setting name (``DATABASE_URL``,
    ``STRIPE_API_KEY``) is weaker evidence of the same thing.
    """
    exc = subject.exc
    key = exc.args[0] if len(exc.args) == 1 else None
    shown = short_text(repr(key), limit=60)
    tb = exc.__traceback__
    last = None
    steps = 0
    while tb is not None and steps < 256:
        last = tb
        tb = tb.tb_next
        steps += 1
    if last is not None:
        frame = last.tb_frame
        if frame.f_code.co_name == "__getitem__" and frame.f_globals.get("__name__") == "os":
            return Verdict(
                _T.CONFIG_MISSING_SETTING,
                REFINED,
                f"exception class builtins.KeyError raised by os.environ[{shown}] "
                "(traceback ends in os.__getitem__)",
            )
    if isinstance(key, str) and _SETTING_SUFFIXES.match(key):
        return Verdict(
            _T.CONFIG_MISSING_SETTING,
            0.65,
            f"KeyError key {shown} is shaped like a setting name on {subject.name}",
        )
    return None


def pydantic_settings_probe(subject: Subject) -> Verdict | None:
    """A pydantic ``ValidationError`` on a ``*Settings`` model where every error is ``missing``."""
    exc = subject.exc
    title = getattr(exc, "title", None)
    if not isinstance(title, str) or not title.endswith(("Settings", "Config")):
        return None
    errors_method = getattr(exc, "errors", None)
    if errors_method is None:
        return None
    errors = errors_method()
    if not isinstance(errors, list) or not errors:
        return None
    missing = [e for e in errors[:50] if isinstance(e, Mapping) and e.get("type") == "missing"]
    if len(missing) != len(errors[:50]):
        return None
    fields = ", ".join(".".join(str(part) for part in e.get("loc", ())) for e in missing[:5])
    return Verdict(
        _T.CONFIG_MISSING_SETTING,
        REFINED,
        f"pydantic settings model {short_text(title, limit=60)} is missing {fields} "
        f"on {subject.name}",
    )


def celery_retry_probe(subject: Subject) -> Verdict | None:
    """Celery's ``Retry``: no type of its own, but ``.when`` is how long to wait."""
    when = getattr(subject.exc, "when", None)
    if isinstance(when, datetime | timedelta | int | float | str):
        seconds = parse_retry_after(when, subject.now)
    else:
        seconds = None
    return Verdict(
        FailureType.UNKNOWN,
        0.3,
        f"exception class {subject.name} (Celery retry request without a cause)",
        defer=True,
        retry_after=seconds,
    )

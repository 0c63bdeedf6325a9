"""Weak evidence: phrases in messages of generic exceptions, and words in class names.

Message patterns run only when an exception's class says little (``Exception``,
``RuntimeError``, an unknown library's base class, ``ValueError``). HTTP
statuses are taken from text only in HTTP context ("HTTP 429",
"429 Too Many Requests", "status code 503", "503 Server Error"), so "order 4291
failed" is not a rate limit. Class-name words ("RateLimitedError",
"PaymentGatewayTimeout") score lower still.
"""

from __future__ import annotations

import re

from resilience.taxonomy._http import status_failure_type, status_label
from resilience.taxonomy._text import class_words
from resilience.taxonomy._verdict import Subject, Verdict
from resilience.taxonomy._vocabulary import FailureType

__all__ = ["MESSAGE_CONFIDENCE", "WORDS_CONFIDENCE", "message_verdict", "words_verdict"]

_T = FailureType
MESSAGE_CONFIDENCE = 0.75
WEAK_MESSAGE_CONFIDENCE = 0.65
WORDS_CONFIDENCE = 0.6

_REASONS = (
    r"too many requests|service unavailable|bad gateway|gateway time-?out|"
    r"internal server error|not found|unauthorized|forbidden|bad request|"
    r"unprocessable (?:entity|content)|conflict|gone|request timeout"
)

# (label, triggers, regex, failure type or None for "HTTP status in group s",
# confidence). Triggers are lower-case words, one of which must occur in the
# message before the regex runs: most messages contain none, so the common case
# costs one tokenisation and a few set checks. Order is priority: the first
# entry that matches wins.
_PATTERNS: tuple[tuple[str, str, str, FailureType | None, float], ...] = (
    (
        "HTTP status in text",
        "http",
        r"\bHTTP(?:/\d(?:\.\d)?)?[ :/]*(?:error\s*)?(?P<s>[1-5]\d\d)\b",
        None,
        MESSAGE_CONFIDENCE,
    ),
    (
        "HTTP status in text",
        "status",
        r"\bstatus(?:[ _-]?code)?\s*(?:[:=]|is|of)?\s*(?P<s>[1-5]\d\d)\b",
        None,
        MESSAGE_CONFIDENCE,
    ),
    (
        "HTTP status in text",
        "client server",
        r"\b(?P<s>[45]\d\d)\s+(?:client|server) error\b",
        None,
        MESSAGE_CONFIDENCE,
    ),
    (
        "HTTP status in text",
        (
            "requests unavailable gateway internal found unauthorized forbidden request "
            "unprocessable conflict gone timeout"
        ),
        rf"\b(?P<s>[45]\d\d)[ :-]+(?:{_REASONS})\b",
        None,
        MESSAGE_CONFIDENCE,
    ),
    (
        "database or disk is full",
        "full space quota",
        r"database or disk is full|no space left on device|disk quota exceeded|disk (?:is )?full",
        _T.SYSTEM_DISK_FULL,
        MESSAGE_CONFIDENCE,
    ),
    (
        "out of memory",
        "memory oom",
        r"out of memory|cannot allocate memory|\bOOM command not allowed",
        _T.SYSTEM_OUT_OF_MEMORY,
        MESSAGE_CONFIDENCE,
    ),
    (
        "deadlock or lock timeout",
        (
            "deadlock serialize serialization lock locked lock_timeout queuepool connections "
            "slots administrator system gone lost"
        ),
        (
            r"deadlock (?:detected|found)|could not serialize access|"
            r"serialization failure|lock wait timeout exceeded|database (?:table )?is locked|"
            r"could not obtain lock|lock_timeout|QueuePool limit of size \d+ overflow \d+ reached|"
            r"too many connections|remaining connection slots are reserved|"
            r"terminating connection due to administrator command|"
            r"the database system is (?:starting up|shutting down|in recovery mode)|"
            r"MySQL server has gone away|lost connection to MySQL server"
        ),
        _T.TRANSIENT_DATABASE,
        MESSAGE_CONFIDENCE,
    ),
    (
        "too many open files",
        "files unavailable",
        r"too many open files|resource temporarily unavailable",
        _T.TRANSIENT_RESOURCE,
        MESSAGE_CONFIDENCE,
    ),
    (
        "rate limited",
        "requests rate ratelimit ratelimited ratelimits throttled throttling quota",
        (
            r"too many requests|rate[ -]?limit(?:ed|s)?\b(?: exceeded)?|throttl(?:ed|ing)"
            r"|quota exceeded"
        ),
        _T.TRANSIENT_RATE_LIMIT,
        MESSAGE_CONFIDENCE,
    ),
    (
        "certificate verify failed",
        "certificate mismatch version",
        (
            r"certificate verify failed|CERTIFICATE_VERIFY_FAILED|hostname mismatch|"
            r"wrong version number"
        ),
        _T.CONFIG_INVALID_SETTING,
        MESSAGE_CONFIDENCE,
    ),
    (
        "temporary failure in name resolution",
        "resolution",
        r"temporary failure in name resolution",
        _T.TRANSIENT_NETWORK,
        MESSAGE_CONFIDENCE,
    ),
    (
        "name or service not known",
        "known nodename associated translate getaddrinfo",
        (
            r"name or service not known|nodename nor servname provided"
            r"|no address associated with hostname|could not translate host name|getaddrinfo failed"
        ),
        _T.CONFIG_INVALID_SETTING,
        MESSAGE_CONFIDENCE,
    ),
    (
        "connection timed out",
        "connect connection",
        r"\bconnect(?:ion)?(?: attempt)? timed? ?out\b|\bconnect timeout\b",
        _T.TRANSIENT_NETWORK,
        MESSAGE_CONFIDENCE,
    ),
    (
        "connection refused or reset",
        "connection broken unreachable route closed disconnected eof",
        (
            r"connection (?:refused|reset|aborted)|broken pipe|"
            r"network is unreachable|no route to host|host is unreachable|"
            r"server closed the connection unexpectedly|remote end closed connection|"
            r"server disconnected|connection (?:was )?closed by|"
            r"EOF occurred in violation of protocol"
        ),
        _T.TRANSIENT_NETWORK,
        MESSAGE_CONFIDENCE,
    ),
    (
        "worker lost",
        "worker signal sigkill killer",
        r"worker (?:exited|lost|died)|signal 9|SIGKILL|killed by the OOM killer",
        _T.SYSTEM_WORKER_CRASH,
        MESSAGE_CONFIDENCE,
    ),
    (
        "service unavailable",
        "unavailable gateway upstream maintenance",
        (
            r"service (?:is )?(?:temporarily )?unavailable|bad gateway|"
            r"upstream (?:connect )?error|under maintenance"
        ),
        _T.EXTERNAL_API_DOWN,
        MESSAGE_CONFIDENCE,
    ),
    (
        "timed out",
        "time timed timeout timedout deadline",
        r"\btimed? ?out\b|deadline exceeded",
        _T.EXTERNAL_TIMEOUT,
        WEAK_MESSAGE_CONFIDENCE,
    ),
    (
        "permission denied",
        ("denied forbidden unauthorized unauthorised authorized authorised authentication invalid"),
        (
            r"permission denied|access denied|\bforbidden\b|\bunauthori[sz]ed\b|"
            r"not authori[sz]ed|authentication failed|invalid (?:api key|credentials|token)"
        ),
        _T.PERMANENT_PERMISSION,
        WEAK_MESSAGE_CONFIDENCE,
    ),
    (
        "setting missing",
        "environment missing",
        (
            r"environment variable [^ ]+ (?:is )?(?:not set|missing|required)|"
            r"missing (?:required )?(?:setting|configuration|environment variable)"
        ),
        _T.CONFIG_MISSING_SETTING,
        WEAK_MESSAGE_CONFIDENCE,
    ),
    (
        "not found",
        "found exist such",
        r"\bnot found\b|does not exist|\bno such (?:file|key|bucket|object|record)",
        _T.PERMANENT_NOT_FOUND,
        WEAK_MESSAGE_CONFIDENCE,
    ),
)

_COMPILED = tuple(
    # Patterns run on the lower-cased message: IGNORECASE slows every regex down.
    (
        label,
        frozenset(triggers.split()),
        re.compile(pattern.lower().replace("(?p<", "(?P<")),
        failure_type,
        conf,
    )
    for label, triggers, pattern, failure_type, conf in _PATTERNS
)
_TOKEN = re.compile(r"[a-z]+(?:_[a-z]+)*")


def message_verdict(subject: Subject) -> Verdict | None:
    """The highest-priority phrase found in the head of the message, if any."""
    text = subject.message
    if not text:
        return None
    lower = text.lower()
    words = frozenset(_TOKEN.findall(lower))
    for label, triggers, regex, failure_type, confidence in _COMPILED:
        if triggers.isdisjoint(words):
            continue
        match = regex.search(lower)
        if match is None:
            continue
        found = text[match.start() : match.end()]
        if failure_type is not None:
            return Verdict(
                failure_type,
                confidence,
                f"message pattern {label!r} ({found!r}) on {subject.name}",
            )
        status = int(match.group("s"))
        mapped = status_failure_type(status)
        if mapped is not None:
            return Verdict(
                mapped,
                confidence,
                f"HTTP status {status_label(status)} in message text {found!r} on {subject.name}",
            )
    return None


# --------------------------------------------------------------------------- class names

_Words = frozenset[str]


def _any(*words: str) -> tuple[_Words, ...]:
    return tuple(frozenset(word.split("+")) for word in words)


# (alternatives, failure type, label): an alternative matches when all its
# words are in the class name. Order is priority.
_NAME_RULES: tuple[tuple[tuple[_Words, ...], FailureType, str], ...] = (
    (
        _any(
            "rate+limit",
            "rate+limited",
            "rate+limits",
            "ratelimit",
            "ratelimited",
            "throttle",
            "throttled",
            "throttling",
            "too+many+requests",
            "quota+exceeded",
        ),
        _T.TRANSIENT_RATE_LIMIT,
        "rate limit",
    ),
    (
        _any("deadlock", "lock+timeout", "serialization", "database", "db"),
        _T.TRANSIENT_DATABASE,
        "database",
    ),
    (_any("connect+timeout", "connection+timeout"), _T.TRANSIENT_NETWORK, "connect timeout"),
    (_any("timeout", "timedout", "timed+out", "deadline+exceeded"), _T.EXTERNAL_TIMEOUT, "timeout"),
    (
        _any("unavailable", "outage", "maintenance", "bad+gateway", "down"),
        _T.EXTERNAL_API_DOWN,
        "unavailable",
    ),
    (
        _any(
            "not+found",
            "notfound",
            "does+not+exist",
            "doesnotexist",
            "no+such",
            "gone",
            "missing+record",
            "missing+object",
        ),
        _T.PERMANENT_NOT_FOUND,
        "not found",
    ),
    (
        _any(
            "forbidden",
            "unauthorized",
            "unauthorised",
            "unauthenticated",
            "permission",
            "access+denied",
            "denied",
            "authentication",
            "authorization",
        ),
        _T.PERMANENT_PERMISSION,
        "permission",
    ),
    (
        _any(
            "missing+setting",
            "missing+settings",
            "missing+config",
            "missing+configuration",
            "missing+env",
            "missing+environment",
            "missing+variable",
            "missing+credentials",
            "unset+setting",
        ),
        _T.CONFIG_MISSING_SETTING,
        "missing setting",
    ),
    (
        _any(
            "config",
            "configuration",
            "misconfigured",
            "improperly+configured",
            "setting",
            "settings",
        ),
        _T.CONFIG_INVALID_SETTING,
        "configuration",
    ),
    (
        _any(
            "invalid",
            "validation",
            "malformed",
            "unprocessable",
            "bad+request",
            "schema",
            "parse",
            "parsing",
            "conflict",
            "duplicate",
            "already+exists",
        ),
        _T.PERMANENT_VALIDATION,
        "invalid input",
    ),
    (
        _any("connection", "connect", "network", "unreachable", "refused", "dns", "socket"),
        _T.TRANSIENT_NETWORK,
        "connection",
    ),
    (_any("memory", "oom"), _T.SYSTEM_OUT_OF_MEMORY, "memory"),
    (_any("disk+full", "no+space", "disk+quota", "storage+full"), _T.SYSTEM_DISK_FULL, "disk full"),
    (
        _any(
            "worker+lost",
            "worker+crash",
            "worker+crashed",
            "worker+died",
            "process+killed",
            "process+died",
        ),
        _T.SYSTEM_WORKER_CRASH,
        "worker crash",
    ),
    (
        _any(
            "upstream",
            "gateway",
            "api",
            "provider",
            "remote",
            "server",
            "external",
            "third+party",
            "service",
        ),
        _T.EXTERNAL_API_ERROR,
        "external service",
    ),
)


def words_verdict(cls: type, name: str) -> Verdict | None:
    """Evidence from the words of ``cls.__name__`` (``RateLimitedError`` -> rate limit).

    Args:
        cls: the class whose own name is read (not its ancestors').
        name: the qualified name of the classified exception's class (for the evidence).
    """
    try:
        own: object = cls.__name__
    except Exception:  # noqa: BLE001 - a metaclass may raise on attribute access
        return None
    if not isinstance(own, str):
        return None
    ordered = class_words(own)
    words = frozenset(ordered)
    if not words:
        return None
    for alternatives, failure_type, label in _NAME_RULES:
        for required in alternatives:
            if required <= words:
                shown = " ".join(word for word in ordered if word in required)
                return Verdict(
                    failure_type,
                    WORDS_CONFIDENCE,
                    f"class-name words {shown!r} ({label}) in {own} on {name}",
                )
    return None

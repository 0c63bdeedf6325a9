"""Structured evidence: errno, DNS and TLS codes, HTTP statuses, SQLSTATE, provider codes.

Each probe reads attributes of one exception and returns a
:class:`~resilience.taxonomy._verdict.Verdict` or ``None``. Probes never raise:
attribute access on third-party objects is guarded, values are type-checked.
"""

from __future__ import annotations

import errno as _errno
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

from resilience.taxonomy._http import (
    headers_retry_after,
    parse_retry_after,
    status_failure_type,
    status_label,
    status_of,
)
from resilience.taxonomy._verdict import Subject, Verdict
from resilience.taxonomy._vocabulary import FailureType

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "STRUCTURED",
    "Probe",
    "botocore_probe",
    "dns_probe",
    "errno_probe",
    "generic_probe",
    "http_probe",
    "retry_after_of",
    "sqlite_probe",
    "sqlstate_probe",
    "ssl_probe",
    "urllib_probe",
]

Probe: TypeAlias = "Callable[[Subject], Verdict | None]"

_T = FailureType
# Structured evidence (a number or code the library set on purpose) scores
# above class names, which score above message patterns and class-name words.
STRUCTURED = 0.95


def _get(obj: object, name: str) -> object:
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - properties of third-party objects may raise
        return None


# --------------------------------------------------------------------------- errno


def _errno_table() -> dict[int, tuple[FailureType, str]]:
    groups = {
        _T.TRANSIENT_NETWORK: (
            "ECONNREFUSED ECONNRESET ECONNABORTED ETIMEDOUT EHOSTUNREACH ENETUNREACH "
            "EPIPE ENETDOWN ENETRESET EHOSTDOWN ENOTCONN ESHUTDOWN"
        ),
        _T.SYSTEM_DISK_FULL: "ENOSPC EDQUOT",
        _T.SYSTEM_OUT_OF_MEMORY: "ENOMEM",
        _T.TRANSIENT_RESOURCE: "EMFILE ENFILE EAGAIN EWOULDBLOCK ENOBUFS EBUSY EDEADLK",
        _T.PERMANENT_PERMISSION: "EACCES EPERM EROFS",
        _T.PERMANENT_NOT_FOUND: "ENOENT",
    }
    table: dict[int, tuple[FailureType, str]] = {}
    for failure_type, names in groups.items():
        for name in names.split():
            number = getattr(_errno, name, None)
            if isinstance(number, int) and number not in table:
                table[number] = (failure_type, name)
    return table


_ERRNO = _errno_table()


_ERRNO_VERDICTS: dict[tuple[int, str], Verdict] = {}


def errno_probe(subject: Subject) -> Verdict | None:
    """OSError-style ``errno`` (ECONNREFUSED, ENOSPC, EMFILE, EACCES, ...)."""
    number = _get(subject.exc, "errno")
    if type(number) is not int:
        return None
    key = (number, subject.name)
    verdict = _ERRNO_VERDICTS.get(key)
    if verdict is not None:
        return verdict
    found = _ERRNO.get(number)
    if found is None:
        return None
    failure_type, name = found
    verdict = Verdict(failure_type, STRUCTURED, f"errno {number} {name} on {subject.name}")
    if len(_ERRNO_VERDICTS) < 1024:
        _ERRNO_VERDICTS[key] = verdict
    return verdict


# --------------------------------------------------------------------------- DNS


def _eai_table() -> dict[int, tuple[FailureType, str]]:
    table: dict[int, tuple[FailureType, str]] = {}
    for name, failure_type in (
        # A temporary resolver failure heals by itself; a name that does not
        # exist is a wrong host name in the settings (documented choice).
        ("EAI_AGAIN", _T.TRANSIENT_NETWORK),
        ("EAI_FAIL", _T.TRANSIENT_NETWORK),
        ("EAI_NONAME", _T.CONFIG_INVALID_SETTING),
        ("EAI_NODATA", _T.CONFIG_INVALID_SETTING),
        ("EAI_ADDRFAMILY", _T.CONFIG_INVALID_SETTING),
        ("EAI_SERVICE", _T.CONFIG_INVALID_SETTING),
        ("EAI_MEMORY", _T.SYSTEM_OUT_OF_MEMORY),
    ):
        number = getattr(socket, name, None)
        if isinstance(number, int):
            table[number] = (failure_type, name)
    return table


_EAI = _eai_table()


def dns_probe(subject: Subject) -> Verdict | None:
    """``socket.gaierror`` codes: EAI_AGAIN is temporary, EAI_NONAME a wrong host name."""
    number = _get(subject.exc, "errno")
    if not isinstance(number, int) or isinstance(number, bool):
        return None
    found = _EAI.get(number)
    if found is None:
        return Verdict(_T.TRANSIENT_NETWORK, 0.7, f"DNS error code {number} on {subject.name}")
    failure_type, name = found
    return Verdict(failure_type, STRUCTURED, f"DNS error {name} ({number}) on {subject.name}")


# --------------------------------------------------------------------------- TLS

_SSL_CONFIG_REASONS = frozenset(
    {
        "CERTIFICATE_VERIFY_FAILED",
        "WRONG_VERSION_NUMBER",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "HANDSHAKE_FAILURE",
        "NO_PROTOCOLS_AVAILABLE",
        "UNSUPPORTED_PROTOCOL",
        "WRONG_SSL_VERSION",
        "DH_KEY_TOO_SMALL",
        "CA_MD_TOO_WEAK",
        "EE_KEY_TOO_SMALL",
        "NO_SHARED_CIPHER",
    }
)
_SSL_NETWORK_REASONS = frozenset(
    {
        "UNEXPECTED_EOF_WHILE_READING",
        "DECRYPTION_FAILED_OR_BAD_RECORD_MAC",
        "BAD_RECORD_MAC",
        "SSLV3_ALERT_BAD_RECORD_MAC",
        "APPLICATION_DATA_AFTER_CLOSE_NOTIFY",
        "RECORD_LAYER_FAILURE",
    }
)


def ssl_probe(subject: Subject) -> Verdict | None:
    """``ssl.SSLError.reason``: certificate and protocol mismatches are configuration."""
    reason = _get(subject.exc, "reason")
    if not isinstance(reason, str):
        return None
    if reason in _SSL_CONFIG_REASONS:
        failure_type = _T.CONFIG_INVALID_SETTING
    elif reason in _SSL_NETWORK_REASONS:
        failure_type = _T.TRANSIENT_NETWORK
    else:
        return None
    return Verdict(failure_type, STRUCTURED, f"TLS reason {reason} on {subject.name}")


# --------------------------------------------------------------------------- HTTP


def retry_after_of(subject: Subject) -> tuple[float, str] | None:
    """Seconds the remote side asked us to wait, read from wherever this exception keeps it.

    Looks at a ``retry_after`` attribute (some SDKs set one), the headers of
    ``exc.response`` (requests, httpx, any SDK), ``exc.headers`` (aiohttp,
    urllib) and botocore's response dict.

    Returns:
        ``(seconds, source)`` or ``None``; looked up once per subject.
    """
    if subject.wait is not False:
        return subject.wait  # type: ignore[return-value]
    subject.wait = found = _retry_after_of(subject)
    return found


def _retry_after_of(subject: Subject) -> tuple[float, str] | None:
    exc = subject.exc
    seconds = parse_retry_after(_get(exc, "retry_after"), subject.now)
    if seconds is not None:
        return seconds, "retry_after attribute"
    response = _get(exc, "response")
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata")
        headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
        found = headers_retry_after(headers, subject.now)
        if found is not None:
            return found
    elif response is not None:
        found = headers_retry_after(_get(response, "headers"), subject.now)
        if found is not None:
            return found
    headers = _get(exc, "headers")
    if headers is None:
        headers = _get(exc, "hdrs")
    if headers is not None:
        return headers_retry_after(headers, subject.now)
    return None


def _status_verdict(subject: Subject, status: int, where: str) -> Verdict | None:
    failure_type = status_failure_type(status)
    if failure_type is None:
        return None
    evidence = f"HTTP status {status_label(status)} {where}on {subject.name}"
    found = retry_after_of(subject)
    retry_after = None
    if found is not None:
        retry_after, header = found
        evidence += f"; {header} {retry_after:g}s"
    return Verdict(failure_type, STRUCTURED, evidence, retry_after=retry_after)


def http_probe(subject: Subject) -> Verdict | None:
    """The status of ``exc.response`` (``status_code``/``status``) or ``exc.status_code``."""
    exc = subject.exc
    response = _get(exc, "response")
    if response is not None and not isinstance(response, Mapping):
        status = status_of(_get(response, "status_code")) or status_of(_get(response, "status"))
        if status is not None:
            return _status_verdict(subject, status, "from the response ")
    status = status_of(_get(exc, "status_code")) or status_of(_get(exc, "status"))
    if status is not None:
        return _status_verdict(subject, status, "")
    return None


def urllib_probe(subject: Subject) -> Verdict | None:
    """``urllib.error.HTTPError.code``."""
    status = status_of(_get(subject.exc, "code"))
    if status is None:
        return None
    return _status_verdict(subject, status, "")


# --------------------------------------------------------------------------- botocore


def _codes(failure_type: FailureType, names: str) -> dict[str, FailureType]:
    return dict.fromkeys(names.lower().split(), failure_type)


_PROVIDER_CODES: dict[str, FailureType] = {
    **_codes(
        _T.TRANSIENT_RATE_LIMIT,
        "Throttling ThrottlingException ThrottledException RequestThrottledException "
        "TooManyRequestsException ProvisionedThroughputExceededException RequestLimitExceeded "
        "BandwidthLimitExceeded LimitExceededException RequestThrottled SlowDown "
        "PriorRequestNotComplete EC2ThrottledException Throttled",
    ),
    **_codes(
        _T.PERMANENT_PERMISSION,
        "AccessDenied AccessDeniedException UnauthorizedOperation UnauthorizedException "
        "Forbidden ForbiddenException InvalidClientTokenId SignatureDoesNotMatch ExpiredToken "
        "ExpiredTokenException AuthFailure UnrecognizedClientException InvalidAccessKeyId "
        "MissingAuthenticationToken NotAuthorized NotAuthorizedException AllAccessDisabled",
    ),
    **_codes(
        _T.PERMANENT_NOT_FOUND,
        "NoSuchKey NoSuchBucket NoSuchUpload NoSuchVersion NotFound ResourceNotFoundException "
        "NoSuchEntity NoSuchEntityException QueueDoesNotExist "
        "AWS.SimpleQueueService.NonExistentQueue ParameterNotFound",
    ),
    **_codes(_T.EXTERNAL_API_DOWN, "ServiceUnavailable ServiceUnavailableException Unavailable"),
    **_codes(
        _T.EXTERNAL_API_ERROR,
        "InternalError InternalFailure InternalServerError InternalServerException "
        "ServiceException",
    ),
    **_codes(_T.EXTERNAL_TIMEOUT, "RequestTimeout RequestTimeoutException"),
    **_codes(
        _T.PERMANENT_VALIDATION,
        "ValidationException ValidationError InvalidParameterValue "
        "InvalidParameterValueException InvalidParameterException InvalidParameterCombination "
        "InvalidRequest InvalidRequestException InvalidArgument MalformedPolicyDocument "
        "MissingParameter ConditionalCheckFailedException InvalidInput EntityTooLarge "
        "PreconditionFailed InvalidBucketName",
    ),
    **_codes(
        _T.CONFIG_INVALID_SETTING,
        "RequestTimeTooSkewed AuthorizationHeaderMalformed PermanentRedirect",
    ),
    **_codes(_T.TRANSIENT_DATABASE, "TransactionConflictException"),
}

# Substrings tried when the exact code is not in the table (service-prefixed
# codes such as "KMS.ThrottlingException").
_PROVIDER_WORDS = (
    ("throttl", _T.TRANSIENT_RATE_LIMIT),
    ("toomanyrequests", _T.TRANSIENT_RATE_LIMIT),
    ("accessdenied", _T.PERMANENT_PERMISSION),
    ("notfound", _T.PERMANENT_NOT_FOUND),
    ("nosuch", _T.PERMANENT_NOT_FOUND),
    ("unavailable", _T.EXTERNAL_API_DOWN),
)


def botocore_probe(subject: Subject) -> Verdict | None:
    """botocore ``ClientError.response['Error']['Code']``, then its HTTP status."""
    response = _get(subject.exc, "response")
    if not isinstance(response, Mapping):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, Mapping) else None
    meta = response.get("ResponseMetadata")
    status = status_of(meta.get("HTTPStatusCode")) if isinstance(meta, Mapping) else None
    failure_type: FailureType | None = None
    if isinstance(code, str) and code:
        key = code.strip().lower()[:128]
        failure_type = _PROVIDER_CODES.get(key)
        if failure_type is None:
            numeric = status_of(key)
            if numeric is not None:
                failure_type = status_failure_type(numeric)
        if failure_type is None:
            for word, mapped in _PROVIDER_WORDS:
                if word in key:
                    failure_type = mapped
                    break
    if failure_type is None:
        if status is not None:
            return _status_verdict(subject, status, "from the provider response ")
        return None
    found = retry_after_of(subject)
    evidence = f"provider error code {code!r} on {subject.name}"
    retry_after = None
    if found is not None:
        retry_after = found[0]
        evidence += f"; {found[1]} {retry_after:g}s"
    return Verdict(failure_type, STRUCTURED, evidence, retry_after=retry_after)


# --------------------------------------------------------------------------- SQL

_SQLSTATE: dict[str, tuple[FailureType, str]] = {
    "40P01": (_T.TRANSIENT_DATABASE, "deadlock_detected"),
    "40001": (_T.TRANSIENT_DATABASE, "serialization_failure"),
    "40003": (_T.TRANSIENT_DATABASE, "statement_completion_unknown"),
    "40000": (_T.TRANSIENT_DATABASE, "transaction_rollback"),
    "55P03": (_T.TRANSIENT_DATABASE, "lock_not_available"),
    "55006": (_T.TRANSIENT_DATABASE, "object_in_use"),
    "57P01": (_T.TRANSIENT_DATABASE, "admin_shutdown"),
    "57P02": (_T.TRANSIENT_DATABASE, "crash_shutdown"),
    "57P03": (_T.TRANSIENT_DATABASE, "cannot_connect_now"),
    "57P05": (_T.TRANSIENT_DATABASE, "idle_session_timeout"),
    "57014": (_T.TRANSIENT_DATABASE, "query_canceled"),
    "25006": (_T.TRANSIENT_DATABASE, "read_only_sql_transaction"),
    "25P03": (_T.TRANSIENT_DATABASE, "idle_in_transaction_session_timeout"),
    # The server's connection slots: same remedy as an exhausted client pool.
    "53300": (_T.TRANSIENT_DATABASE, "too_many_connections"),
    "53000": (_T.TRANSIENT_RESOURCE, "insufficient_resources"),
    "53100": (_T.SYSTEM_DISK_FULL, "disk_full"),
    "53200": (_T.SYSTEM_OUT_OF_MEMORY, "out_of_memory"),
    "53400": (_T.CONFIG_INVALID_SETTING, "configuration_limit_exceeded"),
    "08000": (_T.TRANSIENT_DATABASE, "connection_exception"),
    "08001": (_T.TRANSIENT_DATABASE, "sqlclient_unable_to_establish_sqlconnection"),
    "08003": (_T.TRANSIENT_DATABASE, "connection_does_not_exist"),
    "08006": (_T.TRANSIENT_DATABASE, "connection_failure"),
    "08P01": (_T.TRANSIENT_DATABASE, "protocol_violation"),
    "42501": (_T.PERMANENT_PERMISSION, "insufficient_privilege"),
    "28000": (_T.PERMANENT_PERMISSION, "invalid_authorization_specification"),
    "28P01": (_T.PERMANENT_PERMISSION, "invalid_password"),
    "3D000": (_T.CONFIG_INVALID_SETTING, "invalid_catalog_name"),
    "25P02": (_T.PERMANENT_LOGIC, "in_failed_sql_transaction"),
    "0A000": (_T.PERMANENT_LOGIC, "feature_not_supported"),
    "23000": (_T.PERMANENT_VALIDATION, "integrity_constraint_violation"),
    "23502": (_T.PERMANENT_VALIDATION, "not_null_violation"),
    "23503": (_T.PERMANENT_VALIDATION, "foreign_key_violation"),
    "23505": (_T.PERMANENT_VALIDATION, "unique_violation"),
    "23514": (_T.PERMANENT_VALIDATION, "check_violation"),
    "23P01": (_T.PERMANENT_VALIDATION, "exclusion_violation"),
    "22000": (_T.PERMANENT_VALIDATION, "data_exception"),
    "22001": (_T.PERMANENT_VALIDATION, "string_data_right_truncation"),
    "22003": (_T.PERMANENT_VALIDATION, "numeric_value_out_of_range"),
    "22007": (_T.PERMANENT_VALIDATION, "invalid_datetime_format"),
    "22008": (_T.PERMANENT_VALIDATION, "datetime_field_overflow"),
    "22012": (_T.PERMANENT_VALIDATION, "division_by_zero"),
    "22P02": (_T.PERMANENT_VALIDATION, "invalid_text_representation"),
    "42601": (_T.PERMANENT_LOGIC, "syntax_error"),
    "42P01": (_T.PERMANENT_LOGIC, "undefined_table"),
    "42703": (_T.PERMANENT_LOGIC, "undefined_column"),
    "42883": (_T.PERMANENT_LOGIC, "undefined_function"),
    "42P07": (_T.PERMANENT_LOGIC, "duplicate_table"),
}

_SQLSTATE_CLASSES: dict[str, tuple[FailureType, str]] = {
    "08": (_T.TRANSIENT_DATABASE, "connection_exception"),
    "40": (_T.TRANSIENT_DATABASE, "transaction_rollback"),
    "57": (_T.TRANSIENT_DATABASE, "operator_intervention"),
    "23": (_T.PERMANENT_VALIDATION, "integrity_constraint_violation"),
    "22": (_T.PERMANENT_VALIDATION, "data_exception"),
    "42": (_T.PERMANENT_LOGIC, "syntax_error_or_access_rule_violation"),
    "53": (_T.TRANSIENT_RESOURCE, "insufficient_resources"),
    "28": (_T.PERMANENT_PERMISSION, "invalid_authorization_specification"),
    "3D": (_T.CONFIG_INVALID_SETTING, "invalid_catalog_name"),
    "0A": (_T.PERMANENT_LOGIC, "feature_not_supported"),
    "25": (_T.PERMANENT_LOGIC, "invalid_transaction_state"),
    "55": (_T.PERMANENT_LOGIC, "object_not_in_prerequisite_state"),
    "54": (_T.PERMANENT_LOGIC, "program_limit_exceeded"),
    "21": (_T.PERMANENT_LOGIC, "cardinality_violation"),
    "24": (_T.PERMANENT_LOGIC, "invalid_cursor_state"),
    "P0": (_T.PERMANENT_LOGIC, "plpgsql_error"),
    "F0": (_T.CONFIG_INVALID_SETTING, "config_file_error"),
}

# psycopg2 sets ``pgcode`` only on errors received from a server; its error
# classes are named after the condition, so the name recovers the SQLSTATE.
_CONDITION_CLASSES = {
    "".join(part.capitalize() for part in name.split("_")): code
    for code, (_, name) in _SQLSTATE.items()
}
_PSYCOPG_ERROR_MODULES = frozenset({"psycopg2.errors", "psycopg.errors"})


def _sqlstate_verdict(subject: Subject, code: str, how: str) -> Verdict | None:
    found = _SQLSTATE.get(code)
    confidence = STRUCTURED
    if found is None:
        found = _SQLSTATE_CLASSES.get(code[:2])
        confidence = 0.85
        if found is None:
            return None
        label = f"class {code[:2]} ({found[1]})"
    else:
        label = found[1]
    return Verdict(found[0], confidence, f"SQLSTATE {code} {label} {how}on {subject.name}")


def sqlstate_probe(subject: Subject) -> Verdict | None:
    """``.sqlstate`` (psycopg 3, asyncpg) or ``.pgcode`` (psycopg2), else the condition class."""
    exc = subject.exc
    for attribute in ("sqlstate", "pgcode"):
        code = _get(exc, attribute)
        if isinstance(code, str) and len(code) == 5:
            return _sqlstate_verdict(subject, code.upper(), "")
    cls = type(exc)
    for klass in cls.__mro__[:4]:
        if klass.__module__ in _PSYCOPG_ERROR_MODULES:
            code = _CONDITION_CLASSES.get(klass.__name__)
            if code is not None:
                return _sqlstate_verdict(subject, code, "(by condition class name) ")
    return None


_SQLITE_CODES: tuple[tuple[str, FailureType], ...] = (
    ("SQLITE_BUSY", _T.TRANSIENT_DATABASE),
    ("SQLITE_LOCKED", _T.TRANSIENT_DATABASE),
    ("SQLITE_PROTOCOL", _T.TRANSIENT_DATABASE),
    ("SQLITE_FULL", _T.SYSTEM_DISK_FULL),
    ("SQLITE_NOMEM", _T.SYSTEM_OUT_OF_MEMORY),
    ("SQLITE_CONSTRAINT", _T.PERMANENT_VALIDATION),
    ("SQLITE_MISMATCH", _T.PERMANENT_VALIDATION),
    ("SQLITE_TOOBIG", _T.PERMANENT_VALIDATION),
    ("SQLITE_RANGE", _T.PERMANENT_LOGIC),
    ("SQLITE_READONLY", _T.PERMANENT_PERMISSION),
    ("SQLITE_PERM", _T.PERMANENT_PERMISSION),
    ("SQLITE_AUTH", _T.PERMANENT_PERMISSION),
    ("SQLITE_CANTOPEN", _T.CONFIG_INVALID_SETTING),
    ("SQLITE_NOTADB", _T.CONFIG_INVALID_SETTING),
)


def sqlite_probe(subject: Subject) -> Verdict | None:
    """``sqlite3.Error.sqlite_errorname`` (SQLITE_BUSY, SQLITE_FULL, SQLITE_CONSTRAINT_*, ...)."""
    name = _get(subject.exc, "sqlite_errorname")
    if not isinstance(name, str):
        return None
    for prefix, failure_type in _SQLITE_CODES:
        if name.startswith(prefix):
            return Verdict(failure_type, STRUCTURED, f"SQLite code {name} on {subject.name}")
    return None


# --------------------------------------------------------------------------- generic


def generic_probe(subject: Subject) -> Verdict | None:
    """Duck-typed evidence on classes we do not know: an HTTP status or a SQLSTATE."""
    exc = subject.exc
    response = _get(exc, "response")
    if isinstance(response, Mapping):
        verdict = botocore_probe(subject)
    elif response is not None or _get(exc, "status_code") is not None or _get(exc, "status"):
        verdict = http_probe(subject)
    else:
        verdict = None
    if verdict is not None:
        return verdict
    if _get(exc, "sqlstate") is not None or _get(exc, "pgcode") is not None:
        return sqlstate_probe(subject)
    return None

"""Unit tests of the failure classifier: matching, chains, context, retry_after, robustness."""

from __future__ import annotations

import errno
import logging
import os
import socket
from datetime import timedelta
from typing import Any

import pytest

from resilience import taxonomy
from resilience.taxonomy import (
    PROFILES,
    AlertLevel,
    Classification,
    FailureType,
    Remediation,
    classify,
)

T = FailureType
NOW = 1_700_000_000.0


class _Response:
    """A minimal response object, shaped like requests'/httpx's."""

    def __init__(self, status_code: object, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.headers = headers or {}


def _http_error(status: object, **headers: str) -> Exception:
    """An SDK-style exception carrying ``.response`` (unknown class, duck-typed)."""
    error = type("ApiCallFailed", (Exception,), {"__module__": "vendor.sdk"})("call failed")
    error.response = _Response(status, {k.replace("_", "-"): v for k, v in headers.items()})
    return error


def _named(name: str, module: str, base: type[BaseException] = Exception) -> type[BaseException]:
    return type(name, (base,), {"__module__": module})


def _raise_from(exc: BaseException, cause: BaseException) -> BaseException:
    try:
        raise exc from cause
    except BaseException as error:
        return error


# --------------------------------------------------------------------------- surface


def test_all_is_sorted_and_matches_public_names() -> None:
    """``__all__`` is sorted (constants, classes, functions) and lists exactly the public names."""

    def key(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert taxonomy.__all__ == sorted(taxonomy.__all__, key=key)
    public = {name for name in vars(taxonomy) if not name.startswith("_")}
    public -= {"annotations"}
    assert set(taxonomy.__all__) == public


def test_classification_fields_come_from_the_profile() -> None:
    """Remediation, alert level and delay follow the type's profile when nothing overrides."""
    result = classify(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    prof = PROFILES[T.TRANSIENT_NETWORK]
    assert isinstance(result, Classification)
    assert result.remediation is prof.remediation
    assert result.remediation_details == prof.remediation_details
    assert result.alert_level is prof.alert_level
    assert result.retry_recommended is True
    assert result.retry_delay_seconds == prof.retry_delay_seconds
    assert result.retry_after is None


def test_class_decided_results_are_cached_per_class() -> None:
    """Without context, two instances of a class decided by its class share one result."""
    assert classify(TypeError("a")) is classify(TypeError("b"))


def test_no_info_logging_per_classification(caplog: pytest.LogCaptureFixture) -> None:
    """Classifying logs nothing at INFO or above."""
    caplog.set_level(logging.DEBUG, logger="resilience")
    for exc in (ValueError("x"), RuntimeError("deadlock detected"), KeyError("k")):
        classify(exc, {"task_name": "t", "retry_count": 1})
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


# --------------------------------------------------------------------------- lesson 1


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("invalid order id 14290"),
        RuntimeError("order 4291 failed"),
        Exception("Deadline 503 days away"),
        RuntimeError("processed 429 rows, 503 skipped"),
        RuntimeError("invoice INV-5029 rejected"),
    ],
)
def test_numbers_without_http_context_are_not_statuses(exc: Exception) -> None:
    """Lesson 1: a 429/503 inside other numbers or without HTTP context is no status."""
    result = classify(exc)
    assert result.failure_type not in {T.TRANSIENT_RATE_LIMIT, T.EXTERNAL_API_DOWN}
    assert "HTTP status" not in result.evidence


def test_invalid_order_id_is_permanent_validation() -> None:
    """Lesson 1 regression: ValueError('invalid order id 14290') is not retried."""
    result = classify(ValueError("invalid order id 14290"))
    assert result.failure_type is T.PERMANENT_VALIDATION
    assert result.retry_recommended is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HTTP 429", T.TRANSIENT_RATE_LIMIT),
        ("HTTP/1.1 503 Service Unavailable", T.EXTERNAL_API_DOWN),
        ("429 Too Many Requests", T.TRANSIENT_RATE_LIMIT),
        ("request failed with status code 503", T.EXTERNAL_API_DOWN),
        ("502 Server Error: Bad Gateway for url: https://api.example.com", T.EXTERNAL_API_DOWN),
        ("HTTP Error 404: Not Found", T.PERMANENT_NOT_FOUND),
        ("status=504", T.EXTERNAL_TIMEOUT),
    ],
)
def test_statuses_in_http_context_are_read_from_text(text: str, expected: FailureType) -> None:
    """HTTP statuses are read from text when the text says it is HTTP."""
    result = classify(RuntimeError(text))
    assert result.failure_type is expected
    assert "HTTP status" in result.evidence


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, T.TRANSIENT_RATE_LIMIT),
        (502, T.EXTERNAL_API_DOWN),
        (503, T.EXTERNAL_API_DOWN),
        (504, T.EXTERNAL_TIMEOUT),
        (500, T.EXTERNAL_API_ERROR),
        (599, T.EXTERNAL_API_ERROR),
        (401, T.PERMANENT_PERMISSION),
        (403, T.PERMANENT_PERMISSION),
        (404, T.PERMANENT_NOT_FOUND),
        (410, T.PERMANENT_NOT_FOUND),
        (400, T.PERMANENT_VALIDATION),
        (409, T.PERMANENT_VALIDATION),
        (422, T.PERMANENT_VALIDATION),
        (418, T.EXTERNAL_API_ERROR),
        ("503", T.EXTERNAL_API_DOWN),
    ],
)
def test_http_status_mapping_from_response_objects(status: object, expected: FailureType) -> None:
    """The documented status table, read as a number from ``exc.response.status_code``."""
    result = classify(_http_error(status))
    assert result.failure_type is expected
    assert result.confidence >= 0.9
    assert "HTTP status" in result.evidence


@pytest.mark.parametrize("status", [True, 99, 600, "abc", 503.0, None, "5030"])
def test_non_status_values_are_ignored(status: object) -> None:
    """Booleans, floats, out-of-range numbers and garbage are not HTTP statuses."""
    assert "HTTP status" not in classify(_http_error(status)).evidence


# --------------------------------------------------------------------------- lesson 4


def test_third_party_connection_errors_are_transient_network() -> None:
    """Lesson 4: requests/redis/httpx connection errors are network errors, retried."""
    import httpx
    import redis
    import requests

    for exc in (
        requests.exceptions.ConnectionError("Max retries exceeded"),
        redis.exceptions.ConnectionError("Error 111 connecting to localhost:6379."),
        httpx.ConnectError("All connection attempts failed"),
    ):
        result = classify(exc)
        assert result.failure_type is T.TRANSIENT_NETWORK, exc
        assert result.retry_recommended is True


def test_third_party_timeouts_and_db_errors_are_not_unknown() -> None:
    """Lesson 4: requests.Timeout, raw psycopg2 errors and SoftTimeLimitExceeded are known."""
    import psycopg2
    import requests
    from celery.exceptions import SoftTimeLimitExceeded

    assert classify(requests.exceptions.Timeout()).failure_type is T.EXTERNAL_TIMEOUT
    assert classify(psycopg2.OperationalError("boom")).failure_type is T.TRANSIENT_DATABASE
    assert classify(SoftTimeLimitExceeded()).failure_type is T.EXTERNAL_TIMEOUT


def test_closest_class_in_the_mro_wins() -> None:
    """requests.ConnectTimeout (ConnectionError + Timeout) is a connect timeout: network."""
    import psycopg.errors
    import requests

    assert classify(requests.exceptions.ConnectTimeout()).failure_type is T.TRANSIENT_NETWORK
    sub = _named("OrdersDeadlock", "shop.db", psycopg.errors.DeadlockDetected)
    assert classify(sub("deadlock detected")).failure_type is T.TRANSIENT_DATABASE


def test_matching_uses_names_without_importing_libraries() -> None:
    """A look-alike class named like a library's is matched by its qualified name."""
    fake = type("BusyLoadingError", (Exception,), {"__module__": "redis.exceptions"})
    assert classify(fake("LOADING")).failure_type is T.TRANSIENT_DATABASE


# --------------------------------------------------------------------------- lesson 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Connection timed out", T.TRANSIENT_NETWORK),
        ("Temporary failure in name resolution", T.TRANSIENT_NETWORK),
        ("[Errno -2] Name or service not known", T.CONFIG_INVALID_SETTING),
        ("server closed the connection unexpectedly", T.TRANSIENT_DATABASE),
        ("could not serialize access due to concurrent update", T.TRANSIENT_DATABASE),
        (
            "QueuePool limit of size 5 overflow 10 reached, connection timed out",
            T.TRANSIENT_DATABASE,
        ),
        ("deadlock detected", T.TRANSIENT_DATABASE),
        ("Lock wait timeout exceeded; try restarting transaction", T.TRANSIENT_DATABASE),
        ("(1040, 'Too many connections')", T.TRANSIENT_DATABASE),
        ("timed out", T.EXTERNAL_TIMEOUT),
    ],
)
def test_real_world_wording(text: str, expected: FailureType) -> None:
    """Lesson 5: glibc, Python, PostgreSQL, MySQL and SQLAlchemy wording is recognised."""
    exc: Exception = RuntimeError(text)
    if text.startswith("server closed"):
        import psycopg2

        exc = psycopg2.OperationalError(text)
    assert classify(exc).failure_type is expected


@pytest.mark.parametrize(
    "text", ["timed out", "connection timeout", "read timed out", "Connection timed out", ""]
)
def test_timeout_error_does_not_flip_with_its_text(text: str) -> None:
    """Lesson 5: a TimeoutError without errno is EXTERNAL_TIMEOUT whatever it says."""
    assert classify(TimeoutError(text)).failure_type is T.EXTERNAL_TIMEOUT


def test_etimedout_errno_is_a_connect_timeout() -> None:
    """TimeoutError with errno ETIMEDOUT (a TCP connect timeout) is a network error."""
    exc = TimeoutError(errno.ETIMEDOUT, "Connection timed out")
    result = classify(exc)
    assert result.failure_type is T.TRANSIENT_NETWORK
    assert "errno" in result.evidence


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (errno.ECONNREFUSED, T.TRANSIENT_NETWORK),
        (errno.ECONNRESET, T.TRANSIENT_NETWORK),
        (errno.EPIPE, T.TRANSIENT_NETWORK),
        (errno.ENOSPC, T.SYSTEM_DISK_FULL),
        (errno.EDQUOT, T.SYSTEM_DISK_FULL),
        (errno.ENOMEM, T.SYSTEM_OUT_OF_MEMORY),
        (errno.EMFILE, T.TRANSIENT_RESOURCE),
        (errno.EAGAIN, T.TRANSIENT_RESOURCE),
        (errno.EACCES, T.PERMANENT_PERMISSION),
        (errno.EPERM, T.PERMANENT_PERMISSION),
        (errno.ENOENT, T.PERMANENT_NOT_FOUND),
    ],
)
def test_errno_mapping(number: int, expected: FailureType) -> None:
    """OSError errnos map by number, whatever the message says."""
    assert classify(OSError(number, "whatever")).failure_type is expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (socket.EAI_AGAIN, T.TRANSIENT_NETWORK),
        (socket.EAI_NONAME, T.CONFIG_INVALID_SETTING),
    ],
)
def test_gaierror_codes(number: int, expected: FailureType) -> None:
    """EAI_AGAIN is a temporary resolver failure; EAI_NONAME a wrong host name."""
    assert classify(socket.gaierror(number, "resolver says no")).failure_type is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("40P01", T.TRANSIENT_DATABASE),
        ("40001", T.TRANSIENT_DATABASE),
        ("55P03", T.TRANSIENT_DATABASE),
        ("57P01", T.TRANSIENT_DATABASE),
        ("08006", T.TRANSIENT_DATABASE),
        ("08999", T.TRANSIENT_DATABASE),
        ("53300", T.TRANSIENT_DATABASE),
        ("53100", T.SYSTEM_DISK_FULL),
        ("23505", T.PERMANENT_VALIDATION),
        ("22P02", T.PERMANENT_VALIDATION),
        ("42501", T.PERMANENT_PERMISSION),
        ("42P01", T.PERMANENT_LOGIC),
        ("42999", T.PERMANENT_LOGIC),
    ],
)
def test_sqlstate_mapping(code: str, expected: FailureType) -> None:
    """SQLSTATE read from ``.sqlstate`` (psycopg 3, asyncpg) and ``.pgcode`` (psycopg2)."""
    import psycopg.errors

    for attribute in ("sqlstate", "pgcode"):
        duck = _named("DriverError", "somedriver")("x")
        setattr(duck, attribute, code)
        result = classify(duck)
        assert result.failure_type is expected
        assert f"SQLSTATE {code}" in result.evidence
    if code in _PSYCOPG_KNOWN:
        assert classify(psycopg.errors.lookup(code)("x")).failure_type is expected


_PSYCOPG_KNOWN = {
    "40P01",
    "40001",
    "55P03",
    "57P01",
    "08006",
    "53300",
    "53100",
    "23505",
    "22P02",
    "42501",
    "42P01",
}


# --------------------------------------------------------------------------- lesson 6


def test_retries_exhausted_switches_to_manual_retry() -> None:
    """Lesson 6: retry_count >= max_retries stops retries and asks for a manual replay."""
    exc = ConnectionResetError(errno.ECONNRESET, "reset")
    fresh = classify(exc, {"retry_count": 2, "max_retries": 3})
    spent = classify(exc, {"retry_count": 3, "max_retries": 3})
    assert fresh.retry_recommended is True
    assert fresh.remediation is Remediation.AUTO_RETRY
    assert spent.failure_type is T.TRANSIENT_NETWORK
    assert spent.retry_recommended is False
    assert spent.retry_delay_seconds == 0
    assert spent.remediation is Remediation.MANUAL_RETRY
    assert spent.alert_level.rank >= AlertLevel.ERROR.rank
    assert "retries exhausted" in spent.evidence


def test_retry_count_without_max_retries_changes_nothing_for_known_types() -> None:
    """Without an explicit max_retries, a retry count alone does not stop known retries."""
    result = classify(ConnectionResetError(errno.ECONNRESET, "x"), {"retry_count": 50})
    assert result.retry_recommended is True


def test_unknown_failure_is_retried_once_then_investigated() -> None:
    """An UNKNOWN failure is retried on the first attempt and not after."""
    exc = RuntimeError("something odd")
    assert classify(exc, {"retry_count": 0}).retry_recommended is True
    again = classify(exc, {"retry_count": 1})
    assert again.failure_type is T.UNKNOWN
    assert again.retry_recommended is False
    assert again.remediation is Remediation.INVESTIGATE


def test_long_execution_keeps_retryable_errors_retryable() -> None:
    """Lesson 6: execution_time over the limit never makes a network error non-retryable."""
    exc = ConnectionResetError(errno.ECONNRESET, "reset")
    result = classify(exc, {"execution_time": 900.0, "soft_time_limit": 300})
    assert result.failure_type is T.TRANSIENT_NETWORK
    assert result.retry_recommended is True


def test_unknown_error_past_the_time_limit_is_a_timeout() -> None:
    """An UNKNOWN error raised after the soft time limit is EXTERNAL_TIMEOUT, retryable."""
    exc = RuntimeError("lost in the weeds")
    result = classify(exc, {"execution_time": timedelta(minutes=6), "soft_time_limit": 300})
    assert result.failure_type is T.EXTERNAL_TIMEOUT
    assert result.retry_recommended is True
    assert result.confidence == pytest.approx(0.6)
    assert "soft_time_limit" in result.evidence
    assert classify(exc, {"execution_time": 10, "soft_time_limit": 300}).failure_type is T.UNKNOWN


# --------------------------------------------------------------------------- lesson 7


@pytest.mark.parametrize(
    "context",
    [
        {"task_name": None},
        {"task_name": 42, "retry_count": "3", "max_retries": None},
        {"retry_count": -1, "max_retries": True, "execution_time": "slow"},
        {"soft_time_limit": float("nan"), "execution_time": float("inf"), "now": "today"},
        {"queue": None, "retry_count": 2.5},
        ["not", "a", "mapping"],
        {},
    ],
)
def test_odd_context_values_never_crash(context: Any) -> None:
    """Lesson 7: None, wrongly typed or missing context values are ignored."""
    result = classify(ValueError("bad"), context)
    assert result.failure_type is T.PERMANENT_VALIDATION


def test_context_mapping_that_raises_is_ignored() -> None:
    """A context whose ``get`` raises is treated as empty."""

    class Hostile(dict[str, object]):
        def get(self, key: str, default: object = None) -> object:
            raise RuntimeError("no")

    assert classify(ValueError("x"), Hostile(a=1)).failure_type is T.PERMANENT_VALIDATION


def test_wrapper_raised_from_deadlock_is_transient_database() -> None:
    """Lesson 7: a plain wrapper raised from a deadlock is classified by the deadlock."""
    import psycopg.errors

    exc = _raise_from(RuntimeError("task failed"), psycopg.errors.DeadlockDetected("deadlock"))
    result = classify(exc)
    assert result.failure_type is T.TRANSIENT_DATABASE
    assert result.evidence.startswith("via __cause__ psycopg.errors.DeadlockDetected")


def test_implicit_context_is_followed_only_without_own_signal() -> None:
    """``__context__`` decides for a signal-less wrapper, not over an exception's own class."""

    def during(handled: BaseException, raised: BaseException) -> BaseException:
        try:
            try:
                raise handled
            except BaseException:
                raise raised  # noqa: B904 - implicit context on purpose
        except BaseException as error:
            return error

    disk = OSError(errno.ENOSPC, "No space left on device")
    assert classify(during(disk, RuntimeError("export failed"))).failure_type is T.SYSTEM_DISK_FULL
    assert classify(during(disk, TypeError("bad"))).failure_type is T.PERMANENT_LOGIC


def test_from_none_hides_the_context_of_plain_exceptions() -> None:
    """``raise X from None`` suppresses the context for exceptions that are not wrappers."""

    def export() -> None:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError:
            raise RuntimeError("export failed") from None

    with pytest.raises(RuntimeError) as raised:
        export()
    assert raised.value.__context__ is not None
    assert classify(raised.value).failure_type is T.UNKNOWN


def test_stronger_cause_beats_weak_own_signal() -> None:
    """A ValueError raised from a deadlock takes the deadlock's type (its cause is stronger)."""
    import psycopg.errors

    exc = _raise_from(ValueError("could not save"), psycopg.errors.DeadlockDetected("x"))
    assert classify(exc).failure_type is T.TRANSIENT_DATABASE


def test_sqlalchemy_orig_is_followed() -> None:
    """SQLAlchemy's wrapper is classified by its ``.orig`` DBAPI error."""
    import psycopg2.errors
    import sqlalchemy.exc

    exc = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg2.errors.DiskFull("full"))
    result = classify(exc)
    assert result.failure_type is T.SYSTEM_DISK_FULL
    assert "via .orig" in result.evidence


def test_celery_retry_and_max_retries_exceeded() -> None:
    """Celery's Retry is classified by ``.exc`` with ``.when``; MaxRetriesExceeded stops."""
    from celery.exceptions import MaxRetriesExceededError, Retry

    retry = classify(Retry("later", exc=ConnectionResetError(104, "reset"), when=45))
    assert retry.failure_type is T.TRANSIENT_NETWORK
    assert retry.retry_after == 45
    assert retry.retry_delay_seconds == 45
    spent = classify(_raise_from(MaxRetriesExceededError("x"), ConnectionResetError(104, "r")))
    assert spent.failure_type is T.TRANSIENT_NETWORK
    assert spent.retry_recommended is False
    assert spent.remediation is Remediation.MANUAL_RETRY


# --------------------------------------------------------------------------- groups


def test_exception_group_takes_the_most_severe_member() -> None:
    """A group is classified by its most severe member (alert level, then confidence)."""
    group = ExceptionGroup("batch", [TimeoutError("slow"), ImportError("x"), ValueError("v")])
    result = classify(group)
    assert result.failure_type is T.CONFIG_MISSING_SERVICE
    assert "member #2" in result.evidence


def test_nested_group_with_only_unknown_members_is_unknown() -> None:
    """Groups nest; when no member is identified the group is UNKNOWN."""
    inner = ExceptionGroup("inner", [RuntimeError("a")])
    group = BaseExceptionGroup("outer", [inner, RuntimeError("b")])
    assert classify(group).failure_type is T.UNKNOWN


def test_known_member_wins_over_unknown_members() -> None:
    """An identified member beats members nothing identified."""
    group = ExceptionGroup("g", [RuntimeError("a"), MemoryError()])
    assert classify(group).failure_type is T.SYSTEM_OUT_OF_MEMORY


# --------------------------------------------------------------------------- BaseException


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(0), GeneratorExit()])
def test_process_control_exceptions_are_not_retried(exc: BaseException) -> None:
    """KeyboardInterrupt/SystemExit are UNKNOWN, never retried (the worker is stopping)."""
    result = classify(exc)
    assert result.failure_type is T.UNKNOWN
    assert result.retry_recommended is False
    assert "process-control" in result.evidence


def test_cancelled_error_is_process_control() -> None:
    """asyncio.CancelledError is a cancellation, not a failure to retry."""
    import asyncio

    assert classify(asyncio.CancelledError()).retry_recommended is False


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("RateLimitedError", T.TRANSIENT_RATE_LIMIT),
        ("ThrottledException", T.TRANSIENT_RATE_LIMIT),
        ("UpstreamUnavailable", T.EXTERNAL_API_DOWN),
        ("PaymentGatewayTimeout", T.EXTERNAL_TIMEOUT),
        ("InvalidPayload", T.PERMANENT_VALIDATION),
        ("OrderNotFound", T.PERMANENT_NOT_FOUND),
        ("CustomerDoesNotExist", T.PERMANENT_NOT_FOUND),
        ("AccountForbidden", T.PERMANENT_PERMISSION),
        ("MissingSettingError", T.CONFIG_MISSING_SETTING),
        ("StripeAPIError", T.EXTERNAL_API_ERROR),
        ("DatabaseConnectionError", T.TRANSIENT_DATABASE),
        ("Oops", T.UNKNOWN),
    ],
)
def test_class_name_words(name: str, expected: FailureType) -> None:
    """Custom exception names carry signal, at lower confidence than structured evidence."""
    result = classify(_named(name, "shop.errors")("no message signal here"))
    assert result.failure_type is expected
    if expected is not T.UNKNOWN:
        assert result.confidence == pytest.approx(0.6)
        assert "class-name words" in result.evidence


def test_structured_evidence_beats_class_name_words() -> None:
    """An HTTP status on an exception named like a timeout decides over the name."""
    exc = _named("GatewayTimeout", "shop.errors")("x")
    exc.status_code = 404  # type: ignore[attr-defined]
    assert classify(exc).failure_type is T.PERMANENT_NOT_FOUND


def test_environ_key_error_versus_data_key_error() -> None:
    """KeyError from os.environ[...] is a missing setting; from a dict it is a logic error."""
    os.environ.pop("TAXONOMY_TEST_UNSET", None)
    try:
        os.environ["TAXONOMY_TEST_UNSET"]
    except KeyError as error:
        env_error = error
    try:
        {"a": 1}["TAXONOMY_TEST_UNSET"]
    except KeyError as error:
        dict_error = error
    assert classify(env_error).failure_type is T.CONFIG_MISSING_SETTING
    assert "os.environ" in classify(env_error).evidence
    assert classify(dict_error).failure_type is T.PERMANENT_LOGIC
    assert classify(KeyError("STRIPE_API_KEY")).failure_type is T.CONFIG_MISSING_SETTING
    assert classify(KeyError("timeout")).failure_type is T.PERMANENT_LOGIC

"""Constructed corpus cases: the libraries' own exception classes, built as they raise them.

These need a server we do not run in tests (PostgreSQL SQLSTATEs, AWS error
responses, a Redis that is loading or out of memory, a Celery worker dying).
"""

from __future__ import annotations

import errno
from typing import Any

from taxonomy_corpus import Case  # type: ignore[import-not-found]

from resilience.taxonomy import FailureType

T = FailureType


def _case(
    label: str,
    exc: BaseException,
    expected: FailureType,
    *,
    hard: bool = False,
    by_class: bool = False,
    retry_after: float | None = None,
) -> Case:
    return Case(
        label=label,
        exc=exc,
        expected=expected,
        hard=hard,
        by_class=by_class,
        retry_after=retry_after,
    )


def _raised_from(
    exc: BaseException, cause: BaseException, *, implicit: bool = False
) -> BaseException:
    """``exc`` as if raised ``from cause`` (or while handling it, when ``implicit``)."""
    try:
        try:
            raise cause
        except BaseException as inner:
            if implicit:
                raise exc  # noqa: B904 - the implicit __context__ is the point
            raise exc from inner
    except BaseException as outer:
        return outer


def _builtins() -> list[Case]:
    return [
        _case("OSError EMFILE", OSError(errno.EMFILE, "Too many open files"), T.TRANSIENT_RESOURCE),
        _case(
            "OSError ENFILE",
            OSError(errno.ENFILE, "Too many open files in system"),
            T.TRANSIENT_RESOURCE,
        ),
        _case(
            "OSError ENOMEM",
            OSError(errno.ENOMEM, "Cannot allocate memory"),
            T.SYSTEM_OUT_OF_MEMORY,
        ),
        _case("OSError EDQUOT", OSError(errno.EDQUOT, "Disk quota exceeded"), T.SYSTEM_DISK_FULL),
        _case(
            "OSError EHOSTUNREACH",
            OSError(errno.EHOSTUNREACH, "No route to host"),
            T.TRANSIENT_NETWORK,
        ),
        _case(
            "OSError ENETUNREACH",
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            T.TRANSIENT_NETWORK,
        ),
        _case(
            "ConnectionAbortedError",
            ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort"),
            T.TRANSIENT_NETWORK,
        ),
        _case(
            "TimeoutError ETIMEDOUT",
            TimeoutError(errno.ETIMEDOUT, "Connection timed out"),
            T.TRANSIENT_NETWORK,
            hard=True,
        ),
        _case(
            "TimeoutError 'connection timeout' text",
            TimeoutError("connection timeout"),
            T.EXTERNAL_TIMEOUT,
            hard=True,
            by_class=True,
        ),
        _case(
            "PermissionError EACCES",
            PermissionError(errno.EACCES, "Permission denied"),
            T.PERMANENT_PERMISSION,
        ),
        _case(
            "OSError EPERM", OSError(errno.EPERM, "Operation not permitted"), T.PERMANENT_PERMISSION
        ),
        _case(
            "OSError text only, no errno",
            OSError("[Errno 24] Too many open files"),
            T.TRANSIENT_RESOURCE,
            hard=True,
        ),
        _case(
            "ValueError invalid order id 14290",
            ValueError("invalid order id 14290"),
            T.PERMANENT_VALIDATION,
            hard=True,
        ),
        _case(
            "RuntimeError order 4291 failed",
            RuntimeError("order 4291 failed"),
            T.UNKNOWN,
            hard=True,
        ),
        _case(
            "Exception Deadline 503 days away",
            Exception("Deadline 503 days away"),
            T.UNKNOWN,
            hard=True,
        ),
        _case(
            "RuntimeError HTTP 429 text",
            RuntimeError("upstream said HTTP 429, slow down"),
            T.TRANSIENT_RATE_LIMIT,
            hard=True,
        ),
        _case(
            "Exception 503 Service Unavailable text",
            Exception("503 Service Unavailable"),
            T.EXTERNAL_API_DOWN,
        ),
        _case(
            "RuntimeError status code 504",
            RuntimeError("request failed with status code 504"),
            T.EXTERNAL_TIMEOUT,
        ),
        _case(
            "RuntimeError Temporary failure in name resolution",
            RuntimeError("Temporary failure in name resolution"),
            T.TRANSIENT_NETWORK,
            hard=True,
        ),
        _case(
            "RuntimeError Name or service not known",
            RuntimeError("[Errno -2] Name or service not known"),
            T.CONFIG_INVALID_SETTING,
            hard=True,
        ),
        _case(
            "Exception Connection timed out",
            Exception("Connection timed out"),
            T.TRANSIENT_NETWORK,
            hard=True,
        ),
        _case(
            "Exception Lock wait timeout exceeded",
            Exception("(1205, 'Lock wait timeout exceeded; try restarting transaction')"),
            T.TRANSIENT_DATABASE,
            hard=True,
        ),
        _case("Exception deadlock detected", Exception("deadlock detected"), T.TRANSIENT_DATABASE),
        _case(
            "RuntimeError worker exited signal 9",
            RuntimeError("Worker exited prematurely: signal 9 (SIGKILL)."),
            T.SYSTEM_WORKER_CRASH,
            hard=True,
        ),
        _case(
            "Exception envoy upstream reset",
            Exception("upstream connect error or disconnect/reset before headers"),
            T.EXTERNAL_API_DOWN,
            hard=True,
        ),
        _case(
            "Exception could not acquire lock",
            Exception("Could not acquire lock 'invoice:7' within 10s"),
            T.TRANSIENT_RESOURCE,
            hard=True,
        ),
        _case(
            "Exception certificate verify failed text",
            Exception("SSL: CERTIFICATE_VERIFY_FAILED certificate verify failed"),
            T.CONFIG_INVALID_SETTING,
            hard=True,
        ),
        _case("MemoryError", MemoryError(), T.SYSTEM_OUT_OF_MEMORY, by_class=True),
        _case(
            "AssertionError", AssertionError("invariant broken"), T.PERMANENT_LOGIC, by_class=True
        ),
        _case("NotImplementedError", NotImplementedError(), T.PERMANENT_LOGIC, by_class=True),
        _case(
            "ModuleNotFoundError",
            ModuleNotFoundError("No module named 'stripe'"),
            T.CONFIG_MISSING_SERVICE,
            by_class=True,
        ),
        _case("KeyboardInterrupt", KeyboardInterrupt(), T.UNKNOWN, by_class=True),
        _case("SystemExit", SystemExit(1), T.UNKNOWN, by_class=True),
    ]


def _stdlib_more() -> list[Case]:
    import concurrent.futures.process
    import ssl
    import subprocess

    return [
        _case(
            "BrokenProcessPool",
            concurrent.futures.process.BrokenProcessPool(
                "A process in the process pool was terminated abruptly while the future was "
                "running or pending."
            ),
            T.SYSTEM_WORKER_CRASH,
            by_class=True,
        ),
        _case(
            "subprocess TimeoutExpired",
            subprocess.TimeoutExpired(["convert"], 30),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case(
            "ssl certificate verify failed",
            ssl.SSLCertVerificationError(
                1,
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
                "certificate",
            ),
            T.CONFIG_INVALID_SETTING,
            by_class=True,
        ),
        _case(
            "ssl EOF",
            ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
            T.TRANSIENT_NETWORK,
            by_class=True,
        ),
    ]


def _chains() -> list[Case]:
    import psycopg.errors

    class TaskFailed(Exception):
        pass

    TaskFailed.__module__ = "shop.tasks"
    return [
        _case(
            "RuntimeError raised from DeadlockDetected",
            _raised_from(
                RuntimeError("could not save order"),
                psycopg.errors.DeadlockDetected("deadlock detected"),
            ),
            T.TRANSIENT_DATABASE,
            hard=True,
        ),
        _case(
            "TaskFailed raised while handling ENOSPC",
            _raised_from(
                TaskFailed("export failed"),
                OSError(errno.ENOSPC, "No space left on device"),
                implicit=True,
            ),
            T.SYSTEM_DISK_FULL,
            hard=True,
        ),
        _case(
            "ValueError raised while handling a reset (own signal wins)",
            _raised_from(
                ValueError("quantity must be positive"),
                ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
                implicit=True,
            ),
            T.PERMANENT_VALIDATION,
            hard=True,
        ),
        _case(
            "ExceptionGroup validation + network",
            ExceptionGroup(
                "batch", [ConnectionResetError(errno.ECONNRESET, "reset"), ValueError("bad row")]
            ),
            T.PERMANENT_VALIDATION,
            hard=True,
        ),
        _case(
            "ExceptionGroup of network errors",
            ExceptionGroup(
                "fan-out",
                [ConnectionRefusedError(errno.ECONNREFUSED, "refused"), TimeoutError("timed out")],
            ),
            T.TRANSIENT_NETWORK,
            hard=True,
        ),
    ]


def _custom() -> list[Case]:
    def make(name: str, base: type[BaseException] = Exception, **attrs: Any) -> type:
        cls = type(name, (base,), {})
        cls.__module__ = "shop.integrations"
        for key, value in attrs.items():
            setattr(cls, key, value)
        return cls

    class _Response:
        def __init__(self, status_code: int, headers: dict[str, str]) -> None:
            self.status_code = status_code
            self.headers = headers

    sdk_error = make("APIStatusError")("Error code: 429")
    sdk_error.status_code = 429
    sdk_error.response = _Response(429, {"retry-after": "7"})
    slow_down = make("RateLimitedError")("slow down")
    slow_down.retry_after = 30
    return [
        _case(
            "custom RateLimitedError",
            make("RateLimitedError")("limit hit"),
            T.TRANSIENT_RATE_LIMIT,
            hard=True,
        ),
        _case(
            "custom RateLimitedError.retry_after",
            slow_down,
            T.TRANSIENT_RATE_LIMIT,
            retry_after=30.0,
        ),
        _case(
            "custom UpstreamUnavailable",
            make("UpstreamUnavailable")(),
            T.EXTERNAL_API_DOWN,
            hard=True,
        ),
        _case(
            "custom PaymentGatewayTimeout",
            make("PaymentGatewayTimeout")(),
            T.EXTERNAL_TIMEOUT,
            hard=True,
        ),
        _case(
            "custom InvalidPayload",
            make("InvalidPayload")("missing field"),
            T.PERMANENT_VALIDATION,
            hard=True,
        ),
        _case(
            "custom OrderNotFound(ValueError)",
            make("OrderNotFound", ValueError)("order 7"),
            T.PERMANENT_NOT_FOUND,
            hard=True,
        ),
        _case(
            "custom AccountForbidden", make("AccountForbidden")(), T.PERMANENT_PERMISSION, hard=True
        ),
        _case(
            "custom StripeAPIError",
            make("StripeAPIError")("card processor failed"),
            T.EXTERNAL_API_ERROR,
            hard=True,
        ),
        _case(
            "SDK error with status_code 429 and response headers",
            sdk_error,
            T.TRANSIENT_RATE_LIMIT,
            retry_after=7.0,
        ),
    ]


def made_cases() -> list[Case]:
    """Every constructed case."""
    from taxonomy_corpus_made_libs import library_cases  # type: ignore[import-not-found]

    return [*_builtins(), *_stdlib_more(), *_chains(), *_custom(), *library_cases()]

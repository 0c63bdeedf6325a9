"""Realistic failures of each type: the exceptions `pytest_taskchaos.strategies.failures` draws.

For every `resilience.taxonomy.FailureType`, makers of exceptions a task really
meets: standard-library ones first (they cover every type, so draws shrink to
them), then real classes of requests, httpx, psycopg, SQLAlchemy, redis,
botocore, Celery, billiard and kombu where those are installed. Each library is
imported only when the catalog is first built, and skipped when missing.

No hypothesis here: `pytest_taskchaos.strategies` turns the catalog into a
strategy, and stays the only module of the plugin that imports hypothesis.
"""

from __future__ import annotations

import email.message
import errno
import functools
import json
import socket
import sqlite3
import urllib.error
from collections.abc import Callable
from typing import Any

from resilience import FailureType

__all__ = ["LIBRARIES", "Maker", "catalog", "raised"]

Maker = Callable[[], BaseException]
"""A zero-argument callable making a fresh exception per call."""
_T = FailureType
_URL = "https://api.example.com/v1/charges"


def _headers(**headers: str) -> email.message.Message:
    message = email.message.Message()
    for key, value in headers.items():
        message[key.replace("_", "-")] = value
    return message


def _urllib_error(status: int, reason: str, **headers: str) -> BaseException:
    return urllib.error.HTTPError(_URL, status, reason, _headers(**headers), None)


def _chained(outer: Callable[[BaseException], BaseException], inner: BaseException) -> Maker:
    """A maker of ``outer`` raised ``from inner``, the way drivers get wrapped by ORMs."""

    def make() -> BaseException:
        try:
            try:
                raise inner  # noqa: TRY301 - raised for real, to chain like a driver error
            except BaseException as error:
                raise outer(error) from error
        except BaseException as wrapped:  # noqa: BLE001 - returned, not handled
            return wrapped

    return make


def _builtin_makers() -> list[tuple[FailureType, Maker]]:
    p = functools.partial
    return [
        (_T.TRANSIENT_DATABASE, p(sqlite3.OperationalError, "database is locked")),
        (
            _T.TRANSIENT_NETWORK,
            p(ConnectionResetError, errno.ECONNRESET, "Connection reset by peer"),
        ),
        (_T.TRANSIENT_NETWORK, p(ConnectionRefusedError, errno.ECONNREFUSED, "Connection refused")),
        (_T.TRANSIENT_NETWORK, p(BrokenPipeError, errno.EPIPE, "Broken pipe")),
        (_T.TRANSIENT_RESOURCE, p(OSError, errno.EMFILE, "Too many open files")),
        (
            _T.TRANSIENT_RESOURCE,
            p(BlockingIOError, errno.EAGAIN, "Resource temporarily unavailable"),
        ),
        (_T.TRANSIENT_RATE_LIMIT, p(_urllib_error, 429, "Too Many Requests", retry_after="30")),
        (_T.PERMANENT_VALIDATION, p(ValueError, "invalid literal for int() with base 10: 'abc'")),
        (_T.PERMANENT_VALIDATION, p(json.JSONDecodeError, "Expecting value", "{", 1)),
        (
            _T.PERMANENT_NOT_FOUND,
            p(FileNotFoundError, errno.ENOENT, "No such file or directory", "/data/in.csv"),
        ),
        (_T.PERMANENT_NOT_FOUND, p(_urllib_error, 404, "Not Found")),
        (
            _T.PERMANENT_PERMISSION,
            p(PermissionError, errno.EACCES, "Permission denied", "/var/app"),
        ),
        (_T.PERMANENT_PERMISSION, p(_urllib_error, 403, "Forbidden")),
        (_T.PERMANENT_LOGIC, p(AssertionError, "invariant broken")),
        (_T.PERMANENT_LOGIC, p(TypeError, "unsupported operand type(s) for +: 'int' and 'str'")),
        (_T.PERMANENT_LOGIC, p(AttributeError, "'NoneType' object has no attribute 'id'")),
        (_T.PERMANENT_LOGIC, p(ZeroDivisionError, "division by zero")),
        (_T.CONFIG_MISSING_SETTING, p(KeyError, "STRIPE_API_KEY")),
        (
            _T.CONFIG_INVALID_SETTING,
            p(socket.gaierror, socket.EAI_NONAME, "Name or service not known"),
        ),
        (
            _T.CONFIG_MISSING_SERVICE,
            p(ModuleNotFoundError, "No module named 'stripe'", name="stripe"),
        ),
        (_T.EXTERNAL_API_DOWN, p(_urllib_error, 503, "Service Unavailable")),
        (_T.EXTERNAL_API_DOWN, p(_urllib_error, 502, "Bad Gateway")),
        (_T.EXTERNAL_API_ERROR, p(_urllib_error, 500, "Internal Server Error")),
        (_T.EXTERNAL_TIMEOUT, p(TimeoutError, "timed out")),
        (_T.EXTERNAL_TIMEOUT, p(_urllib_error, 504, "Gateway Timeout")),
        (_T.SYSTEM_OUT_OF_MEMORY, MemoryError),
        (_T.SYSTEM_DISK_FULL, p(OSError, errno.ENOSPC, "No space left on device")),
        (_T.SYSTEM_DISK_FULL, p(sqlite3.OperationalError, "database or disk is full")),
        (_T.SYSTEM_WORKER_CRASH, p(ChildProcessError, "worker exited")),
        (_T.UNKNOWN, p(RuntimeError, "unexpected state")),
        (_T.UNKNOWN, p(Exception, "something odd happened")),
    ]


def _requests_makers() -> list[tuple[FailureType, Maker]]:
    import requests  # noqa: PLC0415 - optional library, used only when installed

    def status(code: int, reason: str, **headers: str) -> BaseException:
        response = requests.Response()
        response.status_code, response.reason, response.url = code, reason, _URL
        for key, value in headers.items():
            response.headers[key.replace("_", "-")] = value
        return requests.HTTPError(f"{code} Error: {reason} for url: {_URL}", response=response)

    p = functools.partial
    return [
        (_T.TRANSIENT_NETWORK, p(requests.ConnectionError, "Max retries exceeded with url")),
        (
            _T.TRANSIENT_NETWORK,
            p(requests.ConnectTimeout, "Connection to api.example.com timed out"),
        ),
        (_T.EXTERNAL_TIMEOUT, p(requests.ReadTimeout, "Read timed out. (read timeout=10)")),
        (_T.TRANSIENT_RATE_LIMIT, p(status, 429, "Too Many Requests", retry_after="30")),
        (_T.PERMANENT_VALIDATION, p(status, 422, "Unprocessable Entity")),
        (_T.PERMANENT_NOT_FOUND, p(status, 404, "Not Found")),
        (_T.PERMANENT_PERMISSION, p(status, 403, "Forbidden")),
        (_T.EXTERNAL_API_DOWN, p(status, 503, "Service Unavailable")),
        (_T.EXTERNAL_API_ERROR, p(status, 500, "Internal Server Error")),
        (_T.EXTERNAL_TIMEOUT, p(status, 504, "Gateway Timeout")),
    ]


def _httpx_makers() -> list[tuple[FailureType, Maker]]:
    import httpx  # noqa: PLC0415 - optional library, used only when installed

    def status(code: int, **headers: str) -> BaseException:
        request = httpx.Request("POST", _URL)
        response = httpx.Response(
            code, request=request, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        return httpx.HTTPStatusError(f"status {code}", request=request, response=response)

    p = functools.partial
    return [
        (_T.TRANSIENT_NETWORK, p(httpx.ConnectError, "[Errno 111] Connection refused")),
        (_T.EXTERNAL_TIMEOUT, p(httpx.ReadTimeout, "The read operation timed out")),
        (_T.TRANSIENT_RATE_LIMIT, p(status, 429, retry_after="30")),
        (_T.PERMANENT_PERMISSION, p(status, 401)),
        (_T.EXTERNAL_API_DOWN, p(status, 502)),
        (_T.EXTERNAL_API_ERROR, p(status, 500)),
    ]


def _postgres_makers() -> list[tuple[FailureType, Maker]]:
    import psycopg.errors as pg  # noqa: PLC0415 - optional library, used only when installed

    p = functools.partial
    return [
        (_T.TRANSIENT_DATABASE, p(pg.DeadlockDetected, "deadlock detected")),
        (
            _T.TRANSIENT_DATABASE,
            p(pg.SerializationFailure, "could not serialize access due to concurrent update"),
        ),
        (_T.TRANSIENT_DATABASE, p(pg.LockNotAvailable, "canceling statement due to lock timeout")),
        (_T.TRANSIENT_DATABASE, p(pg.TooManyConnections, "sorry, too many clients already")),
        (
            _T.TRANSIENT_DATABASE,
            p(pg.ConnectionFailure, "server closed the connection unexpectedly"),
        ),
        (
            _T.PERMANENT_VALIDATION,
            p(pg.UniqueViolation, 'duplicate key value violates unique constraint "order_pkey"'),
        ),
        (_T.PERMANENT_LOGIC, p(pg.UndefinedTable, 'relation "orders" does not exist')),
        (
            _T.PERMANENT_PERMISSION,
            p(pg.InsufficientPrivilege, "permission denied for table orders"),
        ),
        (_T.CONFIG_INVALID_SETTING, p(pg.InvalidCatalogName, 'database "shop" does not exist')),
        (_T.SYSTEM_OUT_OF_MEMORY, p(pg.OutOfMemory, "out of memory")),
        (_T.SYSTEM_DISK_FULL, p(pg.DiskFull, "could not extend file: No space left on device")),
    ]


def _sqlalchemy_makers() -> list[tuple[FailureType, Maker]]:
    import sqlalchemy.exc as sa  # noqa: PLC0415 - optional library, used only when installed

    def operational(error: BaseException) -> BaseException:
        return sa.OperationalError("UPDATE orders SET paid = true", {}, error)

    return [
        (
            _T.TRANSIENT_DATABASE,
            _chained(operational, sqlite3.OperationalError("database is locked")),
        ),
    ]


def _redis_makers() -> list[tuple[FailureType, Maker]]:
    import redis.exceptions as rx  # noqa: PLC0415 - optional library, used only when installed

    p = functools.partial
    return [
        (_T.TRANSIENT_DATABASE, p(rx.BusyLoadingError, "Redis is loading the dataset in memory")),
        (
            _T.TRANSIENT_NETWORK,
            p(rx.ConnectionError, "Error 111 connecting to localhost:6379. Connection refused."),
        ),
        (_T.TRANSIENT_RESOURCE, p(rx.LockError, "Unable to acquire lock")),
        (_T.PERMANENT_VALIDATION, p(rx.DataError, "Invalid input of type: 'dict'.")),
        (
            _T.PERMANENT_PERMISSION,
            p(rx.AuthenticationError, "invalid username-password pair or user is disabled."),
        ),
        (
            _T.SYSTEM_OUT_OF_MEMORY,
            p(rx.OutOfMemoryError, "command not allowed when used memory > 'maxmemory'."),
        ),
    ]


def _botocore_makers() -> list[tuple[FailureType, Maker]]:
    import botocore.exceptions as bx  # type: ignore[import-untyped]  # noqa: PLC0415 - optional

    def client_error(code: str, status: int) -> BaseException:
        response: Any = {
            "Error": {"Code": code, "Message": code},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        }
        error: BaseException = bx.ClientError(response, "GetObject")
        return error

    p = functools.partial
    return [
        (
            _T.TRANSIENT_NETWORK,
            p(bx.ConnectTimeoutError, endpoint_url="https://s3.amazonaws.com/bucket"),
        ),
        (_T.TRANSIENT_RATE_LIMIT, p(client_error, "ThrottlingException", 400)),
        (_T.PERMANENT_NOT_FOUND, p(client_error, "NoSuchKey", 404)),
        (_T.PERMANENT_PERMISSION, p(client_error, "AccessDenied", 403)),
        (_T.CONFIG_MISSING_SETTING, bx.NoCredentialsError),
        (_T.CONFIG_MISSING_SETTING, bx.NoRegionError),
        (_T.EXTERNAL_API_DOWN, p(client_error, "ServiceUnavailable", 503)),
        (_T.EXTERNAL_API_ERROR, p(client_error, "InternalError", 500)),
        (
            _T.EXTERNAL_TIMEOUT,
            p(bx.ReadTimeoutError, endpoint_url="https://s3.amazonaws.com/bucket"),
        ),
    ]


def _celery_makers() -> list[tuple[FailureType, Maker]]:
    import billiard.exceptions as bl  # type: ignore[import-untyped]  # noqa: PLC0415 - optional
    import celery.exceptions as ce  # type: ignore[import-untyped]  # noqa: PLC0415 - optional
    import kombu.exceptions as ke  # noqa: PLC0415 - optional library, used only when installed

    p = functools.partial
    return [
        (_T.TRANSIENT_NETWORK, p(ke.OperationalError, "[Errno 111] Connection refused")),
        (_T.CONFIG_MISSING_SERVICE, p(ce.NotRegistered, "billing.charge")),
        (_T.EXTERNAL_TIMEOUT, ce.SoftTimeLimitExceeded),
        (
            _T.SYSTEM_WORKER_CRASH,
            p(bl.WorkerLostError, "Worker exited prematurely: signal 9 (SIGKILL) Job: 3."),
        ),
        (_T.SYSTEM_WORKER_CRASH, p(ce.Terminated, 15)),
    ]


LIBRARIES: tuple[Callable[[], list[tuple[FailureType, Maker]]], ...] = (
    _requests_makers,
    _httpx_makers,
    _postgres_makers,
    _sqlalchemy_makers,
    _redis_makers,
    _botocore_makers,
    _celery_makers,
)


@functools.cache
def catalog() -> dict[FailureType, tuple[Maker, ...]]:
    """Makers per failure type: builtins first (so examples shrink to them), then libraries."""
    pairs = _builtin_makers()
    for library in LIBRARIES:
        try:
            pairs += library()
        except ImportError:
            continue  # not installed: the builtins of the same type stand in
    by_type: dict[FailureType, list[Maker]] = {member: [] for member in FailureType}
    for failure_type, make in pairs:
        by_type[failure_type].append(make)
    return {member: tuple(makers) for member, makers in by_type.items()}


def raised(make: Maker) -> BaseException:
    """A fresh exception from ``make``, raised and caught so it has a traceback like a real one."""
    exc = make()
    try:
        raise exc  # noqa: TRY301 - raised for real, so it carries a traceback
    except BaseException as caught:  # noqa: BLE001 - returned, not handled
        return caught

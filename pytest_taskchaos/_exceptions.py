"""The exceptions built-in faults raise: real library classes, else stand-ins.

The factories import their library lazily, when a fault fires, so importing
the catalog costs nothing. Stand-ins are used when the library is not installed.

Each class carries the module and qualified name of the class it replaces,
so ``resilience.classify`` (which matches on qualified names along the MRO)
files it under the same failure type, and the structured attributes the
classifier's probes read (``sqlstate``, ``response.status_code``, headers).
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "ExceptionFactory",
    "StandInResponse",
    "broker_operational_error",
    "celery_soft_time_limit",
    "connection_refused",
    "connection_reset",
    "dns_failure",
    "http_factories",
    "library_factories",
    "missing_setting_factory",
    "oserror_factory",
    "pool_exhausted_factories",
    "psycopg_error",
    "psycopg_factories",
    "redis_connection_error",
    "requests_connect_timeout",
    "requests_connection_error",
    "requests_connection_factories",
    "requests_http_error",
    "requests_read_timeout",
    "requests_timeout_factories",
    "sqlalchemy_pool_timeout",
    "worker_lost_error",
]

ExceptionFactory: TypeAlias = "Callable[[], BaseException]"
"""A zero-argument callable making a fresh exception per firing."""


def _named(module: str, name: str, *bases: type[BaseException]) -> type[BaseException]:
    return type(name, bases or (Exception,), {"__module__": module, "__qualname__": name})


_PSYCOPG_ERROR = _named("psycopg", "Error")
_PSYCOPG_DATABASE = _named("psycopg", "DatabaseError", _PSYCOPG_ERROR)
_PSYCOPG_OPERATIONAL = _named("psycopg", "OperationalError", _PSYCOPG_DATABASE)
_PSYCOPG_CLASSES: dict[str, type[BaseException]] = {}


def psycopg_error(class_name: str, sqlstate: str, message: str) -> BaseException:
    """A ``psycopg.errors.<class_name>`` look-alike carrying ``sqlstate``."""
    cls = _PSYCOPG_CLASSES.get(class_name)
    if cls is None:
        cls = _named("psycopg.errors", class_name, _PSYCOPG_OPERATIONAL)
        _PSYCOPG_CLASSES[class_name] = cls
    exc = cls(message)
    exc.sqlstate = sqlstate  # type: ignore[attr-defined]
    return exc


_SA_ERROR = _named("sqlalchemy.exc", "SQLAlchemyError")
_SA_TIMEOUT = _named("sqlalchemy.exc", "TimeoutError", _SA_ERROR)


def sqlalchemy_pool_timeout(message: str) -> BaseException:
    """A ``sqlalchemy.exc.TimeoutError`` look-alike (QueuePool limit reached)."""
    return _SA_TIMEOUT(message)


@dataclass(slots=True, kw_only=True)
class StandInResponse:
    """The parts of ``requests.Response`` the classifier and user code read."""

    status_code: int
    reason: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the status is below 400, like ``requests.Response.ok``."""
        return self.status_code < 400


_RQ = "requests.exceptions"
_RQ_BASE = _named(_RQ, "RequestException", OSError)
_RQ_CONNECTION = _named(_RQ, "ConnectionError", _RQ_BASE)
_RQ_TIMEOUT = _named(_RQ, "Timeout", _RQ_BASE)
_RQ_CONNECT_TIMEOUT = _named(_RQ, "ConnectTimeout", _RQ_CONNECTION, _RQ_TIMEOUT)
_RQ_READ_TIMEOUT = _named(_RQ, "ReadTimeout", _RQ_TIMEOUT)
_RQ_HTTP = _named(_RQ, "HTTPError", _RQ_BASE)


def requests_connect_timeout(message: str) -> BaseException:
    """A ``requests.exceptions.ConnectTimeout`` look-alike."""
    return _RQ_CONNECT_TIMEOUT(message)


def requests_read_timeout(message: str) -> BaseException:
    """A ``requests.exceptions.ReadTimeout`` look-alike."""
    return _RQ_READ_TIMEOUT(message)


def requests_connection_error(message: str) -> BaseException:
    """A ``requests.exceptions.ConnectionError`` look-alike (the caller sets the cause)."""
    return _RQ_CONNECTION(message)


def requests_http_error(message: str, response: StandInResponse) -> BaseException:
    """A ``requests.exceptions.HTTPError`` look-alike with ``.response``."""
    exc = _RQ_HTTP(message)
    exc.response = response  # type: ignore[attr-defined]
    return exc


_CELERY_SOFT = _named("billiard.exceptions", "SoftTimeLimitExceeded")
_WORKER_LOST = _named("billiard.exceptions", "WorkerLostError")


def celery_soft_time_limit(message: str) -> BaseException:
    """A ``billiard.exceptions.SoftTimeLimitExceeded`` look-alike (Celery re-exports it)."""
    return _CELERY_SOFT(message)


def worker_lost_error(message: str) -> BaseException:
    """A ``billiard.exceptions.WorkerLostError`` look-alike."""
    return _WORKER_LOST(message)


_KOMBU_ERROR = _named("kombu.exceptions", "KombuError")
_KOMBU_OPERATIONAL = _named("kombu.exceptions", "OperationalError", _KOMBU_ERROR)


def broker_operational_error(message: str) -> BaseException:
    """A ``kombu.exceptions.OperationalError`` look-alike (publishing failed)."""
    return _KOMBU_OPERATIONAL(message)


_REDIS_ERROR = _named("redis.exceptions", "RedisError")
_REDIS_CONNECTION = _named("redis.exceptions", "ConnectionError", _REDIS_ERROR)


def redis_connection_error(message: str) -> BaseException:
    """A ``redis.exceptions.ConnectionError`` look-alike (result backend unreachable)."""
    return _REDIS_CONNECTION(message)


# --------------------------------------------------------------------------- factories
# Each real factory imports its library lazily and falls back to the stand-in.


def psycopg_factories(class_name: str, sqlstate: str, message: str) -> tuple[ExceptionFactory, ...]:
    def stand_in() -> BaseException:
        return psycopg_error(class_name, sqlstate, message)

    def real() -> BaseException:
        try:
            from psycopg import errors  # noqa: PLC0415 - optional, imported on firing
        except ImportError:
            return stand_in()
        cls: type[BaseException] = getattr(errors, class_name)
        return cls(message)

    return real, stand_in


def pool_exhausted_factories() -> tuple[ExceptionFactory, ...]:
    message = (
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00 "
        "(Background on this error at: https://sqlalche.me/e/20/3o7r)"
    )

    def stand_in() -> BaseException:
        return sqlalchemy_pool_timeout(message)

    def real() -> BaseException:
        try:
            from sqlalchemy import exc  # noqa: PLC0415 - optional, imported on firing
        except ImportError:
            return stand_in()
        return exc.TimeoutError(message)

    return real, stand_in


_URL = "https://api.example.com/v1/charges"


def requests_timeout_factories(kind: str, message: str) -> tuple[ExceptionFactory, ...]:
    def stand_in() -> BaseException:
        make = requests_connect_timeout if kind == "connect" else requests_read_timeout
        return make(message)

    def real() -> BaseException:
        try:
            import requests  # noqa: PLC0415 - optional, imported on firing
        except ImportError:
            return stand_in()
        cls = requests.ConnectTimeout if kind == "connect" else requests.ReadTimeout
        return cls(message)

    return real, stand_in


def requests_connection_factories(
    cause: Callable[[], BaseException],
) -> tuple[ExceptionFactory, ...]:
    # requests wraps the socket error; the classifier looks through to the cause.
    def stand_in() -> BaseException:
        inner = cause()
        exc = requests_connection_error(f"Connection aborted: {inner}")
        exc.__cause__ = inner
        return exc

    def real() -> BaseException:
        try:
            import requests  # noqa: PLC0415 - optional, imported on firing
        except ImportError:
            return stand_in()
        inner = cause()
        exc = requests.ConnectionError(f"Connection aborted: {inner}")
        exc.__cause__ = inner
        return exc

    return real, stand_in


_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def http_factories(status: int, headers: Mapping[str, str]) -> tuple[ExceptionFactory, ...]:
    reason = _REASONS[status]
    kind = "Client" if status < 500 else "Server"
    message = f"{status} {kind} Error: {reason} for url: {_URL}"

    def stand_in() -> BaseException:
        response = StandInResponse(
            status_code=status, reason=reason, url=_URL, headers=dict(headers)
        )
        return requests_http_error(message, response)

    def real() -> BaseException:
        try:
            import requests  # noqa: PLC0415 - optional, imported on firing
        except ImportError:
            return stand_in()
        response = requests.Response()
        response.status_code = status
        response.reason = reason
        response.url = _URL
        response.headers.update(headers)
        return requests.HTTPError(message, response=response)

    return real, stand_in


def library_factories(
    module: str, attribute: str, message: str, stand_in_of: Callable[[str], BaseException]
) -> tuple[ExceptionFactory, ...]:
    def stand_in() -> BaseException:
        return stand_in_of(message)

    def real() -> BaseException:
        try:
            imported = __import__(module, fromlist=[attribute])
        except ImportError:
            return stand_in()
        cls: type[BaseException] = getattr(imported, attribute)
        return cls(message)

    return real, stand_in


def missing_setting_factory(setting: str) -> ExceptionFactory:
    def make() -> BaseException:
        # A private, empty environ: the KeyError comes from os._Environ's
        # __getitem__, exactly what ``os.environ["X"]`` raises, whatever the
        # real environment of the test run contains.
        empty = os._Environ({}, str, str, str, str)
        try:
            empty[setting]
        except KeyError as exc:
            return exc
        raise AssertionError("unreachable: the environ is empty")  # pragma: no cover

    return make


def oserror_factory(number: int, message: str) -> ExceptionFactory:
    def make() -> BaseException:
        return OSError(number, message)

    return make


def connection_refused() -> BaseException:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def connection_reset() -> BaseException:
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


def dns_failure() -> BaseException:
    return socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

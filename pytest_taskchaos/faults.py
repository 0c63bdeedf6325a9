"""The fault catalog: what a chaos test can inject, as plain values.

A :class:`Fault` says what it raises (a factory making a fresh exception per
firing), how ``resilience.classify`` files that exception, where it is
injected by default, and the extra behaviour the simulation must apply
(worker loss, duplicate delivery, latency, broker or result backend down).
Nothing here injects anything: the simulation reads these values.

Each built-in fault raises what user code would really see: the real library
class when the library is installed (imported lazily, inside the factory),
else a stand-in with the same qualified name and attributes, which the
classifier files under the same type::

    fault("rate_limit", retry_after=30).exception()   # requests HTTPError, 429
    custom(ValueError("bad card"), name="bad_card")
"""

from __future__ import annotations

import copy
import difflib
import errno
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from pytest_taskchaos import _exceptions as _ex
from resilience.clock import seconds_of
from resilience.errors import ConfigurationError
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import timedelta

__all__ = [
    "CATALOG",
    "ExceptionFactory",
    "Fault",
    "InjectionPoint",
    "custom",
    "fault",
]

ExceptionFactory = _ex.ExceptionFactory


class InjectionPoint(StrEnum):
    """Where in a task's run a fault fires, besides calls to dependencies.

    An injection may instead name a dependency point (``"db"``, ``"http"``,
    ``"redis"`` or an import path); see :mod:`pytest_taskchaos.injection`.
    """

    ENTRY = "entry"
    """Before the task body runs."""
    EXIT = "exit"
    """After the body's side effects, before the message is acked."""
    PUBLISH = "publish"
    """When the task publishes a message (a ``delay`` inside the body, a retry)."""
    RESULT = "result"
    """When the worker stores the task's result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One injectable fault, as data the simulation reads.

    Attributes:
        name: the catalog name (``"deadlock"``) or the user's name for a custom fault.
        failure_type: how ``resilience.classify`` files the raised exception
            (``None`` for faults that raise nothing themselves: latency,
            duplicate delivery).
        point: where it fires unless the injection names another point.
        raises: makes a fresh exception per firing; ``None`` when nothing is raised.
        stand_in: makes the stand-in exception used when the real library is
            missing (``None`` for builtins and custom faults).
        latency: virtual seconds the call takes before anything else happens.
        worker_lost: the attempt ends without ack; side effects are kept and
            the message is redelivered.
        duplicate_delivery: the message is delivered a second time, also after
            the first run's side effects.
        broker_down: publishing a message fails with the raised exception.
        result_backend_down: storing the task's result fails with the raised exception.
        params: the parameters the fault was configured with, for reports.
        description: one line for reports and ``list-faults``.
    """

    name: str
    failure_type: FailureType | None
    point: InjectionPoint = InjectionPoint.ENTRY
    raises: ExceptionFactory | None = None
    stand_in: ExceptionFactory | None = None
    latency: float = 0.0
    worker_lost: bool = False
    duplicate_delivery: bool = False
    broker_down: bool = False
    result_backend_down: bool = False
    params: tuple[tuple[str, object], ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(
                f"fault name must be a non-empty string, got {self.name!r}",
                key="name",
                value=self.name,
            )
        if self.failure_type is not None and not isinstance(self.failure_type, FailureType):
            raise ConfigurationError(
                f"failure_type must be a FailureType, got {self.failure_type!r}",
                key="failure_type",
                value=self.failure_type,
            )
        object.__setattr__(self, "point", _point(self.point))
        for key in ("raises", "stand_in"):
            value = getattr(self, key)
            if value is not None and not callable(value):
                raise ConfigurationError(
                    f"{key} must be an exception factory, got {value!r}", key=key, value=value
                )
        latency = self.latency
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise ConfigurationError(
                f"latency must be seconds, got {latency!r}", key="latency", value=latency
            )
        if not math.isfinite(latency) or latency < 0:
            raise ConfigurationError(
                f"latency must be finite seconds >= 0, got {latency!r}",
                key="latency",
                value=latency,
            )
        object.__setattr__(self, "latency", float(latency))
        if self.raises is None and latency == 0 and not self.duplicate_delivery:
            raise ConfigurationError(
                f"fault {self.name!r} does nothing: give it an exception, latency or "
                "duplicate delivery",
                key="raises",
                value=None,
            )

    @property
    def options(self) -> Mapping[str, object]:
        """The configured parameters as a read-only mapping."""
        return MappingProxyType(dict(self.params))

    def exception(self) -> BaseException | None:
        """Make the exception for one firing (a fresh object each time).

        Returns:
            The exception to raise, or ``None`` when this fault raises nothing.
        """
        return None if self.raises is None else self.raises()


def _point(value: object) -> InjectionPoint:
    valid = {p.value: p for p in InjectionPoint}
    found = valid.get(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigurationError(
            f"point must be one of {', '.join(valid)}, got {value!r}", key="point", value=value
        )
    return found


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    build: Callable[..., Fault]
    params: tuple[str, ...] = ()


def _f(
    name: str,
    failure_type: FailureType | None,
    factories: tuple[ExceptionFactory, ...] | ExceptionFactory | None,
    description: str,
    *,
    point: InjectionPoint = InjectionPoint.ENTRY,
    params: tuple[tuple[str, object], ...] = (),
    **flags: bool | float,
) -> Fault:
    raises: ExceptionFactory | None = factories if not isinstance(factories, tuple) else None
    stand_in: ExceptionFactory | None = None
    if isinstance(factories, tuple):
        raises, stand_in = factories
    return Fault(
        name=name,
        failure_type=failure_type,
        point=point,
        raises=raises,
        stand_in=stand_in,
        params=params,
        description=description,
        **flags,  # type: ignore[arg-type]
    )


_T = FailureType


def _fixed(*args: object, **kwargs: object) -> Callable[..., Fault]:
    def build() -> Fault:
        return _f(*args, **kwargs)  # type: ignore[arg-type]

    return build


def _seconds(value: object, *, name: str, allow_zero: bool) -> float:
    try:
        seconds = seconds_of(value, name=name)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(str(exc), key=name, value=value) from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{name} must be finite seconds {bound}, got {value!r}", key=name, value=value
        )
    return seconds


def _rate_limit(*, retry_after: float | timedelta = 30.0) -> Fault:
    seconds = _seconds(retry_after, name="retry_after", allow_zero=True)
    shown = str(int(seconds)) if seconds.is_integer() else str(math.ceil(seconds))
    return _f(
        "rate_limit",
        _T.TRANSIENT_RATE_LIMIT,
        _ex.http_factories(429, {"Retry-After": shown}),
        "HTTP 429 Too Many Requests with a Retry-After header",
        params=(("retry_after", seconds),),
    )


def _api_down(*, status: int = 503) -> Fault:
    if status not in (502, 503):
        raise ConfigurationError(
            f"status must be 502 or 503 for api_down, got {status!r}", key="status", value=status
        )
    return _f(
        "api_down",
        _T.EXTERNAL_API_DOWN,
        _ex.http_factories(status, {}),
        "HTTP 502/503 from an external API",
        params=(("status", status),),
    )


def _latency(*, seconds: float | timedelta = 5.0) -> Fault:
    value = _seconds(seconds, name="seconds", allow_zero=False)
    return Fault(
        name="latency",
        failure_type=None,
        latency=value,
        params=(("seconds", value),),
        description="advance virtual time inside the call (trips time limits)",
    )


def _missing(*, setting: str = "PAYMENTS_API_KEY") -> Fault:
    if not isinstance(setting, str) or not setting:
        raise ConfigurationError(
            f"setting must be a non-empty name, got {setting!r}", key="setting", value=setting
        )
    return _f(
        "missing_setting",
        _T.CONFIG_MISSING_SETTING,
        _ex.missing_setting_factory(setting),
        "KeyError from an environment lookup of a setting that is not set",
        params=(("setting", setting),),
    )


_PG = "server closed the connection unexpectedly"
_ENTRIES: dict[str, _Entry] = {
    "deadlock": _Entry(
        build=_fixed(
            "deadlock",
            _T.TRANSIENT_DATABASE,
            _ex.psycopg_factories("DeadlockDetected", "40P01", "deadlock detected"),
            "PostgreSQL deadlock (SQLSTATE 40P01)",
        ),
    ),
    "serialization_failure": _Entry(
        build=_fixed(
            "serialization_failure",
            _T.TRANSIENT_DATABASE,
            _ex.psycopg_factories(
                "SerializationFailure",
                "40001",
                "could not serialize access due to concurrent update",
            ),
            "PostgreSQL serialization failure (SQLSTATE 40001)",
        ),
    ),
    "lock_timeout": _Entry(
        build=_fixed(
            "lock_timeout",
            _T.TRANSIENT_DATABASE,
            _ex.psycopg_factories(
                "LockNotAvailable", "55P03", "canceling statement due to lock timeout"
            ),
            "PostgreSQL lock timeout (SQLSTATE 55P03)",
        ),
    ),
    "db_connection_lost": _Entry(
        build=_fixed(
            "db_connection_lost",
            _T.TRANSIENT_DATABASE,
            _ex.psycopg_factories("ConnectionFailure", "08006", _PG),
            "PostgreSQL connection lost (SQLSTATE 08006)",
        ),
    ),
    "pool_exhausted": _Entry(
        build=_fixed(
            "pool_exhausted",
            _T.TRANSIENT_DATABASE,
            _ex.pool_exhausted_factories(),
            "SQLAlchemy QueuePool limit reached",
        ),
    ),
    "connect_timeout": _Entry(
        build=_fixed(
            "connect_timeout",
            _T.TRANSIENT_NETWORK,
            _ex.requests_timeout_factories(
                "connect", "Connection to api.example.com timed out (connect=10)"
            ),
            "HTTP connect timeout",
        ),
    ),
    "read_timeout": _Entry(
        build=_fixed(
            "read_timeout",
            _T.EXTERNAL_TIMEOUT,
            _ex.requests_timeout_factories("read", "Read timed out. (read timeout=30)"),
            "HTTP read timeout (the request may have been processed)",
        ),
    ),
    "connection_refused": _Entry(
        build=_fixed(
            "connection_refused",
            _T.TRANSIENT_NETWORK,
            _ex.requests_connection_factories(_ex.connection_refused),
            "connection refused (ECONNREFUSED)",
        ),
    ),
    "connection_reset": _Entry(
        build=_fixed(
            "connection_reset",
            _T.TRANSIENT_NETWORK,
            _ex.requests_connection_factories(_ex.connection_reset),
            "connection reset by peer (ECONNRESET)",
        ),
    ),
    "dns_failure": _Entry(
        build=_fixed(
            "dns_failure",
            _T.TRANSIENT_NETWORK,
            _ex.requests_connection_factories(_ex.dns_failure),
            "temporary DNS failure (EAI_AGAIN)",
        ),
    ),
    "rate_limit": _Entry(build=_rate_limit, params=("retry_after",)),
    "api_down": _Entry(build=_api_down, params=("status",)),
    "api_error": _Entry(
        build=_fixed(
            "api_error",
            _T.EXTERNAL_API_ERROR,
            _ex.http_factories(500, {}),
            "HTTP 500 from an external API",
        ),
    ),
    "gateway_timeout": _Entry(
        build=_fixed(
            "gateway_timeout",
            _T.EXTERNAL_TIMEOUT,
            _ex.http_factories(504, {}),
            "HTTP 504 from an external API's gateway",
        ),
    ),
    "oom": _Entry(
        build=_fixed("oom", _T.SYSTEM_OUT_OF_MEMORY, MemoryError, "MemoryError in the task"),
    ),
    "worker_lost": _Entry(
        build=_fixed(
            "worker_lost",
            _T.SYSTEM_WORKER_CRASH,
            _ex.library_factories(
                "billiard.exceptions",
                "WorkerLostError",
                "Worker exited prematurely: signal 9 (SIGKILL).",
                _ex.worker_lost_error,
            ),
            "the worker dies mid-task: no ack, side effects kept, message redelivered",
            point=InjectionPoint.EXIT,
            worker_lost=True,
        ),
    ),
    "soft_time_limit": _Entry(
        build=_fixed(
            "soft_time_limit",
            _T.EXTERNAL_TIMEOUT,
            _ex.library_factories(
                "celery.exceptions",
                "SoftTimeLimitExceeded",
                "SoftTimeLimitExceeded()",
                _ex.celery_soft_time_limit,
            ),
            "Celery soft time limit exceeded",
        ),
    ),
    "disk_full": _Entry(
        build=_fixed(
            "disk_full",
            _T.SYSTEM_DISK_FULL,
            _ex.oserror_factory(errno.ENOSPC, "No space left on device"),
            "OSError ENOSPC writing a file",
        ),
    ),
    "missing_setting": _Entry(build=_missing, params=("setting",)),
    "broker_down": _Entry(
        build=_fixed(
            "broker_down",
            _T.TRANSIENT_NETWORK,
            _ex.library_factories(
                "kombu.exceptions",
                "OperationalError",
                "[Errno 111] Connection refused",
                _ex.broker_operational_error,
            ),
            "publishing a message fails: the broker is unreachable",
            point=InjectionPoint.PUBLISH,
            broker_down=True,
        ),
    ),
    "result_backend_down": _Entry(
        build=_fixed(
            "result_backend_down",
            _T.TRANSIENT_NETWORK,
            _ex.library_factories(
                "redis.exceptions",
                "ConnectionError",
                "Error 111 connecting to localhost:6379. Connection refused.",
                _ex.redis_connection_error,
            ),
            "storing the task's result fails: the result backend is unreachable",
            point=InjectionPoint.RESULT,
            result_backend_down=True,
        ),
    ),
    "latency": _Entry(build=_latency, params=("seconds",)),
    "duplicate_delivery": _Entry(
        build=_fixed(
            "duplicate_delivery",
            None,
            None,
            "the same message is delivered twice, also after the first run's side effects",
            point=InjectionPoint.EXIT,
            duplicate_delivery=True,
        ),
    ),
}

CATALOG: Mapping[str, Fault] = MappingProxyType(
    {name: entry.build() for name, entry in _ENTRIES.items()}
)
"""Every built-in fault, by name, with its default parameters (read-only)."""


def fault(name: str, **params: object) -> Fault:
    """Look up a built-in fault and configure it.

    ``rate_limit`` takes ``retry_after`` (seconds or ``timedelta``),
    ``api_down`` takes ``status`` (502 or 503), ``latency`` takes ``seconds``,
    ``missing_setting`` takes ``setting`` (the variable's name).

    Args:
        name: the catalog name.
        **params: the fault's parameters.

    Returns:
        The configured fault.

    Raises:
        ConfigurationError: for an unknown name (listing the valid ones, with a
            suggestion) or an unknown or invalid parameter (naming it).
    """
    entry = _ENTRIES.get(name) if isinstance(name, str) else None
    if entry is None:
        valid = ", ".join(sorted(_ENTRIES))
        close = difflib.get_close_matches(str(name), list(_ENTRIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"unknown fault {name!r}{hint} Valid faults: {valid}", key="fault", value=name
        )
    allowed = entry.params
    for key, value in params.items():
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise ConfigurationError(
                f"fault {name!r} has no parameter {key!r}; it takes: {takes}",
                key=key,
                value=value,
            )
    return entry.build(**params)


def custom(
    exc_or_factory: BaseException | type[BaseException] | Callable[[], BaseException],
    *,
    name: str = "custom",
    failure_type: FailureType | None = None,
) -> Fault:
    """Make a user-defined fault from an exception instance, class or factory.

    Args:
        exc_or_factory: an exception (copied per firing), an exception class
            (instantiated without arguments) or a zero-argument factory.
        name: the fault's name in history and reports.
        failure_type: how it classifies; by default what ``resilience.classify``
            says about a sample exception.

    Returns:
        The fault.

    Raises:
        ConfigurationError: when the argument is none of the above or the
            factory does not return an exception.
    """
    factory: ExceptionFactory
    if isinstance(exc_or_factory, BaseException):
        template = exc_or_factory

        def factory() -> BaseException:
            try:
                made = copy.copy(template)
            except Exception:  # noqa: BLE001 - an uncopyable exception is reused as is
                return template
            made.__traceback__ = None
            return made

    elif (
        isinstance(exc_or_factory, type) and issubclass(exc_or_factory, BaseException)
    ) or callable(exc_or_factory):
        factory = exc_or_factory
    else:
        raise ConfigurationError(
            f"a custom fault takes an exception, an exception class or a factory, "
            f"got {exc_or_factory!r}",
            key="exception",
            value=exc_or_factory,
        )
    sample = factory()
    if not isinstance(sample, BaseException):
        raise ConfigurationError(
            f"the factory of fault {name!r} returned {sample!r}, not an exception",
            key="exception",
            value=sample,
        )
    if failure_type is None:
        from resilience import classify  # noqa: PLC0415 - only custom faults need the classifier

        failure_type = classify(sample).failure_type
    return Fault(
        name=name,
        failure_type=failure_type,
        raises=factory,
        description=f"user-defined: {type(sample).__qualname__}",
    )

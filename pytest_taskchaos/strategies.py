"""Hypothesis strategies for retry policies, backoff curves and realistic failures.

This is the only module of the plugin that imports hypothesis, so projects that
never use property tests never pay for it. The functions follow hypothesis' own
style: plural nouns returning a ``SearchStrategy``, keyword-only ``min_*`` /
``max_*`` bounds, and ``hypothesis.errors.InvalidArgument`` for arguments that
could only describe an empty strategy.

- `retry_policies` draws valid `resilience.RetryPolicy` values over every
  strategy and jitter mode.
- `backoff_strategies` draws `resilience.backoff.Strategy` members.
- `failures` draws exceptions a task really meets, of the requested
  `resilience.taxonomy.FailureType` (real library classes where installed).
- `assert_backoff_invariants` checks what every policy's delays must satisfy.

See ``docs/strategies.md``.
"""

from __future__ import annotations

import email.message
import errno
import functools
import json
import math
import random
import socket
import sqlite3
import urllib.error
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from resilience import BreakerSettings, FailureType, Jitter, RetryPolicy, Strategy
from resilience.clock import seconds_of

if TYPE_CHECKING:
    from datetime import timedelta

    from hypothesis.strategies import SearchStrategy

__all__ = [
    "assert_backoff_invariants",
    "backoff_strategies",
    "failures",
    "retry_policies",
]

_Maker = Callable[[], BaseException]
_T = FailureType
_URL = "https://api.example.com/v1/charges"
# Growth factors above this reach any cap within a couple of retries; larger ones add
# no new curve shapes, only slower shrinking.
_MAX_FACTOR = 10.0
_MAX_BREAKER_THRESHOLD = 20
_MAX_RESET_TIMEOUT = 3600.0


# --- retry policies ---------------------------------------------------------------------


def _lookup(enum: type[Strategy] | type[Jitter], item: object) -> Any:
    """The member of ``enum`` whose value is ``item``, or ``None``."""
    if isinstance(item, str):
        try:
            return enum(item)
        except ValueError:
            return None
    return None


def _members(enum: type[Strategy] | type[Jitter], values: object, *, name: str) -> tuple[Any, ...]:
    """The enum members named by ``values`` (one member, its string, or an iterable of them).

    Raises:
        InvalidArgument: for an empty selection or an unknown member, listing the valid ones.
    """
    if values is None:
        return tuple(enum)
    items: Iterable[object] = (
        (values,) if isinstance(values, str) else values  # type: ignore[assignment]
    )
    if not isinstance(items, Iterable):
        raise InvalidArgument(f"{name}={values!r} must be a member, its name or an iterable")
    chosen: list[Any] = []
    for item in items:
        member = _lookup(enum, item)
        if member is None:
            valid = ", ".join(m.value for m in enum)
            raise InvalidArgument(f"{name} holds {item!r}; valid values: {valid}")
        if member not in chosen:
            chosen.append(member)
    if not chosen:
        raise InvalidArgument(f"{name}={values!r} selects nothing; pass None for all of them")
    return tuple(chosen)


def _count(value: object, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name}={value!r} must be an int >= 0")
    return value


def _seconds(value: object, *, name: str) -> float:
    try:
        seconds = seconds_of(value, name=name)  # type: ignore[arg-type]
    except TypeError as exc:
        raise InvalidArgument(f"{name}={value!r}: {exc}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"{name}={value!r} must be a finite, non-negative duration")
    return seconds


def _factors(strategy: Strategy) -> SearchStrategy[float]:
    if strategy is Strategy.EXPONENTIAL:
        return st.floats(min_value=1.0, max_value=_MAX_FACTOR)
    if strategy is Strategy.LINEAR:
        return st.floats(min_value=0.0, max_value=_MAX_FACTOR, exclude_min=True)
    return st.just(2.0)  # unused by the other curves; a fixed value keeps examples small


def _breakers() -> SearchStrategy[BreakerSettings | None]:
    settings = st.builds(
        BreakerSettings,
        failure_threshold=st.integers(min_value=1, max_value=_MAX_BREAKER_THRESHOLD),
        reset_timeout=st.floats(min_value=0.0, max_value=_MAX_RESET_TIMEOUT, exclude_min=True),
    )
    return st.none() | settings


def retry_policies(
    *,
    strategies: Strategy | str | Iterable[Strategy | str] | None = None,
    min_retries: int = 0,
    max_retries: int = 10,
    min_delay: float | timedelta = 0.0,
    max_delay: float | timedelta = 3600.0,
    jitter: Jitter | str | Iterable[Jitter | str] | None = None,
) -> SearchStrategy[RetryPolicy]:
    """Valid retry policies, over every curve shape and jitter mode unless narrowed.

    Each policy's ``initial_delay`` and ``max_delay`` lie in ``[min_delay, max_delay]``
    (``initial_delay <= max_delay`` as the policy requires); its factor, jitter ratio
    and breaker settings are drawn too. Shrinks towards few retries, small delays and
    the first strategy and jitter mode listed.

    Args:
        strategies: the curve shapes to draw from (members or their names); all of them
            when ``None``.
        min_retries: the fewest ``max_retries`` a policy may have.
        max_retries: the most ``max_retries`` a policy may have.
        min_delay: the smallest initial delay, in seconds or as a ``timedelta``.
        max_delay: the largest delay cap, in seconds or as a ``timedelta``; finite.
        jitter: the jitter modes to draw from; all of them when ``None``.

    Returns:
        A strategy of `resilience.RetryPolicy`.

    Raises:
        hypothesis.errors.InvalidArgument: for negative or inverted bounds, an infinite
            ``max_delay``, or an empty or unknown selection of strategies or jitter modes.
    """
    shapes: tuple[Strategy, ...] = _members(Strategy, strategies, name="strategies")
    modes: tuple[Jitter, ...] = _members(Jitter, jitter, name="jitter")
    low_retries = _count(min_retries, name="min_retries")
    high_retries = _count(max_retries, name="max_retries")
    if low_retries > high_retries:
        raise InvalidArgument(f"min_retries={min_retries!r} exceeds max_retries={max_retries!r}")
    low_delay = _seconds(min_delay, name="min_delay")
    high_delay = _seconds(max_delay, name="max_delay")
    if low_delay > high_delay:
        raise InvalidArgument(f"min_delay={min_delay!r} exceeds max_delay={max_delay!r}")

    @st.composite
    def policies(draw: st.DrawFn) -> RetryPolicy:
        shape = draw(st.sampled_from(shapes))
        initial = draw(st.floats(min_value=low_delay, max_value=high_delay))
        return RetryPolicy(
            max_retries=draw(st.integers(min_value=low_retries, max_value=high_retries)),
            initial_delay=initial,
            strategy=shape,
            factor=draw(_factors(shape)),
            max_delay=draw(st.floats(min_value=initial, max_value=high_delay)),
            jitter=draw(st.sampled_from(modes)),
            jitter_ratio=draw(st.floats(min_value=0.0, max_value=1.0)),
            breaker=draw(_breakers()),
        )

    return policies()


def backoff_strategies() -> SearchStrategy[Strategy]:
    """The curve shapes a policy can have: `resilience.backoff.Strategy` members.

    Members rather than curve objects, because a shape alone is what a policy
    takes (``RetryPolicy(strategy=...)``); `retry_policies` draws complete curves.

    Returns:
        A strategy of `resilience.backoff.Strategy`, shrinking towards ``EXPONENTIAL``.
    """
    return st.sampled_from(tuple(Strategy))


# --- failures ---------------------------------------------------------------------------


def _headers(**headers: str) -> email.message.Message:
    message = email.message.Message()
    for key, value in headers.items():
        message[key.replace("_", "-")] = value
    return message


def _urllib_error(status: int, reason: str, **headers: str) -> BaseException:
    return urllib.error.HTTPError(_URL, status, reason, _headers(**headers), None)


def _chained(outer: Callable[[BaseException], BaseException], inner: BaseException) -> _Maker:
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


def _builtin_makers() -> list[tuple[FailureType, _Maker]]:
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


def _requests_makers() -> list[tuple[FailureType, _Maker]]:
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


def _httpx_makers() -> list[tuple[FailureType, _Maker]]:
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


def _postgres_makers() -> list[tuple[FailureType, _Maker]]:
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


def _sqlalchemy_makers() -> list[tuple[FailureType, _Maker]]:
    import sqlalchemy.exc as sa  # noqa: PLC0415 - optional library, used only when installed

    def operational(error: BaseException) -> BaseException:
        return sa.OperationalError("UPDATE orders SET paid = true", {}, error)

    return [
        (
            _T.TRANSIENT_DATABASE,
            _chained(operational, sqlite3.OperationalError("database is locked")),
        ),
    ]


def _redis_makers() -> list[tuple[FailureType, _Maker]]:
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


def _botocore_makers() -> list[tuple[FailureType, _Maker]]:
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


def _celery_makers() -> list[tuple[FailureType, _Maker]]:
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


_LIBRARIES: tuple[Callable[[], list[tuple[FailureType, _Maker]]], ...] = (
    _requests_makers,
    _httpx_makers,
    _postgres_makers,
    _sqlalchemy_makers,
    _redis_makers,
    _botocore_makers,
    _celery_makers,
)


@functools.cache
def _catalog() -> dict[FailureType, tuple[_Maker, ...]]:
    """Makers per failure type: builtins first (so examples shrink to them), then libraries."""
    pairs = _builtin_makers()
    for library in _LIBRARIES:
        try:
            pairs += library()
        except ImportError:
            continue  # not installed: the builtins of the same type stand in
    catalog: dict[FailureType, list[_Maker]] = {member: [] for member in FailureType}
    for failure_type, make in pairs:
        catalog[failure_type].append(make)
    return {member: tuple(makers) for member, makers in catalog.items()}


def _raised(make: _Maker) -> BaseException:
    """A fresh exception from ``make``, raised and caught so it has a traceback like a real one."""
    exc = make()
    try:
        raise exc  # noqa: TRY301 - raised for real, so it carries a traceback
    except BaseException as caught:  # noqa: BLE001 - returned, not handled
        return caught


def failures(*, failure_type: FailureType | str | None = None) -> SearchStrategy[BaseException]:
    """Exceptions a task really meets, each filed by `resilience.classify` under its type.

    Real library classes are used where the library is installed (requests, httpx,
    psycopg, SQLAlchemy, redis, botocore, Celery, billiard, kombu); standard-library
    exceptions cover every type without them. Each draw is a new instance, raised
    once so it carries a traceback. Shrinks towards the standard-library examples.

    Args:
        failure_type: the `resilience.taxonomy.FailureType` (or its value) to draw;
            every type when ``None``.

    Returns:
        A strategy of exceptions ``exc`` with
        ``resilience.classify(exc).failure_type == failure_type``.

    Raises:
        hypothesis.errors.InvalidArgument: when ``failure_type`` is not a failure type.
    """
    catalog = _catalog()
    if failure_type is None:
        return st.one_of([failures(failure_type=member) for member in FailureType])
    try:
        member = FailureType(failure_type)
    except ValueError:
        valid = ", ".join(m.value for m in FailureType)
        raise InvalidArgument(
            f"failure_type={failure_type!r} is not a failure type; valid values: {valid}"
        ) from None
    return st.sampled_from(catalog[member]).map(_raised)


# --- invariants -------------------------------------------------------------------------


def _fail(policy: RetryPolicy, message: str) -> None:
    __tracebackhide__ = True
    raise AssertionError(f"{message}\n  policy: {policy!r}")


def assert_backoff_invariants(policy: RetryPolicy, *, rng: random.Random | None = None) -> None:
    """Check the invariants every retry policy's delays must hold.

    For retries 1 to ``max_retries``: the schedule has one delay per retry; every
    delay is a number in ``[0, max_delay]`` and within ``policy.envelope(n)``; the
    envelope's upper bound never decreases (except for decorrelated curves, whose
    bounds are not a curve); the total is at most ``max_retries * max_delay``; and
    the same seed gives the same schedule.

    Args:
        policy: the policy to check.
        rng: the source of the seed for the schedule's jitter; seed 0 when omitted.
            One value is drawn from it, so a seeded generator checks the same draw.

    Raises:
        AssertionError: naming the retry number, the values and the policy.
    """
    __tracebackhide__ = True
    seed = 0 if rng is None else rng.getrandbits(64)
    schedule = policy.schedule(rng=random.Random(seed))
    if len(schedule) != policy.max_retries:
        _fail(policy, f"schedule has {len(schedule)} delays for max_retries={policy.max_retries}")
    previous_high = -math.inf
    monotone = policy.strategy is not Strategy.DECORRELATED
    for retry_number, delay in enumerate(schedule, start=1):
        low, high = policy.envelope(retry_number)
        if math.isnan(delay) or not 0.0 <= delay <= policy.max_delay:
            _fail(
                policy,
                f"retry {retry_number}: delay {delay!r} outside "
                f"[0, max_delay={policy.max_delay!r}]",
            )
        if not low <= delay <= high:
            _fail(
                policy,
                f"retry {retry_number}: delay {delay!r} outside its envelope [{low!r}, {high!r}]",
            )
        if monotone and high < previous_high:
            _fail(
                policy,
                f"retry {retry_number}: envelope upper bound {high!r} fell below "
                f"{previous_high!r} of retry {retry_number - 1}",
            )
        previous_high = high
    total = math.fsum(schedule)
    if total > policy.max_retries * policy.max_delay:
        _fail(
            policy,
            f"total delay {total!r} exceeds max_retries * max_delay = "
            f"{policy.max_retries * policy.max_delay!r}",
        )
    again = policy.schedule(rng=random.Random(seed))
    if again != schedule:
        retry_number = next(
            i for i, (a, b) in enumerate(zip(schedule, again, strict=True), 1) if a != b
        )
        _fail(
            policy,
            f"retry {retry_number}: seed {seed} gave {schedule[retry_number - 1]!r} then "
            f"{again[retry_number - 1]!r}; the schedule is not deterministic per seed",
        )

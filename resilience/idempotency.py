"""Idempotency: run a task's body once per request, however often the request is delivered.

A call claims its **key** in a store before running (one atomic ``acquire``), then
records its result (``complete``) or gives the key back (``release``)::

    (none) --acquire--> IN_PROGRESS --complete--> COMPLETED   duplicates get the stored result
                             |  \\--release (the body raised)--> FAILED   the next delivery runs
                             \\--lease passed (the worker died)--> taken over by the next delivery

A run holding the lease makes duplicates raise :class:`IdempotencyInProgress`; a
failed run never leaves a "failed" answer behind; a fencing token stops a run whose
lease was taken over from overwriting the new owner's result; the same key with
other arguments raises :class:`IdempotencyKeyMismatch`. Keys and results are
derived and encoded in ``resilience._idempotency_codec``. See ``docs/idempotency.md``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast, overload

from resilience._idempotency_codec import (
    Binder,
    KeySpec,
    call_fingerprint,
    call_key,
    decode_result,
    encode_result,
    fit_key,
    idempotency_key,
    payload_fingerprint,
)
from resilience.clock import Clock, seconds_of, system_clock
from resilience.errors import (
    ConfigurationError,
    IdempotencyError,
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    StorageUnavailable,
)
from resilience.storage._open import mask_url, open_store
from resilience.storage.base import IdempotencyStore
from resilience.storage.records import IdempotencyRecord, IdempotencyState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import timedelta
    from types import TracebackType

    from resilience.storage.base import Store

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TTLS",
    "Claim",
    "IdempotencyGuard",
    "KeySpec",
    "OnStoreError",
    "idempotency_key",
    "idempotent",
    "payload_fingerprint",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_logger = logging.getLogger(__name__)

_HOUR: Final = 3600.0

DEFAULT_TTLS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "default": 1 * _HOUR,
        "critical": 4 * _HOUR,
        "report": 24 * _HOUR,
        "email": 2 * _HOUR,
        # Payment providers keep their own idempotency keys for 24 h (Stripe does).
        "payment": 24 * _HOUR,
        # Webhook senders redeliver for up to three days (Stripe, GitHub, Shopify).
        "webhook": 72 * _HOUR,
        # Push and SMS: the same window as e-mail.
        "notification": 2 * _HOUR,
    }
)
"""How long a key counts, in seconds, per category; ``ttl=`` overrides it per use."""

DEFAULT_LEASE: Final = 300.0
"""Seconds a run may hold its key before another delivery may take it over."""


class OnStoreError(StrEnum):
    """What a guard does when its store fails (down, timing out, refusing writes).

    ``FAIL_CLOSED`` (the default) raises :class:`StorageUnavailable` before the body
    runs, so the task retries later and nothing runs twice. ``FAIL_OPEN`` runs the
    body without protection and logs one warning per outage.
    """

    FAIL_CLOSED = "fail_closed"
    FAIL_OPEN = "fail_open"


# --------------------------------------------------------------------------- the guard


class IdempotencyGuard:
    """Claims keys in a store so each request's body runs once.

    Args:
        store: a :class:`~resilience.storage.Store` (its ``idempotency`` role is
            used), an :class:`~resilience.storage.IdempotencyStore`, a store URL, or
            ``None`` for :func:`~resilience.storage.open_store`'s default (URLs are
            opened on first use, never at import).
        clock: the time source; its wall time is passed to the store.
        lease: how long a run holds its key before another delivery may take it over
            (a crashed worker blocks the key this long at most).
        ttl: how long a key counts after it was claimed or completed; ``None`` uses
            ``DEFAULT_TTLS[category]``.
        category: a key of :data:`DEFAULT_TTLS`.
        on_store_error: ``"fail_closed"`` (raise :class:`StorageUnavailable`) or
            ``"fail_open"`` (run unprotected, warn once per outage).

    Raises:
        ConfigurationError: a value out of range (``key`` names it), an unknown
            category, or a lease longer than the TTL (the record would expire under
            a running owner).
    """

    __slots__ = ("_clock", "_lease", "_lock", "_mode", "_outage", "_source", "_store", "_ttl")

    def __init__(
        self,
        store: Store | IdempotencyStore | str | None = None,
        *,
        clock: Clock = system_clock,
        lease: float | timedelta = DEFAULT_LEASE,
        ttl: float | timedelta | None = None,
        category: str = "default",
        on_store_error: OnStoreError | str = OnStoreError.FAIL_CLOSED,
    ) -> None:
        if category not in DEFAULT_TTLS:
            raise ConfigurationError(
                f"unknown idempotency category {category!r}; known: {', '.join(DEFAULT_TTLS)}",
                key="category",
                value=category,
            )
        try:
            self._mode = OnStoreError(on_store_error)
        except ValueError:
            raise ConfigurationError(
                f"on_store_error must be 'fail_closed' or 'fail_open', got {on_store_error!r}",
                key="on_store_error",
                value=on_store_error,
            ) from None
        self._lease = _positive(lease, "lease")
        self._ttl = DEFAULT_TTLS[category] if ttl is None else _positive(ttl, "ttl")
        _check_lease(self._lease, self._ttl)
        self._clock = clock
        self._source = store
        self._store: IdempotencyStore | None = None
        if store is not None and not isinstance(store, str):
            self._store = _role(store)
        self._lock = threading.Lock()
        self._outage = False

    @property
    def lease(self) -> float:
        """The lease, in seconds."""
        return self._lease

    @property
    def ttl(self) -> float:
        """The TTL of this guard's keys, in seconds."""
        return self._ttl

    @property
    def on_store_error(self) -> OnStoreError:
        """What happens when the store fails."""
        return self._mode

    def claim(
        self, key: str, *, fingerprint: str = "", ttl: float | timedelta | None = None
    ) -> Claim:
        """A context manager that claims ``key`` on entry (one store call).

        Args:
            key: the idempotency key (hashed if longer than ``MAX_KEY_LENGTH``).
            fingerprint: the payload fingerprint (:func:`payload_fingerprint`); the
                same key with another fingerprint raises ``IdempotencyKeyMismatch``.
            ttl: overrides the guard's TTL for this key.

        Returns:
            The claim; see :class:`Claim` for what entering and leaving it do.

        Raises:
            ConfigurationError: an empty key or a bad ``ttl``.
        """
        ttl_seconds = self._ttl if ttl is None else _positive(ttl, "ttl")
        _check_lease(self._lease, ttl_seconds)
        return Claim(guard=self, key=fit_key(key), fingerprint=fingerprint, ttl=ttl_seconds)

    def get(self, key: str) -> IdempotencyRecord | None:
        """The live record of ``key`` (``None`` if absent or expired).

        Raises:
            StorageUnavailable: the store failed.
        """
        fitted = fit_key(key)
        return self._call(lambda store: store.get(fitted, now=self._clock.time()), raising=True)

    def forget(self, key: str) -> bool:
        """Delete ``key``'s record (an operator's action), so the next call runs.

        Returns:
            ``True`` if a record was removed.

        Raises:
            StorageUnavailable: the store failed.
        """
        fitted = fit_key(key)
        return self._call(lambda store: store.delete(fitted), raising=True)

    def _resolve(self) -> IdempotencyStore:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    source = self._source
                    opened = open_store(source if isinstance(source, str) else None)
                    self._store = _role(opened)
                store = self._store
        return store

    def _call(self, operation: Callable[[IdempotencyStore], _R], *, raising: bool) -> _R:
        """Run one store operation; a store failure becomes ``StorageUnavailable``."""
        try:
            result = operation(self._resolve())
        except (ConfigurationError, IdempotencyError):
            raise
        except Exception as exc:
            if raising or self._mode is OnStoreError.FAIL_CLOSED:
                if isinstance(exc, StorageUnavailable):
                    raise
                raise StorageUnavailable(
                    f"idempotency store {self._url()} failed ({type(exc).__name__}: {exc}); "
                    "the task should retry later",
                    store=self._url(),
                    role="idempotency",
                ) from exc
            if not self._outage:
                self._outage = True
                _logger.warning(
                    "idempotency store %s failed (%s: %s); running without duplicate "
                    "protection until it answers again (on_store_error=fail_open)",
                    self._url(),
                    type(exc).__name__,
                    exc,
                )
            raise _Unprotected from exc
        if self._outage:
            self._outage = False
            _logger.info("idempotency store %s answers again", self._url())
        return result

    def _url(self) -> str:
        for candidate in (self._store, self._source):
            url = getattr(candidate, "url", None)
            if isinstance(url, str):
                return url
        if isinstance(self._source, str):
            return mask_url(self._source)
        return type(self._store).__name__ if self._store is not None else "default store"

    def __repr__(self) -> str:
        return (
            f"IdempotencyGuard(store={self._url()!r}, lease={self._lease!r}, "
            f"ttl={self._ttl!r}, on_store_error={self._mode.value!r})"
        )


class _Unprotected(Exception):
    """The store failed in fail-open mode: go on without protection."""


class Claim:
    """One use of a key: enter to claim it, then complete it (or let it release).

    Entering claims the key (one store call) and either makes this run the owner,
    or finds a live completed record (``duplicate`` is ``True``, ``result`` holds
    the stored result, and the body must not run), or raises.

    Leaving: an exception (any ``BaseException``) releases the key as ``FAILED`` so a
    retry runs the body again, and propagates. A normal exit without
    :meth:`complete` completes the key with ``None``: the block finished, so the
    work is done, and a later duplicate must not redo it.

    Raises (on entry):
        IdempotencyInProgress: another run holds the key's lease.
        IdempotencyKeyMismatch: the key was claimed with another fingerprint.
        StorageUnavailable: the store failed (fail-closed mode).

    Attributes:
        key: the key (as stored, after hashing a long one).
        fingerprint: the payload fingerprint.
        duplicate: ``True`` when a completed record answered the call.
        result: the stored result (a duplicate's, decoded from JSON; or the value
            passed to :meth:`complete`).
        protected: ``False`` when the store failed in fail-open mode and the body
            runs without protection.
        record: the record found or written on entry (``None`` when unprotected).
    """

    __slots__ = (
        "_entered",
        "_finished",
        "_guard",
        "_ttl",
        "duplicate",
        "fingerprint",
        "key",
        "protected",
        "record",
        "result",
    )

    def __init__(self, *, guard: IdempotencyGuard, key: str, fingerprint: str, ttl: float) -> None:
        self._guard = guard
        self._ttl = ttl
        self._entered = False
        self._finished = False
        self.key = key
        self.fingerprint = fingerprint
        self.duplicate = False
        self.result: Any = None
        self.protected = True
        self.record: IdempotencyRecord | None = None

    @property
    def owned(self) -> bool:
        """Whether this run holds the key and has not completed or released it yet."""
        return self._entered and self.protected and not self.duplicate and not self._finished

    def __enter__(self) -> Claim:
        if self._entered:
            raise RuntimeError("a Claim can be entered only once")
        self._entered = True
        guard = self._guard
        now = guard._clock.time()
        try:
            found = guard._call(
                lambda store: store.acquire(
                    self.key,
                    fingerprint=self.fingerprint,
                    lease=guard._lease,
                    ttl=self._ttl,
                    now=now,
                ),
                raising=False,
            )
        except _Unprotected:
            self.protected = False
            return self
        record = self.record = found.record
        if found.acquired:
            return self
        if record.fingerprint != self.fingerprint:
            raise IdempotencyKeyMismatch(self.key)
        if record.state is IdempotencyState.COMPLETED:
            self.duplicate = True
            self.result = decode_result(record.result)
            return self
        if record.state is IdempotencyState.IN_PROGRESS:
            raise IdempotencyInProgress(self.key, record.lease_remaining(now))
        raise IdempotencyError(
            f"idempotency key {self.key!r} could not be claimed ({record.state.value})",
            key=self.key,
        )

    async def __aenter__(self) -> Claim:
        # Store calls are short single round trips: not worth a thread hop.
        return self.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.owned:
            return
        if exc is None:
            self.complete(None)
        else:
            self.release()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def complete(self, result: object = None) -> bool:
        """Store ``result`` as the key's answer for the TTL; never raises after the work.

        Failing here, after the side effect, would make the task retry and do the
        work twice. So a result JSON cannot hold (a ``Decimal``) is stored as a
        tagged repr, and a store failure is logged (the key then stays in progress
        until its lease passes); both with a logged warning or error.

        Args:
            result: the body's result.

        Returns:
            ``True`` if stored; ``False`` if this run lost the key (its lease expired
            and another run's result stands), the store failed, or there was
            nothing to complete (a duplicate, an unprotected or finished claim).

        Raises:
            RuntimeError: the claim was never entered.
        """
        self._require_entered()
        if not self.owned:
            return False
        self._finished = True
        self.result = result
        text = encode_result(result, self.key)
        return self._finish(
            "complete",
            lambda store, token, now: store.complete(
                self.key, token=token, result=text, ttl=self._ttl, now=now
            ),
        )

    def release(self) -> bool:
        """Give the key back as ``FAILED`` so the next delivery runs the body.

        Returns:
            ``True`` if released; ``False`` if not owned (or lost, or the store failed:
            the lease then expires on its own).

        Raises:
            RuntimeError: the claim was never entered.
        """
        self._require_entered()
        if not self.owned:
            return False
        self._finished = True
        return self._finish(
            "release", lambda store, token, now: store.release(self.key, token=token, now=now)
        )

    def renew(self, lease: float | timedelta | None = None) -> bool:
        """Extend this run's lease, for bodies that outlive it.

        Args:
            lease: the new lease from now; default the guard's.

        Returns:
            ``True`` if extended; ``False`` if this run lost the key (stop the work
            if you can: another run owns it), or is not the owner.

        Raises:
            StorageUnavailable: the store failed (fail-closed mode).
            RuntimeError: the claim was never entered.
        """
        self._require_entered()
        if not self.owned or self.record is None:
            return False
        seconds = self._guard._lease if lease is None else _positive(lease, "lease")
        token, guard = self.record.token, self._guard
        try:
            renewed = guard._call(
                lambda store: store.renew(
                    self.key, token=token, lease=seconds, now=guard._clock.time()
                ),
                raising=False,
            )
        except _Unprotected:
            return False
        if not renewed:
            _logger.warning("idempotency key %r: lease lost to another run", self.key)
        return renewed

    def _require_entered(self) -> None:
        if not self._entered:
            raise RuntimeError("enter the Claim (with guard.claim(...) as claim) before using it")

    def _finish(
        self, action: str, operation: Callable[[IdempotencyStore, int, float], bool]
    ) -> bool:
        assert self.record is not None  # noqa: S101 - owned implies a record
        token, guard = self.record.token, self._guard
        try:
            done = guard._call(
                lambda store: operation(store, token, guard._clock.time()), raising=True
            )
        except StorageUnavailable as exc:
            _logger.error(  # noqa: TRY400 - the cause is in the message; no traceback noise
                "idempotency key %r: %s not stored (%s); the key stays in progress until "
                "its lease passes",
                self.key,
                action,
                exc,
            )
            return False
        if not done:
            _logger.warning(
                "idempotency key %r: %s refused: this run's lease expired and another run "
                "owns the key now; its result stands",
                self.key,
                action,
            )
        return done

    def __repr__(self) -> str:
        return (
            f"Claim(key={self.key!r}, owned={self.owned}, duplicate={self.duplicate}, "
            f"protected={self.protected})"
        )


# --------------------------------------------------------------------------- decorator


@overload
def idempotent(func: Callable[_P, _R], /) -> Callable[_P, _R]: ...


@overload
def idempotent(
    *,
    store: Store | IdempotencyStore | str | None = None,
    key: KeySpec | None = None,
    ttl: float | timedelta | None = None,
    category: str = "default",
    lease: float | timedelta = DEFAULT_LEASE,
    on_store_error: OnStoreError | str = OnStoreError.FAIL_CLOSED,
    clock: Clock = system_clock,
    name: str | None = None,
    window: float | timedelta | None = None,
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...


def idempotent(
    func: Callable[_P, _R] | None = None,
    /,
    *,
    store: Store | IdempotencyStore | str | None = None,
    key: KeySpec | None = None,
    ttl: float | timedelta | None = None,
    category: str = "default",
    lease: float | timedelta = DEFAULT_LEASE,
    on_store_error: OnStoreError | str = OnStoreError.FAIL_CLOSED,
    clock: Clock = system_clock,
    name: str | None = None,
    window: float | timedelta | None = None,
) -> Callable[_P, _R] | Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Make a function (sync or async) run once per key; duplicates get the stored result.

    Use bare (``@idempotent``) or with options (``@idempotent(store=..., key=...)``).
    The wrapper keeps the function's signature. A duplicate call returns the first
    call's result as decoded from JSON (tuples come back as lists; values JSON
    cannot hold come back as tagged reprs). The store is called synchronously, also
    around coroutines (each call is one short round trip).

    Args:
        func: the function, when used bare.
        store: as for :class:`IdempotencyGuard` (default: ``open_store()`` on first call).
        key: ``None`` (derived from all arguments), a template or a callable; see
            :func:`idempotency_key`.
        ttl: how long a key counts; default ``DEFAULT_TTLS[category]``.
        category: a key of :data:`DEFAULT_TTLS`.
        lease: how long a run holds the key before a duplicate may take over.
        on_store_error: ``"fail_closed"`` or ``"fail_open"``.
        clock: the time source.
        name: the task name keys start with; default ``module.qualname``.
        window: for periodic tasks: a period (``timedelta(days=1)``) whose start,
            by the clock, is appended to the key (``"...@1700006400"``), so each
            period's run is its own request even with the same arguments.

    Returns:
        The wrapped function, or a decorator.

    Raises:
        ConfigurationError: bad options (at decoration time).
    """
    guard = IdempotencyGuard(
        store, clock=clock, lease=lease, ttl=ttl, category=category, on_store_error=on_store_error
    )
    if key is not None and not isinstance(key, str) and not callable(key):
        raise ConfigurationError(
            f"key must be None, a template string or a callable, got {key!r}", key="key", value=key
        )

    period = None if window is None else _positive(window, "window")

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        task_name = name or f"{function.__module__}.{function.__qualname__}"

        # Reads the signature once, at the first call (as idempotency_key(func=) would).
        binder = Binder(function)

        def claim_for(args: tuple[object, ...], kwargs: dict[str, object]) -> Claim:
            # The default key is the payload's digest: hash the payload once for both.
            derived, fingerprint = call_key(task_name, args, kwargs, key=key, binder=binder)
            if period is not None:
                start = math.floor(clock.time() / period) * period
                derived = f"{derived}@{int(start) if start.is_integer() else start!r}"
            if fingerprint is None:
                fingerprint = call_fingerprint(args, kwargs, binder)
            return guard.claim(derived, fingerprint=fingerprint)

        if inspect.iscoroutinefunction(function):
            coroutine = cast("Callable[_P, Awaitable[Any]]", function)

            @functools.wraps(function)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                async with claim_for(args, kwargs) as claim:
                    if claim.duplicate:
                        return claim.result
                    result = await coroutine(*args, **kwargs)
                    claim.complete(result)
                    return result

            return cast("Callable[_P, _R]", async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with claim_for(args, kwargs) as claim:
                if claim.duplicate:
                    return cast("_R", claim.result)
                result = function(*args, **kwargs)
                claim.complete(result)
                return result

        return wrapper

    return decorate if func is None else decorate(func)


# --------------------------------------------------------------------------- helpers


def _role(store: object) -> IdempotencyStore:
    role = getattr(store, "idempotency", store)
    if not isinstance(role, IdempotencyStore):
        raise ConfigurationError(
            f"store must be a Store, an IdempotencyStore or a URL, got {store!r}",
            key="store",
            value=type(store).__name__,
        )
    return role


def _positive(value: float | timedelta, name: str) -> float:
    try:
        seconds = seconds_of(value, name=name)
    except TypeError as exc:
        raise ConfigurationError(str(exc), key=name, value=value) from None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigurationError(
            f"{name} must be a finite duration > 0, got {value!r}", key=name, value=value
        )
    return seconds


def _check_lease(lease: float, ttl: float) -> None:
    if lease > ttl:
        raise ConfigurationError(
            f"lease ({lease}s) must not exceed ttl ({ttl}s): the record would expire "
            "while its owner still runs",
            key="lease",
            value=lease,
        )

"""The breaker's state machine as pure functions of (record, now): no I/O, no locks.

:class:`resilience.breaker.CircuitBreaker` reads a record, asks these rules for
the next one and stores it with one compare-and-set; on a lost race it reads and
asks again. Keeping the rules pure is what makes that retry loop safe.
"""

from __future__ import annotations

import functools
import math
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Final

from resilience.clock import seconds_of
from resilience.errors import CircuitOpenError, ConfigurationError
from resilience.storage.base import BreakerRecord, CircuitState
from resilience.taxonomy import Category, FailureType

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = [
    "DEFAULT_FAILURE_TYPES",
    "FRESH",
    "PASSTHROUGH",
    "Outcome",
    "Permit",
    "PermitKind",
    "Rules",
    "closed_permit",
    "failure_types",
]

DEFAULT_FAILURE_TYPES: Final[frozenset[FailureType]] = frozenset(
    t
    for t in FailureType
    if t.category in {Category.TRANSIENT, Category.EXTERNAL, Category.SYSTEM, Category.UNKNOWN}
)
"""The failure types a breaker counts unless told otherwise: outages, not bad input."""

FRESH: Final = BreakerRecord()
"""The record of a breaker that was never written: closed, nothing counted."""

_BUCKETS: Final = 10
_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_Probes = tuple[tuple[str, float], ...]


class PermitKind(StrEnum):
    """How a call was admitted, which decides what its outcome does."""

    CLOSED = "closed"
    """Admitted while closed: a counted failure moves the breaker toward opening."""
    PROBE = "probe"
    """A half-open trial call holding one of the ``half_open_max_calls`` slots."""
    PASSTHROUGH = "passthrough"
    """Admitted while disabled: its outcome records nothing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Permit:
    """Proof that :meth:`CircuitBreaker.before_call` admitted a call.

    Hand it back to :meth:`CircuitBreaker.record_success` or
    :meth:`CircuitBreaker.record_failure` so the outcome is matched to the state the
    call was admitted in (a late outcome from before a trip is ignored).

    Attributes:
        kind: how the call was admitted.
        trips: the breaker's trip count at admission.
        token: the probe's slot id (empty unless ``kind`` is ``PROBE``).
    """

    kind: PermitKind
    trips: int
    token: str = ""
    clean: bool = False
    """Admitted while closed with no failure counted: a success has nothing to reset."""


PASSTHROUGH: Final = Permit(kind=PermitKind.PASSTHROUGH, trips=0)


class Outcome(Enum):
    """What a finished call tells the breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    RELEASE = "release"
    """Nothing about the dependency (interrupted, cancelled): only free the probe slot."""


def closed_permit(record: BreakerRecord | None) -> Permit:
    """The permit of a call admitted while ``record`` was closed."""
    if record is None:
        return _closed_permit_of(0, clean=True)
    return _closed_permit_of(record.trips, clean=not record.consecutive_failures)


@functools.lru_cache(maxsize=128)
def _closed_permit_of(trips: int, *, clean: bool) -> Permit:
    # Permits are immutable and a closed one carries only the trip count and whether
    # failures were counted: share them rather than build one on every windowed call.
    return Permit(kind=PermitKind.CLOSED, trips=trips, clean=clean)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """A breaker's validated settings and the transitions they imply."""

    name: str
    failure_threshold: int | None
    failure_rate_threshold: float | None
    window_calls: int | None
    window_seconds: float | None
    minimum_calls: int
    reset_timeout: float
    half_open_max_calls: int
    success_threshold: int
    probe_timeout: float

    @classmethod
    def build(
        cls,
        *,
        name: str,
        failure_threshold: int | None,
        failure_rate_threshold: float | None,
        window: int | timedelta,
        minimum_calls: int,
        reset_timeout: float | timedelta,
        half_open_max_calls: int,
        success_threshold: int,
        probe_timeout: float | timedelta,
    ) -> Rules:
        """Validate the constructor arguments of a breaker.

        Raises:
            ConfigurationError: naming the first invalid setting.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name must be a non-empty str, got {name!r}", key="name")
        if failure_threshold is None and failure_rate_threshold is None:
            raise ConfigurationError(
                "failure_threshold and failure_rate_threshold cannot both be None: "
                "the breaker could never open",
                key="failure_threshold",
                value=None,
            )
        rate = _rate(failure_rate_threshold)
        minimum = _count(minimum_calls, "minimum_calls")
        window_calls: int | None = None
        window_seconds: float | None = None
        if isinstance(window, timedelta):
            window_seconds = _duration(window, "window", positive=True)
        elif isinstance(window, int) and not isinstance(window, bool):
            window_calls = _count(window, "window")
            if rate is not None and minimum > window_calls:
                raise ConfigurationError(
                    f"minimum_calls ({minimum}) exceeds the window of {window_calls} calls: "
                    "the failure rate could never be evaluated",
                    key="minimum_calls",
                    value=minimum_calls,
                )
        else:
            raise ConfigurationError(
                f"window must be an int (last N calls) or a timedelta (a period), got {window!r}",
                key="window",
                value=window,
            )
        return cls(
            name=name,
            failure_threshold=(
                None
                if failure_threshold is None
                else _count(failure_threshold, "failure_threshold")
            ),
            failure_rate_threshold=rate,
            window_calls=window_calls if rate is not None else None,
            window_seconds=window_seconds if rate is not None else None,
            minimum_calls=minimum,
            reset_timeout=_duration(reset_timeout, "reset_timeout", positive=False),
            half_open_max_calls=_count(half_open_max_calls, "half_open_max_calls"),
            success_threshold=_count(success_threshold, "success_threshold"),
            probe_timeout=_duration(probe_timeout, "probe_timeout", positive=True),
        )

    def effective_state(self, record: BreakerRecord | None, now: float) -> CircuitState:
        """The state a reader reports: open past its timeout reads as half-open."""
        if record is None:
            return _CLOSED
        if record.state is _OPEN and now >= (record.open_until or 0.0):
            return _HALF_OPEN
        return record.state

    def wait(self, record: BreakerRecord, now: float) -> float | None:
        """Seconds until a call would be admitted; ``None`` while forced open."""
        state = record.state
        if state is CircuitState.FORCED_OPEN:
            return None
        if state is _OPEN:
            return max(0.0, (record.open_until or 0.0) - now)
        if state is _HALF_OPEN:
            leases = sorted(lease for _, lease in record.probes if lease > now)
            if len(leases) >= self.half_open_max_calls:
                return leases[len(leases) - self.half_open_max_calls] - now
        return 0.0

    def admit(self, record: BreakerRecord, now: float) -> tuple[BreakerRecord | None, Permit]:
        """Admit a call: the record to store (``None``: no write) and its permit.

        Raises:
            CircuitOpenError: when the call is refused.
        """
        state = record.state
        if state is _CLOSED:
            return None, closed_permit(record)
        if state is CircuitState.DISABLED:
            return None, PASSTHROUGH
        if state is CircuitState.FORCED_OPEN:
            raise CircuitOpenError(self.name, None)
        if state is _OPEN:
            open_until = record.open_until or 0.0
            if now < open_until:
                raise CircuitOpenError(self.name, open_until - now)
            live: _Probes = ()
            successes = 0
        else:
            # Slots whose lease passed belonged to callers presumed dead; reuse them.
            live = tuple(probe for probe in record.probes if probe[1] > now)
            successes = record.half_open_successes
            if len(live) >= self.half_open_max_calls:
                raise CircuitOpenError(self.name, min(lease for _, lease in live) - now)
        token = secrets.token_hex(8)
        new = replace(
            record,
            state=_HALF_OPEN,
            probes=(*live, (token, now + self.probe_timeout)),
            half_open_successes=successes,
            version=record.version + 1,
        )
        return new, Permit(kind=PermitKind.PROBE, trips=record.trips, token=token)

    def settle(
        self, record: BreakerRecord, now: float, permit: Permit | None, outcome: Outcome
    ) -> tuple[BreakerRecord | None, bool]:
        """Apply a call's outcome.

        Returns:
            The record to store (``None``: no write) and whether the change passed
            through half-open without a stored half-open record (an unattributed
            outcome after the reset timeout), for the listeners.
        """
        state = record.state
        if permit is not None:
            if permit.kind is PermitKind.PASSTHROUGH or permit.trips != record.trips:
                return None, False
            if permit.kind is PermitKind.PROBE:
                if state is not _HALF_OPEN or all(t != permit.token for t, _ in record.probes):
                    return None, False
                probes = tuple(p for p in record.probes if p[0] != permit.token)
                return self._probe_outcome(record, now, probes, outcome), False
            if state is not _CLOSED:
                return None, False
            return self._closed_outcome(record, now, outcome), False
        if outcome is Outcome.RELEASE:
            return None, False
        if state is _CLOSED:
            return self._closed_outcome(record, now, outcome), False
        if state is _HALF_OPEN:
            return self._probe_outcome(record, now, record.probes, outcome), False
        if state is _OPEN and now >= (record.open_until or 0.0):
            # An outcome seen after the reset timeout is the half-open verdict.
            fresh = replace(record, half_open_successes=0)
            return self._probe_outcome(fresh, now, (), outcome), True
        return None, False

    def operate(
        self, record: BreakerRecord, now: float, target: CircuitState
    ) -> BreakerRecord | None:
        """An operator's ``force_open`` / ``disable`` / ``reset``; ``None`` if nothing changes."""
        if target is _CLOSED:
            if record == replace(FRESH, trips=record.trips, version=record.version):
                return None
        elif record.state is target:
            return None
        return BreakerRecord(
            state=target,
            opened_at=now if target is CircuitState.FORCED_OPEN else None,
            trips=record.trips,
            version=record.version + 1,
        )

    def _probe_outcome(
        self, record: BreakerRecord, now: float, probes: _Probes, outcome: Outcome
    ) -> BreakerRecord:
        version = record.version + 1
        if outcome is Outcome.FAILURE:
            return self._opened(record, now)
        if outcome is Outcome.RELEASE:
            return replace(record, probes=probes, version=version)
        successes = record.half_open_successes + 1
        if successes >= self.success_threshold:
            return BreakerRecord(trips=record.trips, version=version)
        return replace(
            record, state=_HALF_OPEN, probes=probes, half_open_successes=successes, version=version
        )

    def _closed_outcome(
        self, record: BreakerRecord, now: float, outcome: Outcome
    ) -> BreakerRecord | None:
        if outcome is Outcome.RELEASE:
            return None
        failed = outcome is Outcome.FAILURE
        outcomes, buckets = record.outcomes, record.buckets
        calls = bad = 0
        if self.window_calls is not None:
            outcomes = (outcomes + ("f" if failed else "s"))[-self.window_calls :]
            calls, bad = len(outcomes), outcomes.count("f")
        elif self.window_seconds is not None:
            buckets = self._bucketed(buckets, now, failed=failed)
            calls = sum(ok + ko for _, ok, ko in buckets)
            bad = sum(ko for _, _, ko in buckets)
        elif not failed and record.consecutive_failures == 0:
            return None
        consecutive = record.consecutive_failures + 1 if failed else 0
        if failed and (
            (self.failure_threshold is not None and consecutive >= self.failure_threshold)
            or (
                self.failure_rate_threshold is not None
                and calls >= self.minimum_calls
                and bad / calls >= self.failure_rate_threshold
            )
        ):
            return self._opened(record, now)
        # Built directly, not with replace(): this runs on every windowed call.
        return BreakerRecord(
            consecutive_failures=consecutive,
            outcomes=outcomes,
            buckets=buckets,
            trips=record.trips,
            version=record.version + 1,
        )

    def _bucketed(
        self, buckets: tuple[tuple[float, int, int], ...], now: float, *, failed: bool
    ) -> tuple[tuple[float, int, int], ...]:
        width = (self.window_seconds or 0.0) / _BUCKETS
        start = math.floor(now / width) * width
        # Half a bucket of slack absorbs float error in recomputed bucket starts.
        horizon = start - (_BUCKETS - 1) * width - width / 2
        kept = [bucket for bucket in buckets if bucket[0] > horizon]
        ok, ko = (0, 1) if failed else (1, 0)
        if kept and kept[-1][0] > start - width / 2:
            # Same bucket, or the clock stepped back: add to the newest bucket.
            last_start, last_ok, last_ko = kept[-1]
            kept[-1] = (last_start, last_ok + ok, last_ko + ko)
        else:
            kept.append((start, ok, ko))
        return tuple(kept)

    def _opened(self, record: BreakerRecord, now: float) -> BreakerRecord:
        return BreakerRecord(
            state=_OPEN,
            opened_at=now,
            open_until=now + self.reset_timeout,
            trips=record.trips + 1,
            version=record.version + 1,
        )


def failure_types(value: Collection[FailureType] | None) -> frozenset[FailureType]:
    """Validate a ``failure_types`` setting (``None``: the defaults).

    Raises:
        ConfigurationError: when it is a string or holds an unknown type.
    """
    if value is None:
        return DEFAULT_FAILURE_TYPES
    if isinstance(value, str):
        raise ConfigurationError(
            f"failure_types must be a collection of FailureType, got the string {value!r}",
            key="failure_types",
            value=value,
        )
    try:
        return frozenset(FailureType(item) for item in value)
    except ValueError as exc:
        raise ConfigurationError(
            f"failure_types holds an unknown failure type: {exc}", key="failure_types", value=value
        ) from exc


def _count(value: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be an int >= 1, got {value!r}", key=key, value=value)
    return value


def _optional_count(value: int | None, key: str) -> int | None:
    return None if value is None else _count(value, key)


def _rate(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise ConfigurationError(
            f"failure_rate_threshold must be within (0, 1], got {value!r}",
            key="failure_rate_threshold",
            value=value,
        )
    return float(value)


def _duration(value: float | timedelta, key: str, *, positive: bool) -> float:
    try:
        seconds = seconds_of(value, name=key)
    except TypeError as exc:
        raise ConfigurationError(str(exc), key=key, value=value) from exc
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(
            f"{key} must be finite and {bound} seconds, got {value!r}", key=key, value=value
        )
    return seconds

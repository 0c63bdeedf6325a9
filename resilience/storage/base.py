"""Storage protocols and records: what a backend must do, as narrow atomic primitives.

A backend is any object with the methods of a protocol below; nothing is
subclassed. Every record serialises to JSON (``to_json``/``from_json``) because
shared backends (SQLite, Redis, PostgreSQL) store JSON text and never unpickle.

Breaker state (:class:`BreakerStateStore`) needs two primitives: read a record,
and replace it only if nobody else wrote since it was read (compare-and-set on
``version``). Every state change of a breaker is computed from the record it read
and written with one compare-and-set, so concurrent workers never lose an update:
the loser re-reads and recomputes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from resilience.storage.records import (
        Acquisition,
        DeadLetterFilter,
        DeadLetterOrder,
        DeadLetterPage,
        DeadLetterRecord,
        IdempotencyRecord,
        OutcomeCounts,
    )

__all__ = [
    "BreakerRecord",
    "BreakerStateStore",
    "CircuitState",
    "DeadLetterStore",
    "IdempotencyStore",
    "OutcomeStore",
    "Store",
]


class CircuitState(StrEnum):
    """The state of a circuit breaker.

    ``CLOSED`` lets calls through and counts failures; ``OPEN`` rejects calls until
    its reset timeout passes; ``HALF_OPEN`` admits a bounded number of probe calls;
    ``FORCED_OPEN`` (an operator's choice) rejects everything until reset;
    ``DISABLED`` (an operator's choice) lets everything through and records nothing.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerRecord:
    """The stored state of one named breaker, shared by every process that uses it.

    Times are wall-clock seconds since the epoch, because the record is read by
    other processes and other machines, where a monotonic reading means nothing.

    Attributes:
        state: the stored state. An ``OPEN`` record whose ``open_until`` has passed is
            effectively half-open, but stays ``OPEN`` in storage until a call is
            admitted as a probe (reading never writes).
        consecutive_failures: counted failures since the last success while closed.
        opened_at: when the breaker last opened (or was forced open), else ``None``.
        open_until: when an ``OPEN`` breaker admits its next probe, else ``None``.
        probes: the half-open probe calls in flight, as ``(token, lease_until)``
            pairs; a probe whose lease has passed is presumed lost (its process died)
            and its slot is given to the next caller.
        half_open_successes: successful probes since the breaker went half-open.
        outcomes: the count-based failure-rate window, oldest first, one character
            per call (``"s"`` success, ``"f"`` failure); empty when unused.
        buckets: the time-based failure-rate window, as ``(bucket_start, successes,
            failures)`` triples, oldest first; empty when unused.
        trips: how many times the breaker has opened; outcomes of calls admitted
            before the latest trip are stale and ignored.
        version: bumped by one on every write; the compare-and-set key.
    """

    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    open_until: float | None = None
    probes: tuple[tuple[str, float], ...] = ()
    half_open_successes: int = 0
    outcomes: str = ""
    buckets: tuple[tuple[float, int, int], ...] = ()
    trips: int = 0
    version: int = 0

    def __post_init__(self) -> None:
        # One cheap combined test first: records are built on every breaker write.
        failures, successes = self.consecutive_failures, self.half_open_successes
        trips, version = self.trips, self.version
        if (
            type(self.state) is CircuitState
            and type(failures) is int
            and type(successes) is int
            and type(trips) is int
            and type(version) is int
            and min(failures, successes, trips, version) >= 0
            and _finite_or_none(self.opened_at)
            and _finite_or_none(self.open_until)
            and not self.outcomes.strip("sf")
        ):
            return
        if not isinstance(self.state, CircuitState):
            _reject("state", self.state, "must be a CircuitState")
        for key in ("consecutive_failures", "half_open_successes", "trips", "version"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _reject(key, value, "must be an int >= 0")
        for key in ("opened_at", "open_until"):
            value = getattr(self, key)
            if not _finite_or_none(value):
                _reject(key, value, "must be a finite float or None")
        _reject("outcomes", self.outcomes, "must hold only 's' and 'f'")

    @property
    def half_open_in_flight(self) -> int:
        """Probe calls holding a half-open slot (including any whose lease has passed)."""
        return len(self.probes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict of every field.

        Returns:
            A dict of plain str/int/float/list/None values.
        """
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "opened_at": self.opened_at,
            "open_until": self.open_until,
            "probes": [[token, lease] for token, lease in self.probes],
            "half_open_successes": self.half_open_successes,
            "outcomes": self.outcomes,
            "buckets": [list(bucket) for bucket in self.buckets],
            "trips": self.trips,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerRecord:
        """Rebuild a record from :meth:`to_dict` output.

        Args:
            data: the dict, typically parsed from stored JSON.

        Returns:
            The record.

        Raises:
            ConfigurationError: when a field is missing, unknown or of the wrong type
                (``key`` names it).
        """
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                _reject(key, value, "is not a BreakerRecord field")
        missing = known.difference(data)
        if missing:
            key = sorted(missing)[0]
            _reject(key, None, "is missing")
        try:
            state = CircuitState(data["state"])
        except ValueError:
            _reject("state", data["state"], "is not a circuit state")
        return cls(
            state=state,
            consecutive_failures=data["consecutive_failures"],
            opened_at=_optional_float("opened_at", data["opened_at"]),
            open_until=_optional_float("open_until", data["open_until"]),
            probes=tuple(
                (_str("probes", token), _float("probes", lease))
                for token, lease in _pairs("probes", data["probes"], 2)
            ),
            half_open_successes=data["half_open_successes"],
            outcomes=_str("outcomes", data["outcomes"]),
            buckets=tuple(
                (_float("buckets", start), _count("buckets", ok), _count("buckets", bad))
                for start, ok, bad in _pairs("buckets", data["buckets"], 3)
            ),
            trips=data["trips"],
            version=data["version"],
        )

    def to_json(self) -> str:
        """Serialise to compact JSON text (what shared backends store)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> BreakerRecord:
        """Parse :meth:`to_json` output.

        Args:
            text: the JSON text.

        Returns:
            The record.

        Raises:
            ConfigurationError: when the text is not a JSON object of record fields.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(
                f"breaker record is not valid JSON: {exc}", key="record", value=text
            ) from exc
        if not isinstance(data, dict):
            _reject("record", data, "must be a JSON object")
        return cls.from_dict(data)


@runtime_checkable
class BreakerStateStore(Protocol):
    """Where breakers keep their state, so many processes can share one breaker.

    Implementations must make :meth:`compare_and_set` atomic (a lock, a Lua
    script, ``UPDATE ... WHERE version = ?``). Neither method may block on a
    protected call: breakers never hold anything of the store across one.

    The built-in backends also offer ``names() -> list[str]`` (every stored
    breaker's name, sorted), which operator tools (``resilience breakers``) use.
    It is not part of the protocol, so a store without it still fits here.
    """

    def load(self, name: str) -> BreakerRecord | None:
        """The stored record of breaker ``name``, or ``None`` if it was never written."""
        ...

    def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` only if the stored version is still ``expected_version``.

        Args:
            name: the breaker's name.
            expected_version: the version read before computing ``record``; ``None``
                means "no record may exist yet".
            record: the new record; its ``version`` is ``expected_version + 1``
                (1 when creating).

        Returns:
            ``True`` if stored, ``False`` if another writer got there first.
        """
        ...


@runtime_checkable
class IdempotencyStore(Protocol):
    """Idempotency records: claim a key atomically, then complete or release it.

    ``acquire`` is the one primitive that must be atomic in a single round trip
    (Redis ``SET NX PX`` or one Lua call; SQL ``INSERT ... ON CONFLICT``). Its
    rules, identical on every backend:

    1. no record, or the record's TTL has passed: claim it (token 1 higher than
       any earlier token of the key, or 1);
    2. a live record with another fingerprint: not acquired (a mismatch);
    3. a live ``COMPLETED`` record: not acquired (a duplicate; its result is there);
    4. a live ``IN_PROGRESS`` record whose lease has not passed: not acquired;
    5. a live ``FAILED`` record, or ``IN_PROGRESS`` with a passed lease: claim it
       (token + 1: the late owner is fenced off).

    A claim writes ``IN_PROGRESS`` with ``lease_until = now + lease`` and
    ``expires_at = now + ttl``. Keys are at most ``MAX_KEY_LENGTH`` characters.
    """

    def acquire(
        self, key: str, *, fingerprint: str, lease: float, ttl: float, now: float
    ) -> Acquisition:
        """Try to claim ``key`` (see the class docstring for the rules)."""
        ...

    def complete(self, key: str, *, token: int, result: str, ttl: float, now: float) -> bool:
        """Store ``result`` (JSON text) and mark ``COMPLETED`` for ``ttl`` seconds from ``now``.

        Returns:
            ``False`` (and nothing written) unless the key is ``IN_PROGRESS`` under ``token``.
        """
        ...

    def release(self, key: str, *, token: int, now: float) -> bool:
        """Mark ``FAILED`` so a retry can claim the key at once.

        Returns:
            ``False`` (and nothing written) unless the key is ``IN_PROGRESS`` under ``token``.
        """
        ...

    def renew(self, key: str, *, token: int, lease: float, now: float) -> bool:
        """Extend the lease of a long-running owner to ``now + lease``.

        Returns:
            ``False`` unless the key is ``IN_PROGRESS`` under ``token``.
        """
        ...

    def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        """The live record of ``key``, or ``None`` (absent or expired)."""
        ...

    def delete(self, key: str) -> bool:
        """Forget ``key`` (an operator's action); ``True`` if a record was removed."""
        ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """Dead letters: append, read, query with keyset pagination, compare-and-set, purge.

    Status changes and history appends are computed by the caller from the record
    it read and written with :meth:`compare_and_set` on ``version``, so two
    operators acting on one record never both succeed.
    """

    def add(self, record: DeadLetterRecord) -> None:
        """Insert a new record (version 1); durable when this returns.

        Raises:
            ValueError: a record with the same id exists.
        """
        ...

    def get(self, record_id: str) -> DeadLetterRecord | None:
        """The record with ``record_id``, or ``None``."""
        ...

    def query(
        self,
        where: DeadLetterFilter,
        *,
        order: DeadLetterOrder,
        limit: int,
        after: str | None = None,
    ) -> DeadLetterPage:
        """Up to ``limit`` records matching ``where`` in ``order``, after cursor ``after``.

        Pagination is keyset-based and stable: records added or changed while
        paging never make another record appear twice or be skipped.
        """
        ...

    def count(self, where: DeadLetterFilter) -> int:
        """How many records match ``where``."""
        ...

    def compare_and_set(self, expected_version: int, record: DeadLetterRecord) -> bool:
        """Replace the record with ``record.id`` if its stored version is ``expected_version``.

        ``record.version`` must be ``expected_version + 1``.

        Returns:
            ``True`` if stored, ``False`` if the record changed (or vanished) meanwhile.
        """
        ...

    def purge(self, where: DeadLetterFilter) -> int:
        """Delete every record matching ``where``; returns how many were deleted."""
        ...


@runtime_checkable
class OutcomeStore(Protocol):
    """Retry outcomes per (task, failure type), as atomic counters in time buckets.

    The built-in backends also offer ``task_names(*, since: float) -> list[str]``
    (the tasks with outcomes from the bucket holding ``since`` on, sorted), which
    ``resilience stats`` uses. It is not part of the protocol, so a store without
    it still fits here.
    """

    def add(self, task_name: str, failure_type: str, *, success: bool, now: float) -> None:
        """Count one retry outcome at ``now`` (an atomic increment)."""
        ...

    def counts(self, task_name: str, *, since: float) -> Mapping[str, OutcomeCounts]:
        """Outcomes of ``task_name`` per failure type from ``since`` on (bucket resolution)."""
        ...


@runtime_checkable
class Store(Protocol):
    """One backend's four roles, as returned by :func:`resilience.open_store`.

    Attributes:
        url: the store's URL with any password replaced by ``***``.
        breakers: breaker state.
        idempotency: idempotency records.
        dead_letters: the dead-letter queue's records.
        outcomes: retry statistics.
    """

    @property
    def url(self) -> str:
        """The store's URL, credentials masked."""
        ...

    @property
    def breakers(self) -> BreakerStateStore:
        """Breaker state."""
        ...

    @property
    def idempotency(self) -> IdempotencyStore:
        """Idempotency records."""
        ...

    @property
    def dead_letters(self) -> DeadLetterStore:
        """Dead letters."""
        ...

    @property
    def outcomes(self) -> OutcomeStore:
        """Retry outcome counters."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def _reject(key: str, value: object, why: str) -> NoReturn:
    raise ConfigurationError(f"BreakerRecord.{key} {why}, got {value!r}", key=key, value=value)


def _finite_or_none(value: object) -> bool:
    return value is None or (type(value) is float and math.isfinite(value))


def _optional_float(key: str, value: object) -> float | None:
    return None if value is None else _float(key, value)


def _float(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _reject(key, value, "must be a number")
    return float(value)


def _count(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _reject(key, value, "must hold ints >= 0")
    return value


def _str(key: str, value: object) -> str:
    if not isinstance(value, str):
        _reject(key, value, "must be a string")
    return value


def _pairs(key: str, value: object, width: int) -> list[list[Any]]:
    if not isinstance(value, list) or not all(
        isinstance(item, list) and len(item) == width for item in value
    ):
        _reject(key, value, f"must be a list of {width}-item lists")
    return value

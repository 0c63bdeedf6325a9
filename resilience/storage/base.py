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
from typing import Any, NoReturn, Protocol, runtime_checkable

from resilience.errors import ConfigurationError

__all__ = ["BreakerRecord", "BreakerStateStore", "CircuitState"]


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

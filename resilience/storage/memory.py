"""In-process storage: state shared by the threads of one process, gone when it exits.

The default store of every breaker that is not given one. Use a shared backend
(SQLite, Redis, PostgreSQL) when several processes must see the same state.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING

from resilience.storage.records import (
    Acquisition,
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterPage,
    DeadLetterRecord,
    IdempotencyRecord,
    IdempotencyState,
    OutcomeCounts,
    decode_cursor,
    encode_cursor,
    sort_key,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from resilience.storage.base import BreakerRecord

__all__ = [
    "OUTCOME_BUCKET_SECONDS",
    "MemoryBreakerStore",
    "MemoryDeadLetterStore",
    "MemoryIdempotencyStore",
    "MemoryOutcomeStore",
    "MemoryStore",
]

OUTCOME_BUCKET_SECONDS = 60.0
"""Width of the outcome counters' time buckets, on every backend."""

_OUTCOME_RETENTION = 7 * 24 * 3600.0


class MemoryBreakerStore:
    """Breaker records in a dict, with an atomic compare-and-set.

    Records are immutable, so the store keeps the objects themselves: a load is
    one dict lookup and hands out no copy, which keeps a closed breaker's call
    path cheap. The lock is held only inside :meth:`compare_and_set`.

    Example:
        >>> from resilience.storage import BreakerRecord
        >>> store = MemoryBreakerStore()
        >>> store.compare_and_set("payments", None, BreakerRecord(version=1))
        True
        >>> store.compare_and_set("payments", None, BreakerRecord(version=1))
        False
        >>> store.load("payments").version
        1
    """

    __slots__ = ("_lock", "_records")

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def load(self, name: str) -> BreakerRecord | None:
        """The record of breaker ``name``, or ``None`` if never written."""
        # No lock: a dict lookup is atomic and records are never mutated, so a
        # reader sees either the old record or the new one, never a torn write.
        return self._records.get(name)

    def names(self) -> list[str]:
        """The names of every stored breaker, sorted (an operator's listing)."""
        return sorted(self._records)

    def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is still ``expected_version``.

        Args:
            name: the breaker's name.
            expected_version: the version read before computing ``record``, or
                ``None`` when no record may exist yet.
            record: the new record, with ``version == (expected_version or 0) + 1``.

        Returns:
            ``True`` if stored, ``False`` if the stored version differs.

        Raises:
            ValueError: when ``record.version`` is not ``expected_version + 1`` (a
                caller bug that would break every other writer's compare-and-set).
        """
        if record.version != (expected_version or 0) + 1:
            raise ValueError(
                f"record.version must be {(expected_version or 0) + 1} to replace version "
                f"{expected_version!r}, got {record.version}"
            )
        with self._lock:
            current = self._records.get(name)
            if (None if current is None else current.version) != expected_version:
                return False
            self._records[name] = record
            return True

    def __repr__(self) -> str:
        return f"MemoryBreakerStore(breakers={sorted(self._records)!r})"


class MemoryIdempotencyStore:
    """Idempotency records in a dict under one lock (see ``IdempotencyStore`` for the rules)."""

    __slots__ = ("_lock", "_records")

    def __init__(self) -> None:
        self._records: dict[str, IdempotencyRecord] = {}
        self._lock = threading.Lock()

    def acquire(
        self, key: str, *, fingerprint: str, lease: float, ttl: float, now: float
    ) -> Acquisition:
        """Try to claim ``key``."""
        with self._lock:
            current = self._records.get(key)
            token = 1
            if current is not None:
                token = current.token + 1
                if current.live(now):
                    blocked = (
                        current.fingerprint != fingerprint
                        or current.state is IdempotencyState.COMPLETED
                        or (
                            current.state is IdempotencyState.IN_PROGRESS
                            and current.lease_remaining(now) > 0
                        )
                    )
                    if blocked:
                        return Acquisition(acquired=False, record=current)
            record = IdempotencyRecord(
                key=key,
                state=IdempotencyState.IN_PROGRESS,
                fingerprint=fingerprint,
                token=token,
                lease_until=now + lease,
                expires_at=now + ttl,
                result=None,
                created_at=now,
                updated_at=now,
            )
            self._records[key] = record
            return Acquisition(acquired=True, record=record)

    def _owned(self, key: str, token: int) -> IdempotencyRecord | None:
        current = self._records.get(key)
        if (
            current is None
            or current.token != token
            or current.state is not IdempotencyState.IN_PROGRESS
        ):
            return None
        return current

    def complete(self, key: str, *, token: int, result: str, ttl: float, now: float) -> bool:
        """Mark ``COMPLETED`` with ``result`` if ``token`` still owns the key."""
        with self._lock:
            current = self._owned(key, token)
            if current is None:
                return False
            self._records[key] = replace(
                current,
                state=IdempotencyState.COMPLETED,
                result=result,
                lease_until=None,
                expires_at=now + ttl,
                updated_at=now,
            )
            return True

    def release(self, key: str, *, token: int, now: float) -> bool:
        """Mark ``FAILED`` if ``token`` still owns the key."""
        with self._lock:
            current = self._owned(key, token)
            if current is None:
                return False
            self._records[key] = replace(
                current, state=IdempotencyState.FAILED, lease_until=None, updated_at=now
            )
            return True

    def renew(self, key: str, *, token: int, lease: float, now: float) -> bool:
        """Extend the lease if ``token`` still owns the key."""
        with self._lock:
            current = self._owned(key, token)
            if current is None:
                return False
            self._records[key] = replace(current, lease_until=now + lease, updated_at=now)
            return True

    def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        """The live record of ``key``, or ``None``."""
        current = self._records.get(key)
        return current if current is not None and current.live(now) else None

    def delete(self, key: str) -> bool:
        """Forget ``key``."""
        with self._lock:
            return self._records.pop(key, None) is not None


class MemoryDeadLetterStore:
    """Dead letters in a dict; queries sort in Python by the shared sort keys."""

    __slots__ = ("_lock", "_records")

    def __init__(self) -> None:
        self._records: dict[str, DeadLetterRecord] = {}
        self._lock = threading.Lock()

    def add(self, record: DeadLetterRecord) -> None:
        """Insert ``record``; a duplicate id is a ``ValueError``."""
        with self._lock:
            if record.id in self._records:
                raise ValueError(f"dead letter {record.id!r} already exists")
            self._records[record.id] = record

    def get(self, record_id: str) -> DeadLetterRecord | None:
        """The record with ``record_id``, or ``None``."""
        return self._records.get(record_id)

    def query(
        self,
        where: DeadLetterFilter,
        *,
        order: DeadLetterOrder,
        limit: int,
        after: str | None = None,
    ) -> DeadLetterPage:
        """A page of matching records in ``order`` after cursor ``after``."""
        with self._lock:
            matching = [r for r in self._records.values() if where.matches(r)]
        matching.sort(key=lambda r: sort_key(order, r))
        if after is not None:
            position = decode_cursor(order, after)
            if order is DeadLetterOrder.NEWEST:
                last_failed_at, record_id = position
                probe = DeadLetterRecord(
                    id=record_id,
                    task_name="",
                    first_failed_at=0.0,
                    last_failed_at=last_failed_at,
                )
            else:
                priority, first_failed_at, record_id = position
                probe = DeadLetterRecord(
                    id=record_id,
                    task_name="",
                    priority=priority,
                    first_failed_at=first_failed_at,
                    last_failed_at=0.0,
                )
            mark = sort_key(order, probe)
            matching = [r for r in matching if sort_key(order, r) > mark]
        page = tuple(matching[:limit])
        more = len(matching) > limit
        cursor = encode_cursor(order, page[-1]) if more and page else None
        return DeadLetterPage(records=page, next_cursor=cursor)

    def count(self, where: DeadLetterFilter) -> int:
        """How many records match ``where``."""
        with self._lock:
            return sum(1 for r in self._records.values() if where.matches(r))

    def compare_and_set(self, expected_version: int, record: DeadLetterRecord) -> bool:
        """Replace the stored record if its version is still ``expected_version``."""
        if record.version != expected_version + 1:
            raise ValueError(f"record.version must be {expected_version + 1}, got {record.version}")
        with self._lock:
            current = self._records.get(record.id)
            if current is None or current.version != expected_version:
                return False
            self._records[record.id] = record
            return True

    def purge(self, where: DeadLetterFilter) -> int:
        """Delete matching records."""
        with self._lock:
            doomed = [key for key, r in self._records.items() if where.matches(r)]
            for key in doomed:
                del self._records[key]
            return len(doomed)


class MemoryOutcomeStore:
    """Outcome counters per (task, type, minute bucket), kept for a week."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[str, dict[tuple[str, int], list[int]]] = defaultdict(dict)
        self._lock = threading.Lock()

    def add(self, task_name: str, failure_type: str, *, success: bool, now: float) -> None:
        """Count one outcome."""
        bucket = math.floor(now / OUTCOME_BUCKET_SECONDS)
        with self._lock:
            per_task = self._counts[task_name]
            cell = per_task.setdefault((failure_type, bucket), [0, 0])
            cell[0 if success else 1] += 1
            oldest = bucket - int(_OUTCOME_RETENTION / OUTCOME_BUCKET_SECONDS)
            if len(per_task) > 1024:
                for stale in [k for k in per_task if k[1] < oldest]:
                    del per_task[stale]

    def counts(self, task_name: str, *, since: float) -> Mapping[str, OutcomeCounts]:
        """Outcomes per failure type from the bucket holding ``since`` on."""
        first = math.floor(since / OUTCOME_BUCKET_SECONDS)
        totals: dict[str, list[int]] = {}
        with self._lock:
            for (failure_type, bucket), (ok, bad) in self._counts.get(task_name, {}).items():
                if bucket >= first:
                    cell = totals.setdefault(failure_type, [0, 0])
                    cell[0] += ok
                    cell[1] += bad
        return {ft: OutcomeCounts(successes=ok, failures=bad) for ft, (ok, bad) in totals.items()}

    def task_names(self, *, since: float) -> list[str]:
        """The tasks with outcomes from the bucket holding ``since`` on, sorted."""
        first = math.floor(since / OUTCOME_BUCKET_SECONDS)
        with self._lock:
            return sorted(
                task
                for task, cells in self._counts.items()
                if any(bucket >= first for _, bucket in cells)
            )


class MemoryStore:
    """All four roles in process memory (``memory://``): for tests and single processes."""

    def __init__(self) -> None:
        self._breakers = MemoryBreakerStore()
        self._idempotency = MemoryIdempotencyStore()
        self._dead_letters = MemoryDeadLetterStore()
        self._outcomes = MemoryOutcomeStore()

    @property
    def url(self) -> str:
        """Always ``memory://``."""
        return "memory://"

    @property
    def breakers(self) -> MemoryBreakerStore:
        """Breaker state."""
        return self._breakers

    @property
    def idempotency(self) -> MemoryIdempotencyStore:
        """Idempotency records."""
        return self._idempotency

    @property
    def dead_letters(self) -> MemoryDeadLetterStore:
        """Dead letters."""
        return self._dead_letters

    @property
    def outcomes(self) -> MemoryOutcomeStore:
        """Outcome counters."""
        return self._outcomes

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "MemoryStore()"

"""In-process storage: state shared by the threads of one process, gone when it exits.

The default store of every breaker that is not given one. Use a shared backend
(SQLite, Redis, PostgreSQL) when several processes must see the same state.
"""

from __future__ import annotations

import heapq
import itertools
import math
import secrets
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
    "GC_GRACE_SECONDS",
    "IDEMPOTENCY_RETENTION_SECONDS",
    "OUTCOME_BUCKET_SECONDS",
    "OUTCOME_RETENTION_SECONDS",
    "SWEEP_BATCH",
    "SWEEP_EVERY",
    "TOKEN_HORIZON_SECONDS",
    "MemoryBreakerStore",
    "MemoryDeadLetterStore",
    "MemoryIdempotencyStore",
    "MemoryOutcomeStore",
    "MemoryStore",
]

OUTCOME_BUCKET_SECONDS = 60.0
"""Width of the outcome counters' time buckets, on every backend."""

OUTCOME_RETENTION_SECONDS = 7 * 24 * 3600.0
"""How long outcome buckets are kept, on every backend: older ones are deleted."""

GC_GRACE_SECONDS = 60.0
"""How long an idempotency record outlives its TTL and lease in Redis (collection slack)."""

TOKEN_HORIZON_SECONDS = 30 * 24 * 3600.0
"""How long a key's fencing-token counter outlives its record."""

IDEMPOTENCY_RETENTION_SECONDS = GC_GRACE_SECONDS + TOKEN_HORIZON_SECONDS
"""How long past its TTL and lease an idempotency record is kept by the SQL and memory stores.

There the record *is* the key's token counter, so it is kept as long as Redis
keeps its counter: a key claimed again after it expired still gets a higher token
than any late owner of an earlier claim holds. Expired records are already absent
to ``get`` and ``acquire``; keeping them only bounds how far back tokens are fenced.
"""

SWEEP_EVERY = 1000
"""A store sweeps out dead records once every this many writes (acquires, outcome adds)."""

SWEEP_BATCH = 2000
"""The most records one sweep deletes, so that no write pays for a long one.

Each write adds at most one record, so at most ``SWEEP_EVERY`` records can fall
due between two sweeps in a steady state; a batch twice that keeps up, and also
works off a backlog (a burst, or a database written before sweeping existed).
"""

_OUTCOME_RETENTION_BUCKETS = int(OUTCOME_RETENTION_SECONDS / OUTCOME_BUCKET_SECONDS)


def sweep_counter() -> itertools.count[int]:
    """A store's write counter: a sweep is due whenever it yields a multiple of ``SWEEP_EVERY``.

    It starts at a random point of the cycle, so that processes living fewer than
    ``SWEEP_EVERY`` writes (a Celery child recycled by ``max_tasks_per_child``) still
    sweep, one write in ``SWEEP_EVERY`` on average. ``next()`` on it is atomic
    under the GIL; two threads sweeping at once would only delete the same rows.
    The start comes from ``secrets``: the global ``random``, which applications
    seed for their own reproducible runs, is left alone.
    """
    return itertools.count(secrets.randbelow(SWEEP_EVERY))


def check_sweep_time(now: float) -> None:
    """Refuse to sweep at a time that cannot be ordered.

    Raises:
        ValueError: ``now`` is NaN or infinite (PostgreSQL orders NaN above every
            number, so a sweep at NaN would delete every record).
    """
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time to sweep at, got {now!r}")


def _dead_since(record: IdempotencyRecord) -> float:
    """When a record stopped counting: the later of its TTL and its lease."""
    if record.lease_until is not None and record.lease_until > record.expires_at:
        return record.lease_until
    return record.expires_at


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
    """Idempotency records in a dict under one lock (see ``IdempotencyStore`` for the rules).

    Every ``SWEEP_EVERY`` acquires, records dead for ``IDEMPOTENCY_RETENTION_SECONDS``
    (past their TTL and lease) are deleted, at most ``SWEEP_BATCH`` at a time.
    """

    __slots__ = ("_due", "_lock", "_records", "_writes")

    def __init__(self) -> None:
        self._records: dict[str, IdempotencyRecord] = {}
        # A min-heap of (when a record stopped counting, key): an entry is pushed
        # when a record gets a finite end. Entries may be out of date (the record
        # was renewed, completed or claimed again since): the sweep judges the
        # record itself and pushes a later end back, so it pops only what may be
        # due and never scans the live records.
        self._due: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._writes = sweep_counter()

    def acquire(
        self, key: str, *, fingerprint: str, lease: float, ttl: float, now: float
    ) -> Acquisition:
        """Try to claim ``key``."""
        with self._lock:
            outcome = self._acquire(key, fingerprint, lease, ttl, now)
            if next(self._writes) % SWEEP_EVERY == 0:
                self._sweep(now)
            return outcome

    def _acquire(
        self, key: str, fingerprint: str, lease: float, ttl: float, now: float
    ) -> Acquisition:
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
        self._store(current, record)
        return Acquisition(acquired=True, record=record)

    def _store(self, current: IdempotencyRecord | None, record: IdempotencyRecord) -> None:
        # Called holding the lock. A record whose end was infinite (or that is new)
        # has no heap entry yet; one with a finite end has at least one.
        self._records[record.key] = record
        dead_since = _dead_since(record)
        if math.isfinite(dead_since) and (
            current is None or not math.isfinite(_dead_since(current))
        ):
            heapq.heappush(self._due, (dead_since, record.key))

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
            self._store(
                current,
                replace(
                    current,
                    state=IdempotencyState.COMPLETED,
                    result=result,
                    lease_until=None,
                    expires_at=now + ttl,
                    updated_at=now,
                ),
            )
            return True

    def release(self, key: str, *, token: int, now: float) -> bool:
        """Mark ``FAILED`` if ``token`` still owns the key."""
        with self._lock:
            current = self._owned(key, token)
            if current is None:
                return False
            self._store(
                current,
                replace(current, state=IdempotencyState.FAILED, lease_until=None, updated_at=now),
            )
            return True

    def renew(self, key: str, *, token: int, lease: float, now: float) -> bool:
        """Extend the lease if ``token`` still owns the key."""
        with self._lock:
            current = self._owned(key, token)
            if current is None:
                return False
            self._store(current, replace(current, lease_until=now + lease, updated_at=now))
            return True

    def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        """The live record of ``key``, or ``None``."""
        current = self._records.get(key)
        return current if current is not None and current.live(now) else None

    def delete(self, key: str) -> bool:
        """Forget ``key``."""
        with self._lock:
            return self._records.pop(key, None) is not None

    def sweep(self, *, now: float) -> int:
        """Delete up to ``SWEEP_BATCH`` records dead for the retention at ``now``.

        Acquires call this every ``SWEEP_EVERY`` writes; it is public for tests
        and operators. A record is dead once ``now`` is
        ``IDEMPOTENCY_RETENTION_SECONDS`` past the later of its ``expires_at`` and
        ``lease_until``; it was already absent to ``get`` and ``acquire``.

        Returns:
            How many records were deleted.

        Raises:
            ValueError: ``now`` is NaN or infinite.
        """
        check_sweep_time(now)
        with self._lock:
            return self._sweep(now)

    def _sweep(self, now: float) -> int:
        # Called holding the lock. Bounded by the heap entries popped, not the deletions.
        # The same comparison as the SQL statement, so both agree at the boundary.
        cutoff = now - IDEMPOTENCY_RETENTION_SECONDS
        due, removed = self._due, 0
        for _ in range(SWEEP_BATCH):
            if not due or not due[0][0] <= cutoff:
                break
            _, key = heapq.heappop(due)
            current = self._records.get(key)
            if current is None:
                continue  # deleted by an operator: its entry goes with it
            dead_since = _dead_since(current)
            if dead_since <= cutoff:
                del self._records[key]
                removed += 1
            elif math.isfinite(dead_since):
                heapq.heappush(due, (dead_since, key))
            # else: kept for ever until a write makes it removable (and pushes it again)
        return removed


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
    """Outcome counters per (task, type, minute bucket), kept for a week.

    Every ``SWEEP_EVERY`` adds, buckets older than ``OUTCOME_RETENTION_SECONDS``
    are deleted, at most ``SWEEP_BATCH`` at a time.
    """

    __slots__ = ("_counts", "_due", "_lock", "_writes")

    def __init__(self) -> None:
        self._counts: dict[str, dict[tuple[str, int], list[int]]] = defaultdict(dict)
        # A min-heap of (bucket, task, failure type): one entry per counter cell,
        # pushed when the cell is created, so a sweep pops exactly the old cells.
        self._due: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()
        self._writes = sweep_counter()

    def add(self, task_name: str, failure_type: str, *, success: bool, now: float) -> None:
        """Count one outcome."""
        bucket = math.floor(now / OUTCOME_BUCKET_SECONDS)
        with self._lock:
            per_task = self._counts[task_name]
            cell = per_task.get((failure_type, bucket))
            if cell is None:
                cell = per_task[failure_type, bucket] = [0, 0]
                heapq.heappush(self._due, (bucket, task_name, failure_type))
            cell[0 if success else 1] += 1
            if next(self._writes) % SWEEP_EVERY == 0:
                self._sweep(now)

    def sweep(self, *, now: float) -> int:
        """Delete up to ``SWEEP_BATCH`` buckets older than the retention at ``now``.

        Adds call this every ``SWEEP_EVERY`` writes; it is public for tests and
        operators. The buckets kept are those from ``OUTCOME_RETENTION_SECONDS``
        before the bucket holding ``now`` on.

        Returns:
            How many (task, failure type, bucket) counters were deleted.

        Raises:
            ValueError: ``now`` is NaN or infinite.
        """
        check_sweep_time(now)
        with self._lock:
            return self._sweep(now)

    def _sweep(self, now: float) -> int:
        # Called holding the lock.
        oldest = math.floor(now / OUTCOME_BUCKET_SECONDS) - _OUTCOME_RETENTION_BUCKETS
        due, removed = self._due, 0
        while due and due[0][0] < oldest and removed < SWEEP_BATCH:
            bucket, task_name, failure_type = heapq.heappop(due)
            per_task = self._counts.get(task_name)
            if per_task is not None and per_task.pop((failure_type, bucket), None) is not None:
                removed += 1
                if not per_task:
                    del self._counts[task_name]
        return removed

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

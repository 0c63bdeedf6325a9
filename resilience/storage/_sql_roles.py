"""The four storage roles in SQL, shared by SQLite and PostgreSQL.

Each class takes a :class:`~resilience.storage._sql.Connector` and holds its
statements adapted to the connector's dialect. Behaviour matches the memory
reference (``resilience.storage.memory``) rule for rule; the comments say where
SQL needs care to get there.
"""

# ruff: noqa: S608 - statements join constant fragments; every value is a bound parameter

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from resilience.errors import ConfigurationError
from resilience.storage.base import BreakerRecord
from resilience.storage.memory import (
    IDEMPOTENCY_RETENTION_SECONDS,
    OUTCOME_BUCKET_SECONDS,
    OUTCOME_RETENTION_SECONDS,
    SWEEP_BATCH,
    SWEEP_EVERY,
    check_sweep_time,
    sweep_counter,
)
from resilience.storage.records import (
    Acquisition,
    DeadLetterOrder,
    DeadLetterPage,
    DeadLetterRecord,
    IdempotencyRecord,
    IdempotencyState,
    OutcomeCounts,
    decode_cursor,
    encode_cursor,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from resilience.storage._sql import Connector, Session
    from resilience.storage.records import DeadLetterFilter

__all__ = ["SQLBreakerStore", "SQLDeadLetterStore", "SQLIdempotencyStore", "SQLOutcomeStore"]

_log = logging.getLogger("resilience.storage")


def _sweep_quietly(connector: Connector, role: str, sweep: Callable[[], int]) -> None:
    """Run a write's periodic sweep; a failure is logged, never raised.

    The write that triggered it has already happened, and the rows stay
    collectable: a later sweep deletes them.
    """
    try:
        sweep()
    except Exception as exc:  # noqa: BLE001 - any failure of housekeeping must spare the write
        _log.warning(
            "store %r: sweeping old %s rows failed, retrying on a later write: %s",
            connector,
            role,
            exc,
        )


# --------------------------------------------------------------------------- breakers


def _check_next_version(expected: int | None, version: int) -> None:
    if version != (expected or 0) + 1:
        raise ValueError(
            f"record.version must be {(expected or 0) + 1} to replace version "
            f"{expected!r}, got {version}"
        )


class SQLBreakerStore:
    """Breaker records as JSON rows; compare-and-set by ``version`` in one statement."""

    __slots__ = ("_connector", "_create", "_load", "_names", "_update")

    def __init__(self, connector: Connector) -> None:
        sql = connector.dialect.sql
        self._connector = connector
        self._load = sql("SELECT data FROM {p}resilience_breakers WHERE name = ?")
        self._names = sql("SELECT name FROM {p}resilience_breakers ORDER BY name")
        self._create = sql(
            "INSERT INTO {p}resilience_breakers (name, version, data) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING"
        )
        self._update = sql(
            "UPDATE {p}resilience_breakers SET version = ?, data = ? WHERE name = ? AND version = ?"
        )

    def load(self, name: str) -> BreakerRecord | None:
        """The record of breaker ``name``, or ``None`` if never written."""
        rows = self._connector.run("breakers", lambda s: s.rows(self._load, (name,)), write=False)
        return BreakerRecord.from_json(rows[0][0]) if rows else None

    def names(self) -> list[str]:
        """The names of every stored breaker, sorted (an operator's listing)."""
        rows = self._connector.run("breakers", lambda s: s.rows(self._names), write=False)
        return sorted(str(row[0]) for row in rows)

    def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is still ``expected_version``.

        Raises:
            ValueError: ``record.version`` is not ``expected_version + 1``.
        """
        _check_next_version(expected_version, record.version)
        data = record.to_json()
        params: tuple[object, ...]
        if expected_version is None:
            statement, params = self._create, (name, record.version, data)
        else:
            statement, params = self._update, (record.version, data, name, expected_version)
        return self._connector.run("breakers", lambda s: s.change(statement, params)) == 1


# --------------------------------------------------------------------------- idempotency

_IDEMPOTENCY_COLUMNS = (
    "idem_key, state, fingerprint, token, lease_until, expires_at, result, created_at, updated_at"
)


def _idempotency_record(row: Sequence[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=row[0],
        state=IdempotencyState(row[1]),
        fingerprint=row[2],
        token=int(row[3]),
        lease_until=None if row[4] is None else float(row[4]),
        expires_at=float(row[5]),
        result=row[6],
        created_at=float(row[7]),
        updated_at=float(row[8]),
    )


def _blocks(record: IdempotencyRecord, fingerprint: str, now: float) -> bool:
    # The exact complement of the takeover condition in the acquire statement.
    return record.live(now) and (
        record.fingerprint != fingerprint
        or record.state is IdempotencyState.COMPLETED
        or (record.state is IdempotencyState.IN_PROGRESS and record.lease_remaining(now) > 0)
    )


class SQLIdempotencyStore:
    """Idempotency records; acquire is one upsert with the takeover rules in its ``WHERE``.

    Every ``SWEEP_EVERY`` acquires, rows dead for ``IDEMPOTENCY_RETENTION_SECONDS``
    (past their TTL and lease) are deleted, at most ``SWEEP_BATCH`` at a time, by
    the ``expires_at`` index.
    """

    __slots__ = (
        "_acquire",
        "_complete",
        "_connector",
        "_delete",
        "_get",
        "_peek",
        "_release",
        "_renew",
        "_sweep",
        "_writes",
    )

    def __init__(self, connector: Connector) -> None:
        sql = connector.dialect.sql
        self._connector = connector
        owned = " WHERE idem_key = ? AND token = ? AND state = 'IN_PROGRESS'"
        self._acquire = sql(
            "INSERT INTO {p}resilience_idempotency AS cur (" + _IDEMPOTENCY_COLUMNS + ")"
            " VALUES (?, 'IN_PROGRESS', ?, 1, ?, ?, NULL, ?, ?)"
            " ON CONFLICT (idem_key) DO UPDATE SET state = 'IN_PROGRESS',"
            " fingerprint = excluded.fingerprint, token = cur.token + 1,"
            " lease_until = excluded.lease_until, expires_at = excluded.expires_at,"
            " result = NULL, created_at = excluded.created_at, updated_at = excluded.updated_at"
            " WHERE cur.expires_at <= ? OR (cur.fingerprint = excluded.fingerprint AND"
            " (cur.state = 'FAILED' OR (cur.state = 'IN_PROGRESS' AND"
            " (cur.lease_until IS NULL OR cur.lease_until <= ?))))"
            " RETURNING " + _IDEMPOTENCY_COLUMNS
        )
        self._peek = sql(
            "SELECT " + _IDEMPOTENCY_COLUMNS + " FROM {p}resilience_idempotency WHERE idem_key = ?"
        )
        self._get = sql(
            "SELECT " + _IDEMPOTENCY_COLUMNS + " FROM {p}resilience_idempotency"
            " WHERE idem_key = ? AND expires_at > ?"
        )
        self._complete = sql(
            "UPDATE {p}resilience_idempotency SET state = 'COMPLETED', result = ?,"
            " lease_until = NULL, expires_at = ?, updated_at = ?" + owned
        )
        self._release = sql(
            "UPDATE {p}resilience_idempotency SET state = 'FAILED', lease_until = NULL,"
            " updated_at = ?" + owned
        )
        self._renew = sql(
            "UPDATE {p}resilience_idempotency SET lease_until = ?, updated_at = ?" + owned
        )
        self._delete = sql("DELETE FROM {p}resilience_idempotency WHERE idem_key = ?")
        # The outer condition repeats the inner one: on PostgreSQL a row claimed
        # again between the SELECT and the DELETE is rechecked in its new version
        # and kept. Rows whose lease outlives expires_at by the retention are rare;
        # the index walk skips them.
        dead = "expires_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
        self._sweep = sql(
            "DELETE FROM {p}resilience_idempotency WHERE idem_key IN"
            " (SELECT idem_key FROM {p}resilience_idempotency WHERE "
            + dead
            + " ORDER BY expires_at LIMIT ?"
            + connector.dialect.skip_locked
            + ")"
            " AND " + dead
        )
        self._writes = sweep_counter()

    def acquire(
        self, key: str, *, fingerprint: str, lease: float, ttl: float, now: float
    ) -> Acquisition:
        """Try to claim ``key`` (the rules are in ``IdempotencyStore``'s docstring)."""
        params = (key, fingerprint, now + lease, now + ttl, now, now, now, now)

        def attempt(session: Session) -> Acquisition | None:
            claimed = session.rows(self._acquire, params)
            if claimed:
                return Acquisition(acquired=True, record=_idempotency_record(claimed[0]))
            rows = session.rows(self._peek, (key,))
            if rows:
                record = _idempotency_record(rows[0])
                if _blocks(record, fingerprint, now):
                    return Acquisition(acquired=False, record=record)
            # The blocking record changed between the two statements: only possible
            # outside a transaction, so the retry below runs in one.
            return None

        cheap = self._connector.dialect.transactions_are_cheap
        outcome = self._connector.run("idempotency", attempt, atomic=cheap)
        if outcome is None and not cheap:
            outcome = self._connector.run("idempotency", attempt, atomic=True)
        if outcome is None:
            raise RuntimeError(f"idempotency key {key!r} changed inside a transaction")
        if next(self._writes) % SWEEP_EVERY == 0:
            _sweep_quietly(self._connector, "idempotency", lambda: self.sweep(now=now))
        return outcome

    def complete(self, key: str, *, token: int, result: str, ttl: float, now: float) -> bool:
        """Mark ``COMPLETED`` with ``result`` if ``token`` still owns the key."""
        params = (result, now + ttl, now, key, token)
        return self._connector.run("idempotency", lambda s: s.change(self._complete, params)) == 1

    def release(self, key: str, *, token: int, now: float) -> bool:
        """Mark ``FAILED`` if ``token`` still owns the key."""
        params = (now, key, token)
        return self._connector.run("idempotency", lambda s: s.change(self._release, params)) == 1

    def renew(self, key: str, *, token: int, lease: float, now: float) -> bool:
        """Extend the lease to ``now + lease`` if ``token`` still owns the key."""
        params = (now + lease, now, key, token)
        return self._connector.run("idempotency", lambda s: s.change(self._renew, params)) == 1

    def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        """The live record of ``key``, or ``None``."""
        rows = self._connector.run(
            "idempotency", lambda s: s.rows(self._get, (key, now)), write=False
        )
        return _idempotency_record(rows[0]) if rows else None

    def delete(self, key: str) -> bool:
        """Forget ``key``; ``True`` if a record was removed."""
        return self._connector.run("idempotency", lambda s: s.change(self._delete, (key,))) > 0

    def sweep(self, *, now: float) -> int:
        """Delete up to ``SWEEP_BATCH`` rows dead for the retention at ``now`` (one statement).

        Acquires call this every ``SWEEP_EVERY`` writes; it is public for tests
        and operators. A row is dead once ``now`` is ``IDEMPOTENCY_RETENTION_SECONDS``
        past the later of its ``expires_at`` and ``lease_until``; it was already
        absent to ``get`` and ``acquire``.

        Returns:
            How many rows were deleted.

        Raises:
            ValueError: ``now`` is NaN or infinite.
            StorageUnavailable: the database cannot be reached.
        """
        check_sweep_time(now)
        cutoff = now - IDEMPOTENCY_RETENTION_SECONDS
        params = (cutoff, cutoff, SWEEP_BATCH, cutoff, cutoff)
        return self._connector.run("idempotency", lambda s: s.change(self._sweep, params))


# --------------------------------------------------------------------------- dead letters

_LETTER_COLUMNS = (
    "status, task_name, failure_type, first_failed_at, last_failed_at, next_retry_at,"
    " priority, search, version, data"
)


class SQLDeadLetterStore:
    """Dead letters: indexed filter columns plus the full record as JSON text."""

    __slots__ = ("_add", "_connector", "_dialect", "_get", "_update")

    def __init__(self, connector: Connector) -> None:
        sql = connector.dialect.sql
        self._connector = connector
        self._dialect = connector.dialect
        self._add = sql(
            "INSERT INTO {p}resilience_dead_letters (id, " + _LETTER_COLUMNS + ")"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        )
        self._get = sql("SELECT data FROM {p}resilience_dead_letters WHERE id = ?")
        self._update = sql(
            "UPDATE {p}resilience_dead_letters SET status = ?, task_name = ?, failure_type = ?,"
            " first_failed_at = ?, last_failed_at = ?, next_retry_at = ?, priority = ?,"
            " search = ?, version = ?, data = ? WHERE id = ? AND version = ?"
        )

    def _columns(self, record: DeadLetterRecord) -> tuple[object, ...]:
        # ensure_ascii: lone surrogates survive as escapes instead of failing to encode.
        data = json.dumps(record.to_dict(), separators=(",", ":"))
        return (
            record.status.value,
            record.task_name,
            record.failure_type.value,
            record.first_failed_at,
            record.last_failed_at,
            record.next_retry_at,
            record.priority,
            self._dialect.fold(record.message),
            record.version,
            data,
        )

    def add(self, record: DeadLetterRecord) -> None:
        """Insert ``record``; durable when this returns.

        Raises:
            ValueError: a record with the same id exists.
        """
        params = (record.id, *self._columns(record))
        if self._connector.run("dead_letters", lambda s: s.change(self._add, params)) != 1:
            raise ValueError(f"dead letter {record.id!r} already exists")

    def get(self, record_id: str) -> DeadLetterRecord | None:
        """The record with ``record_id``, or ``None``."""
        rows = self._connector.run(
            "dead_letters", lambda s: s.rows(self._get, (record_id,)), write=False
        )
        return DeadLetterRecord.from_json(rows[0][0]) if rows else None

    def _where(self, where: DeadLetterFilter) -> tuple[list[str], list[object]]:
        d = self._dialect
        parts: list[str] = []
        params: list[object] = []
        lists = (
            ("id", where.ids),
            ("status", None if where.statuses is None else {s.value for s in where.statuses}),
            (
                "failure_type",
                None if where.failure_types is None else {t.value for t in where.failure_types},
            ),
        )
        for column, values in lists:
            if values is not None:
                parts.append(d.member.format(column=column))
                params.append(d.list_param(sorted(values)))
        for clause, value in (
            ("task_name = ?", where.task_name),
            ("last_failed_at >= ?", where.since),
            ("last_failed_at < ?", where.until),
            ("next_retry_at <= ?", where.due_by),
        ):
            if value is not None:
                parts.append(clause)
                params.append(value)
        if where.text is not None:
            # A precomputed casefold column: no LIKE, so % and _ in user text are literal.
            parts.append(d.contains.format(column="search"))
            params.append(d.fold(where.text))
        return parts, params

    def query(
        self,
        where: DeadLetterFilter,
        *,
        order: DeadLetterOrder,
        limit: int,
        after: str | None = None,
    ) -> DeadLetterPage:
        """Up to ``limit`` matching records in ``order`` after cursor ``after`` (keyset).

        Raises:
            ConfigurationError: a negative ``limit`` or a malformed cursor.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(
                f"limit must be an int >= 0, got {limit!r}", key="limit", value=limit
            )
        parts, params = self._where(where)
        if order is DeadLetterOrder.NEWEST:
            sort = "last_failed_at DESC, id DESC"
            if after is not None:
                last_failed_at, record_id = decode_cursor(order, after)
                parts.append("(last_failed_at < ? OR (last_failed_at = ? AND id < ?))")
                params += [last_failed_at, last_failed_at, record_id]
        else:
            sort = "priority DESC, first_failed_at ASC, id ASC"
            if after is not None:
                priority, first_failed_at, record_id = decode_cursor(order, after)
                parts.append(
                    "(priority < ? OR (priority = ? AND (first_failed_at > ? OR"
                    " (first_failed_at = ? AND id > ?))))"
                )
                params += [priority, priority, first_failed_at, first_failed_at, record_id]
        statement = self._dialect.sql(
            "SELECT data FROM {p}resilience_dead_letters"
            + (" WHERE " + " AND ".join(parts) if parts else "")
            + f" ORDER BY {sort} LIMIT {limit + 1}"
        )
        rows = self._connector.run("dead_letters", lambda s: s.rows(statement, params), write=False)
        page = tuple(DeadLetterRecord.from_json(row[0]) for row in rows[:limit])
        more = len(rows) > limit
        cursor = encode_cursor(order, page[-1]) if more and page else None
        return DeadLetterPage(records=page, next_cursor=cursor)

    def count(self, where: DeadLetterFilter) -> int:
        """How many records match ``where`` (one statement)."""
        parts, params = self._where(where)
        statement = self._dialect.sql(
            "SELECT COUNT(*) FROM {p}resilience_dead_letters"
            + (" WHERE " + " AND ".join(parts) if parts else "")
        )
        rows = self._connector.run("dead_letters", lambda s: s.rows(statement, params), write=False)
        return int(rows[0][0])

    def compare_and_set(self, expected_version: int, record: DeadLetterRecord) -> bool:
        """Replace the stored record if its version is still ``expected_version``.

        Raises:
            ValueError: ``record.version`` is not ``expected_version + 1``.
        """
        if record.version != expected_version + 1:
            raise ValueError(f"record.version must be {expected_version + 1}, got {record.version}")
        params = (*self._columns(record), record.id, expected_version)
        return self._connector.run("dead_letters", lambda s: s.change(self._update, params)) == 1

    def purge(self, where: DeadLetterFilter) -> int:
        """Delete every matching record in one statement; returns how many."""
        parts, params = self._where(where)
        statement = self._dialect.sql(
            "DELETE FROM {p}resilience_dead_letters"
            + (" WHERE " + " AND ".join(parts) if parts else "")
        )
        return self._connector.run("dead_letters", lambda s: s.change(statement, params))


# --------------------------------------------------------------------------- outcomes


_OUTCOME_RETENTION_BUCKETS = int(OUTCOME_RETENTION_SECONDS / OUTCOME_BUCKET_SECONDS)


class SQLOutcomeStore:
    """Outcome counters per (task, failure type, bucket), incremented by one upsert.

    Every ``SWEEP_EVERY`` adds, buckets older than ``OUTCOME_RETENTION_SECONDS``
    are deleted, at most ``SWEEP_BATCH`` per task visited. The only index is the
    primary key, which leads with the task, so a sweep works task by task (an
    index range each, never a scan of the table): the task just written, and the
    next task in name order after the previous sweep's, which in turn reaches
    every task, including those no longer written. Each add creates at most one
    row, so the ``SWEEP_EVERY`` adds between two sweeps leave at most that many
    rows to age out, fewer than the ``SWEEP_BATCH`` a visit may delete.
    """

    __slots__ = (
        "_add",
        "_connector",
        "_counts",
        "_first_task",
        "_next_task",
        "_rotation",
        "_sweep",
        "_tasks",
        "_writes",
    )

    def __init__(self, connector: Connector) -> None:
        sql = connector.dialect.sql
        self._connector = connector
        self._add = sql(
            "INSERT INTO {p}resilience_outcomes AS cur"
            " (task_name, failure_type, bucket, successes, failures) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (task_name, bucket, failure_type) DO UPDATE SET"
            " successes = cur.successes + excluded.successes,"
            " failures = cur.failures + excluded.failures"
        )
        self._counts = sql(
            "SELECT failure_type, SUM(successes), SUM(failures) FROM {p}resilience_outcomes"
            " WHERE task_name = ? AND bucket >= ? GROUP BY failure_type"
        )
        self._tasks = sql("SELECT DISTINCT task_name FROM {p}resilience_outcomes WHERE bucket >= ?")
        self._first_task = sql("SELECT MIN(task_name) FROM {p}resilience_outcomes")
        self._next_task = sql(
            "SELECT task_name FROM {p}resilience_outcomes WHERE task_name > ?"
            " ORDER BY task_name LIMIT 1"
        )
        self._sweep = sql(
            "DELETE FROM {p}resilience_outcomes WHERE (task_name, bucket, failure_type) IN"
            " (SELECT task_name, bucket, failure_type FROM {p}resilience_outcomes"
            " WHERE task_name = ? AND bucket < ? ORDER BY bucket LIMIT ?"
            + connector.dialect.skip_locked
            + ")"
        )
        self._rotation: str | None = None
        self._writes = sweep_counter()

    def add(self, task_name: str, failure_type: str, *, success: bool, now: float) -> None:
        """Count one outcome at ``now`` (an atomic increment)."""
        bucket = math.floor(now / OUTCOME_BUCKET_SECONDS)
        params = (task_name, failure_type, bucket, int(success), int(not success))
        self._connector.run("outcomes", lambda s: s.change(self._add, params))
        if next(self._writes) % SWEEP_EVERY == 0:
            _sweep_quietly(
                self._connector, "outcomes", lambda: self.sweep(now=now, task_name=task_name)
            )

    def sweep(self, *, now: float, task_name: str | None = None) -> int:
        """Delete buckets older than the retention at ``now``, up to ``SWEEP_BATCH`` per task.

        Adds call this every ``SWEEP_EVERY`` writes, with the task they wrote; it is
        public for tests and operators. It visits ``task_name`` (when given) and the
        next task in name order after the one the previous sweep visited, wrapping
        around. The buckets kept are those from ``OUTCOME_RETENTION_SECONDS``
        before the bucket holding ``now`` on.

        Returns:
            How many (task, failure type, bucket) rows were deleted.

        Raises:
            ValueError: ``now`` is NaN or infinite.
            StorageUnavailable: the database cannot be reached.
        """
        check_sweep_time(now)
        oldest = math.floor(now / OUTCOME_BUCKET_SECONDS) - _OUTCOME_RETENTION_BUCKETS

        def work(session: Session) -> int:
            rows = (
                [] if self._rotation is None else session.rows(self._next_task, (self._rotation,))
            )
            if not rows:  # past the last task: start again from the first
                rows = session.rows(self._first_task)
            visit = {str(row[0]) for row in rows if row[0] is not None}
            self._rotation = next(iter(visit), None)
            if task_name is not None:
                visit.add(task_name)
            return sum(
                session.change(self._sweep, (task, oldest, SWEEP_BATCH)) for task in sorted(visit)
            )

        return self._connector.run("outcomes", work)

    def counts(self, task_name: str, *, since: float) -> Mapping[str, OutcomeCounts]:
        """Outcomes per failure type from the bucket holding ``since`` on."""
        params = (task_name, math.floor(since / OUTCOME_BUCKET_SECONDS))
        rows = self._connector.run("outcomes", lambda s: s.rows(self._counts, params), write=False)
        return {
            str(ft): OutcomeCounts(successes=int(ok), failures=int(bad)) for ft, ok, bad in rows
        }

    def task_names(self, *, since: float) -> list[str]:
        """The tasks with outcomes from the bucket holding ``since`` on, sorted."""
        params = (math.floor(since / OUTCOME_BUCKET_SECONDS),)
        rows = self._connector.run("outcomes", lambda s: s.rows(self._tasks, params), write=False)
        return sorted(str(row[0]) for row in rows)

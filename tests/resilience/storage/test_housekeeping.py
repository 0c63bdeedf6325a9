"""Housekeeping: the stores that never expire rows by themselves sweep out the dead ones.

SQLite, PostgreSQL and memory delete idempotency records dead for
``IDEMPOTENCY_RETENTION_SECONDS`` and outcome buckets older than
``OUTCOME_RETENTION_SECONDS``, a bounded batch once every ``SWEEP_EVERY`` writes
(Redis expires its keys by TTL instead). Every test drives ``now`` explicitly:
nothing sleeps, nothing depends on the wall clock. Rows are counted with SQL on
the SQL backends and from the store's own state in memory.
"""

from __future__ import annotations

import logging
import math
import os
import random
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from resilience.storage import IdempotencyState, MemoryStore, open_store
from resilience.storage._sql_roles import SQLIdempotencyStore, SQLOutcomeStore
from resilience.storage.memory import (
    GC_GRACE_SECONDS,
    IDEMPOTENCY_RETENTION_SECONDS,
    OUTCOME_BUCKET_SECONDS,
    OUTCOME_RETENTION_SECONDS,
    SWEEP_BATCH,
    SWEEP_EVERY,
    TOKEN_HORIZON_SECONDS,
    MemoryIdempotencyStore,
    MemoryOutcomeStore,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from resilience.storage import Store
    from resilience.storage._sql import Dialect, Session

T0 = 1_700_000_000.0
SWEEPING = ["memory", "sqlite", "postgres"]
sweeping = pytest.mark.parametrize("store", SWEEPING, indirect=True)
sql_only = pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)


def fresh(label: str) -> str:
    """A key or task name nobody else uses."""
    return f"{label}-{uuid.uuid4().hex}"


def sql_rows(store: Any, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Run a read on a SQL store's own connections (``{p}`` is its table prefix)."""
    text = store.dialect.sql(statement)
    return list(store.run("test", lambda s: s.rows(text, params), write=False))


def idempotency_keys(store: Store) -> set[str]:
    """Every key with a stored record, dead or alive."""
    if isinstance(store, MemoryStore):
        return set(store.idempotency._records)
    return {
        str(row[0]) for row in sql_rows(store, "SELECT idem_key FROM {p}resilience_idempotency")
    }


def outcome_buckets(store: Store, task_name: str) -> set[int]:
    """The buckets holding a counter of ``task_name``, old or recent."""
    if isinstance(store, MemoryStore):
        return {bucket for _, bucket in store.outcomes._counts.get(task_name, {})}
    rows = sql_rows(
        store, "SELECT bucket FROM {p}resilience_outcomes WHERE task_name = ?", (task_name,)
    )
    return {int(row[0]) for row in rows}


def outcome_rows(store: Store) -> int:
    """How many (task, failure type, bucket) counters the store holds."""
    if isinstance(store, MemoryStore):
        return sum(len(cells) for cells in store.outcomes._counts.values())
    return int(sql_rows(store, "SELECT COUNT(*) FROM {p}resilience_outcomes")[0][0])


def test_the_horizons_are_shared_with_redis() -> None:
    """One definition of each horizon: Redis re-exports the ones the sweeps use."""
    from resilience.storage import redis

    assert redis.GC_GRACE_SECONDS is GC_GRACE_SECONDS
    assert redis.TOKEN_HORIZON_SECONDS is TOKEN_HORIZON_SECONDS
    assert IDEMPOTENCY_RETENTION_SECONDS == GC_GRACE_SECONDS + TOKEN_HORIZON_SECONDS
    assert OUTCOME_RETENTION_SECONDS == 7 * 24 * 3600
    # A steady state adds at most SWEEP_EVERY rows between two sweeps: one batch keeps up.
    assert SWEEP_BATCH >= SWEEP_EVERY


# --------------------------------------------------------------------------- idempotency


@sweeping
def test_dead_idempotency_keys_are_swept_by_acquires_and_the_rest_behave_the_same(
    store: Store,
) -> None:
    """After SWEEP_EVERY acquires, keys dead for the retention are gone; nothing else changes.

    Kept: live keys, keys expired within the GC grace or within the token horizon
    (they still fence late owners), and keys whose lease outlives their TTL. Gone:
    keys whose TTL and lease both ended at least the retention ago.
    """
    idem = store.idempotency
    late = T0 + 61 + IDEMPOTENCY_RETENTION_SECONDS + 1
    cutoff = late - IDEMPOTENCY_RETENTION_SECONDS

    dead = [fresh("dead") for _ in range(300)]
    for key in dead:
        assert idem.acquire(key, fingerprint="fp", lease=10, ttl=60, now=T0).acquired
        assert idem.complete(key, token=1, result='"done"', ttl=60, now=T0 + 1)
    on_the_cutoff = fresh("cutoff")  # expires_at == now - retention: dead
    assert idem.acquire(on_the_cutoff, fingerprint="fp", lease=10, ttl=60, now=cutoff - 60)
    once_forever = fresh("forever")  # TTL infinite at first, then completed for 60 s
    assert idem.acquire(once_forever, fingerprint="fp", lease=10, ttl=math.inf, now=T0).acquired
    assert idem.complete(once_forever, token=1, result="1", ttl=60, now=T0 + 1)
    dead += [on_the_cutoff, once_forever]

    just_inside = fresh("inside")  # dead one second less than the retention
    assert idem.acquire(just_inside, fingerprint="fp", lease=10, ttl=60, now=cutoff - 59)
    in_the_grace = fresh("grace")  # expired within the GC grace
    assert idem.acquire(in_the_grace, fingerprint="fp", lease=10, ttl=60, now=late - 90)
    leased = fresh("leased")  # a lease far beyond the TTL, taken at once
    assert idem.acquire(leased, fingerprint="fp", lease=late - T0, ttl=60, now=T0).acquired
    renewed = fresh("renewed")  # a lease renewed far beyond the TTL
    assert idem.acquire(renewed, fingerprint="fp", lease=10, ttl=60, now=T0).acquired
    assert idem.renew(renewed, token=1, lease=late - T0, now=T0 + 1)
    live = [fresh("live") for _ in range(20)]
    for key in live:
        assert idem.acquire(key, fingerprint="fp", lease=30, ttl=3600, now=late - 10).acquired
    kept = {just_inside, in_the_grace, leased, renewed, *live}
    assert idempotency_keys(store) == set(dead) | kept

    busy = fresh("busy")
    for n in range(SWEEP_EVERY):  # exactly one sweep, at `late`, whatever the counter's phase
        claim = idem.acquire(busy, fingerprint="fp", lease=3600, ttl=3600, now=late)
        assert claim.acquired is (n == 0)

    assert idempotency_keys(store) == kept | {busy}
    for key in live:
        record = idem.get(key, now=late)
        assert record is not None
        assert record.state is IdempotencyState.IN_PROGRESS
        assert not idem.acquire(key, fingerprint="fp", lease=30, ttl=3600, now=late).acquired
    # Expired but kept: absent to get, and a new claim is still fenced above the old token.
    for key in (just_inside, in_the_grace):
        assert idem.get(key, now=late) is None
        again = idem.acquire(key, fingerprint="other", lease=30, ttl=60, now=late)
        assert again.acquired
        assert again.record.token == 2
    # Swept: absent as before; only the token starts over, as on Redis past its horizon.
    for key in [*dead[:3], on_the_cutoff, once_forever]:
        assert idem.get(key, now=late) is None
        again = idem.acquire(key, fingerprint="other", lease=30, ttl=60, now=late)
        assert again.acquired
        assert again.record.token == 1


@sweeping
def test_one_sweep_deletes_at_most_a_batch_the_longest_dead_first(store: Store) -> None:
    """A sweep stops after SWEEP_BATCH records; the next one takes the rest."""
    idem = store.idempotency
    extra = 50
    keys = [f"{n:05d}-{uuid.uuid4().hex[:8]}" for n in range(SWEEP_BATCH + extra)]
    for n, key in enumerate(keys):  # later keys expire later
        assert idem.acquire(key, fingerprint="fp", lease=1, ttl=60 + n, now=T0).acquired
    late = T0 + 60 + len(keys) + IDEMPOTENCY_RETENTION_SECONDS

    assert idem.sweep(now=late) == SWEEP_BATCH  # type: ignore[attr-defined]
    assert idempotency_keys(store) == set(keys[SWEEP_BATCH:])
    assert idem.sweep(now=late) == extra  # type: ignore[attr-defined]
    assert idem.sweep(now=late) == 0  # type: ignore[attr-defined]
    assert idempotency_keys(store) == set()


@sweeping
@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_a_sweep_refuses_a_time_it_cannot_order(store: Store, now: float) -> None:
    """NaN (which PostgreSQL orders above every number) or infinity deletes nothing: it raises."""
    assert store.idempotency.acquire("k", fingerprint="fp", lease=1, ttl=1, now=T0).acquired
    store.outcomes.add("task", "X", success=True, now=T0)
    for role in (store.idempotency, store.outcomes):
        with pytest.raises(ValueError, match="now must be a finite time"):
            role.sweep(now=now)  # type: ignore[attr-defined]
    assert idempotency_keys(store) == {"k"}
    assert outcome_rows(store) == 1


# --------------------------------------------------------------------------- outcomes


@sweeping
def test_old_outcome_buckets_are_swept_by_adds_and_recent_counts_stay(store: Store) -> None:
    """After SWEEP_EVERY adds, the task's buckets past the retention are gone.

    The counts of the retention window are unchanged; the bucket exactly at the
    window's start stays, the one just before it goes.
    """
    outcomes = store.outcomes
    bucket_of_late = math.floor((T0 + OUTCOME_RETENTION_SECONDS + 86400) / OUTCOME_BUCKET_SECONDS)
    late = bucket_of_late * OUTCOME_BUCKET_SECONDS + 30
    oldest = bucket_of_late - int(OUTCOME_RETENTION_SECONDS / OUTCOME_BUCKET_SECONDS)
    window = late - OUTCOME_RETENTION_SECONDS  # counts(since=window) starts at `oldest`
    assert math.floor(window / OUTCOME_BUCKET_SECONDS) == oldest

    task = fresh("task")
    old = [T0 + 60 * n for n in range(20)] + [(oldest - 1) * OUTCOME_BUCKET_SECONDS]
    recent = [oldest * OUTCOME_BUCKET_SECONDS, late - 3600, late - 60]
    # Recent first: a sweep the setup may trigger then finds nothing old yet.
    for at in recent + old:
        outcomes.add(task, "TRANSIENT_NETWORK", success=False, now=at)
        outcomes.add(task, "RATE_LIMITED", success=True, now=at)
    before = dict(outcomes.counts(task, since=window))
    assert len(outcome_buckets(store, task)) == len(old) + len(recent)

    for _ in range(SWEEP_EVERY):  # exactly one sweep, at `late`
        outcomes.add(task, "RATE_LIMITED", success=True, now=late)

    assert outcome_buckets(store, task) == {bucket_of_late - 60, bucket_of_late - 1} | {
        oldest,
        bucket_of_late,
    }
    after = dict(outcomes.counts(task, since=window))
    assert after["TRANSIENT_NETWORK"] == before["TRANSIENT_NETWORK"]
    assert after["RATE_LIMITED"].successes == before["RATE_LIMITED"].successes + SWEEP_EVERY
    # What is left is the window: counting from the start of time says the same.
    assert dict(outcomes.counts(task, since=T0)) == after


@sweeping
def test_tasks_no_longer_written_are_swept_too(store: Store) -> None:
    """Old buckets of a task nobody writes any more are reached by later sweeps."""
    outcomes = store.outcomes
    late = T0 + OUTCOME_RETENTION_SECONDS + 86400
    tasks = sorted(fresh(label) for label in ("a", "b", "c"))
    for task in tasks:
        for n in range(5):
            outcomes.add(task, "TRANSIENT_NETWORK", success=True, now=T0 + 60 * n)
    current = fresh("current")
    outcomes.add(current, "TRANSIENT_NETWORK", success=True, now=late)

    # A SQL sweep visits one more task each time, round robin; memory takes all at once.
    for _ in range(len(tasks) + 1):
        outcomes.sweep(now=late)  # type: ignore[attr-defined]

    assert outcome_rows(store) == 1
    listing: Any = outcomes
    assert listing.task_names(since=T0) == [current]


# --------------------------------------------------------------------------- the trigger


def _acquire(role: Any, n: int) -> None:
    role.acquire(f"k{n}", fingerprint="fp", lease=1, ttl=1, now=T0)


def _add(role: Any, n: int) -> None:
    role.add("task", "X", success=n % 2 == 0, now=T0)


@pytest.mark.parametrize(
    ("cls", "write"),
    [(MemoryIdempotencyStore, _acquire), (MemoryOutcomeStore, _add)],
    ids=["idempotency", "outcomes"],
)
def test_memory_stores_sweep_once_every_sweep_every_writes(
    monkeypatch: pytest.MonkeyPatch, cls: type[Any], write: Callable[[Any, int], None]
) -> None:
    """Whatever phase a new store's counter starts at, every SWEEP_EVERY writes sweep once."""
    real = cls._sweep
    calls: list[float] = []

    def counting(self: Any, now: float) -> int:
        calls.append(now)
        return int(real(self, now))

    monkeypatch.setattr(cls, "_sweep", counting)
    for _ in range(3):  # three stores, three random phases
        role = cls()
        for n in range(SWEEP_EVERY):
            write(role, n)
        assert len(calls) == 1
        for n in range(SWEEP_EVERY, 2 * SWEEP_EVERY):
            write(role, n)
        assert len(calls) == 2
        calls.clear()


@sql_only
def test_sql_stores_sweep_once_every_sweep_every_writes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acquires and outcome adds each call their store's sweep once per SWEEP_EVERY writes."""
    calls: list[str] = []
    for cls in (SQLIdempotencyStore, SQLOutcomeStore):
        real = cls.sweep

        def counting(self: Any, *, _real: Any = real, **kwargs: Any) -> int:
            calls.append(type(self).__name__)
            return int(_real(self, **kwargs))

        monkeypatch.setattr(cls, "sweep", counting)
    connector: Any = store
    idem, outcomes = SQLIdempotencyStore(connector), SQLOutcomeStore(connector)
    for n in range(2 * SWEEP_EVERY):
        idem.acquire(f"k{n}", fingerprint="fp", lease=1, ttl=1, now=T0)
        outcomes.add("task", "X", success=True, now=T0)
    assert sorted(calls) == ["SQLIdempotencyStore"] * 2 + ["SQLOutcomeStore"] * 2


class _SweepRefused(RuntimeError):
    pass


class _RefusingSession:
    """A session whose bulk DELETEs (the sweeps) fail; every other statement runs."""

    def __init__(self, inner: Session) -> None:
        self._inner = inner

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._inner.rows(sql, params)

    def change(self, sql: str, params: Sequence[object] = ()) -> int:
        if sql.startswith("DELETE") and "LIMIT" in sql:
            raise _SweepRefused("sweep refused by the test")
        return self._inner.change(sql, params)


class _RefusingConnector:
    """The store's connector, with sessions that refuse to sweep."""

    def __init__(self, store: Any) -> None:
        self._store = store

    @property
    def dialect(self) -> Dialect:
        return self._store.dialect  # type: ignore[no-any-return]

    def run(self, role: str, work: Callable[[Any], Any], **options: Any) -> Any:
        return self._store.run(role, lambda s: work(_RefusingSession(s)), **options)

    def __repr__(self) -> str:
        return repr(self._store)


@sql_only
def test_a_failing_sweep_is_logged_and_the_write_still_happens(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A sweep that raises costs the write nothing: one WARNING names the store and the error."""
    dead = fresh("dead")
    assert store.idempotency.acquire(dead, fingerprint="fp", lease=1, ttl=1, now=T0).acquired
    store.outcomes.add("task", "X", success=True, now=T0)
    late = T0 + IDEMPOTENCY_RETENTION_SECONDS + 10
    connector: Any = _RefusingConnector(store)
    idem, outcomes = SQLIdempotencyStore(connector), SQLOutcomeStore(connector)

    keys = [fresh("k") for _ in range(SWEEP_EVERY)]
    with caplog.at_level(logging.WARNING, logger="resilience.storage"):
        for key in keys:
            assert idem.acquire(key, fingerprint="fp", lease=30, ttl=60, now=late).acquired
        for _ in range(SWEEP_EVERY):
            outcomes.add("task", "X", success=False, now=late)

    warnings = [r for r in caplog.records if r.name == "resilience.storage"]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    for record, role in zip(warnings, ("idempotency", "outcomes"), strict=True):
        message = record.getMessage()
        assert repr(store) in message
        assert f"old {role} rows" in message
        assert "sweep refused by the test" in message
    # Every write happened; the dead rows wait for a sweep that works.
    assert idempotency_keys(store) == {dead, *keys}
    assert outcomes.counts("task", since=T0)["X"].failures == SWEEP_EVERY
    assert store.idempotency.sweep(now=late) == 1  # type: ignore[attr-defined]
    assert idempotency_keys(store) == set(keys)


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_postgres_sweep_skips_a_row_being_claimed_again_instead_of_waiting(
    store: Store,
) -> None:
    """A dead row locked by a claim in flight is neither waited for nor deleted.

    The sweeping store's connections have a lock timeout: a sweep that waited for
    the row lock would fail with it instead of hanging the test.
    """
    import psycopg

    from resilience.storage.postgres import PostgresStore

    schema: str = store.schema  # type: ignore[attr-defined]
    claimed, idle = fresh("claimed"), fresh("idle")
    for key in (claimed, idle):
        assert store.idempotency.acquire(key, fingerprint="fp", lease=1, ttl=60, now=T0).acquired
    late = T0 + 60 + IDEMPOTENCY_RETENTION_SECONDS
    url = os.environ["RESILIENCE_TEST_POSTGRES_URL"]
    impatient = PostgresStore(f"{url}?options=-c%20lock_timeout%3D5000", schema=schema)
    try:
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            # What a takeover does to the row, held uncommitted while the sweep runs.
            conn.execute(
                f'UPDATE "{schema}".resilience_idempotency'  # noqa: S608 - the test's schema
                " SET expires_at = %s, token = token + 1 WHERE idem_key = %s",
                (late + 3600, claimed),
            )
            assert impatient.idempotency.sweep(now=late) == 1
    finally:
        impatient.close()
    assert idempotency_keys(store) == {claimed}
    record = store.idempotency.get(claimed, now=late)
    assert record is not None
    assert record.token == 2


def test_opening_stores_leaves_the_global_random_alone(tmp_path: Any) -> None:
    """The sweep counters' random start does not draw from an application's seeded random."""
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    MemoryStore()
    store = open_store(f"sqlite:///{tmp_path / 'seeded.sqlite3'}")
    try:
        assert store.url.startswith("sqlite")
    finally:
        store.close()
    assert [random.random() for _ in range(3)] == expected

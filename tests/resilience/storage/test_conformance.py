"""One conformance suite for every backend: each must behave exactly like the memory reference.

Every test takes the ``store`` fixture, which runs it on memory, SQLite, fakeredis,
real Redis and real PostgreSQL. The hypothesis tests are differential: the same
random operations run on the backend and on the in-memory reference, and every
answer must match. Time is passed explicitly (``now=``), as the services do with
their clock, so TTLs and leases are tested without sleeping.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience.storage import (
    BreakerRecord,
    CircuitState,
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
    HistoryEntry,
    IdempotencyState,
    MemoryStore,
)
from resilience.storage.records import MAX_KEY_LENGTH
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from resilience.storage import Store

# The store fixture is per test, not per example: examples isolate themselves with
# fresh keys, ids and task names instead.
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
T0 = 1_700_000_000.0


def fresh(label: str = "k") -> str:
    """A key nobody else uses."""
    return f"{label}-{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- breakers


def test_breaker_compare_and_set_creates_then_guards_versions(store: Store) -> None:
    """The first write needs expected None; later writes need the current version."""
    name = fresh("breaker")
    assert store.breakers.load(name) is None
    first = BreakerRecord(version=1)
    assert store.breakers.compare_and_set(name, None, first) is True
    assert store.breakers.compare_and_set(name, None, first) is False
    opened = BreakerRecord(
        state=CircuitState.OPEN, consecutive_failures=5, opened_at=T0, open_until=T0 + 60, version=2
    )
    assert store.breakers.compare_and_set(name, 7, dataclasses.replace(opened, version=8)) is False
    assert store.breakers.compare_and_set(name, 1, opened) is True
    assert store.breakers.load(name) == opened


def test_breaker_version_must_advance_by_one(store: Store) -> None:
    """A record whose version is not expected + 1 is refused loudly, on every backend."""
    name = fresh("breaker")
    with pytest.raises(ValueError, match="version"):
        store.breakers.compare_and_set(name, None, BreakerRecord(version=3))


breaker_records = st.builds(
    BreakerRecord,
    state=st.sampled_from(CircuitState),
    consecutive_failures=st.integers(0, 10**6),
    opened_at=st.none() | st.floats(0, 4e9),
    open_until=st.none() | st.floats(0, 4e9),
    probes=st.lists(
        st.tuples(st.text(alphabet="abcdef0123456789", min_size=1, max_size=32), st.floats(0, 4e9)),
        max_size=3,
    ).map(tuple),
    half_open_successes=st.integers(0, 100),
    outcomes=st.text(alphabet="sf", max_size=100),
    buckets=st.lists(
        st.tuples(st.floats(0, 4e9), st.integers(0, 1000), st.integers(0, 1000)), max_size=5
    ).map(tuple),
    trips=st.integers(0, 1000),
    version=st.just(1),
)


@EXAMPLES
@given(record=breaker_records)
def test_breaker_records_round_trip(store: Store, record: BreakerRecord) -> None:
    """Whatever a breaker writes, it reads back equal."""
    name = fresh("breaker")
    assert store.breakers.compare_and_set(name, None, record)
    assert store.breakers.load(name) == record


def test_breaker_names_lists_every_stored_breaker_sorted(store: Store) -> None:
    """names() lists every written breaker once, sorted, including glob-like names."""
    listing: Any = store.breakers
    assert listing.names() == []
    names = [fresh("b"), fresh("a"), "odd*name?[x]", "payments:eu"]
    for name in names:
        assert store.breakers.compare_and_set(name, None, BreakerRecord(version=1))
    assert store.breakers.compare_and_set(names[0], 1, BreakerRecord(version=2))
    assert listing.names() == sorted(names)


# --------------------------------------------------------------------------- idempotency


def test_idempotency_lifecycle(store: Store) -> None:
    """Claim, block duplicates, complete, and return the stored result."""
    idem, key = store.idempotency, fresh()
    first = idem.acquire(key, fingerprint="fp", lease=30, ttl=3600, now=T0)
    assert first.acquired
    assert (first.record.state, first.record.token) == (IdempotencyState.IN_PROGRESS, 1)
    assert (first.record.lease_until, first.record.expires_at) == (T0 + 30, T0 + 3600)

    busy = idem.acquire(key, fingerprint="fp", lease=30, ttl=3600, now=T0 + 1)
    assert not busy.acquired
    assert busy.record.state is IdempotencyState.IN_PROGRESS
    assert busy.record.lease_remaining(T0 + 1) == 29

    assert idem.complete(key, token=99, result='"nope"', ttl=3600, now=T0 + 2) is False
    assert idem.complete(key, token=1, result='{"charged": 10}', ttl=7200, now=T0 + 2) is True
    done = idem.get(key, now=T0 + 3)
    assert done is not None
    assert (done.state, done.result, done.expires_at) == (
        IdempotencyState.COMPLETED,
        '{"charged": 10}',
        T0 + 7202,
    )
    duplicate = idem.acquire(key, fingerprint="fp", lease=30, ttl=3600, now=T0 + 4)
    assert not duplicate.acquired
    assert duplicate.record.result == '{"charged": 10}'


def test_idempotency_mismatch_blocks_and_shows_the_other_fingerprint(store: Store) -> None:
    """The same key with another payload is not claimed; the stored fingerprint is returned."""
    idem, key = store.idempotency, fresh()
    assert idem.acquire(key, fingerprint="a", lease=30, ttl=60, now=T0).acquired
    other = idem.acquire(key, fingerprint="b", lease=30, ttl=60, now=T0 + 100)
    # TTL passed: the key is free again for any payload.
    assert other.acquired
    again = idem.acquire(key, fingerprint="c", lease=30, ttl=60, now=T0 + 101)
    assert not again.acquired
    assert again.record.fingerprint == "b"


def test_failed_key_is_claimable_again_with_a_new_token(store: Store) -> None:
    """A released (FAILED) key is claimed by the retry; the old token is fenced off."""
    idem, key = store.idempotency, fresh()
    assert idem.acquire(key, fingerprint="fp", lease=30, ttl=600, now=T0).acquired
    assert idem.release(key, token=1, now=T0 + 1) is True
    assert idem.get(key, now=T0 + 1).state is IdempotencyState.FAILED  # type: ignore[union-attr]
    retry = idem.acquire(key, fingerprint="fp", lease=30, ttl=600, now=T0 + 2)
    assert retry.acquired
    assert retry.record.token == 2
    assert idem.release(key, token=1, now=T0 + 3) is False
    assert idem.complete(key, token=1, result="1", ttl=600, now=T0 + 3) is False


def test_expired_lease_is_taken_over_and_the_late_owner_fenced(store: Store) -> None:
    """After the lease passes another worker claims the key; the first cannot complete it."""
    idem, key = store.idempotency, fresh()
    assert idem.acquire(key, fingerprint="fp", lease=10, ttl=600, now=T0).acquired
    taken = idem.acquire(key, fingerprint="fp", lease=10, ttl=600, now=T0 + 11)
    assert taken.acquired
    assert taken.record.token == 2
    assert idem.complete(key, token=1, result='"late"', ttl=600, now=T0 + 12) is False
    assert idem.complete(key, token=2, result='"new"', ttl=600, now=T0 + 12) is True
    assert idem.get(key, now=T0 + 13).result == '"new"'  # type: ignore[union-attr]


def test_renew_extends_only_the_owners_lease(store: Store) -> None:
    """renew moves lease_until for the token holder and refuses anyone else."""
    idem, key = store.idempotency, fresh()
    assert idem.acquire(key, fingerprint="fp", lease=10, ttl=600, now=T0).acquired
    assert idem.renew(key, token=2, lease=100, now=T0 + 5) is False
    assert idem.renew(key, token=1, lease=100, now=T0 + 5) is True
    assert not idem.acquire(key, fingerprint="fp", lease=10, ttl=600, now=T0 + 50).acquired


def test_ttl_expiry_forgets_but_tokens_keep_growing(store: Store) -> None:
    """An expired record is gone for get(); a new claim still gets a higher token."""
    idem, key = store.idempotency, fresh()
    assert idem.acquire(key, fingerprint="fp", lease=10, ttl=60, now=T0).acquired
    assert idem.complete(key, token=1, result="null", ttl=60, now=T0 + 1)
    assert idem.get(key, now=T0 + 62) is None
    again = idem.acquire(key, fingerprint="fp", lease=10, ttl=60, now=T0 + 62)
    assert again.acquired
    assert again.record.token > 1


def test_delete_and_long_unicode_keys(store: Store) -> None:
    """Keys up to MAX_KEY_LENGTH of any text work; delete forgets them."""
    idem = store.idempotency
    key = ("ключ:" + uuid.uuid4().hex + "é" * MAX_KEY_LENGTH)[:MAX_KEY_LENGTH]
    assert idem.acquire(key, fingerprint="fp", lease=10, ttl=60, now=T0).acquired
    assert idem.get(key, now=T0) is not None
    assert idem.delete(key) is True
    assert idem.delete(key) is False
    assert idem.get(key, now=T0) is None


idempotency_ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from(["a", "b"]), st.integers(1, 50)),
        st.tuples(st.just("complete"), st.integers(1, 4), st.integers(1, 50)),
        st.tuples(st.just("release"), st.integers(1, 4)),
        st.tuples(st.just("renew"), st.integers(1, 4), st.integers(1, 50)),
        st.tuples(st.just("advance"), st.integers(0, 80)),
    ),
    min_size=1,
    max_size=25,
)


@EXAMPLES
@given(ops=idempotency_ops)
def test_idempotency_matches_the_reference(store: Store, ops: list[tuple[Any, ...]]) -> None:
    """Random operations give the same answers and records as the memory reference."""
    reference = MemoryStore().idempotency
    key, now = fresh(), T0
    for op in ops:
        if op[0] == "advance":
            now += op[1]
            continue
        if op[0] == "acquire":
            kwargs = {"fingerprint": op[1], "lease": op[2], "ttl": 60.0, "now": now}
            got, want = store.idempotency.acquire(key, **kwargs), reference.acquire(key, **kwargs)
        elif op[0] == "complete":
            kwargs = {"token": op[1], "result": f'{{"n": {op[2]}}}', "ttl": 60.0, "now": now}
            got, want = store.idempotency.complete(key, **kwargs), reference.complete(key, **kwargs)
        elif op[0] == "release":
            got = store.idempotency.release(key, token=op[1], now=now)
            want = reference.release(key, token=op[1], now=now)
        else:
            kwargs = {"token": op[1], "lease": op[2], "now": now}
            got, want = store.idempotency.renew(key, **kwargs), reference.renew(key, **kwargs)
        assert got == want, op
        assert store.idempotency.get(key, now=now) == reference.get(key, now=now), op


# --------------------------------------------------------------------------- dead letters


def letter(task_name: str, n: int, **changes: Any) -> DeadLetterRecord:
    """A dead letter with distinct, predictable fields."""
    base = DeadLetterRecord(
        id=f"{n:06d}-{uuid.uuid4().hex[:8]}",
        task_id=f"task-{n}",
        task_name=task_name,
        args=[n, "x", None, {"nested": [1.5, True]}],
        kwargs={"order_id": n, "note": "ünïcode ✓"},
        failure_type=FailureType.TRANSIENT_DATABASE,
        confidence=0.9,
        exception_class="psycopg.errors.DeadlockDetected",
        message=f"deadlock detected on order {n}",
        traceback="Traceback (most recent call last):\n  ...\n",
        retry_count=n % 4,
        first_failed_at=T0 + n,
        last_failed_at=T0 + n * 10,
        next_retry_at=T0 + n * 100,
        priority=n % 3,
        queue="default",
        correlation_id=f"corr-{n}",
        flags=("non_json",) if n % 5 == 0 else (),
        history=(HistoryEntry(at=T0 + n, actor="worker", action="add"),),
    )
    return dataclasses.replace(base, **changes)


def test_dead_letter_add_get_round_trip(store: Store) -> None:
    """Every field of a dead letter reads back exactly; a duplicate id is refused."""
    record = letter(fresh("task"), 1)
    store.dead_letters.add(record)
    assert store.dead_letters.get(record.id) == record
    assert store.dead_letters.get("missing") is None
    with pytest.raises(ValueError, match=record.id):
        store.dead_letters.add(record)


def test_dead_letter_compare_and_set_is_exclusive(store: Store) -> None:
    """Two writers from the same version: exactly one wins."""
    record = letter(fresh("task"), 2)
    store.dead_letters.add(record)
    entry = HistoryEntry(
        at=T0,
        actor="ops",
        action="retry",
        from_status=DeadLetterStatus.PENDING,
        to_status=DeadLetterStatus.RETRYING,
    )
    mine = record.with_action(entry, status=DeadLetterStatus.RETRYING)
    theirs = record.with_action(entry, status=DeadLetterStatus.ABANDONED)
    assert store.dead_letters.compare_and_set(record.version, mine) is True
    assert store.dead_letters.compare_and_set(record.version, theirs) is False
    assert store.dead_letters.get(record.id) == mine
    ghost = letter(fresh("task"), 3, version=2)
    assert store.dead_letters.compare_and_set(1, ghost) is False


def test_dead_letter_filters_orders_counts_and_purge(store: Store) -> None:
    """Each filter, both orders, count and purge agree with the reference semantics."""
    task = fresh("task")
    records = [
        letter(task, n, status=list(DeadLetterStatus)[n % 4], message=f"Deadlock %_ #{n}")
        for n in range(1, 13)
    ]
    records[3] = dataclasses.replace(records[3], failure_type=FailureType.PERMANENT_VALIDATION)
    for record in records:
        store.dead_letters.add(record)
    everything = DeadLetterFilter(task_name=task)
    newest = store.dead_letters.query(everything, order=DeadLetterOrder.NEWEST, limit=100)
    assert [r.id for r in newest.records] == [r.id for r in reversed(records)]
    assert newest.next_cursor is None
    replay = store.dead_letters.query(everything, order=DeadLetterOrder.REPLAY, limit=100)
    expected = sorted(records, key=lambda r: (-r.priority, r.first_failed_at, r.id))
    assert [r.id for r in replay.records] == [r.id for r in expected]

    filters = [
        DeadLetterFilter(task_name=task, statuses=frozenset({DeadLetterStatus.PENDING})),
        DeadLetterFilter(
            task_name=task, failure_types=frozenset({FailureType.PERMANENT_VALIDATION})
        ),
        DeadLetterFilter(task_name=task, since=T0 + 50, until=T0 + 100),
        DeadLetterFilter(task_name=task, text="deadlock %_ #1"),
        DeadLetterFilter(task_name=task, due_by=T0 + 500),
        DeadLetterFilter(task_name=task, ids=frozenset({records[0].id, records[5].id, "nope"})),
    ]
    for where in filters:
        want = [r.id for r in reversed(records) if where.matches(r)]
        page = store.dead_letters.query(where, order=DeadLetterOrder.NEWEST, limit=100)
        assert [r.id for r in page.records] == want, where
        assert store.dead_letters.count(where) == len(want), where
    assert store.dead_letters.purge(filters[0]) == 3
    assert store.dead_letters.count(everything) == 9


@EXAMPLES
@given(
    size=st.integers(0, 30),
    limit=st.integers(1, 7),
    order=st.sampled_from(DeadLetterOrder),
    priorities=st.lists(st.integers(0, 2), min_size=30, max_size=30),
    ties=st.booleans(),
)
def test_pagination_visits_every_record_once_in_order(
    store: Store, size: int, limit: int, order: DeadLetterOrder, priorities: list[int], ties: bool
) -> None:
    """Paging with cursors yields exactly the reference order, each record once."""
    task = fresh("task")
    reference = MemoryStore().dead_letters
    for n in range(size):
        # With ties, many records share timestamps: the id must break them identically.
        stamp = T0 + (n // 4 if ties else n)
        record = letter(
            task, n, priority=priorities[n], first_failed_at=stamp, last_failed_at=stamp
        )
        store.dead_letters.add(record)
        reference.add(record)
    where = DeadLetterFilter(task_name=task)
    seen: list[str] = []
    after = None
    while True:
        page = store.dead_letters.query(where, order=order, limit=limit, after=after)
        want = reference.query(where, order=order, limit=limit, after=after)
        assert [r.id for r in page.records] == [r.id for r in want.records]
        assert (page.next_cursor is None) == (want.next_cursor is None)
        seen.extend(r.id for r in page.records)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    full = reference.query(where, order=order, limit=size + 1).records
    assert seen == [r.id for r in full]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@EXAMPLES
@given(
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    message=st.text(max_size=200),
)
def test_any_json_payload_round_trips(
    store: Store, args: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    """Arbitrary JSON args/kwargs and any text message are stored and read back exactly."""
    record = letter(fresh("task"), 7, args=args, kwargs=kwargs, message=message)
    store.dead_letters.add(record)
    assert store.dead_letters.get(record.id) == record


# --------------------------------------------------------------------------- outcomes


def test_outcome_counters_per_type_and_window(store: Store) -> None:
    """Counters add up per failure type, and `since` drops older buckets."""
    task = fresh("task")
    for _ in range(3):
        store.outcomes.add(task, "TRANSIENT_DATABASE", success=True, now=T0)
    store.outcomes.add(task, "TRANSIENT_DATABASE", success=False, now=T0 + 3600)
    store.outcomes.add(task, "TRANSIENT_NETWORK", success=False, now=T0 + 3600)
    everything = store.outcomes.counts(task, since=T0 - 60)
    assert {k: (v.successes, v.failures) for k, v in everything.items()} == {
        "TRANSIENT_DATABASE": (3, 1),
        "TRANSIENT_NETWORK": (0, 1),
    }
    recent = store.outcomes.counts(task, since=T0 + 3000)
    assert {k: (v.successes, v.failures) for k, v in recent.items()} == {
        "TRANSIENT_DATABASE": (0, 1),
        "TRANSIENT_NETWORK": (0, 1),
    }
    assert store.outcomes.counts(fresh("other"), since=T0) == {}


@EXAMPLES
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["A", "B"]), st.booleans(), st.integers(0, 7200)), max_size=30
    ),
    since=st.integers(0, 7200),
)
def test_outcomes_match_the_reference(
    store: Store, events: list[tuple[str, bool, int]], since: int
) -> None:
    """Random outcome streams count the same as the memory reference."""
    task, reference = fresh("task"), MemoryStore().outcomes
    for failure_type, success, offset in events:
        store.outcomes.add(task, failure_type, success=success, now=T0 + offset)
        reference.add(task, failure_type, success=success, now=T0 + offset)
    assert dict(store.outcomes.counts(task, since=T0 + since)) == dict(
        reference.counts(task, since=T0 + since)
    )


def test_outcome_task_names_list_tasks_with_recent_outcomes(store: Store) -> None:
    """task_names(since=) lists, sorted, exactly the tasks with outcomes from since on."""
    old, recent_a, recent_b = fresh("old"), fresh("b-task"), fresh("a-task")
    store.outcomes.add(old, "TRANSIENT_NETWORK", success=True, now=T0)
    store.outcomes.add(recent_a, "TRANSIENT_NETWORK", success=False, now=T0 + 3600)
    store.outcomes.add(recent_b, "RATE_LIMITED", success=True, now=T0 + 3600)
    listing: Any = store.outcomes
    assert listing.task_names(since=T0 - 60) == sorted([old, recent_a, recent_b])
    assert listing.task_names(since=T0 + 3000) == sorted([recent_a, recent_b])
    assert listing.task_names(since=T0 + 7200) == []


def test_store_url_never_shows_a_password(store: Store) -> None:
    """The store's url and repr are safe to log."""
    assert urlsplit(store.url).password in (None, "***")
    assert "secret" not in repr(store)


# --------------------------------------------------------------------------- services on top


def test_two_workers_share_one_breaker_and_one_history(store: Store) -> None:
    """Breakers and histories of two 'workers' on one store see each other's outcomes."""
    from resilience import CircuitBreaker, CircuitOpenError, FakeClock, OutcomeHistory

    clock = FakeClock(start=T0)
    name = fresh("payments")
    worker_a = CircuitBreaker(name, failure_threshold=2, store=store.breakers, clock=clock)
    worker_b = CircuitBreaker(name, failure_threshold=2, store=store.breakers, clock=clock)

    def down() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    for worker in (worker_a, worker_b):
        with pytest.raises(ConnectionRefusedError):
            worker.call(down)
    with pytest.raises(CircuitOpenError):
        worker_a.call(lambda: "not called")
    assert worker_b.state is CircuitState.OPEN

    task = fresh("task")
    history_a = OutcomeHistory(store.outcomes, clock=clock)
    history_b = OutcomeHistory(store.outcomes, clock=clock)
    history_a.record(task, FailureType.TRANSIENT_DATABASE, success=True)
    history_b.record(task, FailureType.TRANSIENT_DATABASE, success=False)
    shared = history_a.get(task, FailureType.TRANSIENT_DATABASE)
    assert (shared.successes, shared.failures) == (1, 1)

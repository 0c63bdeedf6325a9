"""The dead-letter queue on every backend: memory, SQLite, fakeredis, real Redis, real PostgreSQL.

Uses the storage suite's ``make_store`` (real servers from ``RESILIENCE_TEST_REDIS_URL`` /
``RESILIENCE_TEST_POSTGRES_URL``; skipped without them unless CI requires them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from resilience.clock import FakeClock
from resilience.dead_letter import REPLAY_LEASE, DeadLetterQueue
from resilience.errors import DeadLetterConflict
from resilience.storage import DeadLetterFilter, DeadLetterOrder, DeadLetterStatus
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from resilience.storage import DeadLetterRecord, Store
    from resilience.storage.base import DeadLetterStore

START = 1_700_000_000.0


def _storage_conftest() -> object:
    name = "_dead_letter_storage_conftest"
    if name not in sys.modules:
        path = Path(__file__).parent / "storage" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_CONFTEST = _storage_conftest()


@pytest.fixture(params=_CONFTEST.BACKENDS)  # type: ignore[attr-defined]
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, isolated store of each backend in turn."""
    yield from _CONFTEST.make_store(request.param, tmp_path)  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The shared backends only (memory runs the 10,000-record proof in test_dead_letter.py)."""
    yield from _CONFTEST.make_store(request.param, tmp_path)  # type: ignore[attr-defined]


class Replayer:
    """Records replay calls (thread-safe) and returns task ids."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, record: DeadLetterRecord) -> str:
        with self._lock:
            self.calls.append(record.id)
            return f"task-{len(self.calls)}"


def queue(store: Store, replay: Replayer | None = None) -> tuple[DeadLetterQueue, FakeClock]:
    """A queue on ``store`` with a fake clock."""
    clock = FakeClock(start=START)
    return DeadLetterQueue(store, clock=clock, replay=replay), clock


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_records_round_trip_exactly(store: Store) -> None:
    """What add() returns is what get() reads back: payload, flags, history, enums."""
    dlq, _ = queue(store)
    record = dlq.add(
        task_name="charge",
        exc=raised(ConnectionRefusedError(111, "Connection refused by é-host")),
        args=[{"card_number": "4111111111111111"}, object()],
        kwargs={"amount": 9.99, "nested": {"token": "tok-123456"}},
        priority=7,
        queue="payments",
        correlation_id="req-1",
    )
    assert record.flags == ("non_json", "redacted")
    assert dlq.get(record.id) == record


def test_filters_and_pagination(store: Store) -> None:
    """Filters and keyset pages agree with the reference on every backend."""
    dlq, clock = queue(store, Replayer())
    made = []
    for number in range(23):
        exc = ValueError("card declined") if number % 2 else raised(TimeoutError("timed out"))
        made.append(dlq.add(task_name=f"task-{number % 3}", exc=exc, priority=number % 4))
        clock.advance(10)
    dlq.retry(made[0].id, actor="ann")
    seen: list[str] = []
    after = None
    while True:
        page = dlq.list(status="PENDING", limit=5, after=after)
        seen.extend(r.id for r in page.records)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert seen == [r.id for r in reversed(made[1:])]
    declined = dlq.list(text="DECLINED", task_name="task-1", limit=100).records
    assert [r.id for r in declined] == [
        r.id for r in reversed(made) if r.task_name == "task-1" and r.message == "card declined"
    ]
    timeouts = dlq.list(failure_type=FailureType.EXTERNAL_TIMEOUT, since=START + 100, limit=100)
    assert {r.id for r in timeouts.records} == {
        r.id for r in made[10:] if r.failure_type is FailureType.EXTERNAL_TIMEOUT
    }
    replay = [r.id for r in dlq.replay_order(limit=100)]
    expected = sorted(made[1:], key=lambda r: (-r.priority, r.first_failed_at, r.id))
    assert replay == [r.id for r in expected]


def test_racing_retries_enqueue_once(store: Store) -> None:
    """Six threads retry each record at once: one replay per record, the rest conflict."""
    replay = Replayer()
    dlq, _ = queue(store, replay)
    records = [dlq.add(task_name="t", exc=RuntimeError("x")) for _ in range(15)]
    conflicts = 0
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def race() -> None:
        nonlocal conflicts
        for record in records:
            barrier.wait()
            try:
                dlq.retry(record.id, actor="ops")
            except DeadLetterConflict:
                with lock:
                    conflicts += 1

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(replay.calls) == sorted(r.id for r in records)
    assert conflicts == 5 * len(records)


def test_bulk_retry_process_due_summary_and_purge(store: Store) -> None:
    """The bulk, automatic, summary and retention paths behave alike on every backend."""
    replay = Replayer()
    dlq, clock = queue(store, replay)
    refused = ConnectionRefusedError(111, "Connection refused")
    transient = [dlq.add(task_name="sync", exc=refused, retry_count=2) for _ in range(3)]
    permanent = [dlq.add(task_name="charge", exc=ValueError("x")) for _ in range(4)]
    assert dlq.process_due(START + 59) == []
    assert sorted(dlq.process_due(START + 60)) == sorted(r.id for r in transient)
    result = dlq.bulk_retry(where=DeadLetterFilter(task_name="charge"), actor="ops")
    assert sorted(result.retried) == sorted(r.id for r in permanent)
    assert len(replay.calls) == 7
    for record in permanent:
        dlq.resolve(record.id, actor="celery")
    summary = dlq.summary(hours=2, now=START + 60)
    assert summary.total == 7
    assert summary.by_status[DeadLetterStatus.RETRYING] == 3
    assert summary.by_status[DeadLetterStatus.RESOLVED] == 4
    assert summary.top_tasks == (("charge", 4), ("sync", 3))
    assert summary.average_retries[FailureType.TRANSIENT_NETWORK] == 2.0
    assert summary.failures_per_hour[-1][1] == 7
    clock.advance(31 * 86400)
    assert dlq.purge(older_than=30 * 86400) == 4
    assert store.dead_letters.count(DeadLetterFilter()) == 3


def test_ten_thousand_records_inserted_filtered_paginated_and_bulk_retried(
    durable_store: Store,
) -> None:
    """10,000 records: inserted, counted by filter, paged whole, and bulk-retried once each."""
    store = durable_store
    replay = Replayer()
    dlq, clock = queue(store, replay)
    for number in range(10_000):
        dlq.add(task_name=f"task-{number % 5}", exc=ValueError("x"), priority=number % 10)
        clock.advance(0.001)
    assert store.dead_letters.count(DeadLetterFilter(task_name="task-3")) == 2000
    seen = 0
    after = None
    while True:
        page = dlq.list(order=DeadLetterOrder.REPLAY, limit=1000, after=after)
        seen += len(page.records)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert seen == 10_000
    result = dlq.bulk_retry(where=DeadLetterFilter(), actor="ops")
    assert len(result.retried) == 10_000
    assert len(set(replay.calls)) == 10_000
    retrying = DeadLetterFilter(statuses=frozenset({DeadLetterStatus.RETRYING}))
    assert store.dead_letters.count(retrying) == 10_000


class Interleaved:
    """A dead-letter role that runs ``hook`` once, just before the next compare-and-set.

    ``hook`` is another operator acting on the record after this one has read and
    checked it: the deterministic form of a race.
    """

    def __init__(self, role: DeadLetterStore) -> None:
        self.role = role
        self.hook: Callable[[], object] | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.role, name)

    def compare_and_set(self, expected_version: int, record: DeadLetterRecord) -> bool:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return self.role.compare_and_set(expected_version, record)


def test_stale_retrying_records_are_taken_over_and_fresh_ones_refused(store: Store) -> None:
    """A replay that never reported: refused within the lease, taken over after it."""
    replay = Replayer()
    dlq, clock = queue(store, replay)
    lost = dlq.retry(dlq.add(task_name="sync", exc=ValueError("x"), priority=3).id, actor="ann")
    clock.advance(REPLAY_LEASE - 1)
    fresh = dlq.retry(dlq.add(task_name="sync", exc=ValueError("y")).id, actor="ann")
    with pytest.raises(DeadLetterConflict) as info:
        dlq.retry(lost.id, actor="bob")
    assert info.value.status == "RETRYING"
    assert dlq.process_due() == []
    clock.advance(1)
    assert dlq.process_due() == [lost.id]
    taken = store.dead_letters.get(lost.id)
    assert taken is not None
    assert taken.status is DeadLetterStatus.RETRYING
    assert [h.action for h in taken.history] == [
        "add",
        "retry",
        "enqueued",
        "take_over",
        "enqueued",
    ]
    assert replay.calls == [lost.id, fresh.id, lost.id]
    clock.advance(REPLAY_LEASE)
    assert dlq.retry(fresh.id, actor="bob").history[-2].action == "take_over"


@pytest.mark.parametrize("winner", ["retry", "process_due"])
@pytest.mark.parametrize("loser", ["retry", "process_due"])
def test_two_takeovers_of_a_stale_record_one_wins(store: Store, winner: str, loser: str) -> None:
    """Both check the stale record; the winner writes first; the loser's CAS fails, it re-reads."""
    replays = {"ann": Replayer(), "bob": Replayer()}
    role = Interleaved(store.dead_letters)
    clock = FakeClock(start=START)
    bundle: Any = SimpleNamespace(dead_letters=role)  # a store whose role is interleaved
    ann = DeadLetterQueue(bundle, clock=clock, replay=replays["ann"])
    bob = DeadLetterQueue(store, clock=clock, replay=replays["bob"])
    record = bob.retry(bob.add(task_name="sync", exc=ValueError("x")).id, actor="beat")
    clock.advance(REPLAY_LEASE)
    act: dict[str, Callable[[DeadLetterQueue, str], object]] = {
        "retry": lambda dlq, actor: dlq.retry(record.id, actor=actor),
        "process_due": lambda dlq, actor: dlq.process_due(),
    }
    role.hook = lambda: act[winner](bob, "bob")
    if loser == "retry":
        with pytest.raises(DeadLetterConflict) as info:
            act[loser](ann, "ann")
        assert info.value.status == "RETRYING"
    else:
        assert act[loser](ann, "ann") == []  # bob got there first
    assert replays["ann"].calls == []
    assert replays["bob"].calls == [record.id, record.id]
    final = store.dead_letters.get(record.id)
    assert final is not None
    actions = [h.action for h in final.history]
    assert actions.count("take_over") == 1
    assert actions[-2:] == ["take_over", "enqueued"]


def test_racing_takeovers_replay_each_stale_record_once(store: Store) -> None:
    """Six threads (operators and beat runs) take over the same stale records: once each."""
    replay = Replayer()
    dlq, clock = queue(store, replay)
    records = [
        dlq.retry(dlq.add(task_name="t", exc=RuntimeError("x")).id, actor="ann") for _ in range(10)
    ]
    clock.advance(REPLAY_LEASE)
    barrier = threading.Barrier(6)

    def race(number: int) -> None:
        barrier.wait()
        if number % 2:
            dlq.process_due()
            return
        for record in records:
            with contextlib.suppress(DeadLetterConflict):
                dlq.retry(record.id, actor=f"op-{number}")

    threads = [threading.Thread(target=race, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(replay.calls) == sorted([r.id for r in records] * 2)
    for record in records:
        current = store.dead_letters.get(record.id)
        assert current is not None
        assert [h.action for h in current.history].count("take_over") == 1

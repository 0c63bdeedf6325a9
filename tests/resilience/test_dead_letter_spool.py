"""Spooling: dead-letter writes are never lost while the primary store is down."""

from __future__ import annotations

import importlib.util
import threading
from typing import TYPE_CHECKING

import pytest

from resilience.clock import FakeClock
from resilience.dead_letter import DeadLetterQueue, SpoolingDeadLetterStore
from resilience.errors import StorageUnavailable
from resilience.storage import DeadLetterFilter, DeadLetterOrder, DeadLetterStatus
from resilience.storage.memory import MemoryDeadLetterStore

if TYPE_CHECKING:
    from pathlib import Path

    from resilience.storage import DeadLetterPage, DeadLetterRecord, DeadLetterStore

EVERYTHING = DeadLetterFilter()


class FlakyStore:
    """A memory dead-letter store that raises StorageUnavailable while ``down``."""

    def __init__(self) -> None:
        self.inner = MemoryDeadLetterStore()
        self.down = False
        self.add_error: Exception | None = None
        self.adds = 0
        self.fail_after_adds: int | None = None

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable(
                "connection refused", store="postgresql://app:***@db/x", role="dead_letters"
            )

    def add(self, record: DeadLetterRecord) -> None:
        self._check()
        if self.add_error is not None:
            raise self.add_error
        if self.fail_after_adds is not None and self.adds >= self.fail_after_adds:
            raise StorageUnavailable("gone again", store="postgresql://db/x")
        self.adds += 1
        self.inner.add(record)

    def get(self, record_id: str) -> DeadLetterRecord | None:
        self._check()
        return self.inner.get(record_id)

    def query(
        self,
        where: DeadLetterFilter,
        *,
        order: DeadLetterOrder,
        limit: int,
        after: str | None = None,
    ) -> DeadLetterPage:
        self._check()
        return self.inner.query(where, order=order, limit=limit, after=after)

    def count(self, where: DeadLetterFilter) -> int:
        self._check()
        return self.inner.count(where)

    def compare_and_set(self, expected_version: int, record: DeadLetterRecord) -> bool:
        self._check()
        return self.inner.compare_and_set(expected_version, record)

    def purge(self, where: DeadLetterFilter) -> int:
        self._check()
        return self.inner.purge(where)


def make(
    spool: DeadLetterStore | None = None,
) -> tuple[DeadLetterQueue, FlakyStore, DeadLetterStore]:
    """A queue over a flaky primary and a spool (memory unless given)."""
    primary = FlakyStore()
    local = MemoryDeadLetterStore() if spool is None else spool
    store = SpoolingDeadLetterStore(primary, local)
    return DeadLetterQueue(store, clock=FakeClock(start=1_700_000_000.0)), primary, local


def ids(store: DeadLetterStore) -> list[str]:
    """Every id in ``store``, sorted."""
    page = store.query(EVERYTHING, order=DeadLetterOrder.NEWEST, limit=100_000)
    return sorted(r.id for r in page.records)


def test_adds_go_to_the_primary_while_it_answers() -> None:
    """With the primary up, nothing is spooled."""
    dlq, primary, spool = make()
    record = dlq.add(task_name="t", exc=ValueError("x"))
    assert ids(primary.inner) == [record.id]
    assert ids(spool) == []


def test_adds_spool_while_the_primary_is_down_and_flush_when_it_returns() -> None:
    """Adds during an outage return normally; the next add after it moves them, once each."""
    dlq, primary, spool = make()
    primary.down = True
    during = [dlq.add(task_name="t", exc=ValueError(f"x{n}")).id for n in range(5)]
    assert ids(spool) == sorted(during)
    assert isinstance(dlq.store, SpoolingDeadLetterStore)
    assert dlq.store.pending() == 5
    with pytest.raises(StorageUnavailable):
        dlq.get(during[0])
    primary.down = False
    after = dlq.add(task_name="t", exc=ValueError("back")).id
    assert ids(primary.inner) == sorted([*during, after])
    assert ids(spool) == []
    assert primary.adds == 6
    stored = dlq.get(during[0])
    assert stored is not None
    assert stored.message == "x0"


def test_reads_flush_the_spool_first() -> None:
    """Once the primary answers, a read (not only an add) sees spooled records."""
    dlq, primary, _ = make()
    primary.down = True
    record = dlq.add(task_name="t", exc=ValueError("x"))
    primary.down = False
    assert [r.id for r in dlq.list().records] == [record.id]


def test_any_primary_failure_spools_but_a_duplicate_id_does_not() -> None:
    """A driver error that is not StorageUnavailable spools too; a duplicate id propagates."""
    _, primary, spool = make()
    store = SpoolingDeadLetterStore(primary, spool)
    dlq = DeadLetterQueue(store)
    primary.add_error = RuntimeError("server closed the connection unexpectedly")
    record = dlq.add(task_name="t", exc=ValueError("x"), now=1.0)
    assert ids(spool) == [record.id]
    primary.add_error = None
    assert store.flush() == 1
    with pytest.raises(ValueError, match="already exists"):
        store.add(record)


def test_interrupted_flush_does_not_duplicate() -> None:
    """A record copied to the primary but still spooled (crash mid-flush) is not added twice."""
    dlq, primary, spool = make()
    primary.down = True
    record = dlq.add(task_name="t", exc=ValueError("x"))
    primary.down = False
    copy = spool.get(record.id)
    assert copy is not None
    primary.inner.add(copy)  # the copy a flush made before it died
    assert isinstance(dlq.store, SpoolingDeadLetterStore)
    assert dlq.store.flush() == 1
    assert ids(primary.inner) == [record.id]
    assert ids(spool) == []


def test_records_left_by_an_earlier_process_are_flushed() -> None:
    """A spool that already holds records when the store is built is flushed on first use."""
    primary = FlakyStore()
    spool = MemoryDeadLetterStore()
    earlier = DeadLetterQueue(spool).add(task_name="t", exc=ValueError("x"), now=1.0)
    dlq = DeadLetterQueue(SpoolingDeadLetterStore(primary, spool))
    assert dlq.get(earlier.id) == earlier
    assert ids(spool) == []


def test_flush_stops_when_the_primary_fails_midway() -> None:
    """A failure during a flush keeps what is not yet moved in the spool; nothing is lost."""
    dlq, primary, spool = make()
    primary.down = True
    records = [dlq.add(task_name="t", exc=ValueError("x")).id for _ in range(450)]
    primary.down = False
    primary.fail_after_adds = 250
    assert isinstance(dlq.store, SpoolingDeadLetterStore)
    with pytest.raises(StorageUnavailable):
        dlq.store.flush()
    assert len(ids(primary.inner)) == 250
    assert sorted(ids(primary.inner) + ids(spool)) == sorted(records)
    primary.fail_after_adds = None
    assert dlq.store.flush() == 200
    assert ids(primary.inner) == sorted(records)


def test_status_changes_go_to_the_primary() -> None:
    """retry/resolve on a spooling store act on the primary's records."""
    primary = FlakyStore()
    dlq = DeadLetterQueue(
        SpoolingDeadLetterStore(primary, MemoryDeadLetterStore()), replay=lambda r: "task-2"
    )
    record = dlq.add(task_name="t", exc=ValueError("x"), now=1.0)
    dlq.retry(record.id, actor="ann", now=2.0)
    dlq.resolve(record.id, actor="ann", now=3.0)
    stored = primary.inner.get(record.id)
    assert stored is not None
    assert stored.status is DeadLetterStatus.RESOLVED
    assert dlq.store.purge(DeadLetterFilter(ids=frozenset({record.id}))) == 1


def test_concurrent_adds_during_a_flapping_outage_lose_nothing() -> None:
    """Threads adding while the primary goes down and up: every record lands exactly once."""
    dlq, primary, spool = make()
    added: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for n in range(150):
            record = dlq.add(task_name="t", exc=ValueError(f"x{n}"))
            with lock:
                added.append(record.id)

    def flapper() -> None:
        for n in range(60):
            primary.down = n % 2 == 0
            threading.Event().wait(0.001)
        primary.down = False

    threads = [threading.Thread(target=worker) for _ in range(4)]
    threads.append(threading.Thread(target=flapper))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(dlq.store, SpoolingDeadLetterStore)
    dlq.store.flush()
    assert ids(primary.inner) == sorted(added)
    assert len(added) == 600
    assert ids(spool) == []


@pytest.mark.skipif(
    importlib.util.find_spec("resilience.storage.sqlite") is None,
    reason="the SQLite backend is not in this tree yet",
)
def test_sqlite_spool_survives_a_restart(tmp_path: Path) -> None:
    """Records spooled to a SQLite file by one process are flushed by the next one."""
    from resilience.storage.sqlite import SQLiteStore  # type: ignore[import-not-found,unused-ignore]

    primary = FlakyStore()
    primary.down = True
    first = SQLiteStore(tmp_path / "spool.sqlite3")
    record = DeadLetterQueue(SpoolingDeadLetterStore(primary, first.dead_letters)).add(
        task_name="t", exc=ValueError("x"), kwargs={"password": "pw-12345"}, now=1.0
    )
    first.close()
    primary.down = False
    second = SQLiteStore(tmp_path / "spool.sqlite3")
    try:
        dlq = DeadLetterQueue(SpoolingDeadLetterStore(primary, second.dead_letters))
        assert dlq.get(record.id) == record
        assert second.dead_letters.count(EVERYTHING) == 0
    finally:
        second.close()

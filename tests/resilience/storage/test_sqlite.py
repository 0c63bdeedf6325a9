"""SQLite-specific behaviour: WAL, busy timeout, schema versioning, crashes and races.

The shared rules are pinned by test_conformance.py against every backend; this
file pins what only a file database has: what is on disk, what survives a reopen
or a SIGKILL, and what many threads and processes see on one file.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import traceback
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from resilience.errors import ConfigurationError, StorageUnavailable
from resilience.storage import (
    BreakerRecord,
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
    HistoryEntry,
    IdempotencyState,
    Store,
    open_store,
)
from resilience.storage._sql import SCHEMA_VERSION
from resilience.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Iterator

T0 = 1_700_000_000.0
KEYS = [f"race-{n:04d}" for n in range(1000)]


def _load_proofs() -> Any:
    # The test folders are not packages: load the shared proofs by path.
    path = Path(__file__).with_name("proofs.py")
    spec = importlib.util.spec_from_file_location("_storage_proofs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


proofs = _load_proofs()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A fresh database path."""
    return tmp_path / "state.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    """An open store on ``db``, closed afterwards."""
    opened = SQLiteStore(db)
    yield opened
    opened.close()


def raw(db: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to inspect the file."""
    return sqlite3.connect(db, isolation_level=None)


def letter(n: int, **changes: object) -> DeadLetterRecord:
    """A dead letter numbered ``n``."""
    record = DeadLetterRecord(
        id=f"dl-{n:06d}",
        task_name="billing.charge",
        args=[n],
        kwargs={"order": n},
        message=f"deadlock on order {n}",
        first_failed_at=T0 + n,
        last_failed_at=T0 + n,
        priority=n % 3,
    )
    return DeadLetterRecord.from_dict({**record.to_dict(), **changes})


def test_satisfies_the_store_protocol_and_opens_from_a_url(tmp_path: Path) -> None:
    """open_store('sqlite:///...') gives a SQLiteStore that is a Store."""
    opened = open_store(f"sqlite:///{tmp_path}/via-url.db")
    try:
        assert isinstance(opened, SQLiteStore)
        assert isinstance(opened, Store)
        assert opened.url == f"sqlite:///{tmp_path}/via-url.db"
        assert repr(opened) == f"SQLiteStore('sqlite:///{tmp_path}/via-url.db')"
    finally:
        opened.close()


def test_wal_mode_is_on(store: SQLiteStore, db: Path) -> None:
    """The database file is in WAL journal mode (readers never block the writer)."""
    assert store.journal_mode == "wal"
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_is_created_on_first_use_and_versioned(store: SQLiteStore, db: Path) -> None:
    """A new file gets the four role tables and a version table at SCHEMA_VERSION."""
    conn = raw(db)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "resilience_schema",
        "resilience_breakers",
        "resilience_idempotency",
        "resilience_dead_letters",
        "resilience_outcomes",
    } <= tables
    assert conn.execute("SELECT MAX(version) FROM resilience_schema").fetchone()[0] == 1
    assert SCHEMA_VERSION == 1
    conn.close()


def test_reopening_at_the_same_version_changes_nothing(store: SQLiteStore, db: Path) -> None:
    """A second open runs no DDL: SQLite's schema cookie and the version rows stay put."""
    conn = raw(db)
    cookie = conn.execute("PRAGMA schema_version").fetchone()[0]
    SQLiteStore(db).close()
    SQLiteStore(db).close()
    assert conn.execute("PRAGMA schema_version").fetchone()[0] == cookie
    assert conn.execute("SELECT COUNT(*) FROM resilience_schema").fetchone()[0] == 1
    conn.close()


def test_a_newer_schema_version_is_refused_by_name(store: SQLiteStore, db: Path) -> None:
    """A file written by a newer release raises ConfigurationError naming its version."""
    with raw(db) as conn:
        conn.execute("INSERT INTO resilience_schema VALUES (7, 'from the future')")
    with pytest.raises(ConfigurationError, match="schema version 7") as caught:
        SQLiteStore(db)
    assert (caught.value.key, caught.value.value) == ("schema_version", 7)


def test_reopen_persists_every_role(db: Path) -> None:
    """Breakers, idempotency records, dead letters and counters survive close and reopen."""
    first = SQLiteStore(db)
    assert first.breakers.compare_and_set("api", None, BreakerRecord(version=1))
    claim = first.idempotency.acquire("k", fingerprint="fp", lease=30, ttl=600, now=T0)
    assert first.idempotency.complete("k", token=claim.record.token, result="7", ttl=600, now=T0)
    first.dead_letters.add(letter(1))
    first.outcomes.add("task", "TRANSIENT_NETWORK", success=True, now=T0)
    first.close()

    second = SQLiteStore(db)
    try:
        assert second.breakers.load("api") == BreakerRecord(version=1)
        record = second.idempotency.get("k", now=T0 + 1)
        assert record is not None
        assert (record.state, record.result) == (IdempotencyState.COMPLETED, "7")
        assert second.dead_letters.get("dl-000001") == letter(1)
        assert second.outcomes.counts("task", since=T0)["TRANSIENT_NETWORK"].successes == 1
    finally:
        second.close()


def test_busy_timeout_bounds_the_wait_for_another_writer(db: Path) -> None:
    """While another connection holds the write lock, a write gives up after busy_timeout."""
    store = SQLiteStore(db, busy_timeout=timedelta(milliseconds=50))
    blocker = raw(db)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageUnavailable, match="locked") as caught:
            store.idempotency.acquire("k", fingerprint="fp", lease=30, ttl=60, now=T0)
        assert (caught.value.role, caught.value.store) == ("idempotency", store.url)
        # Readers are not blocked by a writer in WAL mode.
        assert store.idempotency.get("k", now=T0) is None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.idempotency.acquire("k", fingerprint="fp", lease=30, ttl=60, now=T0).acquired
    store.close()


def test_an_unopenable_path_names_the_file(tmp_path: Path) -> None:
    """A file in a missing directory raises StorageUnavailable naming the path."""
    path = tmp_path / "missing" / "state.db"
    with pytest.raises(StorageUnavailable, match="unable to open") as caught:
        SQLiteStore(path)
    assert str(path) in str(caught.value)
    assert caught.value.store == f"sqlite:///{path}"


def test_a_file_that_is_not_a_database_is_a_configuration_error(tmp_path: Path) -> None:
    """Pointing the store at some other file is refused, naming the path."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"definitely not sqlite " * 100)
    with pytest.raises(ConfigurationError, match=r"notes\.txt") as caught:
        SQLiteStore(path)
    assert caught.value.key == "path"


@pytest.mark.parametrize("path", ["", ":memory:"])
def test_in_memory_paths_are_refused(path: str) -> None:
    """':memory:' would give each pooled connection its own database: memory:// is the way."""
    with pytest.raises(ConfigurationError, match="memory://"):
        SQLiteStore(path)


def test_negative_busy_timeout_is_refused(db: Path) -> None:
    """busy_timeout is validated and named."""
    with pytest.raises(ConfigurationError) as caught:
        SQLiteStore(db, busy_timeout=-1)
    assert caught.value.key == "busy_timeout"


def test_a_closed_store_raises_storage_unavailable(store: SQLiteStore) -> None:
    """Using a store after close() is a clear error, not a crash inside sqlite3."""
    store.close()
    with pytest.raises(StorageUnavailable, match="closed") as caught:
        store.dead_letters.count(DeadLetterFilter())
    assert caught.value.role == "dead_letters"


def test_dead_letter_text_search_is_case_insensitive_beyond_ascii(store: SQLiteStore) -> None:
    """Text search folds case like Python (SQLite's lower() alone only folds ASCII)."""
    store.dead_letters.add(letter(1, message="Straße GESPERRT: Überweisung fehlgeschlagen"))
    for text in ("STRASSE", "überweisung", "gesperrt:"):
        assert store.dead_letters.count(DeadLetterFilter(text=text)) == 1, text
    assert store.dead_letters.count(DeadLetterFilter(text="%")) == 0


def test_32_threads_and_8_processes_run_each_of_1000_keys_exactly_once(db: Path) -> None:
    """Racing acquire/complete on one file from many threads and processes: 0 duplicates."""
    store = SQLiteStore(db, busy_timeout=60)
    try:
        proofs.race_runs_each_key_once(store, {"backend": "sqlite", "path": str(db)})
    finally:
        store.close()


def test_a_sigkilled_lease_holder_is_taken_over_exactly_once(db: Path) -> None:
    """After SIGKILL of the owner, the key stays blocked until its lease ends, then runs once."""
    store = SQLiteStore(db)
    try:
        proofs.sigkilled_holder_is_taken_over_once(store, {"backend": "sqlite", "path": str(db)})
    finally:
        store.close()


def test_sigkill_during_dead_letter_inserts_loses_no_returned_add(db: Path) -> None:
    """Every record whose add() returned before a SIGKILL is readable; the file is intact."""
    store = proofs.sigkill_during_inserts_loses_no_returned_add(
        {"backend": "sqlite", "path": str(db)}
    )
    try:
        with raw(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        store.close()


def test_ten_thousand_dead_letters_filter_page_and_bulk_retry(store: SQLiteStore) -> None:
    """10,000 records: filtered, paged without gaps, compare-and-set retried, counted, purged."""
    dlq = store.dead_letters
    for n in range(10_000):
        dlq.add(letter(n, status="ABANDONED" if n % 10 == 0 else "PENDING"))
    pending = DeadLetterFilter(statuses=frozenset({DeadLetterStatus.PENDING}))
    assert dlq.count(pending) == 9_000
    seen: list[str] = []
    after = None
    while True:
        page = dlq.query(pending, order=DeadLetterOrder.REPLAY, limit=500, after=after)
        seen.extend(record.id for record in page.records)
        for record in page.records:
            entry = HistoryEntry(
                at=T0,
                actor="ops",
                action="retry",
                from_status=DeadLetterStatus.PENDING,
                to_status=DeadLetterStatus.RETRYING,
            )
            retried = record.with_action(entry, status=DeadLetterStatus.RETRYING)
            assert dlq.compare_and_set(record.version, retried)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert len(seen) == len(set(seen)) == 9_000
    assert dlq.count(DeadLetterFilter(statuses=frozenset({DeadLetterStatus.RETRYING}))) == 9_000
    assert dlq.purge(DeadLetterFilter(statuses=frozenset({DeadLetterStatus.ABANDONED}))) == 1_000
    assert dlq.count(DeadLetterFilter()) == 9_000


def test_errors_carry_no_traceback_noise_from_the_pool(tmp_path: Path) -> None:
    """An open failure's traceback names the path and the sqlite3 cause, once."""
    path = tmp_path / "missing" / "x.db"
    with pytest.raises(StorageUnavailable) as caught:
        SQLiteStore(path)
    text = "".join(traceback.format_exception(caught.value))
    assert "sqlite3.OperationalError" in text
    assert text.count("StorageUnavailable") == 1
    assert os.fspath(path) in text

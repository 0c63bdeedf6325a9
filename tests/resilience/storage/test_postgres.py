"""PostgreSQL-specific behaviour on a real server: schema, credentials, outages and races.

The shared rules are pinned by test_conformance.py against every backend; this
file pins what only a server database has: schemas and their versions, masked
credentials, connections that break or come back, and many threads and processes
on one server. Each test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from resilience.errors import ConfigurationError, StorageUnavailable
from resilience.storage import (
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
    HistoryEntry,
    Store,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import psycopg

    from resilience.storage.postgres import PostgresStore

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
SECRET = "hunter2-not-for-logs"  # noqa: S105 - a fake password the tests hunt for in errors


@pytest.fixture
def url() -> str:
    """The test server's URL (skipped without one, unless servers are required)."""
    value = os.environ.get("RESILIENCE_TEST_POSTGRES_URL")
    if value:
        return value
    message = "RESILIENCE_TEST_POSTGRES_URL is not set: start the servers with scripts/servers.sh"
    if os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def admin(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection to inspect and disturb the server."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema(admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """A schema name nobody else uses, dropped after the test."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def open_pg(url: str, schema: str, **options: object) -> PostgresStore:
    """A PostgresStore on ``url`` in ``schema``."""
    from resilience.storage.postgres import PostgresStore

    return PostgresStore(url, schema=schema, **options)  # type: ignore[arg-type]


def with_app(url: str, name: str) -> str:
    """``url`` with an application_name, to find the store's connections on the server."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


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


def backends(admin: psycopg.Connection[tuple[object, ...]], app: str) -> int:
    """How many server connections carry application_name ``app``."""
    row = admin.execute(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


class Proxy:
    """A TCP proxy in front of the server that the test can cut and restore."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> None:
        """Listen (on the same port as before, after a restart)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        assert self.listener is not None
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


# --------------------------------------------------------------------------- tests


def test_satisfies_the_store_protocol(url: str, schema: str) -> None:
    """PostgresStore is a Store and says which schema it uses."""
    store = open_pg(url, schema)
    try:
        assert isinstance(store, Store)
        assert store.schema == schema
        assert repr(store) == f"PostgresStore({store.url!r}, schema={schema!r})"
    finally:
        store.close()


def test_schema_is_created_on_first_use_and_versioned(
    url: str, schema: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A missing schema is created with the four role tables and a version table."""
    open_pg(url, schema).close()
    tables = {
        row[0]
        for row in admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
    }
    assert tables == {
        "resilience_schema",
        "resilience_breakers",
        "resilience_idempotency",
        "resilience_dead_letters",
        "resilience_outcomes",
    }
    rows = admin.execute(f'SELECT version FROM "{schema}".resilience_schema').fetchall()  # noqa: S608 - our own schema name
    assert rows == [(1,)]


def test_reopening_at_the_same_version_changes_nothing(
    url: str, schema: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A second open runs no DDL: the tables keep their identity and one version row."""
    open_pg(url, schema).close()
    query = "SELECT to_regclass(%s)::oid"
    table = f'"{schema}".resilience_dead_letters'
    before = admin.execute(query, (table,)).fetchone()
    open_pg(url, schema).close()
    assert admin.execute(query, (table,)).fetchone() == before
    count = admin.execute(f'SELECT COUNT(*) FROM "{schema}".resilience_schema').fetchone()  # noqa: S608 - our own schema name
    assert count == (1,)


def test_concurrent_first_use_creates_the_schema_once(url: str, schema: str) -> None:
    """Eight threads opening a new schema at once all succeed (the creation is serialised)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        stores = list(pool.map(lambda _: open_pg(url, schema), range(8)))
    for store in stores:
        store.dead_letters.count(DeadLetterFilter())
        store.close()


def test_a_newer_schema_version_is_refused_by_name(
    url: str, schema: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A schema written by a newer release raises ConfigurationError naming its version."""
    open_pg(url, schema).close()
    future = f"INSERT INTO \"{schema}\".resilience_schema VALUES (42, 'from the future')"  # noqa: S608 - our own schema name
    admin.execute(future)
    with pytest.raises(ConfigurationError, match="schema version 42") as caught:
        open_pg(url, schema)
    assert (caught.value.key, caught.value.value) == ("schema_version", 42)


def test_an_invalid_schema_name_is_refused_before_connecting(url: str) -> None:
    """Schema names are identifiers, never SQL."""
    with pytest.raises(ConfigurationError) as caught:
        open_pg(url, 'x"; DROP TABLE y; --')
    assert caught.value.key == "schema"


def test_reopen_persists_data(url: str, schema: str) -> None:
    """What one store wrote, another store (another process, later) reads."""
    first = open_pg(url, schema)
    first.dead_letters.add(letter(1))
    first.outcomes.add("task", "TRANSIENT_NETWORK", success=False, now=T0)
    first.close()
    second = open_pg(url, schema)
    try:
        assert second.dead_letters.get("dl-000001") == letter(1)
        assert second.outcomes.counts("task", since=T0)["TRANSIENT_NETWORK"].failures == 1
    finally:
        second.close()


def test_the_password_is_masked_in_url_and_repr(url: str, schema: str) -> None:
    """A password in the URL never shows in the store's url or repr."""
    secret_url = url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
    assert SECRET in secret_url
    store = open_pg(secret_url, schema)
    try:
        assert SECRET not in store.url
        assert SECRET not in repr(store)
        assert store.url.startswith("postgresql://postgres:***@")
    finally:
        store.close()


@pytest.mark.parametrize(
    "conninfo",
    [
        f"postgresql://postgres:{SECRET}@127.0.0.1:1/postgres",
        f"host=127.0.0.1 port=1 user=postgres password={SECRET} dbname=postgres",
    ],
)
def test_an_unreachable_server_raises_storage_unavailable_without_the_password(
    conninfo: str,
) -> None:
    """Connection refused is a StorageUnavailable naming the masked URL, never the password."""
    from resilience.storage.postgres import PostgresStore

    with pytest.raises(StorageUnavailable, match=r"127\.0\.0\.1") as caught:
        PostgresStore(conninfo, connect_timeout=2)
    error = caught.value
    assert isinstance(error, ConnectionError)
    assert "***" in error.store
    assert error.role == "schema"
    assert SECRET not in "".join(traceback.format_exception(error))
    assert SECRET not in repr(error)


def test_connections_the_server_dropped_while_idle_are_replaced(
    url: str, schema: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """After pg_terminate_backend (or a restart) the next call reconnects instead of failing."""
    app = f"idle{uuid.uuid4().hex[:8]}"
    store = open_pg(with_app(url, app), schema)
    try:
        store.dead_letters.add(letter(1))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        while backends(admin, app):
            pass  # the server exits the backend right away; wait for its socket to close
        store.dead_letters.add(letter(2))
        assert store.dead_letters.count(DeadLetterFilter()) == 2
    finally:
        store.close()


def test_a_lost_server_raises_storage_unavailable_then_recovers(url: str, schema: str) -> None:
    """Cut the network: calls raise StorageUnavailable with their role; restore it: they work."""
    import psycopg

    target = psycopg.conninfo.conninfo_to_dict(url)
    proxy = Proxy(int(str(target.get("port") or 5432)))
    proxy.start()
    proxied = url.replace(f":{target.get('port')}/", f":{proxy.port}/")
    store = open_pg(proxied, schema, connect_timeout=2)
    try:
        store.dead_letters.add(letter(1))
        proxy.stop()
        with pytest.raises(StorageUnavailable) as caught:
            store.dead_letters.add(letter(2))
        assert caught.value.role == "dead_letters"
        with pytest.raises(StorageUnavailable) as caught:
            store.idempotency.acquire("k", fingerprint="fp", lease=10, ttl=60, now=T0)
        assert caught.value.role == "idempotency"
        proxy.start()
        store.dead_letters.add(letter(2))
        assert store.dead_letters.count(DeadLetterFilter()) == 2
    finally:
        proxy.stop()
        store.close()


def test_a_connection_broken_mid_statement_raises_storage_unavailable(
    url: str, schema: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A statement whose connection dies under it fails loudly (its outcome is unknown)."""
    app = f"mid{uuid.uuid4().hex[:8]}"
    store = open_pg(with_app(url, app), schema)
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            store.run("dead_letters", lambda s: s.rows("SELECT pg_sleep(30)"))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        while not admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND query LIKE %s",
            (app, "SELECT pg_sleep%"),
        ).fetchall():
            pass  # until the statement is running on the server
        worker.join()
        assert len(errors) == 1
        assert isinstance(errors[0], StorageUnavailable)
        assert errors[0].role == "dead_letters"
        assert store.dead_letters.count(DeadLetterFilter()) == 0
    finally:
        worker.join()
        store.close()


def test_nul_characters_in_messages_are_stored_and_searchable(url: str, schema: str) -> None:
    """PostgreSQL text cannot hold NUL; messages with one still round-trip and match search."""
    store = open_pg(url, schema)
    try:
        record = letter(1, message="bad byte \x00 here")
        store.dead_letters.add(record)
        assert store.dead_letters.get(record.id) == record
        assert store.dead_letters.count(DeadLetterFilter(text="\x00 HERE")) == 1
    finally:
        store.close()


def test_32_threads_and_8_processes_run_each_of_1000_keys_exactly_once(
    url: str, schema: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Racing acquire/complete from many threads and processes: 0 duplicates, bounded pool."""
    app = f"race{uuid.uuid4().hex[:8]}"
    store = open_pg(with_app(url, app), schema, max_connections=8)

    def pool_stayed_bounded() -> None:
        assert backends(admin, app) <= 8

    try:
        proofs.race_runs_each_key_once(
            store,
            {"backend": "postgres", "url": url, "schema": schema},
            before_teardown=pool_stayed_bounded,
        )
    finally:
        store.close()


def test_a_sigkilled_lease_holder_is_taken_over_exactly_once(url: str, schema: str) -> None:
    """After SIGKILL of the owner, the key stays blocked until its lease ends, then runs once."""
    store = open_pg(url, schema)
    try:
        spec = {"backend": "postgres", "url": url, "schema": schema}
        proofs.sigkilled_holder_is_taken_over_once(store, spec)
    finally:
        store.close()


def test_sigkill_during_dead_letter_inserts_loses_no_returned_add(url: str, schema: str) -> None:
    """Every record whose add() returned before a SIGKILL is readable afterwards."""
    spec = {"backend": "postgres", "url": url, "schema": schema}
    proofs.sigkill_during_inserts_loses_no_returned_add(spec).close()


def test_ten_thousand_dead_letters_filter_page_and_bulk_retry(url: str, schema: str) -> None:
    """10,000 records: filtered, paged without gaps, compare-and-set retried, counted, purged."""
    store = open_pg(url, schema)
    dlq = store.dead_letters
    try:
        for n in range(10_000):
            dlq.add(letter(n, status="ABANDONED" if n % 10 == 0 else "PENDING"))
        pending = DeadLetterFilter(statuses=frozenset({DeadLetterStatus.PENDING}))
        assert dlq.count(pending) == 9_000
        ids = frozenset(f"dl-{n:06d}" for n in range(0, 10_000, 2))
        assert dlq.count(DeadLetterFilter(ids=ids)) == 5_000
        seen: list[str] = []
        after = None
        entry = HistoryEntry(at=T0, actor="ops", action="retry")
        while True:
            page = dlq.query(pending, order=DeadLetterOrder.NEWEST, limit=500, after=after)
            seen.extend(record.id for record in page.records)
            for record in page.records:
                retried = record.with_action(entry, status=DeadLetterStatus.RETRYING)
                assert dlq.compare_and_set(record.version, retried)
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert len(seen) == len(set(seen)) == 9_000
        retrying = DeadLetterFilter(statuses=frozenset({DeadLetterStatus.RETRYING}))
        assert dlq.count(retrying) == 9_000
        assert dlq.purge(DeadLetterFilter(statuses=frozenset({DeadLetterStatus.ABANDONED}))) == 1000
        assert dlq.count(DeadLetterFilter()) == 9_000
    finally:
        store.close()


def test_without_psycopg_open_store_says_what_to_install() -> None:
    """A postgresql:// URL without psycopg installed is a ConfigurationError with the extra."""
    script = """
import sys
sys.modules["psycopg"] = None
from resilience.errors import ConfigurationError
from resilience.storage import open_store
try:
    open_store("postgresql://app:s3cret@db.example/app")
except ConfigurationError as exc:
    assert "pip install 'pytest-taskchaos[postgres]'" in str(exc), exc
    assert "s3cret" not in str(exc) and exc.key == "url", exc
else:
    raise AssertionError("open_store worked without psycopg")
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr

"""The idempotency service's behaviour on every backend: memory, SQLite, Redis, PostgreSQL.

Each test runs once per backend of the storage suite's ``store`` fixture (the same
isolation, skipping and ``RESILIENCE_REQUIRE_SERVERS`` rules). Time comes from a
fake clock passed through the guard, so leases and TTLs expire without sleeping,
on real servers too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import signal
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from resilience.clock import FakeClock
from resilience.errors import IdempotencyInProgress, IdempotencyKeyMismatch
from resilience.idempotency import DEFAULT_TTLS, IdempotencyGuard, idempotent
from resilience.storage import IdempotencyState
from resilience.storage.records import MAX_KEY_LENGTH

if TYPE_CHECKING:
    from collections.abc import Iterator

    from resilience.storage import Store

START = 1_700_000_000.0


def _storage_fixtures() -> Any:
    """The storage suite's conftest, loaded by path (test directories are not packages)."""
    path = Path(__file__).parent / "storage" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_idempotency_storage_fixtures", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fixtures = _storage_fixtures()


@pytest.fixture(params=_fixtures.BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, isolated store of each backend in turn."""
    yield from _fixtures.make_store(request.param, tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at a fixed start."""
    return FakeClock(start=START)


def test_duplicate_returns_the_stored_result_without_running(
    store: Store, clock: FakeClock
) -> None:
    """The body runs once; the duplicate gets the JSON round trip of its result."""
    runs: list[int] = []

    @idempotent(store=store, clock=clock)
    def charge(order_id: int, amount: int) -> dict[str, Any]:
        runs.append(order_id)
        return {"order": order_id, "amount": amount, "note": "é ✓"}

    first = charge(1, 10)
    assert charge(1, 10) == first == {"order": 1, "amount": 10, "note": "é ✓"}
    assert runs == [1]


def test_failure_releases_the_key_and_the_retry_runs(store: Store, clock: FakeClock) -> None:
    """A failed run leaves FAILED, never a cached answer: the retry runs the body."""
    attempts: list[str] = []

    @idempotent(store=store, clock=clock, key="send:{to}")
    def send(to: str) -> str:
        attempts.append(to)
        if len(attempts) == 1:
            raise ConnectionResetError("smtp dropped")
        return "sent"

    with pytest.raises(ConnectionResetError):
        send("a")
    record = store.idempotency.get("send:a", now=clock.time())
    assert record is not None
    assert record.state is IdempotencyState.FAILED
    assert send("a") == "sent"
    assert send("a") == "sent"
    assert attempts == ["a", "a"]


def test_lease_takeover_fences_the_late_finisher(store: Store, clock: FakeClock) -> None:
    """After the lease passes another run takes the key; the late run cannot overwrite it."""
    guard = IdempotencyGuard(store, clock=clock, lease=30)
    late = guard.claim("job", fingerprint="fp")
    late.__enter__()
    clock.advance(10)
    with pytest.raises(IdempotencyInProgress) as info, guard.claim("job", fingerprint="fp"):
        pass
    assert info.value.retry_after == pytest.approx(20.0)
    clock.advance(21)
    with guard.claim("job", fingerprint="fp") as new:
        assert new.owned
        assert late.complete("stale") is False
        assert late.release() is False
        assert new.complete("fresh") is True
    with guard.claim("job", fingerprint="fp") as duplicate:
        assert duplicate.duplicate
        assert duplicate.result == "fresh"


def test_renew_keeps_a_long_run_owning_its_key(store: Store, clock: FakeClock) -> None:
    """A renewed lease keeps duplicates out past the original lease."""
    guard = IdempotencyGuard(store, clock=clock, lease=30)
    with guard.claim("long") as owner:
        clock.advance(25)
        assert owner.renew() is True
        clock.advance(25)
        with pytest.raises(IdempotencyInProgress), guard.claim("long"):
            pass


def test_same_key_other_payload_is_a_mismatch(store: Store, clock: FakeClock) -> None:
    """A template key reused with other arguments raises IdempotencyKeyMismatch."""

    @idempotent(store=store, clock=clock, key="charge:{order_id}")
    def charge(order_id: int, amount: int) -> int:
        return amount

    assert charge(7, 10) == 10
    with pytest.raises(IdempotencyKeyMismatch):
        charge(7, 11)


def test_ttl_expiry_runs_the_body_again(store: Store, clock: FakeClock) -> None:
    """Once the TTL passes, the key is free and the body runs again."""
    runs: list[int] = []

    @idempotent(store=store, clock=clock, category="default")
    def job() -> int:
        runs.append(1)
        return len(runs)

    assert job() == 1
    clock.advance(DEFAULT_TTLS["default"] - 1)
    assert job() == 1
    clock.advance(2)
    assert job() == 2


def test_long_keys_are_hashed_and_stay_distinct(store: Store, clock: FakeClock) -> None:
    """Two 500-character keys sharing a long prefix are stored as two distinct keys."""
    guard = IdempotencyGuard(store, clock=clock)
    prefix = "tenant:" + "x" * 490
    for suffix in ("1", "2"):
        with guard.claim(prefix + suffix) as claim:
            assert claim.owned
            assert len(claim.key) <= MAX_KEY_LENGTH
            claim.complete(suffix)
    for suffix in ("1", "2"):
        with guard.claim(prefix + suffix) as claim:
            assert claim.result == suffix


def test_non_json_and_odd_text_results_are_stored(store: Store, clock: FakeClock) -> None:
    """Decimals, lone surrogates and NUL characters are stored without failing the call."""
    guard = IdempotencyGuard(store, clock=clock)
    result = {"total": Decimal("1.10"), "text": "nul\x00 and \ud800", "inf": float("inf")}
    with guard.claim("odd") as claim:
        assert claim.complete(result) is True
    with guard.claim("odd") as duplicate:
        stored = duplicate.result
    assert stored["total"]["__type__"] == "decimal.Decimal"
    assert stored["text"] == "nul\x00 and \ud800"
    assert stored["inf"]["__repr__"] == "inf"


def test_concurrent_duplicates_run_the_body_once(store: Store, clock: FakeClock) -> None:
    """8 threads released together on one key: exactly one runs the body."""
    parties = 8
    runs: list[int] = []
    gate = threading.Barrier(parties, timeout=30)
    errors: list[BaseException] = []

    @idempotent(store=store, clock=clock, key="race")
    def body() -> str:
        runs.append(1)
        return "done"

    def worker() -> None:
        gate.wait()
        try:
            body()
        except IdempotencyInProgress:
            pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert runs == [1]
    assert body() == "done"


# A worker holding a key, killed with SIGKILL: it blocks on stdin until then, so the
# test never sleeps. Store and clock are rebuilt from the JSON spec in argv.
_WORKER = """
import json, sys
from resilience.clock import FakeClock
from resilience.idempotency import IdempotencyGuard

spec = json.loads(sys.argv[1])
if spec["backend"] == "sqlite":
    from resilience.storage.sqlite import SQLiteStore
    store = SQLiteStore(spec["path"])
elif spec["backend"] == "redis":
    import redis
    from resilience.storage.redis import RedisStore
    store = RedisStore(redis.Redis.from_url(spec["url"]), prefix=spec["prefix"])
else:
    from resilience.storage.postgres import PostgresStore
    store = PostgresStore(spec["url"], schema=spec["schema"])
guard = IdempotencyGuard(store, clock=FakeClock(start=spec["now"]), lease=spec["lease"])
claim = guard.claim(spec["key"], fingerprint="fp")
claim.__enter__()
print("claimed", claim.record.token, flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def _server_store(backend: str, tmp_path: Path) -> Iterator[tuple[Store, dict[str, Any]]]:
    """A store of ``backend`` and the spec a child process rebuilds it from."""
    isolation = f"t{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        from resilience.storage.sqlite import SQLiteStore

        path = str(tmp_path / "idem.sqlite3")
        sqlite_store = SQLiteStore(path)
        try:
            yield sqlite_store, {"backend": backend, "path": path}
        finally:
            sqlite_store.close()
    elif backend == "redis":
        import redis

        from resilience.storage.redis import RedisStore

        url = _fixtures.server_url("redis")
        client = redis.Redis.from_url(url)
        prefix = f"resilience-test:{isolation}:"
        redis_store = RedisStore(client, prefix=prefix)
        try:
            yield redis_store, {"backend": backend, "url": url, "prefix": prefix}
        finally:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            redis_store.close()
    else:
        import psycopg

        from resilience.storage.postgres import PostgresStore

        url = _fixtures.server_url("postgres")
        pg_store = PostgresStore(url, schema=isolation)
        try:
            yield pg_store, {"backend": backend, "url": url, "schema": isolation}
        finally:
            pg_store.close()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{isolation}" CASCADE')


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_worker_killed_holding_a_key_is_taken_over_after_its_lease(
    backend: str, tmp_path: Path
) -> None:
    """A SIGKILLed owner blocks its key until the lease passes; then one run completes it."""
    with _server_store(backend, tmp_path) as (store, spec):
        key = f"killed-{uuid.uuid4().hex}"
        spec |= {"key": key, "now": START, "lease": 60.0}
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert line.startswith("claimed"), line
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            if worker.stdin is not None:
                worker.stdin.close()
            if worker.stdout is not None:
                worker.stdout.close()
        dead_token = int(line.split()[1])
        clock = FakeClock(start=START + 30)
        guard = IdempotencyGuard(store, clock=clock, lease=60)
        with pytest.raises(IdempotencyInProgress) as info, guard.claim(key, fingerprint="fp"):
            pass
        assert info.value.retry_after == pytest.approx(30.0)
        clock.advance(31)
        runs = []
        with guard.claim(key, fingerprint="fp") as claim:
            assert claim.owned
            assert claim.record is not None
            assert claim.record.token > dead_token
            runs.append(1)
            claim.complete("recovered")
        with guard.claim(key, fingerprint="fp") as duplicate:
            assert duplicate.result == "recovered"
        assert runs == [1]


# One claimant of a cross-process race: it waits for "go" on stdin (so all start
# together without sleeping), claims the key and says what happened to it.
_CLAIMANT = (
    _WORKER.split("guard = ", maxsplit=1)[0]
    + """
guard = IdempotencyGuard(store, clock=FakeClock(start=spec["now"]), lease=spec["lease"])
print("ready", flush=True)
sys.stdin.readline()
from resilience.errors import IdempotencyInProgress
try:
    with guard.claim(spec["key"], fingerprint="fp") as claim:
        if claim.owned:
            claim.complete("done")
            print("ran", flush=True)
        else:
            print("duplicate", flush=True)
except IdempotencyInProgress:
    print("busy", flush=True)
"""
)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_processes_racing_for_one_key_run_the_body_once(backend: str, tmp_path: Path) -> None:
    """Six worker processes claim one key at once: exactly one runs (lessons 25 and 33)."""
    with _server_store(backend, tmp_path) as (_store, spec):
        spec |= {"key": f"race-{uuid.uuid4().hex}", "now": START, "lease": 60.0}
        claimants = [
            subprocess.Popen(
                [sys.executable, "-c", _CLAIMANT, json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        try:
            for claimant in claimants:
                assert claimant.stdout is not None
                assert claimant.stdout.readline().strip() == "ready"
            for claimant in claimants:
                assert claimant.stdin is not None
                claimant.stdin.write("go\n")
                claimant.stdin.flush()
            answers = []
            for claimant in claimants:
                out, err = claimant.communicate(timeout=60)
                assert claimant.returncode == 0, err
                answers.append(out.strip())
        finally:
            for claimant in claimants:
                if claimant.poll() is None:
                    claimant.kill()
                    claimant.wait()
        assert answers.count("ran") == 1, answers
        assert set(answers) <= {"ran", "busy", "duplicate"}, answers

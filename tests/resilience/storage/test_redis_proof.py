"""Proof tests on the real Redis: many threads and processes racing, and a writer killed mid-way.

The same proofs as ``test_sqlite.py`` and ``test_postgres.py`` run here against the
shared server named by ``RESILIENCE_TEST_REDIS_URL`` (skipped without it, a failure
when ``RESILIENCE_REQUIRE_SERVERS=1``), each test under its own key prefix, removed
afterwards. The race goes through the idempotency service (``@idempotent``), and
counts each body's runs with a Redis ``INCR`` per key, so a duplicate anywhere,
in any process, shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import redis

from resilience.clock import FakeClock
from resilience.errors import IdempotencyInProgress
from resilience.idempotency import idempotent
from resilience.storage import DeadLetterFilter, DeadLetterOrder, IdempotencyState
from resilience.storage.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T0 = 1_700_000_000.0
KEYS = [f"race-{n:04d}" for n in range(1000)]

# A worker process: the same service, store and counters as the test, in another
# interpreter. "race" claims every key in its own random order from two threads;
# "dlq" adds dead letters and prints each id once its add() has returned.
WORKER = r"""
import json, random, sys, threading
import redis
from resilience.clock import FakeClock
from resilience.errors import IdempotencyInProgress
from resilience.idempotency import idempotent
from resilience.storage import DeadLetterRecord
from resilience.storage.redis import RedisStore

url, prefix, job = sys.argv[1], sys.argv[2], sys.argv[3]
client = redis.Redis.from_url(url)
store = RedisStore(client, prefix=prefix)
T0 = 1_700_000_000.0
if job == "race":
    keys = [f"race-{n:04d}" for n in range(1000)]
    ran, lock = [], threading.Lock()

    @idempotent(store=store, key="{key}", name="race", lease=600, clock=FakeClock(start=T0))
    def body(key):
        client.incr(f"{prefix}runs:{key}")
        with lock:
            ran.append(key)
        return key

    print("ready", flush=True)
    sys.stdin.readline()
    def work(seed):
        order = keys[:]
        random.Random(seed).shuffle(order)
        for key in order:
            try:
                assert body(key=key) == key
            except IdempotencyInProgress:
                pass  # another worker runs it right now
    first = int(sys.argv[4])
    threads = [threading.Thread(target=work, args=(seed,)) for seed in (first, first + 1)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps(ran), flush=True)
elif job == "dlq":
    for n in range(1_000_000):
        record = DeadLetterRecord(id=f"crash-{n:07d}", task_name="crash", message="m" * 500,
                                  first_failed_at=T0 + n, last_failed_at=T0 + n, priority=n % 3)
        store.dead_letters.add(record)
        print(record.id, flush=True)
"""


@pytest.fixture
def url() -> str:
    """The shared test server's URL (skipped without one, unless servers are required)."""
    value = os.environ.get("RESILIENCE_TEST_REDIS_URL")
    if value:
        return value
    message = "RESILIENCE_TEST_REDIS_URL is not set: start the servers with scripts/servers.sh"
    if os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{message} (RESILIENCE_REQUIRE_SERVERS=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture
def client(url: str) -> Iterator[Any]:
    """A redis-py client of the shared server."""
    made = redis.Redis.from_url(url)
    yield made
    made.close()


@pytest.fixture
def prefix(client: Any) -> Iterator[str]:
    """A key prefix nobody else uses; every key under it is deleted after the test."""
    chosen = f"proof:{uuid.uuid4().hex[:12]}:"
    yield chosen
    keys = list(client.scan_iter(match=f"{chosen}*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def spawn(url: str, prefix: str, job: str, *extra: str) -> subprocess.Popen[str]:
    """Start a worker process on the shared server."""
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, prefix, job, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def sigkill(process: subprocess.Popen[str]) -> None:
    """SIGKILL ``process`` (if it still runs), reap it and close its pipes."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def counted_body(client: Any, prefix: str, ran: list[str]) -> Callable[..., str]:
    """The race's body through ``@idempotent``: one INCR per run of a key."""
    lock = threading.Lock()
    store = RedisStore(client, prefix=prefix)

    @idempotent(store=store, key="{key}", name="race", lease=600, clock=FakeClock(start=T0))
    def body(key: str) -> str:
        client.incr(f"{prefix}runs:{key}")
        with lock:
            ran.append(key)
        return key

    return body


# --------------------------------------------------------------------------- tests


def test_32_threads_and_8_processes_run_each_of_1000_keys_exactly_once(
    url: str, client: Any, prefix: str
) -> None:
    """Racing @idempotent calls on one Redis from many threads and processes: 0 duplicates."""
    workers = [spawn(url, prefix, "race", str(1000 + 2 * n)) for n in range(8)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        ran: list[str] = []
        body = counted_body(client, prefix, ran)
        start = threading.Barrier(32)

        def work(seed: int) -> None:
            order = KEYS[:]
            random.Random(seed).shuffle(order)
            start.wait()
            for key in order:
                # In progress elsewhere: that worker runs the key and completes it.
                with contextlib.suppress(IdempotencyInProgress):
                    assert body(key=key) == key

        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(work, range(100, 132)))
        for worker in workers:
            out, _ = worker.communicate(timeout=300)
            assert worker.returncode == 0
            ran.extend(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            sigkill(worker)
    runs = Counter(ran)
    assert sorted(runs) == KEYS
    assert max(runs.values()) == 1
    side_effects = client.mget([f"{prefix}runs:{key}" for key in KEYS])
    assert Counter(side_effects) == {b"1": len(KEYS)}  # the INCRs agree: each body ran once
    store = RedisStore(client, prefix=prefix)
    for key in KEYS[:50]:
        record = store.idempotency.get(key, now=T0)
        assert record is not None
        assert (record.state, record.token) == (IdempotencyState.COMPLETED, 1)


def test_sigkill_during_dead_letter_inserts_loses_no_returned_add(
    url: str, client: Any, prefix: str
) -> None:
    """Every record whose add() returned before a SIGKILL is readable, and the indexes agree."""
    writer = spawn(url, prefix, "dlq")
    try:
        assert writer.stdout is not None
        returned = [writer.stdout.readline().strip() for _ in range(300)]
    finally:
        sigkill(writer)
    assert returned[-1] == "crash-0000299"
    store = RedisStore(client, prefix=prefix)
    dead_letters = store.dead_letters
    assert all(dead_letters.get(record_id) is not None for record_id in returned)
    total = dead_letters.count(DeadLetterFilter(task_name="crash"))
    assert total >= len(returned)
    # Readable as a whole: every index entry leads to a record, in both orders.
    for order in (DeadLetterOrder.NEWEST, DeadLetterOrder.REPLAY):
        seen: list[str] = []
        after = None
        while True:
            page = dead_letters.query(DeadLetterFilter(), order=order, limit=100, after=after)
            seen.extend(record.id for record in page.records)
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert len(seen) == len(set(seen)) == total
        assert set(returned) <= set(seen)

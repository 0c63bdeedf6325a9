"""Benchmark: dead-letter inserts per second and a 10,000-record bulk retry, per backend.

Run: ``python bench/dead_letter.py [--quick] [--redis-url URL] [--postgres-url URL]``.
Server URLs default to ``RESILIENCE_TEST_REDIS_URL`` / ``RESILIENCE_TEST_POSTGRES_URL``;
a backend without a URL is skipped, and the output says so (without a real Redis,
fakeredis stands in with 1,000 records: it shows the Python side, not a server).

For each backend, in one run, through :class:`resilience.DeadLetterQueue`:

* ``queue.add``: a failed run with a raised exception (traceback with a cause),
  args and kwargs (one secret to redact), as a worker adds it after the engine
  classified the failure; every call is timed, median and p99 reported;
* ``store.add``: the same kind of record, already built, straight into the
  store role: the anchor that shows what the queue adds on top of storage;
* ``bulk_retry(where=DeadLetterFilter())``: every PENDING record re-enqueued
  through a replay callable that returns a fake task id, each with its own
  compare-and-set, timed once end to end.

Ratios: the queue's median insert against the store's own, and every backend's
bulk retry against the in-process memory reference.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resilience.dead_letter import DeadLetterQueue
from resilience.storage import MemoryStore
from resilience.storage.base import Store
from resilience.storage.records import DeadLetterFilter
from resilience.storage.sqlite import SQLiteStore
from resilience.taxonomy import classify

if TYPE_CHECKING:
    from collections.abc import Iterator

RECORDS = 10_000
QUICK_RECORDS = 50
FAKEREDIS_RECORDS = 1_000


@dataclass(slots=True)
class Result:
    """What one backend measured."""

    name: str
    records: int
    queue_add: list[float] = field(default_factory=list)
    store_add: list[float] = field(default_factory=list)
    bulk_seconds: float = 0.0
    retried: int = 0


@dataclass(slots=True)
class Backend:
    """A store to measure, how many records to put in it, and its cleanup."""

    name: str
    store: Store
    records: int
    cleanup: Callable[[], None]


def read_socket() -> None:
    """The low-level read that times out."""
    raise TimeoutError("read timed out after 30 s")


def charge() -> None:
    """A payment call that fails the way a network call does: a timeout, then a wrapper."""
    try:
        read_socket()
    except TimeoutError as cause:
        raise ConnectionError("payment gateway unreachable: order 42") from cause


def failure() -> BaseException:
    """A raised exception with a cause, so its traceback and chain are real."""
    try:
        charge()
    except ConnectionError as exc:
        return exc
    raise AssertionError("charge() did not fail")


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` in microseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] * 1e6


def measure(backend: Backend) -> Result:
    """Insert through the queue and straight into the store, then bulk-retry every record.

    A fifth of the records (at least one) go through ``queue.add``; the rest are
    built the same way beforehand and go through ``store.add`` (the anchor), so
    the bulk retry finds ``backend.records`` PENDING records.
    """
    result = Result(backend.name, backend.records)
    exc = failure()
    verdict = classify(exc, {"task_name": "billing.charge", "retry_count": 3})
    counter = itertools.count()
    queue = DeadLetterQueue(backend.store, replay=lambda record: f"task-{next(counter)}")
    clock = time.perf_counter
    now = 1_700_000_000.0
    through_queue = max(1, backend.records // 5)
    for n in range(through_queue):
        began = clock()
        queue.add(
            task_name="billing.charge",
            exc=exc,
            args=(n, "EUR"),
            kwargs={"order_id": n, "amount": 10.5, "api_key": "sk_live_123"},
            task_id=f"t-{n}",
            retry_count=3,
            classification=verdict,
            priority=n % 10,
            queue="billing",
            now=now + n,
        )
        result.queue_add.append(clock() - began)
    template = DeadLetterQueue(MemoryStore()).add(
        task_name="billing.charge",
        exc=exc,
        args=(0, "EUR"),
        kwargs={"order_id": 0, "amount": 10.5, "api_key": "sk_live_123"},
        retry_count=3,
        classification=verdict,
        queue="billing",
        now=now,
    )
    built = [
        replace(
            template,
            id=f"{int((now + n) * 1000):013d}-{n:016x}",
            task_id=f"t-{n}",
            priority=n % 10,
            first_failed_at=now + n,
            last_failed_at=now + n,
        )
        for n in range(through_queue, backend.records)
    ]
    role = backend.store.dead_letters
    for record in built:
        began = clock()
        role.add(record)
        result.store_add.append(clock() - began)
    began = clock()
    done = queue.bulk_retry(where=DeadLetterFilter(), actor="bench", now=now + backend.records)
    result.bulk_seconds = clock() - began
    result.retried = len(done.retried)
    if result.retried != backend.records or done.skipped:
        raise SystemExit(f"{backend.name}: bulk retry re-enqueued {result.retried} records")
    return result


def memory_backend(records: int) -> Backend:
    """The in-process reference."""
    return Backend("memory", MemoryStore(), records, lambda: None)


def sqlite_backend(records: int, directory: Path) -> Backend:
    """A SQLite file in a temporary directory."""
    store = SQLiteStore(directory / "dlq.sqlite3")
    return Backend("SQLite", store, records, store.close)


def redis_backend(records: int, client: Any, name: str) -> Backend:
    """A RedisStore under a fresh prefix, every key of which is removed afterwards."""
    from resilience.storage.redis import RedisStore

    prefix = f"bench-dlq-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(client, prefix=prefix)

    def cleanup() -> None:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        store.close()
        client.close()

    return Backend(name, store, records, cleanup)


def postgres_backend(records: int, url: str) -> Backend:
    """A PostgresStore in a fresh schema, dropped afterwards."""
    import psycopg

    from resilience.storage.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(url, schema=schema)

    def cleanup() -> None:
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return Backend("PostgreSQL", store, records, cleanup)


def backends(args: argparse.Namespace, directory: Path) -> Iterator[Backend]:
    """Every backend this run can reach, announcing the skipped ones."""
    records = QUICK_RECORDS if args.quick else RECORDS
    yield memory_backend(records)
    yield sqlite_backend(records, directory)
    if args.redis_url:
        import redis

        yield redis_backend(records, redis.Redis.from_url(args.redis_url), "Redis")
    else:
        import fakeredis

        print("skipped Redis: no --redis-url and RESILIENCE_TEST_REDIS_URL is not set;")
        print(f"  fakeredis stands in with {FAKEREDIS_RECORDS:,} records (no server, no network)")
        small = QUICK_RECORDS if args.quick else FAKEREDIS_RECORDS
        yield redis_backend(small, fakeredis.FakeRedis(), "fakeredis")
    if args.postgres_url:
        yield postgres_backend(records, args.postgres_url)
    else:
        print("skipped PostgreSQL: no --postgres-url and RESILIENCE_TEST_POSTGRES_URL is not set")


def print_tables(results: list[Result]) -> None:
    """The insert table and the bulk-retry table."""
    print()
    print("Inserts: queue.add (capture, redact, store) vs store.add of a built record")
    print("  (a fifth of the records through the queue, the rest through the store)")
    print(
        f"  {'backend':<11} {'records':>8} {'add p50 µs':>11} {'add p99 µs':>11} "
        f"{'adds/s':>8} {'store p50 µs':>13} {'store adds/s':>13} {'queue/store':>12}"
    )
    for r in results:
        add_p50, store_p50 = quantile(r.queue_add, 0.5), quantile(r.store_add, 0.5)
        per_second = len(r.queue_add) / sum(r.queue_add)
        print(
            f"  {r.name:<11} {r.records:>8,} {add_p50:11.1f} {quantile(r.queue_add, 0.99):11.1f} "
            f"{per_second:8,.0f} {store_p50:13.1f} {len(r.store_add) / sum(r.store_add):13,.0f} "
            f"{add_p50 / store_p50:11.2f}x"
        )
    print()
    memory = results[0]
    print("Bulk retry of every PENDING record (one compare-and-set each, replay returns an id)")
    print(
        f"  {'backend':<11} {'records':>8} {'seconds':>9} {'records/s':>10} "
        f"{'µs/record':>10} {'vs memory':>10}"
    )
    per_record_memory = memory.bulk_seconds / memory.retried
    for r in results:
        per_record = r.bulk_seconds / r.retried
        print(
            f"  {r.name:<11} {r.retried:>8,} {r.bulk_seconds:9.2f} "
            f"{r.retried / r.bulk_seconds:10,.0f} {per_record * 1e6:10.1f} "
            f"{per_record / per_record_memory:9.1f}x"
        )


def main() -> None:
    """Measure every reachable backend and print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few records: a smoke test")
    parser.add_argument("--redis-url", default=os.environ.get("RESILIENCE_TEST_REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("RESILIENCE_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-dead-letter-"))
    results: list[Result] = []
    try:
        for backend in backends(args, directory):
            try:
                results.append(measure(backend))
            finally:
                backend.cleanup()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print_tables(results)


if __name__ == "__main__":
    main()

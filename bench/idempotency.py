"""Benchmark: an idempotent no-op (acquire + complete) on every backend, beside bare anchors.

Run: ``python bench/idempotency.py [--quick] [--redis-url URL] [--postgres-url URL]``.
Server URLs default to ``RESILIENCE_TEST_REDIS_URL`` / ``RESILIENCE_TEST_POSTGRES_URL``;
a backend without a URL is skipped, and the output says so.

For each backend, in one run and interleaved round by round (so a noisy neighbour
slows every contender alike), every iteration claims a fresh key and completes it:

* ``store``: ``store.idempotency.acquire`` + ``complete``, the storage round trips;
* ``guard``: ``with guard.claim(key) as claim: claim.complete(None)``, the service;
* ``@idempotent``: a decorated no-op called with a new argument (key derivation,
  fingerprint, claim, result encoding).

Anchors: on Redis a bare redis-py ``SET key v NX PX`` followed by ``SET key v PX``
(the least two round trips any Redis idempotency scheme needs); on SQLite and
PostgreSQL a bare ``INSERT`` + ``UPDATE`` of a row, each committed, through the
same driver. Figures are per pair, p50 and p99 over every iteration; ratios are
p50 / the anchor's p50.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resilience.idempotency import IdempotencyGuard, idempotent
from resilience.storage import MemoryStore
from resilience.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Iterator

    from resilience.storage.base import Store


@dataclass(slots=True)
class Contender:
    """One measured path: a label and a function doing one pair for iteration ``n``."""

    label: str
    run: Callable[[int], None]
    samples: list[float] = field(default_factory=list)

    def p(self, quantile: float) -> float:
        """The ``quantile`` of the samples, in microseconds."""
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(quantile * (len(ordered) - 1))))
        return ordered[index] * 1e6


@dataclass(slots=True)
class Backend:
    """A backend's contenders (anchor first when there is one) and its cleanup."""

    name: str
    contenders: list[Contender]
    anchor: Contender | None
    cleanup: Callable[[], None]
    iterations: int


def service_contenders(store: Store, tag: str) -> list[Contender]:
    """The store-level, guard and decorator paths on ``store``."""
    idem = store.idempotency
    guard = IdempotencyGuard(store, lease=30, ttl=3600)

    def store_pair(n: int) -> None:
        key = f"{tag}:s:{n}"
        now = time.time()
        claim = idem.acquire(key, fingerprint="fp", lease=30, ttl=3600, now=now)
        idem.complete(key, token=claim.record.token, result="null", ttl=3600, now=now)

    def guard_pair(n: int) -> None:
        with guard.claim(f"{tag}:g:{n}", fingerprint="fp") as claim:
            claim.complete(None)

    @idempotent(store=store, ttl=3600, lease=30, name=f"{tag}:d")
    def no_op(n: int) -> None:
        del n

    return [
        Contender("store: acquire + complete", store_pair),
        Contender("guard: claim + complete", guard_pair),
        Contender("@idempotent no-op", no_op),
    ]


def memory_backend(quick: bool) -> Backend:
    """The in-process reference: the floor of the service overhead."""
    contenders = service_contenders(MemoryStore(), "m")
    return Backend("memory", contenders, None, lambda: None, 20 if quick else 5000)


def sqlite_backend(quick: bool, directory: Path) -> Backend:
    """SQLiteStore on a file beside a bare sqlite3 INSERT + UPDATE on another file."""
    store = SQLiteStore(directory / "store.sqlite3")
    bare = sqlite3.connect(directory / "bare.sqlite3", isolation_level=None)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("PRAGMA synchronous=NORMAL")
    bare.execute("CREATE TABLE k (key TEXT PRIMARY KEY, state TEXT, result TEXT)")

    def anchor(n: int) -> None:
        bare.execute("INSERT INTO k VALUES (?, 'IN_PROGRESS', NULL)", (f"a:{n}",))
        bare.execute("UPDATE k SET state = 'COMPLETED', result = 'null' WHERE key = ?", (f"a:{n}",))

    def cleanup() -> None:
        store.close()
        bare.close()

    first = Contender("sqlite3: INSERT + UPDATE", anchor)
    contenders = [first, *service_contenders(store, "q")]
    return Backend("SQLite", contenders, first, cleanup, 20 if quick else 2000)


def fakeredis_backend(quick: bool) -> Backend:
    """RedisStore on fakeredis (in-process: shows the Python side, not the network)."""
    import fakeredis

    from resilience.storage.redis import RedisStore

    client = fakeredis.FakeRedis()
    store = RedisStore(client, prefix=f"bench-{uuid.uuid4().hex[:8]}:")
    anchor = Contender("redis-py: SET NX PX + SET PX", bare_redis_pair(client, "fa"))
    contenders = [anchor, *service_contenders(store, "f")]
    return Backend("fakeredis", contenders, anchor, store.close, 20 if quick else 2000)


def bare_redis_pair(client: Any, prefix: str) -> Callable[[int], None]:
    """A bare claim (SET NX PX) and completion (SET PX) of a fresh key."""

    def pair(n: int) -> None:
        key = f"{prefix}:{n}"
        client.set(key, "IN_PROGRESS", nx=True, px=30_000)
        client.set(key, "COMPLETED:null", px=3_600_000)

    return pair


def redis_backend(quick: bool, url: str) -> Backend:
    """RedisStore on a real server beside the bare SET NX PX + SET pair on the same client."""
    import redis

    from resilience.storage.redis import RedisStore

    client = redis.Redis.from_url(url)
    prefix = f"bench-idem-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(client, prefix=prefix)
    anchor = Contender("redis-py: SET NX PX + SET PX", bare_redis_pair(client, f"{prefix}bare"))

    def cleanup() -> None:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        store.close()
        client.close()

    contenders = [anchor, *service_contenders(store, "r")]
    return Backend("Redis", contenders, anchor, cleanup, 20 if quick else 5000)


def postgres_backend(quick: bool, url: str) -> Backend:
    """PostgresStore in its own schema beside a bare psycopg INSERT + UPDATE (autocommit)."""
    import psycopg

    from resilience.storage.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(url, schema=schema)
    bare = psycopg.connect(url, autocommit=True)
    bare.execute(f'CREATE TABLE "{schema}".bare (key text PRIMARY KEY, state text, result text)')
    insert = f"INSERT INTO \"{schema}\".bare VALUES (%s, 'IN_PROGRESS', NULL)"  # noqa: S608 - our own schema name
    update = f"UPDATE \"{schema}\".bare SET state = 'COMPLETED', result = 'null' WHERE key = %s"  # noqa: S608

    def anchor(n: int) -> None:
        bare.execute(insert, (f"a:{n}",), prepare=True)
        bare.execute(update, (f"a:{n}",), prepare=True)

    def cleanup() -> None:
        store.close()
        bare.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        bare.close()

    first = Contender("psycopg: INSERT + UPDATE", anchor)
    contenders = [first, *service_contenders(store, "p")]
    return Backend("PostgreSQL", contenders, first, cleanup, 20 if quick else 2000)


def measure(backend: Backend, rounds: int) -> None:
    """Run every contender ``iterations`` times, interleaved in ``rounds``, warm-up first."""
    per_round = max(1, backend.iterations // rounds)
    for contender in backend.contenders:
        for n in range(min(50, per_round)):
            contender.run(-1 - n)  # warm-up: scripts loaded, statements prepared
    clock = time.perf_counter
    for round_number in range(rounds):
        for contender in backend.contenders:
            samples = contender.samples
            run = contender.run
            base = round_number * per_round
            for n in range(base, base + per_round):
                began = clock()
                run(n)
                samples.append(clock() - began)


def print_table(backend: Backend) -> None:
    """One table: p50, p99 and the p50 ratio to the anchor (or to the store path)."""
    reference = backend.anchor or backend.contenders[0]
    base = reference.p(0.5)
    count = len(backend.contenders[0].samples)
    print(f"{backend.name}: acquire + complete of a fresh key, {count:,} pairs per contender")
    header = "vs anchor" if backend.anchor else "vs store"
    print(f"  {'contender':<32} {'p50 µs':>9} {'p99 µs':>9} {header:>10}")
    for contender in backend.contenders:
        ratio = "" if contender is backend.anchor else f"{contender.p(0.5) / base:9.2f}x"
        print(
            f"  {contender.label:<32} {contender.p(0.5):9.1f} {contender.p(0.99):9.1f} {ratio:>10}"
        )
    print()


def backends(args: argparse.Namespace, directory: Path) -> Iterator[Backend]:
    """Every backend this run can reach, announcing the skipped ones."""
    yield memory_backend(args.quick)
    yield sqlite_backend(args.quick, directory)
    yield fakeredis_backend(args.quick)
    if args.redis_url:
        yield redis_backend(args.quick, args.redis_url)
    else:
        print("skipped Redis: no --redis-url and RESILIENCE_TEST_REDIS_URL is not set\n")
    if args.postgres_url:
        yield postgres_backend(args.quick, args.postgres_url)
    else:
        print("skipped PostgreSQL: no --postgres-url and RESILIENCE_TEST_POSTGRES_URL is not set\n")


def main() -> None:
    """Measure every reachable backend and print one table each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations: a smoke test")
    parser.add_argument("--redis-url", default=os.environ.get("RESILIENCE_TEST_REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("RESILIENCE_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    rounds = 1 if args.quick else 5
    directory = Path(tempfile.mkdtemp(prefix="bench-idempotency-"))
    summary: list[tuple[str, float, float]] = []
    try:
        for backend in backends(args, directory):
            try:
                measure(backend, rounds)
            finally:
                backend.cleanup()
            print_table(backend)
            store_path = backend.contenders[1 if backend.anchor else 0]
            summary.append((backend.name, store_path.p(0.5), store_path.p(0.99)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print("store-level acquire + complete, all backends")
    for name, p50, p99 in summary:
        print(f"  {name:<12} p50 {p50 / 1000:8.3f} ms   p99 {p99 / 1000:8.3f} ms")


if __name__ == "__main__":
    main()

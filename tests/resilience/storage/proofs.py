"""The storage proof tests shared by the SQLite and PostgreSQL suites.

Each proof races or kills real processes. This module is also the worker those
processes run (``python proofs.py SPEC JOB``), so the parent and the children
open the store the same way from one JSON spec:
``{"backend": "sqlite", "path": ...}`` or
``{"backend": "postgres", "url": ..., "schema": ...}``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from resilience.storage import DeadLetterFilter, DeadLetterRecord, IdempotencyState

if TYPE_CHECKING:
    from collections.abc import Callable

    from resilience.storage import Store

T0 = 1_700_000_000.0
KEYS = [f"race-{n:04d}" for n in range(1000)]


def open_spec(spec: dict[str, Any], **options: Any) -> Store:
    """Open the store ``spec`` describes (``options`` go to the store's constructor)."""
    if spec["backend"] == "sqlite":
        from resilience.storage.sqlite import SQLiteStore

        return SQLiteStore(spec["path"], **{"busy_timeout": 60, **options})
    from resilience.storage.postgres import PostgresStore

    return PostgresStore(spec["url"], schema=spec["schema"], **options)


def spawn(spec: dict[str, Any], job: str) -> subprocess.Popen[str]:
    """Start a worker process running ``job`` on the store of ``spec``."""
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(spec), job],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def sigkill(process: subprocess.Popen[str]) -> None:
    """SIGKILL ``process``, reap it and close its pipes."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def _claim_all(store: Store, seed: int, ran: list[str], lock: threading.Lock) -> None:
    """Claim every key in a seeded order; record the keys whose body this thread ran."""
    order = KEYS[:]
    random.Random(seed).shuffle(order)
    for key in order:
        claim = store.idempotency.acquire(key, fingerprint="fp", lease=600, ttl=3600, now=T0)
        if claim.acquired:
            with lock:
                ran.append(key)
            assert store.idempotency.complete(
                key, token=claim.record.token, result="1", ttl=3600, now=T0
            )
        else:
            assert claim.record.state in (IdempotencyState.IN_PROGRESS, IdempotencyState.COMPLETED)


def race_runs_each_key_once(
    store: Store, spec: dict[str, Any], *, before_teardown: Callable[[], None] | None = None
) -> None:
    """32 threads here and 8 processes (2 threads each) claim the same 1,000 keys: 0 duplicates."""
    workers = [spawn(spec, "race") for _ in range(8)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        ran: list[str] = []
        lock = threading.Lock()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(lambda seed: _claim_all(store, seed, ran, lock), range(100, 132)))
        for worker in workers:
            out, _ = worker.communicate(timeout=300)
            assert worker.returncode == 0
            ran.extend(json.loads(out.strip().splitlines()[-1]))
        if before_teardown is not None:
            before_teardown()
    finally:
        for worker in workers:
            sigkill(worker)
    runs = Counter(ran)
    assert sorted(runs) == KEYS
    assert max(runs.values()) == 1
    for key in KEYS[:50]:
        record = store.idempotency.get(key, now=T0)
        assert record is not None
        assert (record.state, record.token) == (IdempotencyState.COMPLETED, 1)


def sigkilled_holder_is_taken_over_once(store: Store, spec: dict[str, Any]) -> None:
    """After SIGKILL of the owner, the key stays blocked until its lease ends, then runs once."""
    holder = spawn(spec, "hold")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "1"
    sigkill(holder)
    assert holder.returncode == -signal.SIGKILL
    idem = store.idempotency
    blocked = idem.acquire("held", fingerprint="fp", lease=10, ttl=600, now=T0 + 5)
    assert not blocked.acquired
    assert blocked.record.lease_remaining(T0 + 5) == 5
    claims = [
        idem.acquire("held", fingerprint="fp", lease=10, ttl=600, now=T0 + 11) for _ in range(5)
    ]
    assert [claim.record.token for claim in claims if claim.acquired] == [2]
    assert idem.complete("held", token=2, result='"done"', ttl=600, now=T0 + 12)
    assert not idem.complete("held", token=1, result='"late"', ttl=600, now=T0 + 13)
    record = idem.get("held", now=T0 + 14)
    assert record is not None
    assert (record.state, record.result) == (IdempotencyState.COMPLETED, '"done"')


def sigkill_during_inserts_loses_no_returned_add(spec: dict[str, Any]) -> Store:
    """Kill a writer after 300 returned add() calls; return the reopened store, all 300 in it."""
    open_spec(spec).close()  # the schema exists before the writer starts
    writer = spawn(spec, "dlq")
    assert writer.stdout is not None
    returned = [writer.stdout.readline().strip() for _ in range(300)]
    sigkill(writer)
    store = open_spec(spec)
    assert all(store.dead_letters.get(record_id) is not None for record_id in returned)
    assert store.dead_letters.count(DeadLetterFilter(task_name="crash")) >= len(returned)
    return store


def _worker(spec: dict[str, Any], job: str) -> None:
    store = open_spec(spec, **({"max_connections": 2} if spec["backend"] == "postgres" else {}))
    if job == "race":
        print("ready", flush=True)
        sys.stdin.readline()
        ran: list[str] = []
        lock = threading.Lock()
        threads = [
            threading.Thread(target=_claim_all, args=(store, seed, ran, lock)) for seed in (0, 1)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps(ran), flush=True)
    elif job == "hold":
        claim = store.idempotency.acquire("held", fingerprint="fp", lease=10, ttl=600, now=T0)
        print(claim.record.token, flush=True)
        sys.stdin.read()
    elif job == "dlq":
        for n in range(1_000_000):
            record = DeadLetterRecord(
                id=f"crash-{n:07d}",
                task_name="crash",
                message="m" * 500,
                first_failed_at=T0 + n,
                last_failed_at=T0 + n,
            )
            store.dead_letters.add(record)
            print(record.id, flush=True)
    else:
        raise SystemExit(f"unknown job {job!r}")


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]), sys.argv[2])

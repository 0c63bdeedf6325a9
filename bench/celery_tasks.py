"""Benchmark: Celery tasks run through Celery's own tracer, ResilientTask beside plain Tasks.

Run: ``python bench/celery_tasks.py [--quick] [--redis-url URL]``. The Redis URL
defaults to ``RESILIENCE_TEST_REDIS_URL``; without one the Redis part runs on
fakeredis only, and the output says so.

Part 1, the success path. A trivial task (``x + y``) runs in-process through
``celery.app.trace.build_tracer`` (built once per task, as a worker does) with the
request of a real message, interleaved round by round (so a noisy neighbour slows
every contender alike, in a rotating order); each round times a batch of calls
per contender. Figures: the median over rounds of the mean time per call, and
ratios as the median over rounds of the two contenders' batches of that round:

* ``stock Task``: Celery's ``Task``, its default request stack;
* ``Task + fast request stack``: the same, with the thread-local request stack that
  ``ResilientTask`` installs (what Celery's ``USE_FAST_LOCALS`` uses), so the
  difference to ``ResilientTask`` is the cost of its ``__call__`` alone;
* ``ResilientTask``: no breaker, no idempotency key (the common case);
* ``ResilientTask + breaker`` / ``+ idempotency``: the guarded path on a memory store.

Each table is run twice: with results ignored (the smallest denominator, so the
strictest ratio) and with results stored in Celery's in-memory cache backend.

Part 2, store round trips per successful task on Redis. Every command the store's
redis-py client sends is counted on its connection (one ``send_packed_command``
is one round trip; a pipeline is one), for N tasks run through the tracer. The
anchor is the least any Redis idempotency scheme needs: a bare ``SET NX PX``
(claim) then ``SET PX`` (complete).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task  # type: ignore[import-untyped]
from celery.app.trace import build_tracer  # type: ignore[import-untyped]
from celery.worker.request import Request  # type: ignore[import-untyped]

from resilience.celery import ResilientTask, install

# The thread-local stack ResilientTask installs; used here to give a plain Task the
# same stack, so the comparison isolates ResilientTask.__call__.
from resilience.celery._task import _RequestStack
from resilience.storage import MemoryStore


class FastStackTask(Task):  # type: ignore[misc]
    """A plain Celery Task with ResilientTask's thread-local request stack."""

    @classmethod
    def on_bound(cls, app: Any) -> None:
        """Install the fast stack, exactly as ResilientTask does."""
        super().on_bound(app)
        if not isinstance(cls.__dict__.get("request_stack"), _RequestStack):
            cls.request_stack = _RequestStack()


@dataclass(slots=True)
class Contender:
    """One measured path: a label and a function running one task for iteration ``n``."""

    label: str
    run: Callable[[int], None]
    per_call: list[float] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        """Median over rounds of the mean time per call, in microseconds."""
        return statistics.median(self.per_call) * 1e6


def _request_of(app: Any, task: Any, args: tuple[Any, ...], queue: str) -> dict[str, Any]:
    """The request dict a worker builds for one real message of ``task``."""
    task.apply_async(args, queue=queue)
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            message = simple.get(block=False)
        finally:
            simple.close()
    context = dict(Request(message, app=app, task=task).request_dict)
    context.update({"loglevel": 0, "logfile": None, "is_eager": False, "hostname": "bench"})
    return context


def traced(app: Any, task: Any, queue: str, args_of: Callable[[int], tuple[Any, ...]]) -> Any:
    """A function running ``task`` for iteration ``n`` through its tracer, built once."""
    tracer = build_tracer(task.name, task, loader=app.loader, hostname="bench", app=app)
    request = _request_of(app, task, args_of(0), queue)
    task_id = request["id"]
    empty: dict[str, Any] = {}
    _, info, _, _ = tracer(task_id, args_of(-1), empty, request)
    if info is not None:
        raise RuntimeError(f"{task.name} did not succeed through the tracer: {info.state}")

    def run(n: int) -> None:
        tracer(task_id, args_of(n), empty, request)

    return run


def _add(x: int, y: int) -> int:
    return x + y


def tracer_contenders(*, store_results: bool) -> list[Contender]:
    """The success-path contenders on one app (results ignored or stored)."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    backend = "cache+memory://" if store_results else None
    app = Celery(name, broker="memory://", backend=backend, set_as_current=False)
    app.conf.task_ignore_result = not store_results
    install(app, store=MemoryStore())
    queue = name
    tasks = {
        "stock Task": app.task(name="bench.stock")(_add),
        "Task + fast request stack": app.task(base=FastStackTask, name="bench.fast")(_add),
        "ResilientTask": app.task(base=ResilientTask, name="bench.resilient")(_add),
        "ResilientTask + breaker": app.task(
            base=ResilientTask, name="bench.breaker", breaker="bench-api"
        )(_add),
        "ResilientTask + idempotency": app.task(
            base=ResilientTask, name="bench.idem", idempotency_key="add:{x}"
        )(_add),
    }
    return [
        Contender(label, traced(app, task, queue, lambda n: (n, 1)))
        for label, task in tasks.items()
    ]


def measure(contenders: list[Contender], *, rounds: int, batch: int) -> None:
    """Time ``batch`` calls per contender per round, rotating the order every round."""
    clock = time.perf_counter
    counter = 0
    for contender in contenders:
        for n in range(min(200, batch)):
            contender.run(-1000 - n)  # warm-up: caches, plans, scripts
    for round_number in range(rounds):
        shift = round_number % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            run = contender.run
            began = clock()
            for n in range(counter, counter + batch):
                run(n)
            contender.per_call.append((clock() - began) / batch)
            counter += batch


def paired(ours: Contender, base: Contender) -> float:
    """Median over rounds of ours / base, each round's batches run back to back.

    Pairing by round cancels slow drifts of a shared machine that a ratio of two
    medians would keep.
    """
    return statistics.median(a / b for a, b in zip(ours.per_call, base.per_call, strict=True))


def _percent(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+6.1f} %"


def print_tracer_table(title: str, contenders: list[Contender], calls: int) -> None:
    """One table: median per call, and extra % against both plain Tasks (paired by round)."""
    by_label = {c.label: c for c in contenders}
    stock = by_label["stock Task"]
    fast = by_label["Task + fast request stack"]
    print(f"## {title}  ({calls:,} calls per contender)")
    print(
        f"{'contender':<30} {'median µs':>10} {'÷ stock':>8} {'vs stock':>10} {'vs fast stack':>14}"
    )
    for contender in contenders:
        ratio = paired(contender, stock)
        print(
            f"{contender.label:<30} {contender.median_us:10.2f} {ratio:7.3f}x "
            f"{_percent(ratio):>10} {_percent(paired(contender, fast)):>14}"
        )
    resilient = by_label["ResilientTask"]
    versus_stock = paired(resilient, stock)
    print(
        f"ResilientTask success path: {_percent(versus_stock).strip()} vs a stock Task, "
        f"{_percent(paired(resilient, fast)).strip()} vs a plain Task with the same request "
        f"stack (target < 5 % extra vs stock: {'met' if versus_stock < 1.05 else 'NOT met'})"
    )
    print()


# --------------------------------------------------------------------------- round trips


@dataclass(slots=True)
class Wire:
    """Round trips and command names sent by connections of the counting class."""

    round_trips: int = 0
    commands: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        """Forget what was counted so far."""
        self.round_trips = 0
        self.commands.clear()


def counting(client: Any, wire: Wire) -> Any:
    """Make every future connection of ``client``'s pool count into ``wire``."""
    base = client.connection_pool.connection_class

    class CountingConnection(base):  # type: ignore[misc, valid-type]
        def send_command(self, *args: Any, **kwargs: Any) -> None:
            name = args[0] if isinstance(args[0], str) else args[0].decode()
            wire.commands[name.upper()] += 1
            super().send_command(*args, **kwargs)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            wire.round_trips += 1
            super().send_packed_command(command, check_health)

    client.connection_pool.disconnect()
    client.connection_pool.connection_class = CountingConnection
    return client


def round_trip_table(label: str, client: Any, *, tasks: int) -> None:
    """Tasks with idempotency and breakers on a RedisStore over ``client``, counted."""
    from resilience.storage.redis import RedisStore

    wire = Wire()
    counting(client, wire)
    prefix = f"bench-celery-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(client, prefix=prefix)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    app = Celery(name, broker="memory://", set_as_current=False)
    app.conf.task_ignore_result = True
    install(app, store=store)
    queue = name
    fresh = lambda n: (n, 1)  # noqa: E731 - a one-line argument factory
    definitions: list[tuple[str, Any, Callable[[int], tuple[Any, ...]]]] = [
        ("stock Task", app.task(name="bench.stock")(_add), fresh),
        ("ResilientTask", app.task(base=ResilientTask, name="bench.resilient")(_add), fresh),
        (
            "ResilientTask + idempotency",
            app.task(base=ResilientTask, name="bench.idem", idempotency_key="add:{x}")(_add),
            fresh,
        ),
        (
            "ResilientTask + breaker",
            app.task(base=ResilientTask, name="bench.breaker", breaker="bench-api")(_add),
            fresh,
        ),
        (
            "ResilientTask + breaker + idempotency",
            app.task(
                base=ResilientTask,
                name="bench.both",
                breaker="bench-api-2",
                idempotency_key="both:{x}",
            )(_add),
            fresh,
        ),
        (
            "duplicate delivery (key completed)",
            app.task(base=ResilientTask, name="bench.dup", idempotency_key="dup:{x}")(_add),
            lambda n: (7, 1),
        ),
    ]

    def bare_pair(n: int) -> None:
        key = f"{prefix}bare:{n}"
        client.set(key, "IN_PROGRESS", nx=True, px=30_000)
        client.set(key, "COMPLETED:null", px=3_600_000)

    rows: list[tuple[str, float, str, float]] = []
    try:
        runners = [("redis-py: SET NX PX + SET PX", bare_pair)]
        runners += [
            (title, traced(app, task, queue, args_of)) for title, task, args_of in definitions
        ]
        for title, run in runners:
            for n in range(20):
                run(-100 - n)  # warm-up: connection, scripts loaded
            wire.reset()
            samples = []
            for n in range(tasks):
                start = time.perf_counter()
                run(n)
                samples.append(time.perf_counter() - start)
            seen = ", ".join(
                f"{command} x{count / tasks:g}" for command, count in sorted(wire.commands.items())
            )
            rows.append((title, wire.round_trips / tasks, seen or "-", statistics.median(samples)))
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        app.close()

    anchor_us = rows[0][3] * 1e6
    print(f"## {label}: store round trips per successful task ({tasks:,} tasks each)")
    print(f"{'contender':<40} {'round trips':>11} {'median µs':>10} {'÷ anchor':>9}  commands")
    for title, trips, seen, median in rows:
        us = median * 1e6
        print(f"{title:<40} {trips:11.2f} {us:10.1f} {us / anchor_us:8.2f}x  {seen}")
    idem = next(row for row in rows if row[0] == "ResilientTask + idempotency")
    print(
        f"idempotent task: {idem[1]:g} round trips per success "
        f"(target <= 2: {'met' if idem[1] <= 2 else 'NOT met'})"
    )
    print()


def main() -> None:
    """Run both parts and print one table per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations: a smoke test")
    parser.add_argument("--redis-url", default=os.environ.get("RESILIENCE_TEST_REDIS_URL"))
    args = parser.parse_args()
    rounds, batch = (3, 50) if args.quick else (100, 200)
    tasks = 50 if args.quick else 2000
    began = time.perf_counter()

    for title, store_results in (
        ("success path through Celery's tracer, results ignored", False),
        ("success path through Celery's tracer, results stored (cache+memory://)", True),
    ):
        contenders = tracer_contenders(store_results=store_results)
        measure(contenders, rounds=rounds, batch=batch)
        print_tracer_table(title, contenders, rounds * batch)

    import fakeredis

    round_trip_table("fakeredis (in-process)", fakeredis.FakeRedis(), tasks=tasks)
    if args.redis_url:
        import redis

        client = redis.Redis.from_url(args.redis_url)
        try:
            round_trip_table("Redis", client, tasks=tasks)
        finally:
            client.close()
    else:
        print("skipped Redis round trips: no --redis-url and RESILIENCE_TEST_REDIS_URL is not set")
        print()
    print(f"total run {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()

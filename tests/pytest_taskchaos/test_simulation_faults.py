"""Faults in the simulation: worker loss, duplicates, latency, outages, dependency points."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from celery import Celery
from celery import signals as celery_signals

from pytest_taskchaos.simulation import Simulation
from resilience import RetryPolicy
from resilience.celery import ResilientTask

FAST = RetryPolicy(max_retries=3, initial_delay=10.0, jitter="none")
FAST_POLICIES = dict.fromkeys(("TRANSIENT_NETWORK", "EXTERNAL_TIMEOUT", "EXTERNAL_API_DOWN"), FAST)


class Shop:
    """A fresh app whose tasks record their side effects in ``effects``."""

    def __init__(self) -> None:
        self.app = Celery("faults", broker="memory://", set_as_current=False)
        self.effects: list[tuple[str, Any, bool]] = []
        self.sim: Simulation | None = None
        shop = self

        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.charge",
            shared=False,
            acks_late=True,
            reject_on_worker_lost=True,
            resilience={"policies": FAST_POLICIES},
        )
        def charge(self: Any, order: int) -> str:
            shop.effects.append(("charge", order, bool(self.request.delivery_info["redelivered"])))
            if shop.sim is not None:
                shop.sim.effect("charge", key=order)
            return f"charged {order}"

        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.charge_once",
            shared=False,
            idempotency_key=lambda order: f"order-{order}",
            resilience={"policies": FAST_POLICIES},
        )
        def charge_once(self: Any, order: int) -> str:
            shop.effects.append(("charge_once", order, False))
            return f"charged {order}"

        @self.app.task(name="shop.plain", shared=False)
        def plain(order: int) -> int:
            shop.effects.append(("plain", order, False))
            return order

        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.slow",
            shared=False,
            soft_time_limit=30,
            time_limit=60,
            resilience={"policies": FAST_POLICIES},
        )
        def slow(self: Any, order: int) -> int:
            shop.effects.append(("slow", order, False))
            return order

        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.pay",
            shared=False,
            breaker="payments",
            resilience={"policies": FAST_POLICIES},
        )
        def pay(self: Any, order: int) -> int:
            shop.effects.append(("pay", order, False))
            return order

        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.store",
            shared=False,
            resilience={"policies": FAST_POLICIES},
        )
        def store(self: Any, path: str, order: int) -> int:
            conn = sqlite3.connect(path)
            try:
                conn.execute("INSERT INTO orders VALUES (?)", (order,))
                conn.commit()
            finally:
                conn.close()
            return order

        self.charge, self.charge_once, self.plain = charge, charge_once, plain
        self.slow, self.pay, self.store = slow, pay, store


def kinds(sim: Simulation, *, task: str | None = None) -> list[str]:
    """The history's event kinds, in order."""
    return [event.kind.value for event in sim.events(task=task)]


def test_a_lost_worker_redelivers_an_acks_late_task_and_keeps_its_side_effects() -> None:
    """worker_lost at exit: no ack, the effect stays, the message comes back marked redelivered."""
    shop = Shop()
    with Simulation(shop.app) as sim:
        shop.sim = sim
        sim.inject("worker_lost", task="shop.charge", times=1)
        shop.charge.delay(1)
        sim.run_until_idle()
    assert shop.effects == [("charge", 1, False), ("charge", 1, True)]
    lost = sim.events(kind="worker_lost")
    assert [(e.attempt, e.details["requeued"], e.details["exception"]) for e in lost] == [
        (1, True, "WorkerLostError")
    ]
    assert [e.details["reason"] for e in sim.events(kind="redelivered")] == ["worker_lost"]
    delivered = sim.events(kind="delivered")
    assert [e.details["redelivered"] for e in delivered] == [False, True]
    assert len(sim.events(kind="succeeded")) == 1
    assert len(sim.events(kind="acked")) == 1, "the lost run was never acked"
    effects = sim.events(kind="side_effect")
    assert [e.details["key"] for e in effects] == ["1", "1"]


def test_a_lost_worker_fails_an_early_acked_task_as_celery_does() -> None:
    """Without acks_late the message is gone: FAILURE with WorkerLostError and task_failure."""
    shop = Shop()
    seen: list[str] = []

    def on_failure(sender: Any, exception: BaseException, **_: Any) -> None:
        seen.append(f"{sender.name}: {type(exception).__name__}")

    celery_signals.task_failure.connect(on_failure, weak=False)
    try:
        with Simulation(shop.app) as sim:
            sim.inject("worker_lost", task="shop.plain", at="entry")
            shop.plain.delay(1)
            sim.run_until_idle()
    finally:
        celery_signals.task_failure.disconnect(on_failure)
    assert shop.effects == []
    assert seen == ["shop.plain: WorkerLostError"]
    assert [e.details["requeued"] for e in sim.events(kind="worker_lost")] == [False]
    assert [e.details["exception"] for e in sim.events(kind="failed")] == ["WorkerLostError"]


def test_duplicate_delivery_runs_a_plain_body_twice_and_an_idempotent_one_once() -> None:
    """The same message delivered twice: the key turns the second run into a hit."""
    shop = Shop()
    with Simulation(shop.app) as sim:
        sim.inject("duplicate_delivery")
        shop.charge.delay(1)
        shop.charge_once.delay(2)
        sim.run_until_idle()
    assert sorted(shop.effects) == [
        ("charge", 1, False),
        ("charge", 1, True),
        ("charge_once", 2, False),
    ]
    outcomes = [e.details["outcome"] for e in sim.events(kind="idempotency")]
    assert outcomes == ["miss", "hit"]
    duplicates = [e for e in sim.events(kind="delivered") if e.details["duplicate"]]
    assert len(duplicates) == 2
    assert len(sim.events(kind="succeeded")) == 4


def test_latency_past_the_soft_limit_raises_soft_time_limit_and_retries() -> None:
    """40 virtual seconds in a task with a 30 s soft limit: SoftTimeLimitExceeded, then a retry."""
    shop = Shop()
    with Simulation(shop.app) as sim:
        sim.inject("latency", seconds=40, task="shop.slow", times=1)
        shop.slow.delay(1)
        sim.run_until_idle()
    raised = sim.events(kind="raised")
    assert [e.details["exception"] for e in raised] == ["SoftTimeLimitExceeded"]
    classified = sim.events(kind="classified")
    assert [e.details["failure_type"] for e in classified] == ["EXTERNAL_TIMEOUT"]
    assert [e.at for e in sim.events(kind="retried")] == [40.0]
    assert sim.events(kind="succeeded")[0].at == 50.0
    assert shop.effects == [("slow", 1, False)]


def test_latency_past_the_hard_limit_ends_the_run_like_a_killed_worker() -> None:
    """Past time_limit the pool kills the run: TimeLimitExceeded, dead-lettered by the worker."""
    shop = Shop()
    with Simulation(shop.app) as sim:
        sim.inject("latency", seconds=90, task="shop.slow", times=1)
        shop.slow.delay(1)
        sim.run_until_idle()
    lost = sim.events(kind="worker_lost")
    assert [(e.details["exception"], e.details["requeued"]) for e in lost] == [
        ("TimeLimitExceeded", False)
    ]
    assert [e.details["exception"] for e in sim.events(kind="dead_lettered")] == [
        "TimeLimitExceeded"
    ]
    assert sim.runtime.dead_letters.summary().total == 1


def test_broker_down_fails_a_publish_from_the_test_and_dead_letters_a_retry() -> None:
    """Publishing while the broker is down raises; a retry that cannot be published is kept."""
    from kombu.exceptions import OperationalError

    shop = Shop()
    with Simulation(shop.app) as sim:
        sim.inject("broker_down", times=1)
        with pytest.raises(OperationalError):
            shop.charge.delay(1)
        assert sim.pending == 0
        sim.inject(ConnectionResetError, task="shop.charge", times=1)
        shop.charge.delay(2)
        sim.inject("broker_down", task="shop.charge", times=1)
        sim.run_until_idle()
    assert sim.fired() == 3
    assert shop.effects == []
    dead = sim.events(kind="dead_lettered")
    assert [e.details["exception"] for e in dead] == ["ConnectionResetError"]
    (record,) = sim.runtime.dead_letters.list().records
    assert record.task_name == "shop.charge"


def test_result_backend_down_keeps_the_side_effect_and_fails_the_run_as_celery_does() -> None:
    """Storing the result fails after the body ran: Celery reports an internal FAILURE."""
    shop = Shop()
    with Simulation(shop.app) as sim:
        sim.inject("result_backend_down", task="shop.plain", times=1)
        shop.plain.delay(1)
        sim.run_until_idle()
    assert shop.effects == [("plain", 1, False)]
    faults = sim.events(kind="fault_injected")
    assert [(e.details["where"], e.details["exception"]) for e in faults] == [
        ("result", "ConnectionError")
    ]
    assert kinds(sim)[-3:] == ["raised", "failed", "acked"]


def test_result_backend_down_fires_at_the_simulations_backend_of_an_app_with_one(
    unreachable: str, connects: list[Any]
) -> None:
    """An app with a Redis backend (and a task with its own): the fault fails the in-memory store.

    The tracer then stores its internal FAILURE, which the result reads; the real
    backends are never reached.
    """
    from celery.backends.redis import RedisBackend

    app = Celery(
        "faultresults", broker="memory://", backend=f"{unreachable}/1", set_as_current=False
    )
    effects: list[int] = []

    @app.task(name="shop.plain", shared=False)
    def plain(order: int) -> int:
        effects.append(order)
        return order

    @app.task(name="shop.own", shared=False, backend=RedisBackend(app=app, url=f"{unreachable}/2"))
    def own(order: int) -> int:
        effects.append(order)
        return order

    with Simulation(app) as sim:
        sim.inject("result_backend_down", times=2)
        results = [plain.delay(1), own.delay(2), plain.delay(3)]
        sim.run_until_idle()
        states = [result.state for result in results]
    assert sim.fired() == 2
    assert effects == [1, 2, 3]
    faults = sim.events(kind="fault_injected")
    assert [(e.task_name, e.details["where"]) for e in faults] == [
        ("shop.plain", "result"),
        ("shop.own", "result"),
    ]
    assert [e.task_name for e in sim.events(kind="failed")] == ["shop.plain", "shop.own"]
    assert states == ["FAILURE", "FAILURE", "SUCCESS"]
    assert connects == []


def test_an_outage_opens_the_breaker_and_deferred_calls_are_not_failures() -> None:
    """A window of api_down opens the breaker; rejected calls defer and the task recovers."""
    shop = Shop()
    with Simulation(shop.app, seed=3) as sim:
        sim.inject("api_down", task="shop.pay", window=(0, 300))
        for order in range(8):
            shop.pay.delay(order)
        sim.run_until_idle(max_steps=500)
    changes = [(e.details["old"], e.details["new"]) for e in sim.events(kind="breaker_changed")]
    assert changes[0] == ("closed", "open")
    assert changes[-1][1] == "closed"
    assert sim.events(kind="call_rejected"), "an open breaker rejects calls"
    deferred = [e for e in sim.events(kind="retried") if e.details["deferred"]]
    assert deferred
    assert all(e.details["exception"] == "CircuitOpenError" for e in deferred)
    assert len(sim.events(kind="succeeded")) == 8


def test_a_db_fault_fires_inside_the_sqlite_call_of_the_task(tmp_path: Any) -> None:
    """at='db' raises the deadlock from the task's own sqlite3 execute; the insert retries."""
    path = str(tmp_path / "orders.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    shop = Shop()
    with Simulation(shop.app) as sim:
        sim.inject("deadlock", at="db", times=1)
        shop.store.delay(path, 5)
        sim.run_until_idle()
    faults = sim.events(kind="fault_injected")
    assert [(e.details["where"], e.details["fault"]) for e in faults] == [("db", "deadlock")]
    assert "sqlite3" in str(faults[0].details["detail"])
    assert [e.details["failure_type"] for e in sim.events(kind="classified")] == [
        "TRANSIENT_DATABASE"
    ]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM orders").fetchall() == [(5,)]


def test_probability_schedules_are_reproducible_by_seed() -> None:
    """rate=0.5 fires on the same calls for the same seed, on other calls for another."""

    def run(seed: int) -> tuple[str, int]:
        shop = Shop()
        with Simulation(shop.app, seed=seed) as sim:
            sim.inject("connection_reset", task="shop.charge", rate=0.5)
            for order in range(20):
                shop.charge.delay(order)
            sim.run_until_idle()
        return sim.fingerprint(), sim.fired()

    first, again, other = run(11), run(11), run(12)
    assert first == again
    assert first[0] != other[0]
    assert 0 < first[1] < 40


def test_watch_counts_dependency_calls_as_side_effects(tmp_path: Any) -> None:
    """watch('db') turns each sqlite3 execute of a run into a side-effect event."""
    path = str(tmp_path / "orders.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    shop = Shop()
    with Simulation(shop.app) as sim:
        sim.watch("db")
        shop.store.delay(path, 1)
        sim.run_until_idle()
    effects = sim.events(kind="side_effect")
    assert [e.details["name"] for e in effects] == ["db"]
    assert str(effects[0].details["key"]).startswith("sqlite3")


def test_a_patched_task_keeps_its_signature_for_key_templates() -> None:
    """An entry fault wraps run(); a key template still binds positional arguments by name."""
    app = Celery("keys", broker="memory://", set_as_current=False)
    runs: list[int] = []

    @app.task(
        base=ResilientTask,
        bind=True,
        name="keys.close",
        shared=False,
        idempotency_key="close:{job}",
    )
    def close(self: Any, job: int) -> None:
        runs.append(job)

    with Simulation(app) as sim:
        sim.inject("connection_reset", task="keys.close", times=1)
        close.delay(5)
        sim.run_until_idle()
    assert runs == [5]
    assert [e.details["key"] for e in sim.events(kind="idempotency")] == ["close:5", "close:5"]
    assert sim.events(kind="dead_lettered") == []

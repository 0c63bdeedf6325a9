"""Guarded runs through Celery's tracer: idempotency keys, breakers, deferrals, signals."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery, states
from celery.exceptions import Retry

from resilience import CircuitState, FailureType, FakeClock, RetryEngine, RetryPolicy
from resilience.celery import FAILURES_HEADER, Resilience, ResilientTask, install
from resilience.celery.signals import (
    on_breaker_call,
    on_breaker_change,
    on_dead_letter,
    on_decision,
    on_idempotency,
)
from resilience.errors import CircuitOpenError, IdempotencyInProgress
from resilience.idempotency import payload_fingerprint

from .conftest import CountingStore, InProcessWorker

if TYPE_CHECKING:
    from resilience.storage import MemoryStore

FAST = RetryPolicy(max_retries=2, initial_delay=2.0, factor=2.0, jitter="none")


def charge_task(app: Celery, *, fail_first: int = 0, **options: Any) -> Any:
    """An idempotent charge task recording each body run (and failing the first ones)."""
    runs: list[dict[str, Any]] = []

    @app.task(
        shared=False,
        base=ResilientTask,
        bind=True,
        name=f"charge-{id(runs)}",
        idempotency_key="charge:{order_id}",
        idempotency_category="payment",
        **options,
    )
    def charge(self: Any, order_id: int, amount: int) -> dict[str, Any]:
        runs.append(
            {
                "key": self.request.idempotency_key,
                "token": self.request.fencing_token,
                "retries": self.request.retries,
            }
        )
        if len(runs) <= fail_first:
            raise ConnectionError("payments API refused the connection")
        return {"order_id": order_id, "charged": amount}

    charge.runs = runs
    return charge


# --------------------------------------------------------------------------- idempotency


def test_a_duplicate_delivery_returns_the_stored_result_without_running_the_body(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """Two messages with the same key: one body run, the same result twice."""
    charge = charge_task(app)
    charge.delay(7, 100)
    charge.delay(7, 100)
    first, second = worker.drain()
    assert first.result == second.result == {"order_id": 7, "charged": 100}
    assert second.state == states.SUCCESS
    assert len(charge.runs) == 1


def test_the_body_sees_its_key_and_fencing_token(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """self.request.idempotency_key and fencing_token are set for the body's side effects."""
    charge = charge_task(app)
    charge.delay(order_id=7, amount=100)
    worker.drain()
    (run,) = charge.runs
    assert run["key"] == "charge:7"
    assert isinstance(run["token"], int)


def test_a_successful_idempotent_task_costs_two_store_round_trips(
    app: Celery, clock: FakeClock, worker: InProcessWorker
) -> None:
    """acquire + complete, nothing else, for a successful idempotent run."""
    counting = CountingStore()
    install(app, store=counting, clock=clock)  # type: ignore[arg-type]
    charge = charge_task(app)
    charge.delay(1, 5)
    worker.drain()
    assert counting.calls == ["idempotency.acquire", "idempotency.complete"]


def test_an_in_progress_duplicate_is_deferred_not_counted(
    app: Celery, resilience: Resilience, worker: InProcessWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """A key held by another run: a short Celery retry, no body run, no failure counted."""
    caplog.set_level(logging.INFO, logger="resilience.celery")
    charge = charge_task(app)
    real = app.tasks[charge.name]
    guard = resilience.guard(category="payment", ttl=None, lease=None)
    holder = guard.claim(
        "charge:7", fingerprint=payload_fingerprint((7, 100), {}, func=real.run)
    ).__enter__()
    charge.delay(7, 100)
    delivery = worker.run_next()
    assert delivery.state == states.RETRY
    assert isinstance(delivery.result, Retry)
    wait = resilience.settings.in_progress_delay
    assert wait <= delivery.result.when <= wait * 1.5  # spread, see RetryEngine.spread
    # The tracer pickles the Retry; our errors come back as their root class.
    assert "is in progress in another run" in str(delivery.result.exc)
    assert charge.runs == []
    (retry_message,) = worker.pending()
    assert FAILURES_HEADER not in retry_message.headers
    (line,) = [r for r in caplog.records if r.name == "resilience.celery"]
    assert line.decision == "deferred"  # type: ignore[attr-defined]
    holder.complete({"order_id": 7, "charged": 100})
    duplicate = worker.run(retry_message)
    assert duplicate.result == {"order_id": 7, "charged": 100}
    assert charge.runs == []


def test_a_failed_attempt_releases_the_key_so_the_retry_runs_the_body(
    app: Celery, store: MemoryStore, clock: FakeClock, worker: InProcessWorker
) -> None:
    """Regression (the original's worst defect): a retry is never answered by a failure marker."""
    install(app, store=store, clock=clock, policies={FailureType.TRANSIENT_NETWORK: FAST})
    charge = charge_task(app, fail_first=1)
    charge.delay(7, 100)
    failed, retried = worker.drain()
    assert failed.state == states.RETRY
    assert retried.state == states.SUCCESS
    assert retried.result == {"order_id": 7, "charged": 100}
    assert [run["retries"] for run in charge.runs] == [0, 1]
    charge.delay(7, 100)
    (duplicate,) = worker.drain()
    assert duplicate.result == {"order_id": 7, "charged": 100}
    assert len(charge.runs) == 2


def test_a_dead_workers_key_is_taken_over_after_its_lease(
    app: Celery, resilience: Resilience, worker: InProcessWorker, clock: FakeClock
) -> None:
    """A redelivery after the holder's lease ran out (worker killed) runs the body once."""
    charge = charge_task(app)
    guard = resilience.guard(category="payment", ttl=None, lease=None)
    fingerprint = payload_fingerprint((7, 100), {}, func=app.tasks[charge.name].run)
    guard.claim("charge:7", fingerprint=fingerprint).__enter__()  # never completed: it died
    clock.advance(resilience.settings.idempotency_lease + 1)
    charge.delay(7, 100)
    (delivery,) = worker.drain()
    assert delivery.state == states.SUCCESS
    assert len(charge.runs) == 1


def test_direct_calls_are_idempotent_too(app: Celery, resilience: Resilience) -> None:
    """charge(7, 100) twice in-process runs the body once and returns the stored result."""
    charge = charge_task(app)
    assert charge(7, 100) == {"order_id": 7, "charged": 100}
    assert charge(7, 100) == {"order_id": 7, "charged": 100}
    assert len(charge.runs) == 1


def test_a_direct_call_of_a_key_in_progress_raises(app: Celery, resilience: Resilience) -> None:
    """Called directly nothing can wait: IdempotencyInProgress reaches the caller."""
    charge = charge_task(app)
    guard = resilience.guard(category="payment", ttl=None, lease=None)
    fingerprint = payload_fingerprint((7, 100), {}, func=app.tasks[charge.name].run)
    guard.claim("charge:7", fingerprint=fingerprint).__enter__()
    with pytest.raises(IdempotencyInProgress):
        charge(7, 100)


# --------------------------------------------------------------------------- breakers


def api_task(app: Celery, *, fail: bool = False) -> Any:
    """A task calling the payments API (guarded by its breaker)."""
    runs: list[int] = []

    @app.task(
        shared=False, base=ResilientTask, bind=True, name=f"api-{id(runs)}", breaker="payments-api"
    )
    def call_api(self: Any, n: int) -> int:
        runs.append(n)
        if fail:
            raise ConnectionError("payments API refused the connection")
        return n

    call_api.runs = runs
    return call_api


def trip(resilience: Resilience) -> None:
    """Open the payments-api breaker with counted failures."""
    breaker = resilience.breaker("payments-api")
    for _ in range(breaker.failure_threshold or 1):
        breaker.record_failure(ConnectionError("down"))
    assert breaker.state is CircuitState.OPEN


def test_an_open_breaker_defers_to_the_probe_without_running_or_counting(
    app: Celery, resilience: Resilience, worker: InProcessWorker, clock: FakeClock
) -> None:
    """Breaker open: no body run, a retry at the probe time, the failure count unchanged."""
    call_api = api_task(app)
    trip(resilience)
    call_api.delay(1)
    delivery = worker.run_next()
    probe_in = resilience.breaker("payments-api").seconds_until_probe()
    assert delivery.state == states.RETRY
    assert probe_in is not None
    assert probe_in <= delivery.result.when <= probe_in * 1.5  # not all at the probe instant
    assert "circuit breaker 'payments-api' is open" in str(delivery.result.exc)
    assert call_api.runs == []
    (retry_message,) = worker.pending()
    assert FAILURES_HEADER not in retry_message.headers
    assert resilience.dead_letters.list().records == ()
    clock.advance(delivery.result.when)
    probe = worker.run(retry_message)
    assert probe.state == states.SUCCESS
    assert call_api.runs == [1]
    assert resilience.breaker("payments-api").state is CircuitState.CLOSED


def test_the_breaker_is_shared_by_apps_on_the_same_store(
    app: Celery, store: MemoryStore, clock: FakeClock, resilience: Resilience
) -> None:
    """A breaker opened in one worker's process blocks the dependency in another's."""
    other = Celery("other-worker", broker="memory://", set_as_current=False)
    other.conf.task_default_queue = f"{app.conf.task_default_queue}-other"
    install(other, store=store, clock=clock)
    call_api = api_task(other)
    trip(resilience)
    call_api.delay(1)
    (delivery,) = InProcessWorker(other, other.conf.task_default_queue).pending()[:1] or [None]
    assert delivery is not None
    outcome = InProcessWorker(other, other.conf.task_default_queue).run(delivery)
    assert outcome.state == states.RETRY
    assert call_api.runs == []
    other.close()


def test_a_failure_that_opens_the_breaker_retries_at_the_probe(
    app: Celery, store: MemoryStore, clock: FakeClock, worker: InProcessWorker
) -> None:
    """When a failure trips the breaker, the retry waits past the probe, not the short backoff.

    Past it by a seeded spread, so the tasks one outage failed do not all return at once.
    """
    runtime = install(
        app,
        store=store,
        clock=clock,
        rng=random.Random(1),
        policies={FailureType.TRANSIENT_NETWORK: FAST},
    )
    breaker = runtime.breaker("payments-api")
    for _ in range((breaker.failure_threshold or 1) - 1):
        breaker.record_failure(ConnectionError("down"))
    call_api = api_task(app, fail=True)
    call_api.delay(1)
    delivery = worker.run_next()
    assert breaker.state is CircuitState.OPEN
    # The same draw as an engine seeded alike (FAST has no jitter: nothing drawn before).
    expected = RetryEngine(rng=random.Random(1)).spread(breaker.reset_timeout)
    assert breaker.reset_timeout < delivery.result.when <= breaker.reset_timeout * 1.5
    assert delivery.result.when == pytest.approx(expected)


def test_on_breaker_change_is_sent_on_every_transition(app: Celery, resilience: Resilience) -> None:
    """Opening the breaker sends on_breaker_change with the old and new states."""
    seen: list[tuple[str, CircuitState, CircuitState]] = []

    def receiver(sender: str, old_state: CircuitState, new_state: CircuitState, **_: Any) -> None:
        seen.append((sender, old_state, new_state))

    on_breaker_change.connect(receiver)
    try:
        trip(resilience)
    finally:
        on_breaker_change.disconnect(receiver)
    assert seen == [("payments-api", CircuitState.CLOSED, CircuitState.OPEN)]


def test_a_direct_call_through_an_open_breaker_raises(app: Celery, resilience: Resilience) -> None:
    """Called directly, an open breaker raises CircuitOpenError and the body does not run."""
    call_api = api_task(app)
    trip(resilience)
    with pytest.raises(CircuitOpenError):
        call_api(1)
    assert call_api.runs == []


# --------------------------------------------------------------------------- signals


def test_on_dead_letter_is_sent_with_the_record_and_the_exception(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """Dead-lettering sends on_dead_letter(sender=task, record, exception, decision)."""
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append({"sender": sender, **kwargs})

    @app.task(shared=False, base=ResilientTask, bind=True, name="invalid")
    def invalid(self: Any) -> None:
        raise ValueError("bad payload")

    on_dead_letter.connect(receiver)
    try:
        invalid.delay()
        worker.drain()
    finally:
        on_dead_letter.disconnect(receiver)
    (event,) = seen
    (record,) = resilience.dead_letters.list().records
    assert event["sender"].name == "invalid"
    assert event["record"].id == record.id
    assert isinstance(event["exception"], ValueError)
    assert event["decision"].retry is False


class Received:
    """Connects a receiver to signals for the block and keeps what it received."""

    def __init__(self, *signals: Any) -> None:
        self.signals = signals
        self.calls: list[dict[str, Any]] = []

    def receive(self, sender: Any, signal: Any = None, **kwargs: Any) -> None:
        self.calls.append({"signal": signal.name, "sender": sender, **kwargs})

    def __enter__(self) -> Received:
        for signal in self.signals:
            signal.connect(self.receive, weak=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for signal in self.signals:
            signal.disconnect(self.receive)


def test_on_decision_is_sent_for_every_failed_attempt_before_the_retry(
    app: Celery, clock: FakeClock, store: MemoryStore, worker: InProcessWorker
) -> None:
    """A failure sends on_decision with the classification and the engine's verdict."""
    install(app, store=store, clock=clock, policies={FailureType.TRANSIENT_NETWORK: FAST})
    charge = charge_task(app, fail_first=1)
    with Received(on_decision) as got:
        charge.delay(3, 10)
        worker.drain()
    (call,) = got.calls
    assert call["sender"].name == charge.name
    assert isinstance(call["exception"], ConnectionError)
    assert call["decision"].retry is True
    assert call["decision"].delay == FAST.delay(1)
    assert call["decision"].classification.failure_type is FailureType.TRANSIENT_NETWORK
    assert call["request"].id is not None


def test_on_idempotency_reports_miss_then_hit(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """The first run claims the key (miss); a duplicate is answered from the store (hit)."""
    charge = charge_task(app)
    with Received(on_idempotency) as got:
        charge.delay(7, 100)
        charge.delay(7, 100)
        worker.drain()
    assert [(c["key"], c["outcome"]) for c in got.calls] == [
        ("charge:7", "miss"),
        ("charge:7", "hit"),
    ]


def test_on_idempotency_reports_a_conflicting_reuse_of_a_key(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """The same key with other arguments is a conflict."""
    charge = charge_task(app)
    with Received(on_idempotency) as got:
        charge.delay(7, 100)
        charge.delay(7, 250)
        worker.drain()
    assert [c["outcome"] for c in got.calls] == ["miss", "conflict"]


def test_on_breaker_call_reports_admitted_and_rejected_calls(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """A closed breaker admits the call; an open one rejects it with the probe delay."""
    call_api = api_task(app)
    with Received(on_breaker_call) as got:
        call_api.delay(1)
        worker.drain()
        trip(resilience)
        call_api.delay(2)
        worker.run_next()
    admitted = [(c["sender"], c["admitted"], c["retry_after"]) for c in got.calls]
    probe = resilience.breaker("payments-api").seconds_until_probe()
    assert admitted == [("payments-api", True, None), ("payments-api", False, probe)]

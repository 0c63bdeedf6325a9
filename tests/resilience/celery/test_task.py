"""ResilientTask through Celery's tracer: retries, dead letters, control flow, class checks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery, states
from celery.exceptions import Ignore, Reject, Retry
from kombu.exceptions import OperationalError

from resilience import ConfigurationError, FailureType, RetryPolicy
from resilience.celery import FAILURES_HEADER, Resilience, ResilientTask, install

from .conftest import START, CountingStore, InProcessWorker

if TYPE_CHECKING:
    from resilience.storage import MemoryStore

FAST = RetryPolicy(max_retries=2, initial_delay=2.0, factor=2.0, jitter="none")


@pytest.fixture
def fast(app: Celery, store: MemoryStore, clock: Any) -> Resilience:
    """The app with a short, jitter-free policy for network failures."""
    return install(app, store=store, clock=clock, policies={FailureType.TRANSIENT_NETWORK: FAST})


def flaky_task(app: Celery, failures: int, exc: Exception, **options: Any) -> Any:
    """A task failing ``failures`` times with ``exc``, then returning its argument doubled."""
    calls: list[int] = []

    @app.task(shared=False, base=ResilientTask, bind=True, name=f"flaky-{id(calls)}", **options)
    def flaky(self: Any, n: int) -> int:
        calls.append(self.request.retries)
        if len(calls) <= failures:
            raise exc
        return n * 2

    flaky.calls = calls
    return flaky


def test_transient_failures_retry_with_the_engines_countdowns(
    app: Celery, fast: Resilience, worker: InProcessWorker
) -> None:
    """Two network failures become two Celery retries with the policy's delays, then success."""
    task = flaky_task(app, 2, ConnectionError("refused"))
    task.delay(21)
    first, second, third = worker.drain()
    assert (first.state, second.state, third.state) == (states.RETRY, states.RETRY, states.SUCCESS)
    assert isinstance(first.result, Retry)
    assert (first.result.when, second.result.when) == (2.0, 4.0)
    assert third.result == 42
    assert second.headers[FAILURES_HEADER] == 1
    assert third.headers[FAILURES_HEADER] == 2
    assert third.headers["retries"] == 2
    assert third.headers["eta"] is not None
    assert len(fast.dead_letters.list().records) == 0
    stats = fast.engine.statistics(task.name).by_type[FailureType.TRANSIENT_NETWORK]
    assert (stats.failures, stats.successes) == (1, 1)


def test_permanent_failure_is_dead_lettered_and_the_task_fails(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """A validation error is not retried: FAILURE with the original exception, one dead letter."""
    task = flaky_task(app, 5, ValueError("order total must be positive"))
    result = task.apply_async((3,), priority=5)
    (delivery,) = worker.drain()
    assert delivery.state == states.FAILURE
    assert isinstance(delivery.result, ValueError)
    (record,) = resilience.dead_letters.list().records
    assert record.task_name == task.name
    assert record.task_id == result.id
    assert record.failure_type is FailureType.PERMANENT_VALIDATION
    assert record.args == [3]
    assert record.retry_count == 0
    assert record.priority == 5
    assert record.queue == app.conf.task_default_queue
    assert "ValueError" in record.traceback
    assert "raise exc" in record.traceback


def test_exhausted_retries_are_dead_lettered(
    app: Celery, fast: Resilience, worker: InProcessWorker, clock: Any
) -> None:
    """After the policy's last retry, the next failure goes to the dead-letter queue."""
    task = flaky_task(app, 10, ConnectionError("refused"))
    task.delay(1)
    deliveries = worker.drain()
    assert [d.state for d in deliveries] == [states.RETRY, states.RETRY, states.FAILURE]
    (record,) = fast.dead_letters.list().records
    assert record.retry_count == 2
    assert record.failure_type is FailureType.TRANSIENT_NETWORK
    assert record.first_failed_at == START
    assert task.calls == [0, 1, 2]


def test_per_task_max_retries_and_policies_override_the_app(
    app: Celery, fast: Resilience, worker: InProcessWorker
) -> None:
    """resilience={"max_retries": 0} dead-letters at once; per-task policies set the countdown."""
    never = flaky_task(app, 1, ConnectionError("x"), resilience={"max_retries": 0})
    never.delay(1)
    assert [d.state for d in worker.drain()] == [states.FAILURE]
    slow_policy = RetryPolicy(max_retries=1, initial_delay=30.0, jitter="none")
    slow = flaky_task(
        app, 1, ConnectionError("x"), resilience={"policies": {"TRANSIENT_NETWORK": slow_policy}}
    )
    slow.delay(1)
    retried, done = worker.drain()
    assert retried.result.when == 30.0
    assert done.state == states.SUCCESS


@pytest.mark.parametrize(
    ("raised", "state"),
    [(Ignore(), states.IGNORED), (Reject("bad", requeue=False), states.REJECTED)],
)
def test_celery_control_flow_is_never_classified(
    app: Celery, resilience: Resilience, worker: InProcessWorker, raised: Exception, state: str
) -> None:
    """Ignore and Reject pass through untouched: no retry, no dead letter, no log."""

    @app.task(shared=False, base=ResilientTask, bind=True, name=f"control-{state}")
    def control(self: Any) -> None:
        raise raised

    control.delay()
    (delivery,) = worker.drain()
    assert delivery.state == state
    assert resilience.dead_letters.list().records == ()


def test_a_manual_retry_in_the_body_passes_through(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """self.retry(countdown=7) in the body is Celery's: no failure counted, no dead letter."""

    @app.task(shared=False, base=ResilientTask, bind=True, name="manual")
    def manual(self: Any) -> str:
        if self.request.retries == 0:
            raise self.retry(countdown=7)
        return "done"

    manual.delay()
    first, second = worker.drain()
    assert first.result.when == 7
    assert FAILURES_HEADER not in second.headers
    assert second.result == "done"
    assert resilience.dead_letters.list().records == ()


def test_an_unpublishable_retry_is_dead_lettered_not_dropped(
    app: Celery, fast: Resilience, worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the broker refuses the retry message, the run lands in the dead-letter queue."""
    task = flaky_task(app, 1, ConnectionError("refused"))
    task.delay(1)
    message = worker.fetch()
    assert message is not None

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("broker down")

    monkeypatch.setattr(type(app.tasks[task.name]), "apply_async", refuse)
    delivery = worker.run(message)
    assert delivery.state == states.FAILURE
    assert isinstance(delivery.result, ConnectionError)
    (record,) = fast.dead_letters.list().records
    assert record.failure_type is FailureType.TRANSIENT_NETWORK


def test_success_of_a_plain_task_touches_no_store_and_logs_nothing(
    app: Celery, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The happy path makes no store call and writes no log line."""
    counting = CountingStore()
    install(app, store=counting, clock=clock)  # type: ignore[arg-type]
    worker = InProcessWorker(app, app.conf.task_default_queue)

    @app.task(shared=False, base=ResilientTask, bind=True, name="plain")
    def plain(self: Any, n: int) -> int:
        return n + 1

    caplog.set_level(logging.DEBUG, logger="resilience")
    for n in range(3):
        plain.delay(n)
    assert [d.result for d in worker.drain()] == [1, 2, 3]
    assert counting.calls == []
    assert caplog.records == []


def test_one_log_line_per_failure_with_task_id_type_and_decision(
    app: Celery, fast: Resilience, worker: InProcessWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed attempt logs one line naming the task, its id, the type and the decision."""
    caplog.set_level(logging.DEBUG, logger="resilience.celery")
    task = flaky_task(app, 10, ConnectionError("refused"))
    result = task.delay(1)
    worker.drain()
    lines = [r for r in caplog.records if r.name == "resilience.celery"]
    assert [r.decision for r in lines] == ["retry", "retry", "dead_letter"]  # type: ignore[attr-defined]
    assert all(r.task_id == result.id for r in lines)  # type: ignore[attr-defined]
    assert all(r.failure_type == "TRANSIENT_NETWORK" for r in lines)  # type: ignore[attr-defined]
    assert "retry in 2s" in lines[0].getMessage()
    assert "dead-lettered as" in lines[2].getMessage()
    assert "refused" not in lines[0].getMessage()  # exception texts may hold personal data


def test_autoretry_for_is_refused_when_the_class_is_built() -> None:
    """A ResilientTask with autoretry_for fails at class creation, naming the task."""
    with pytest.raises(ConfigurationError) as caught:

        class Stacked(ResilientTask):
            name = "billing.charge"
            autoretry_for = (ConnectionError,)

    assert caught.value.key == "autoretry_for"
    assert "billing.charge" in str(caught.value)


def test_autoretry_for_is_refused_through_app_task(app: Celery) -> None:
    """app.task(base=ResilientTask, autoretry_for=...) fails as soon as Celery builds it."""
    app.finalize()
    with pytest.raises(ConfigurationError, match="autoretry_for"):

        @app.task(shared=False, base=ResilientTask, autoretry_for=(OSError,), name="stacked")
        def stacked() -> None: ...


def test_celery_max_retries_is_refused() -> None:
    """Celery's max_retries on a ResilientTask is refused in favour of resilience={...}."""
    with pytest.raises(ConfigurationError) as caught:

        class Limited(ResilientTask):
            max_retries = 3

    assert caught.value.key == "max_retries"


def test_idempotent_tasks_default_to_late_acks_and_reject_on_worker_lost(app: Celery) -> None:
    """A task with an idempotency key acks late and requeues on worker loss unless told not to."""
    app.finalize()

    @app.task(shared=False, base=ResilientTask, idempotency_key=True, name="keyed")
    def keyed() -> None: ...

    @app.task(shared=False, base=ResilientTask, idempotency_key=True, acks_late=False, name="early")
    def early() -> None: ...

    @app.task(shared=False, base=ResilientTask, name="unkeyed")
    def unkeyed() -> None: ...

    assert (keyed.acks_late, keyed.reject_on_worker_lost) == (True, True)
    assert early.acks_late is False
    assert unkeyed.acks_late is False


def test_reading_the_base_class_app_does_not_configure_every_task(app: Celery) -> None:
    """Introspecting ResilientTask.app must not copy an app's settings onto the base."""
    assert ResilientTask.app is not None
    assert "acks_late" not in ResilientTask.__dict__
    app.finalize()

    @app.task(shared=False, base=ResilientTask, idempotency_key=True, name="after-introspection")
    def keyed() -> None: ...

    assert keyed.acks_late is True


def test_direct_call_runs_the_body_and_propagates_failures(
    app: Celery, resilience: Resilience
) -> None:
    """task(...) runs the body in-process; a failure propagates without retry or dead letter."""
    task = flaky_task(app, 1, ConnectionError("refused"))
    with pytest.raises(ConnectionError):
        task(1)
    assert task(2) == 4
    assert resilience.dead_letters.list().records == ()


def test_direct_call_sees_a_direct_request(app: Celery, resilience: Resilience) -> None:
    """Inside a direct call the body sees called_directly and its own arguments."""
    seen: list[Any] = []

    @app.task(shared=False, base=ResilientTask, bind=True, name="introspect")
    def introspect(self: Any, n: int) -> None:
        seen.append((self.request.called_directly, self.request.args))

    introspect(5)
    assert seen == [(True, (5,))]


def test_eager_apply_retries_recursively_and_succeeds(app: Celery, fast: Resilience) -> None:
    """apply() (eager) retries without waiting, carrying the failure count, then succeeds."""
    task = flaky_task(app, 2, ConnectionError("refused"))
    result = task.apply((4,))
    assert result.state == states.SUCCESS
    assert result.result == 8
    assert task.calls == [0, 1, 2]
    assert fast.dead_letters.list().records == ()


def test_eager_apply_dead_letters_a_permanent_failure(app: Celery, resilience: Resilience) -> None:
    """apply() of a failing task ends FAILURE and stores one dead letter."""
    task = flaky_task(app, 1, ValueError("bad"))
    result = task.apply((4,))
    assert result.state == states.FAILURE
    assert len(resilience.dead_letters.list().records) == 1

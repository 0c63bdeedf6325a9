"""Dead-letter replay through Celery, the beat task, and runs lost with their worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Celery, states
from celery.worker.request import Request

from resilience import DeadLetterStatus, FailureType, FakeClock, RetryEngine, RetryPolicy
from resilience.celery import (
    DEAD_LETTER_HEADER,
    PROCESS_DEAD_LETTERS,
    Resilience,
    ResilientTask,
    install,
    installed,
)
from resilience.celery.signals import on_dead_letter
from resilience.dead_letter import REPLAY_LEASE
from resilience.errors import DeadLetterConflict, ResilienceError
from resilience.taxonomy import classify

if TYPE_CHECKING:
    from resilience.storage import MemoryStore

    from .conftest import InProcessWorker


def failing_then_fixed(app: Celery, *, failures: int, **options: Any) -> Any:
    """A task failing permanently ``failures`` times (a bug), then working once fixed."""
    runs: list[tuple[Any, ...]] = []

    @app.task(shared=False, base=ResilientTask, bind=True, name=f"report-{id(runs)}", **options)
    def build_report(self: Any, report_id: int, *, fmt: str = "pdf") -> str:
        runs.append((report_id, fmt, self.request.id))
        if len(runs) <= failures:
            raise ValueError(f"unknown template for report {report_id}")
        return f"report-{report_id}.{fmt}"

    build_report.runs = runs
    return build_report


def dead_letter_one(app: Celery, worker: InProcessWorker, task: Any, **options: Any) -> str:
    """Run the task once into the dead-letter queue; returns the failed task id."""
    result = task.apply_async((42,), {"fmt": "csv"}, **options)
    (delivery,) = worker.drain()
    assert delivery.state == states.FAILURE
    return str(result.id)


def test_replay_re_enqueues_the_same_task_with_a_new_id_and_the_record_header(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """retry() sends name, args, kwargs, priority anew, with the record id in a header."""
    task = failing_then_fixed(app, failures=1)
    failed_id = dead_letter_one(app, worker, task, priority=4)
    (record,) = resilience.dead_letters.list().records
    retried = resilience.dead_letters.retry(record.id, actor="ann")
    assert retried.status is DeadLetterStatus.RETRYING
    new_id = retried.history[-1].task_id
    assert new_id is not None
    assert new_id != failed_id
    (message,) = worker.pending()
    assert message.headers["id"] == new_id
    assert message.headers["task"] == task.name
    assert message.headers[DEAD_LETTER_HEADER] == record.id
    assert message.properties["priority"] == 4
    assert message.delivery_info["routing_key"] == app.conf.task_default_queue
    args, kwargs, _ = message.decode()
    assert (args, kwargs) == ([42], {"fmt": "csv"})


def test_a_replay_that_succeeds_resolves_the_record(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """The replayed run succeeds on the worker and its dead letter becomes RESOLVED."""
    task = failing_then_fixed(app, failures=1)
    dead_letter_one(app, worker, task)
    (record,) = resilience.dead_letters.list().records
    resilience.dead_letters.retry(record.id, actor="ann")
    (replayed,) = worker.drain()
    assert replayed.state == states.SUCCESS
    assert replayed.result == "report-42.csv"
    resolved = resilience.dead_letters.get(record.id)
    assert resolved is not None
    assert resolved.status is DeadLetterStatus.RESOLVED
    assert len(resilience.dead_letters.list().records) == 1


def test_a_replay_that_fails_again_updates_the_record_instead_of_adding_one(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """A failed replay calls record_retry_failed: back to PENDING, retry_count + 1."""
    task = failing_then_fixed(app, failures=2)
    dead_letter_one(app, worker, task)
    (record,) = resilience.dead_letters.list().records
    resilience.dead_letters.retry(record.id, actor="ann")
    (replayed,) = worker.drain()
    assert replayed.state == states.FAILURE
    (again,) = resilience.dead_letters.list().records
    assert again.id == record.id
    assert again.status is DeadLetterStatus.PENDING
    assert again.retry_count == record.retry_count + 1


def test_a_replay_of_an_idempotent_task_runs_the_body_again(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """Regression: a DLQ replay is never answered by a stored failure of its key."""
    task = failing_then_fixed(app, failures=1, idempotency_key="report:{report_id}")
    dead_letter_one(app, worker, task)
    (record,) = resilience.dead_letters.list().records
    resilience.dead_letters.retry(record.id, actor="ann")
    (replayed,) = worker.drain()
    assert replayed.result == "report-42.csv"
    assert len(task.runs) == 2


def test_bulk_replay_re_enqueues_every_selected_record(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """bulk_retry sends one message per record; their runs resolve them all."""
    task = failing_then_fixed(app, failures=3)
    for _ in range(3):
        dead_letter_one(app, worker, task)
    ids = [r.id for r in resilience.dead_letters.list().records]
    outcome = resilience.dead_letters.bulk_retry(ids=ids, actor="ann")
    assert sorted(outcome.retried) == sorted(ids)
    assert [d.state for d in worker.drain()] == [states.SUCCESS] * 3
    statuses = {r.status for r in resilience.dead_letters.list().records}
    assert statuses == {DeadLetterStatus.RESOLVED}


def mail_task(app: Celery, *, replays_succeed: bool = True, **options: Any) -> Any:
    """A task whose SMTP server refuses it (transient), until it runs as a DLQ replay."""

    @app.task(shared=False, base=ResilientTask, bind=True, name="flaky-mail", **options)
    def send_mail(self: Any, to: str) -> str:
        replayed = self.request.headers and self.request.headers.get(DEAD_LETTER_HEADER)
        if replayed and replays_succeed:
            return f"sent to {to}"
        raise ConnectionError("smtp down")

    return send_mail


QUICK = RetryPolicy(max_retries=1, initial_delay=5.0, jitter="none")
NEVER = RetryPolicy(max_retries=0)


def test_the_beat_task_replays_due_records(
    app: Celery, store: MemoryStore, worker: InProcessWorker, clock: FakeClock
) -> None:
    """resilience.process_dead_letters replays records whose automatic retry is due.

    The record of a run that spent its retries gets one automatic retry, after the
    configured policy's initial delay (not the default policy's 60 s).
    """
    runtime = install(app, store=store, clock=clock, policies={"TRANSIENT_NETWORK": QUICK})
    send_mail = mail_task(app)
    send_mail.delay("ann@example.org")
    assert [d.state for d in worker.drain()] == [states.RETRY, states.FAILURE]
    (record,) = runtime.dead_letters.list().records
    assert record.retry_count == 1
    assert record.next_retry_at == clock.time() + 5.0
    process = app.tasks[PROCESS_DEAD_LETTERS]
    assert process.delay().id
    (beat_run,) = worker.drain()
    assert beat_run.result == []
    clock.advance(5.0)
    process.delay()
    beat_run, replayed = worker.drain()
    assert beat_run.result == [record.id]
    assert replayed.result == "sent to ann@example.org"
    resolved = runtime.dead_letters.get(record.id)
    assert resolved is not None
    assert resolved.status is DeadLetterStatus.RESOLVED


@pytest.mark.parametrize(
    ("install_options", "task_options"),
    [
        pytest.param({"policies": {"TRANSIENT_NETWORK": NEVER}}, {}, id="app-policy"),
        pytest.param(
            {}, {"resilience": {"policies": {"TRANSIENT_NETWORK": NEVER}}}, id="task-policy"
        ),
        pytest.param({}, {"resilience": {"max_retries": 0}}, id="task-cap"),
    ],
)
def test_a_policy_that_never_retries_gets_no_automatic_dead_letter_retry(
    app: Celery,
    store: MemoryStore,
    worker: InProcessWorker,
    clock: FakeClock,
    install_options: dict[str, Any],
    task_options: dict[str, Any],
) -> None:
    """max_retries=0 (app or task policy, or the task's cap): the beat never replays it.

    Regression: the dead letter used to get next_retry_at = now + 60 s from the
    classification alone, and the beat task replayed what the operator had said
    must never be retried.
    """
    runtime = install(app, store=store, clock=clock, **install_options)
    send_mail = mail_task(app, **task_options)
    send_mail.delay("ann@example.org")
    assert [d.state for d in worker.drain()] == [states.FAILURE]
    (record,) = runtime.dead_letters.list().records
    assert record.failure_type is FailureType.TRANSIENT_NETWORK
    assert record.next_retry_at is None
    clock.advance(86_400)
    app.tasks[PROCESS_DEAD_LETTERS].delay()
    (beat_run,) = worker.drain()
    assert beat_run.result == []
    after = runtime.dead_letters.get(record.id)
    assert after is not None
    assert after.status is DeadLetterStatus.PENDING


@pytest.mark.parametrize(
    ("install_options", "task_options", "delay"),
    [
        pytest.param(
            {"policies": {"TRANSIENT_NETWORK": RetryPolicy(initial_delay=7.0, jitter="none")}},
            {},
            7.0,
            id="app-policy",
        ),
        pytest.param(
            {},
            {
                "resilience": {
                    "policies": {
                        "TRANSIENT_NETWORK": RetryPolicy(initial_delay=11.0, jitter="none")
                    }
                }
            },
            11.0,
            id="task-policy",
        ),
    ],
)
def test_a_failed_replay_is_rescheduled_by_the_configured_policy(
    app: Celery,
    store: MemoryStore,
    worker: InProcessWorker,
    clock: FakeClock,
    install_options: dict[str, Any],
    task_options: dict[str, Any],
    delay: float,
) -> None:
    """record_retry_failed, called by the worker, waits the configured policy's delay."""
    runtime = install(app, store=store, clock=clock, **install_options)
    send_mail = mail_task(app, replays_succeed=False, **task_options)
    # A record whose retry could not be published: no retry made yet.
    record = runtime.dead_letters.add(
        task_name=send_mail.name, exc=ConnectionError("smtp down"), args=["ann@example.org"]
    )
    runtime.dead_letters.retry(record.id, actor="ann")
    clock.advance(2.0)
    (replayed,) = worker.drain()
    assert replayed.state == states.FAILURE
    failed = runtime.dead_letters.get(record.id)
    assert failed is not None
    assert failed.status is DeadLetterStatus.PENDING
    assert failed.retry_count == 1
    assert failed.next_retry_at == clock.time() + delay


def test_the_classifier_context_carries_the_tasks_cap_and_time_limits(
    app: Celery, store: MemoryStore, worker: InProcessWorker, clock: FakeClock
) -> None:
    """A failed run is classified with retry_count, max_retries and the time limits."""
    contexts: list[dict[str, object]] = []

    def recording(exc: BaseException, context: Any = None) -> Any:
        contexts.append(dict(context or {}))
        return classify(exc, context)

    engine = RetryEngine(store=store, clock=clock, classifier=recording)
    install(app, store=store, clock=clock, engine=engine)

    @app.task(
        shared=False,
        base=ResilientTask,
        bind=True,
        name="limited",
        soft_time_limit=5,
        time_limit=10,
        resilience={"max_retries": 1},
    )
    def limited(self: Any) -> None:
        raise ConnectionError("refused")

    limited.delay()
    limited.apply_async(soft_time_limit=3, time_limit=4)
    worker.drain()
    known = {"retry_count", "max_retries", "soft_time_limit", "time_limit"}
    assert [{k: v for k, v in c.items() if k in known} for c in contexts] == [
        {"retry_count": 0, "max_retries": 1, "soft_time_limit": 5, "time_limit": 10},
        {"retry_count": 0, "max_retries": 1, "soft_time_limit": 3, "time_limit": 4},
        {"retry_count": 1, "max_retries": 1, "soft_time_limit": 5, "time_limit": 10},
        {"retry_count": 1, "max_retries": 1, "soft_time_limit": 3, "time_limit": 4},
    ]


def test_a_capped_task_that_spent_its_retries_is_classified_exhausted(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """The taxonomy's retries-exhausted rule fires in Celery: the dead letter waits for a person."""
    send_mail = mail_task(app, resilience={"max_retries": 1})
    send_mail.delay("ann@example.org")
    assert [d.state for d in worker.drain()] == [states.RETRY, states.FAILURE]
    (record,) = resilience.dead_letters.list().records
    assert record.retry_count == 1
    assert record.next_retry_at is None
    assert "retries exhausted (retry_count 1 >= max_retries 1)" in (record.history[0].note or "")


def test_the_beat_task_takes_over_a_replay_whose_message_was_lost(
    app: Celery, resilience: Resilience, worker: InProcessWorker, clock: FakeClock
) -> None:
    """A lost replay message leaves the record RETRYING until its lease ends, not forever."""
    task = failing_then_fixed(app, failures=1)
    dead_letter_one(app, worker, task)
    (record,) = resilience.dead_letters.list().records
    resilience.dead_letters.retry(record.id, actor="ann")
    assert len(worker.pending()) == 1  # the replay message, dropped: lost by the broker
    process = app.tasks[PROCESS_DEAD_LETTERS]
    clock.advance(REPLAY_LEASE - 1)
    process.delay()
    (beat_run,) = worker.drain()
    assert beat_run.result == []
    with pytest.raises(DeadLetterConflict):
        resilience.dead_letters.retry(record.id, actor="bob")
    clock.advance(1)
    process.delay()
    beat_run, replayed = worker.drain()
    assert beat_run.result == [record.id]
    assert replayed.result == "report-42.csv"
    resolved = resilience.dead_letters.get(record.id)
    assert resolved is not None
    assert resolved.status is DeadLetterStatus.RESOLVED
    assert [h.action for h in resolved.history] == [
        "add",
        "retry",
        "enqueued",
        "take_over",
        "enqueued",
        "resolve",
    ]


def test_replay_refuses_arguments_that_were_redacted(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """A record whose stored arguments hold redaction markers is not replayed with them."""

    @app.task(shared=False, base=ResilientTask, bind=True, name="login")
    def login(self: Any, user: str, password: str) -> None:
        raise ValueError("bad credentials")

    login.delay(user="ann", password="hunter2")  # noqa: S106 - a fake secret to redact
    worker.drain()
    (record,) = resilience.dead_letters.list().records
    assert record.kwargs["password"] != "hunter2"  # noqa: S105 - the fake secret above
    with pytest.raises(ResilienceError, match="redacted"):
        resilience.dead_letters.retry(record.id, actor="ann")
    back = resilience.dead_letters.get(record.id)
    assert back is not None
    assert back.status is DeadLetterStatus.PENDING
    assert worker.pending() == []


def test_a_run_lost_with_its_worker_is_dead_lettered_as_a_crash(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """WorkerLostError without redelivery: the run is stored as SYSTEM_WORKER_CRASH."""

    @app.task(shared=False, base=ResilientTask, bind=True, name="heavy")
    def heavy(self: Any, n: int) -> None: ...

    seen: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs["record"])

    heavy.delay(3)
    message = worker.fetch()
    assert message is not None
    request = Request(message, app=app, task=app.tasks["heavy"])
    on_dead_letter.connect(receiver)
    try:
        try:
            raise WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL).")
        except WorkerLostError:
            request.on_failure(ExceptionInfo(), send_failed_event=False)
    finally:
        on_dead_letter.disconnect(receiver)
    (record,) = resilience.dead_letters.list().records
    assert record.failure_type is FailureType.SYSTEM_WORKER_CRASH
    assert record.args == [3]
    assert seen == [record]


def test_a_lost_idempotent_run_is_redelivered_not_dead_lettered(
    app: Celery, resilience: Resilience, worker: InProcessWorker
) -> None:
    """With the idempotent defaults (acks_late, reject_on_worker_lost) the message is requeued."""

    @app.task(shared=False, base=ResilientTask, bind=True, name="keyed", idempotency_key=True)
    def keyed(self: Any, n: int) -> None: ...

    keyed.delay(3)
    message = worker.fetch()
    assert message is not None
    request = Request(message, app=app, task=app.tasks["keyed"])
    requeued: list[bool] = []
    request.reject = lambda requeue=False: requeued.append(requeue)  # type: ignore[method-assign]
    try:
        raise WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL).")
    except WorkerLostError:
        request.on_failure(ExceptionInfo(), send_failed_event=False)
    assert requeued == [True]
    assert resilience.dead_letters.list().records == ()


def test_install_keeps_a_given_queues_own_replay(app: Celery, store: MemoryStore) -> None:
    """A dead-letter queue passed with its own replay callable keeps it."""
    from resilience import DeadLetterQueue

    mine = DeadLetterQueue(store, replay=lambda record: "mine")
    runtime = install(app, store=store, dead_letters=mine)
    assert runtime.dead_letters is mine
    assert mine.replay is not None
    assert mine.replay.__name__ == "<lambda>"  # type: ignore[attr-defined]
    bare = DeadLetterQueue(store)
    assert install(app, store=store, dead_letters=bare).dead_letters.replay is not None


def test_the_apps_dead_letter_queue_follows_the_engines_policies(
    app: Celery, store: MemoryStore
) -> None:
    """install() gives its queue (built, or given without one) engine.policy_for; own one stays."""
    from resilience import DeadLetterQueue, default_policy

    runtime = install(app, store=store, policies={"TRANSIENT_NETWORK": NEVER})
    assert runtime.dead_letters.policy_for == runtime.engine.policy_for
    bare = DeadLetterQueue(store)
    again = install(app, store=store, policies={"TRANSIENT_NETWORK": NEVER}, dead_letters=bare)
    assert bare.policy_for == again.engine.policy_for
    record = bare.add(task_name="sync", exc=ConnectionError("refused"))
    assert record.next_retry_at is None  # the app's NEVER policy, not the default's 60 s
    mine = DeadLetterQueue(store, policy_for=default_policy)
    assert install(app, store=store, dead_letters=mine).dead_letters.policy_for is default_policy


def test_installed_moves_the_queues_policies_to_the_new_engine_and_keeps_its_lease(
    app: Celery, store: MemoryStore
) -> None:
    """installed(): the new engine's policies apply; a custom lookup and the lease are kept."""
    from resilience import DeadLetterQueue, default_policy
    from resilience.storage import MemoryStore

    install(
        app,
        store=store,
        policies={"TRANSIENT_NETWORK": NEVER},
        dead_letters=DeadLetterQueue(store, replay_lease=120),
    )
    with installed(app, store=MemoryStore(), clock=FakeClock()) as inside:
        assert inside.dead_letters.policy_for == inside.engine.policy_for
        assert inside.dead_letters.replay_lease == 120
        record = inside.dead_letters.add(task_name="sync", exc=ConnectionError("refused"))
        assert record.next_retry_at is None
    install(app, store=store, dead_letters=DeadLetterQueue(store, policy_for=default_policy))
    with installed(app, store=MemoryStore(), clock=FakeClock()) as inside:
        assert inside.dead_letters.policy_for is default_policy

"""The simulation's ``Task.retry`` does what Celery's ``Task.retry`` does, faster.

Each scenario runs twice in one app with one seed: once with the simulation's
``retry`` installed (``pytest_taskchaos._publish.fast_retry``), once with Celery's
own. Both runs must queue equal messages, hand equal ``Retry`` exceptions to the
tracer (its ``task_retry`` signal and ``on_retry``), end tasks alike (max retries,
``exc=``, ``throw=False``, a refused publish) and record equal histories.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery, Task
from celery import signals as celery_signals
from celery.app.task import Context
from celery.exceptions import MaxRetriesExceededError, Retry

from pytest_taskchaos import _publish
from pytest_taskchaos._parts import Message, VirtualQueue
from pytest_taskchaos.simulation import Simulation
from resilience import RetryPolicy
from resilience.celery import ResilientTask

if TYPE_CHECKING:
    from collections.abc import Callable

POLICY = RetryPolicy(max_retries=3, initial_delay=2.0, jitter="none")
LATER = datetime(2026, 1, 5, 13, tzinfo=UTC)


class Outcome:
    """What one simulation run queued, raised, signalled and recorded."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.retries: list[tuple[Any, ...]] = []
        self.failures: list[tuple[Any, ...]] = []
        self.on_retry: list[tuple[Any, ...]] = []
        self.children: list[list[str]] = []
        self.fast = 0
        self.fingerprint = ""
        self.history = ""


def make_app() -> tuple[Celery, dict[str, Any], list[tuple[Any, ...]], list[list[str]]]:
    """An app whose tasks retry every way the fast path and its fallbacks handle.

    Returns:
        The app, its tasks by short name, what ``on_retry`` saw, the parent's children.
    """
    app = Celery("fastretry", broker="memory://", set_as_current=False)
    on_retry: list[tuple[Any, ...]] = []
    children: list[list[str]] = []

    class Noted(Task):  # type: ignore[misc]
        def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            on_retry.append((self.name, task_id, type(exc).__name__, str(exc), args, kwargs))

    @app.task(base=Noted, bind=True, name="fr.exhausted", shared=False, max_retries=2)
    def exhausted(self: Any, order: int) -> int:
        raise self.retry(countdown=30, headers={"hop": self.request.retries})

    @app.task(base=Noted, bind=True, name="fr.with_exc", shared=False, max_retries=1)
    def with_exc(self: Any, order: int) -> int:
        try:
            raise ValueError(f"bad order {order}")
        except ValueError as exc:
            raise self.retry(exc=exc, countdown=5) from exc

    @app.task(base=Noted, bind=True, name="fr.no_throw", shared=False)
    def no_throw(self: Any) -> str:
        if self.request.retries == 0:
            returned = self.retry(countdown=5, throw=False)
            return f"{type(returned).__name__} {returned.when}"
        return "again"

    @app.task(base=Noted, bind=True, name="fr.routed", shared=False, default_retry_delay=9)
    def routed(self: Any) -> int:
        if self.request.retries == 0:
            raise self.retry()
        if self.request.retries == 1:
            raise self.retry(eta=LATER, max_retries=5)
        return self.request.retries

    @app.task(base=Noted, bind=True, name="fr.rebinding", shared=False)
    def rebinding(self: Any, order: int) -> int:
        if self.request.retries == 0:
            raise self.retry(args=(order + 1,), countdown=1)
        return order

    @app.task(
        base=ResilientTask,
        bind=True,
        name="fr.resilient",
        shared=False,
        resilience={"policies": {"TRANSIENT_NETWORK": POLICY}},
    )
    def resilient(self: Any, order: int) -> int:
        if self.request.retries < 2:
            raise ConnectionResetError("connection reset by peer")
        return order

    @app.task(bind=True, name="fr.parent", shared=False)
    def parent(self: Any) -> None:
        resilient.delay(7)
        children.append([child.id for child in self.request.children])

    tasks = {
        "exhausted": exhausted,
        "with_exc": with_exc,
        "no_throw": no_throw,
        "routed": routed,
        "rebinding": rebinding,
        "resilient": resilient,
        "parent": parent,
    }
    return app, tasks, on_retry, children


def record(
    monkeypatch: pytest.MonkeyPatch,
    made: tuple[Celery, dict[str, Any], list[tuple[Any, ...]], list[list[str]]],
    scenario: Callable[[Simulation, dict[str, Any]], None],
    *,
    fast: bool,
) -> Outcome:
    """Run a scenario in a simulation of the app; ``fast=False``: Celery's own retry."""
    app, tasks, on_retry, children = made
    on_retry.clear()
    children.clear()
    outcome = Outcome()
    pushed = VirtualQueue.push

    def push(queue: VirtualQueue, message: Message) -> None:
        outcome.messages.append(message)
        pushed(queue, message)

    applied = _publish._apply_signature

    def counted(sig: Any) -> Any:
        outcome.fast += 1
        return applied(sig)

    def retried(sender: Any, request: Any, reason: Retry, einfo: Any, **_: Any) -> None:
        outcome.retries.append(
            (
                sender.name,
                request.id,
                type(reason).__name__,
                str(reason),
                reason.when,
                reason.is_eager,
                repr(reason.exc),
                reason.excs,
                dict(reason.sig),
                einfo.type.__name__,
            )
        )

    def failed(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
        context = exception.__context__
        outcome.failures.append(
            (sender.name, task_id, type(exception).__name__, str(exception), repr(context))
        )

    with monkeypatch.context() as patch:
        patch.setattr(VirtualQueue, "push", push)
        patch.setattr(_publish, "_apply_signature", counted)
        if not fast:
            patch.setattr(Simulation, "_patch_retry", lambda self, stack: None)
        celery_signals.task_retry.connect(retried, weak=False, dispatch_uid="fr-retry")
        celery_signals.task_failure.connect(failed, weak=False, dispatch_uid="fr-failure")
        try:
            with Simulation(app, seed=11) as sim:
                scenario(sim, tasks)
                sim.run_until_idle()
        finally:
            celery_signals.task_retry.disconnect(dispatch_uid="fr-retry")
            celery_signals.task_failure.disconnect(dispatch_uid="fr-failure")
    outcome.on_retry = list(on_retry)
    outcome.children = list(children)
    outcome.fingerprint = sim.fingerprint()
    outcome.history = sim.describe()
    return outcome


def both(
    monkeypatch: pytest.MonkeyPatch, scenario: Callable[[Simulation, dict[str, Any]], None]
) -> tuple[Outcome, Outcome]:
    """The scenario with Celery's retry, then with the simulation's, in one app (one reply_to)."""
    made = make_app()
    celery = record(monkeypatch, made, scenario, fast=False)
    return celery, record(monkeypatch, made, scenario, fast=True)


def every_kind(sim: Simulation, tasks: dict[str, Any]) -> None:
    """One task of each kind, one of them from a queue with a priority."""
    tasks["exhausted"].delay(1)
    tasks["with_exc"].delay(2)
    tasks["no_throw"].delay()
    tasks["routed"].apply_async(queue="side", priority=4)
    tasks["resilient"].delay(3)
    tasks["parent"].delay()


def test_fast_retries_equal_celerys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages, Retry exceptions, on_retry, failures and histories match Celery's retry."""
    celery, fast = both(monkeypatch, every_kind)
    assert celery.fast == 0
    # exhausted x2, with_exc x1, no_throw x1, routed x2, resilient x2 twice (one via parent).
    assert fast.fast == 10
    assert len(fast.messages) == len(celery.messages)
    for ours, theirs in zip(fast.messages, celery.messages, strict=True):
        assert ours == theirs
    assert fast.retries == celery.retries
    assert fast.on_retry == celery.on_retry
    assert fast.failures == celery.failures
    assert fast.children == celery.children
    assert fast.history == celery.history
    assert fast.fingerprint == celery.fingerprint


def test_max_retries_end_the_task_as_celery_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past max_retries: MaxRetriesExceededError, or the given exc raised with its context."""
    fast = both(monkeypatch, every_kind)[1]
    by_task = {failure[0]: failure for failure in fast.failures}
    exhausted = by_task["fr.exhausted"]
    assert exhausted[2] == MaxRetriesExceededError.__name__
    assert exhausted[3].startswith("Can't retry fr.exhausted[")
    assert exhausted[3].endswith("args:(1,) kwargs:{}")
    assert by_task["fr.with_exc"][2:4] == ("ValueError", "bad order 2")
    assert len(fast.failures) == 2


def test_retry_keeps_queue_priority_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry keeps its queue and priority, counts retries and honours eta and throw=False."""
    fast = both(monkeypatch, every_kind)[1]
    routed = [m for m in fast.messages if m.task_name == "fr.routed"]
    assert [m.queue for m in routed] == ["side"] * 3
    assert [m.delivery_info["priority"] for m in routed] == [4] * 3
    assert [m.headers["retries"] for m in routed] == [0, 1, 2]
    assert routed[2].headers["eta"] == LATER.isoformat()
    exhausted = [m for m in fast.messages if m.task_name == "fr.exhausted"]
    assert [m.headers.get("hop") for m in exhausted] == [None, 0, 1]
    no_throw = [m for m in fast.messages if m.task_name == "fr.no_throw"]
    assert len(no_throw) == 2, "throw=False still queues the retry"
    assert [r for r in fast.retries if r[0] == "fr.no_throw"] == [], "and ends SUCCESS"
    assert f"succeeded fr.no_throw[{no_throw[0].task_id}] #1" in fast.history


def test_explicit_args_take_celerys_own_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """retry(args=...) is left to Celery (it rebinds arguments), with the same result."""

    def rebinding(sim: Simulation, tasks: dict[str, Any]) -> None:
        tasks["rebinding"].delay(1)

    celery, fast = both(monkeypatch, rebinding)
    assert fast.fast == 0
    assert fast.messages == celery.messages
    assert [m.body[0] for m in fast.messages] == [[1], [2]]
    assert fast.fingerprint == celery.fingerprint


def test_a_refused_retry_publish_is_a_reject_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker down at the retry's publish: Celery's Reject, dead-lettered alike."""

    def broker_down(sim: Simulation, tasks: dict[str, Any]) -> None:
        tasks["resilient"].delay(5)
        sim.inject("broker_down", task="fr.resilient", times=1)

    celery, fast = both(monkeypatch, broker_down)
    assert fast.fast == 1
    assert fast.messages == celery.messages
    assert fast.failures == celery.failures
    assert fast.history == celery.history
    assert "dead_lettered" in fast.history


def test_another_apps_tasks_keep_celerys_retry() -> None:
    """Only the simulated app's tasks take the fast path; the patch is gone after the block."""
    app = make_app()[0]
    original = Task.retry
    with Simulation(app, seed=1):
        assert Task.retry is not original
        assert Task.retry.__name__ == "retry"
        other = Celery("other", broker="memory://", set_as_current=False)

        @other.task(bind=True, name="other.task", shared=False)
        def other_task(self: Any) -> None:
            raise self.retry(countdown=1)

        with pytest.raises(Retry, match="Task can be retried"):
            other_task()  # a direct call: Celery's own retry raises this
    assert Task.retry is original


def test_request_headers_are_what_celerys_context_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """request.headers: None on a first run, the custom headers on a retry, as Celery makes."""
    app = Celery("headers", broker="memory://", set_as_current=False)
    seen: list[tuple[Any, Any]] = []

    @app.task(bind=True, name="hd.task", shared=False)
    def task(self: Any) -> None:
        fields = {k: v for k, v in vars(self.request).items() if k != "headers"}
        fields.pop("time_limit", None)
        fields.pop("soft_time_limit", None)
        # Celery's own computation from the same request, without a "headers" key.
        seen.append((self.request.headers, Context(fields).headers))
        if self.request.retries == 0:
            raise self.retry(countdown=1, headers={"tenant": "acme", "hop": 1})

    with Simulation(app, seed=3) as sim:
        task.delay()
        sim.run_until_idle()
    assert seen[0] == (None, None)
    assert seen[1][0] == seen[1][1] == {"tenant": "acme", "hop": 1}

"""The deterministic simulation: virtual queue, Celery's tracer, virtual time, history."""

from __future__ import annotations

import random
import time
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, current_task
from celery import _state as celery_state

from pytest_taskchaos.simulation import (
    DEFAULT_START,
    Event,
    EventKind,
    Simulation,
    SimulationError,
    StepBudgetExceeded,
)
from resilience import RetryPolicy
from resilience.celery import ResilientTask, install, runtime_for
from resilience.errors import ConfigurationError

NO_JITTER = RetryPolicy(max_retries=4, initial_delay=10.0, factor=2.0, jitter="none")


class Workload:
    """A fresh Celery app with a flaky, a permanent, a looping and a plain task."""

    def __init__(self, *, failures: int = 2, jitter: bool = False) -> None:
        self.app = Celery("simtest", broker="memory://", set_as_current=False)
        self.failures = failures
        self.calls: list[dict[str, Any]] = []
        self.effects = 0
        policies = {} if jitter else {"TRANSIENT_NETWORK": NO_JITTER}
        workload = self

        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="sim.flaky",
            shared=False,
            resilience={"policies": policies},
        )
        def flaky(self: Any, order: int) -> int:
            workload.calls.append(
                {
                    "retries": self.request.retries,
                    "id": self.request.id,
                    "delivery_info": self.request.delivery_info,
                    "now": datetime.now(UTC),
                    "time": time.time(),
                }
            )
            workload.effects += 1
            if len(workload.calls) <= workload.failures:
                raise ConnectionResetError("connection reset by peer")
            return order

        @self.app.task(base=ResilientTask, bind=True, name="sim.permanent", shared=False)
        def permanent(self: Any, order: int) -> None:
            raise ValueError(f"order {order} has no amount")

        @self.app.task(bind=True, name="sim.loop", shared=False, max_retries=None)
        def loop(self: Any) -> None:
            raise self.retry(countdown=1, max_retries=None)

        @self.app.task(name="sim.plain", shared=False)
        def plain(value: int) -> int:
            workload.effects += 1
            return value

        @self.app.task(base=ResilientTask, bind=True, name="sim.parent", shared=False)
        def parent(self: Any, order: int) -> None:
            flaky.apply_async((order,), countdown=5)

        self.flaky, self.permanent, self.loop, self.plain, self.parent = (
            flaky,
            permanent,
            loop,
            plain,
            parent,
        )


def kinds(sim: Simulation, task: str | None = None) -> list[str]:
    """The history's event kinds, in order."""
    return [event.kind.value for event in sim.events(task=task)]


def test_two_failures_retry_twice_at_the_policy_countdowns_in_virtual_time() -> None:
    """A task failing twice is retried exactly twice, at the policy's delays, without waiting."""
    work = Workload()
    began = time.perf_counter()
    with Simulation(work.app) as sim:
        work.flaky.delay(7)
        steps = sim.run_until_idle()
    elapsed = time.perf_counter() - began
    retried = sim.events(kind="retried", task="sim.flaky")
    assert steps == 3
    assert [event.details["countdown"] for event in retried] == [
        NO_JITTER.delay(1),
        NO_JITTER.delay(2),
    ]
    assert [event.attempt for event in retried] == [1, 2]
    assert [event.details["exception"] for event in retried] == ["ConnectionResetError"] * 2
    started = [event.at for event in sim.events(kind="started")]
    assert started == [0.0, NO_JITTER.delay(1), NO_JITTER.delay(1) + NO_JITTER.delay(2)]
    assert [call["retries"] for call in work.calls] == [0, 1, 2]
    assert kinds(sim)[-2:] == ["succeeded", "acked"]
    assert sim.events(kind="dead_lettered") == []
    assert elapsed < 5, "virtual countdowns must not be waited for"


def test_task_code_sees_virtual_datetime_now_and_time() -> None:
    """datetime.now() and time.time() inside a task follow the virtual clock."""
    work = Workload()
    with Simulation(work.app, start=DEFAULT_START) as sim:
        work.flaky.delay(1)
        sim.run_until_idle()
    expected = [0.0, NO_JITTER.delay(1), NO_JITTER.delay(1) + NO_JITTER.delay(2)]
    assert [call["time"] - DEFAULT_START for call in work.calls] == pytest.approx(expected)
    assert [call["now"] for call in work.calls] == [
        datetime.fromtimestamp(DEFAULT_START + offset, tz=UTC) for offset in expected
    ]
    assert abs(time.time() - datetime.now(UTC).timestamp()) < 60, "the freezer is stopped"


def test_worker_request_carries_id_retries_and_delivery_info() -> None:
    """Each run gets a worker's request: the message id, the retry count and delivery info."""
    work = Workload(failures=1)
    with Simulation(work.app) as sim:
        result = work.flaky.delay(3)
        sim.run_until_idle()
    assert {call["id"] for call in work.calls} == {result.id}
    first = work.calls[0]["delivery_info"]
    assert first["routing_key"] == "celery"
    assert first["redelivered"] is False


def test_permanent_failure_is_dead_lettered_once_without_retry() -> None:
    """A validation error is not retried and lands in the dead-letter queue exactly once."""
    work = Workload()
    with Simulation(work.app) as sim:
        work.permanent.delay(9)
        sim.run_until_idle()
        stored = sim.runtime.dead_letters.list().records
    dead = sim.events(kind="dead_lettered")
    assert len(dead) == 1
    assert dead[0].details["exception"] == "ValueError"
    assert dead[0].details["failure_type"] == "PERMANENT_VALIDATION"
    assert sim.events(kind="retried") == []
    assert [event.details["exception"] for event in sim.events(kind="failed")] == ["ValueError"]
    assert [record.task_name for record in stored] == ["sim.permanent"]


def test_same_seed_gives_the_same_history_fingerprint() -> None:
    """Two runs with one seed produce identical histories; another seed changes the jitter."""

    def run(seed: int) -> Simulation:
        work = Workload(jitter=True)
        with Simulation(work.app, seed=seed) as sim:
            work.flaky.delay(1)
            sim.run_until_idle()
        return sim

    first, second, other = run(11), run(11), run(12)
    assert first.history == second.history
    assert first.fingerprint() == second.fingerprint()
    assert first.fingerprint() != other.fingerprint()
    countdowns = [e.details["countdown"] for e in first.events(kind="retried")]
    others = [e.details["countdown"] for e in other.events(kind="retried")]
    assert countdowns != others


def test_endless_retry_loop_ends_with_a_step_budget_error_naming_the_task() -> None:
    """A task retrying forever stops at max_steps with an error naming it, not a hang."""
    work = Workload()
    with Simulation(work.app) as sim:
        work.loop.delay()
        with pytest.raises(StepBudgetExceeded, match=r"sim\.loop \(ran 50 times\)") as caught:
            sim.drain(max_steps=50)
    assert caught.value.task_names == ["sim.loop"]
    assert caught.value.runs == {"sim.loop": 50}


def test_drain_until_leaves_later_messages_queued_and_moves_the_clock() -> None:
    """drain(until=) runs only what is due by the deadline and ends the clock there."""
    work = Workload()
    with Simulation(work.app) as sim:
        work.flaky.delay(1)
        assert sim.drain(until=timedelta(seconds=5)) == 1
        assert sim.now == 5.0
        assert sim.pending == 1
        assert sim.drain(until=NO_JITTER.delay(1)) == 1
        assert sim.run_until_idle() == 1
    assert kinds(sim)[-2:] == ["succeeded", "acked"]


def test_tasks_published_from_tasks_are_captured_with_their_countdown() -> None:
    """A task sent from inside another task goes to the virtual queue at its eta."""
    work = Workload(failures=0)
    with Simulation(work.app) as sim:
        work.parent.delay(4)
        sim.run_until_idle()
    published = sim.events(kind="published", task="sim.flaky")
    assert [event.details["eta"] for event in published] == [5.0]
    assert [event.at for event in sim.events(kind="succeeded", task="sim.flaky")] == [5.0]


def test_entry_fault_fires_given_times_before_the_body() -> None:
    """An entry fault with times=2 fails two attempts before the body runs, then stops."""
    work = Workload(failures=0)
    with Simulation(work.app) as sim:
        sim.inject(ConnectionResetError, task="sim.flaky", times=2)
        work.flaky.delay(1)
        sim.run_until_idle()
    faults = sim.events(kind="fault_injected")
    assert [(e.attempt, e.details["where"], e.details["fault"]) for e in faults] == [
        (1, "entry", "ConnectionResetError"),
        (2, "entry", "ConnectionResetError"),
    ]
    assert work.effects == 1
    assert len(sim.events(kind="retried")) == 2


def test_exit_fault_fires_after_the_side_effect() -> None:
    """An exit fault lets the body's side effect happen, then fails the attempt."""
    work = Workload(failures=0)
    with Simulation(work.app) as sim:
        sim.inject(ConnectionResetError("lost"), task="sim.flaky", at="exit", times=1)
        work.flaky.delay(1)
        sim.run_until_idle()
    assert work.effects == 2
    assert kinds(sim, "sim.flaky") == [
        "published",
        "delivered",
        "started",
        "fault_injected",
        "raised",
        "classified",
        "decided",
        "published",
        "retried",
        "acked",
        "delivered",
        "started",
        "succeeded",
        "acked",
    ]


def test_fault_on_a_plain_task_fails_it() -> None:
    """Faults also reach tasks without ResilientTask (their tracer is rebuilt)."""
    work = Workload()
    with Simulation(work.app) as sim:
        work.plain.delay(1)
        sim.run_until_idle()
        sim.inject(KeyError("boom"), task="sim.plain", times=1)
        work.plain.delay(2)
        sim.run_until_idle()
    assert [e.details["exception"] for e in sim.events(kind="failed")] == ["KeyError"]
    assert work.effects == 1


def test_leaving_restores_the_app_tasks_and_global_random() -> None:
    """Patches, the freezer and the global random state are undone on exit, even on error."""
    work = Workload()
    random.seed(5)
    expected = random.random()
    random.seed(5)
    sim = Simulation(work.app)
    sim.inject(KeyError, task="sim.plain")
    try:
        with sim:
            random.random()
            raise RuntimeError
    except RuntimeError:
        pass
    assert random.random() == expected
    assert "send_task" not in vars(work.app)
    assert "run" not in vars(work.plain)
    assert work.plain.run(3) == 3
    assert datetime.now(UTC).year >= 2024


def test_the_apps_own_installation_runs_in_virtual_time_and_comes_back() -> None:
    """What install() configured holds inside; leaving hands the app its installation back."""
    app = Celery("siminstall", broker="memory://", set_as_current=False)

    @app.task(base=ResilientTask, name="sim.unreachable", shared=False)
    def unreachable() -> None:
        raise ConnectionRefusedError("connection refused")

    # The app retries network failures once, after 42 s (the default: 5 times, jittered).
    once = RetryPolicy(max_retries=1, initial_delay=42.0, jitter="none")
    mine = install(app, store="memory://", policies={"TRANSIENT_NETWORK": once})
    with Simulation(app) as sim:
        assert runtime_for(app) is sim.runtime is not mine
        unreachable.delay()
        sim.run_until_idle()
    (retried,) = sim.events(kind="retried", task="sim.unreachable")
    assert retried.details["countdown"] == 42.0
    assert len(sim.events(kind="dead_lettered", task="sim.unreachable")) == 1
    assert runtime_for(app) is mine
    assert mine.dead_letters.list().records == ()


def test_current_task_is_the_running_one_and_the_stack_comes_back() -> None:
    """Inside a run, current_task and the published child's parent are the running task."""
    app = Celery("simstack", broker="memory://", set_as_current=False)
    seen: list[tuple[str, str]] = []
    original = celery_state._task_stack

    @app.task(bind=True, name="sim.child", shared=False)
    def child(self: Any) -> None:
        seen.append((self.request.parent_id, self.request.root_id))

    @app.task(bind=True, name="sim.parent", shared=False)
    def parent(self: Any) -> None:
        seen.append((current_task.request.id, self.request.id))
        child.delay()

    with Simulation(app) as sim:
        assert celery_state._task_stack is not original
        sent = parent.delay()
        sim.run_until_idle()
    assert seen == [(sent.id, sent.id), (sent.id, sent.id)]
    assert celery_state._task_stack is original
    assert celery_state.get_current_task() is None


def test_bad_arguments_are_refused_with_the_field_named() -> None:
    """inject/drain/events/Simulation reject bad input naming the argument."""
    work = Workload()
    with pytest.raises(
        ConfigurationError, match=r"matches none of the app's tasks.*sim\.flaky"
    ) as unknown:
        Simulation(work.app).inject(KeyError, task="sim.nope")
    assert unknown.value.key == "task"
    sim = Simulation(work.app)
    for kwargs, key in (({"at": "middle"}, "at"), ({"times": 0}, "times")):
        with pytest.raises(ConfigurationError) as caught:
            sim.inject(KeyError, task="sim.plain", **kwargs)
        assert caught.value.key == key
    with pytest.raises(ConfigurationError) as seed:
        Simulation(work.app, seed="1")  # type: ignore[arg-type]
    assert seed.value.key == "seed"
    with pytest.raises(SimulationError, match="with block"):
        sim.drain()
    with sim:
        with pytest.raises(ConfigurationError) as steps:
            sim.drain(max_steps=0)
        assert steps.value.key == "max_steps"
        with pytest.raises(ConfigurationError, match="valid kinds"):
            sim.events(kind="exploded")
        with pytest.raises(SimulationError, match="already active"):
            sim.__enter__()


def test_events_are_frozen_and_validated() -> None:
    """An Event cannot be changed, not even through the dict it was built from."""
    details = {"countdown": 1.0}
    event = Event(
        kind=EventKind.RETRIED, at=0.0, task_name="t", task_id="i", attempt=1, details=details
    )
    details["countdown"] = 2.0
    assert event.details["countdown"] == 1.0
    with pytest.raises(FrozenInstanceError):
        event.at = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.details["countdown"] = 3.0  # type: ignore[index]
    with pytest.raises(ConfigurationError) as caught:
        Event(kind=EventKind.STARTED, at=0.0, task_name="t", task_id="i", attempt=0)
    assert caught.value.key == "attempt"
    assert "retried t[i] #1 countdown=1.0" in event.describe()


def test_failure_hooks_get_a_light_exception_info_and_nothing_reaches_the_broker() -> None:
    """on_failure sees the exception and a traceback text; publishing bypasses the broker."""
    from celery.app import trace

    seen: list[Any] = []
    app = Celery("simhooks", broker="memory://", set_as_current=False)

    class Hooked(ResilientTask):
        def on_failure(self, exc: Any, task_id: Any, args: Any, kwargs: Any, einfo: Any) -> None:
            seen.append((exc, einfo))

    @app.task(base=Hooked, bind=True, name="sim.hooked", shared=False)
    def hooked(self: Any) -> None:
        raise LookupError("no such order")

    original = trace.ExceptionInfo
    with Simulation(app) as sim:
        hooked.delay()
        sim.run_until_idle()
    assert trace.ExceptionInfo is original
    [(exc, einfo)] = seen
    assert isinstance(exc, LookupError)
    assert einfo.type is LookupError
    assert "in hooked\nLookupError: no such order" in einfo.traceback
    assert einfo.traceback.startswith("Traceback (most recent call last):")
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("celery")
        try:
            assert queue.qsize() == 0
        finally:
            queue.close()


def test_arguments_reach_the_task_as_the_json_wire_returns_them() -> None:
    """Scalars arrive unchanged, containers as JSON gives them back, objects fail to publish."""
    from kombu.exceptions import EncodeError

    seen: list[tuple[Any, Any]] = []
    app = Celery("simwire", broker="memory://", set_as_current=False)

    @app.task(name="sim.wire", shared=False)
    def wire(*args: Any, **kwargs: Any) -> None:
        seen.append((args, kwargs))

    with Simulation(app) as sim:
        wire.delay(1, "a", 2.5, True, None, flag=False)
        wire.delay((1, 2), {"nested": (3,)})
        with pytest.raises(EncodeError):
            wire.delay(object())
        sim.run_until_idle()
    assert seen == [
        ((1, "a", 2.5, True, None), {"flag": False}),
        (([1, 2], {"nested": [3]}), {}),
    ]
    assert [type(value) for value in seen[0][0]] == [int, str, float, bool, type(None)]


def test_light_traceback_ends_with_the_standard_exception_line() -> None:
    """The rendered exception line matches the traceback module's, module-qualified or not."""
    import traceback

    from pytest_taskchaos._einfo import render

    class Custom(Exception):
        pass

    noted = ValueError("with a note")
    noted.add_note("see order 7")
    for error in (ValueError("bad"), KeyError("k"), Custom(), Custom("why"), noted):
        expected = "".join(traceback.format_exception_only(type(error), error))
        assert render(type(error), error, None).endswith(expected)
        assert expected.splitlines()[0] in render(type(error), error, None)
    assert render(Custom, Custom("why"), None).endswith(
        f"{Custom.__module__}.{Custom.__qualname__}: why\n"
    )

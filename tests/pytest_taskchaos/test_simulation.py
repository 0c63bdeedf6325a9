"""The deterministic simulation: virtual queue, Celery's tracer, virtual time, history."""

from __future__ import annotations

import random
import socket
import threading
import time
import warnings
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, current_task
from celery import _state as celery_state
from celery.backends.cache import CacheBackend
from celery.backends.redis import RedisBackend

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

    def __init__(
        self,
        *,
        failures: int = 2,
        jitter: bool = False,
        broker: str = "memory://",
        backend: str | None = None,
    ) -> None:
        self.app = Celery("simtest", broker=broker, backend=backend, set_as_current=False)
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


# ------------------------------------------------------------------ the result backend


def test_an_unreachable_broker_and_result_backend_are_never_connected_to(
    unreachable: str, connects: list[Any]
) -> None:
    """Redis broker and backend on a dead port: the run completes in memory, no connect tried."""
    work = Workload(broker=f"{unreachable}/0", backend=f"{unreachable}/1")
    in_thread: list[Any] = []
    with Simulation(work.app) as sim:
        backend = work.app.backend
        assert type(backend) is CacheBackend
        assert work.flaky.backend is backend
        # Celery keeps the backend per thread for some backends: every thread gets this one.
        reader = threading.Thread(target=lambda: in_thread.append(work.app.backend))
        reader.start()
        reader.join()
        result = work.flaky.delay(7)
        assert sim.run_until_idle() == 3
        assert (result.backend, result.state, result.result) == (backend, "SUCCESS", 7)
    assert in_thread == [backend]
    assert len(sim.events(kind="retried", task="sim.flaky")) == 2
    assert kinds(sim, "sim.flaky")[-2:] == ["succeeded", "acked"]
    assert connects == []
    assert isinstance(work.app.backend, RedisBackend)
    assert work.app.backend.url == f"{unreachable}/1"


def test_results_of_delay_read_what_a_worker_stores_during_and_after_the_run(
    unreachable: str, connects: list[Any]
) -> None:
    """PENDING, RETRY, then SUCCESS; a dead-lettered task reads FAILURE with its exception."""
    work = Workload(backend=f"{unreachable}/1")
    with Simulation(work.app) as sim:
        flaky = work.flaky.delay(7)
        permanent = work.permanent.delay(3)
        assert (flaky.state, permanent.state) == ("PENDING", "PENDING")
        sim.drain(until=1)
        assert flaky.state == "RETRY"
        assert isinstance(flaky.result, ConnectionResetError)
        sim.run_until_idle()
        assert (flaky.state, flaky.result) == ("SUCCESS", 7)
        assert permanent.state == "FAILURE"
        assert isinstance(permanent.result, ValueError)
        assert work.app.AsyncResult(flaky.id).state == "SUCCESS"
    assert [e.task_name for e in sim.events(kind="dead_lettered")] == ["sim.permanent"]
    assert (flaky.state, permanent.state) == ("SUCCESS", "FAILURE")
    assert connects == []


def test_ignored_results_are_not_stored_as_celery_does(
    unreachable: str, connects: list[Any]
) -> None:
    """task_ignore_result, ignore_result and the call's ignore_result decide, as on a worker."""
    app = Celery("simignore", broker="memory://", backend=f"{unreachable}/1", set_as_current=False)
    app.conf.task_ignore_result = True

    @app.task(name="sim.ignored", shared=False)
    def ignored(n: int) -> int:
        return n

    @app.task(name="sim.kept", shared=False, ignore_result=False)
    def kept(n: int) -> int:
        return n

    @app.task(name="sim.lost", shared=False)
    def lost(n: int) -> int:
        return n

    @app.task(name="sim.lost_kept", shared=False, store_errors_even_if_ignored=True)
    def lost_kept(n: int) -> int:
        return n

    with Simulation(app) as sim:
        sim.inject("worker_lost", task="sim.lost*", at="entry")
        results = [
            ignored.delay(1),
            ignored.apply_async((2,), ignore_result=False),
            kept.delay(3),
            lost.delay(4),
            lost_kept.delay(5),
        ]
        sim.run_until_idle()
        states = [result.state for result in results]
        stored = app.backend.client.cache
    assert states == ["PENDING", "SUCCESS", "SUCCESS", "PENDING", "FAILURE"]
    assert type(results[4].result).__name__ == "WorkerLostError"
    assert len(stored) == 3
    assert connects == []


def test_a_tasks_own_result_backend_is_swapped_too_and_comes_back(
    unreachable: str, connects: list[Any]
) -> None:
    """@app.task(backend=...) and task.backend = ... get in-memory backends of their own."""
    app = Celery("simown", broker="memory://", backend=f"{unreachable}/1", set_as_current=False)
    apps = app.backend
    declared = RedisBackend(app=app, url=f"{unreachable}/2")
    assigned = RedisBackend(app=app, url=f"{unreachable}/3")

    @app.task(name="sim.declared", shared=False, backend=declared)
    def mine(n: int) -> int:
        return n

    @app.task(name="sim.same", shared=False, backend=apps)
    def same(n: int) -> int:
        return n

    @app.task(name="sim.assigned", shared=False)
    def later(n: int) -> int:
        return n

    @app.task(name="sim.app", shared=False)
    def plain(n: int) -> int:
        return n

    tasks = app.tasks
    tasks["sim.assigned"].backend = assigned
    with Simulation(app) as sim:
        memory = app.backend
        backends = [tasks[name].backend for name in ("sim.declared", "sim.assigned")]
        assert all(type(backend) is CacheBackend for backend in [memory, *backends])
        assert len({id(memory), *map(id, backends)}) == 3
        assert tasks["sim.same"].backend is memory
        assert tasks["sim.app"].backend is memory
        results = [task.delay(n) for n, task in enumerate((mine, same, later, plain))]
        sim.run_until_idle()
        assert [result.state for result in results] == ["SUCCESS"] * 4
        # As with separate servers, the app's backend does not hold another one's results.
        assert app.AsyncResult(results[0].id).state == "PENDING"
    assert tasks["sim.declared"].backend is declared
    assert "backend" not in vars(tasks["sim.declared"])
    assert tasks["sim.same"].backend is apps
    assert tasks["sim.assigned"].backend is assigned
    assert vars(tasks["sim.assigned"])["_backend"] is assigned
    assert tasks["sim.app"].backend is apps is app.backend
    assert connects == []


def test_the_apps_backend_comes_back_exactly_also_when_the_block_raises(
    unreachable: str,
) -> None:
    """The very backend object (and Celery's cache of it) is back after an error in the block."""
    work = Workload(backend=f"{unreachable}/1")
    original = work.app.backend
    cached = vars(work.app)["_backend_cache"]
    inside: list[Any] = []

    def fail_inside() -> None:
        with Simulation(work.app):
            inside.append(work.app.backend)
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        fail_inside()
    assert type(inside[0]) is CacheBackend
    assert work.app.backend is original
    assert vars(work.app)["_backend_cache"] is cached
    # An app whose backend was never built builds its own after the block, as before.
    fresh = Workload(backend=f"{unreachable}/1")
    with Simulation(fresh.app):
        assert type(fresh.app.backend) is CacheBackend
    assert isinstance(fresh.app.backend, RedisBackend)


def test_a_celery_keeping_the_backend_per_thread_gets_it_swapped_in_every_thread(
    unreachable: str, connects: list[Any]
) -> None:
    """Celery before 5.5 cached app.backend in app._local only: that is replaced instead."""

    class ThreadLocalCelery(Celery):  # type: ignore[misc]
        """``Celery.backend`` as Celery 5.3 and 5.4 define it."""

        @property
        def backend(self) -> Any:
            try:
                return self._local.backend
            except AttributeError:
                self._local.backend = built = self._get_backend()
                return built

    app = ThreadLocalCelery(
        "simlocal", broker="memory://", backend=f"{unreachable}/1", set_as_current=False
    )
    del app._backend_cache
    original = app.backend
    local = app._local

    @app.task(name="sim.local", shared=False)
    def task(n: int) -> int:
        return n

    in_thread: list[Any] = []
    with Simulation(app) as sim:
        memory = app.backend
        assert type(memory) is CacheBackend
        reader = threading.Thread(target=lambda: in_thread.append(app.backend))
        reader.start()
        reader.join()
        result = task.delay(1)
        sim.run_until_idle()
        assert result.state == "SUCCESS"
    assert in_thread == [memory]
    assert app._local is local
    assert app.backend is original
    assert connects == []


def test_each_simulation_reads_only_its_own_results() -> None:
    """The same seed gives the same task ids: a second simulation must not read the first's.

    Celery's own ``cache+memory://`` clients share one module-wide cache; an app
    configured with it gets a cache of the simulation's too, and Celery's stays empty.
    """
    from celery.backends import cache

    work = Workload(backend="cache+memory://")
    with Simulation(work.app, seed=3) as sim:
        first = work.plain.delay(1)
        sim.run_until_idle()
        assert first.state == "SUCCESS"
    with Simulation(work.app, seed=3) as sim:
        again = work.plain.delay(2)
        assert again.id == first.id
        assert again.state == "PENDING"
        sim.run_until_idle()
        assert (again.state, again.result) == ("SUCCESS", 2)
    assert first.result == 1
    key = work.app.backend.get_key_for_task(first.id)
    assert key not in cache._DUMMY_CLIENT_CACHE


def test_a_real_redis_result_backend_gets_no_key_and_comes_back(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """A real Redis as broker and backend: the run writes nothing there and connects to none."""
    url = redis_url
    work = Workload(broker=url, backend=url)
    original = work.app.backend
    attempted: list[Any] = []

    def refuse(sock: socket.socket, address: Any) -> None:
        attempted.append(address)
        raise ConnectionRefusedError(f"the test refuses connections ({address!r})")

    with monkeypatch.context() as patched:
        patched.setattr(socket.socket, "connect", refuse)
        with Simulation(work.app) as sim:
            results = [work.flaky.delay(1), work.permanent.delay(2), work.plain.delay(3)]
            sim.run_until_idle()
            assert [result.state for result in results] == ["SUCCESS", "FAILURE", "SUCCESS"]
    assert attempted == []
    assert work.app.backend is original
    client = original.client
    keys = sorted({original.get_key_for_task(event.task_id) for event in sim.history})
    assert len(keys) == 3
    assert client.exists(*keys) == 0
    assert not [key for key in client.scan_iter(match="celery-task-meta-*") if key in keys]
    # The check reads the database results go to: the app's own backend writes that key there.
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Call to deprecated setex", DeprecationWarning)
            original.store_result(results[0].id, 1, "SUCCESS")
        assert client.exists(original.get_key_for_task(results[0].id)) == 1
    finally:
        client.delete(*keys)

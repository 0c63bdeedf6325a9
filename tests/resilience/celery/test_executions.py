"""track_executions: every attempt's outcome in the outcomes store, off by default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from celery import states

from resilience import ConfigurationError, FailureType, RetryPolicy
from resilience._operations import EXECUTIONS_KEY, executions
from resilience.celery import ResilientTask, install
from resilience.celery._config import resolve_settings

from .conftest import START, CountingStore, InProcessWorker

if TYPE_CHECKING:
    from celery import Celery

    from resilience.storage import MemoryStore

FAST = RetryPolicy(max_retries=2, initial_delay=2.0, factor=2.0, jitter="none")


def _flaky(app: Celery, failures: int, exc: Exception, **options: Any) -> Any:
    calls: list[int] = []

    @app.task(shared=False, base=ResilientTask, bind=True, name=f"flaky-{id(calls)}", **options)
    def flaky(self: Any, n: int) -> int:
        calls.append(self.request.retries)
        if len(calls) <= failures:
            raise exc
        return n * 2

    return flaky


def test_the_setting_is_off_by_default_and_read_from_every_source() -> None:
    """install() beats app.conf beats RESILIENCE_TRACK_EXECUTIONS; the default is off."""
    assert resolve_settings({}, {}, {}).track_executions is False
    env = {"RESILIENCE_TRACK_EXECUTIONS": "yes"}
    assert resolve_settings({}, {}, env).track_executions is True
    assert resolve_settings({}, {"resilience_track_executions": False}, env).track_executions is (
        False
    )
    assert resolve_settings({"track_executions": False}, {}, env).track_executions is False
    assert resolve_settings({}, {}, {"RESILIENCE_TRACK_EXECUTIONS": "Off"}).track_executions is (
        False
    )


def test_a_bad_value_names_its_source_and_the_valid_spellings() -> None:
    """An env value that is no boolean is refused with the variable's name."""
    with pytest.raises(ConfigurationError) as caught:
        resolve_settings({}, {}, {"RESILIENCE_TRACK_EXECUTIONS": "maybe"})
    assert caught.value.key == "RESILIENCE_TRACK_EXECUTIONS"
    assert str(caught.value) == (
        "RESILIENCE_TRACK_EXECUTIONS must be true or false (1/0, yes/no, on/off), got 'maybe'"
    )
    with pytest.raises(ConfigurationError) as conf_error:
        resolve_settings({}, {"resilience_track_executions": 2}, {})
    assert conf_error.value.key == "resilience_track_executions"


def test_on_every_plain_success_is_one_store_write(app: Celery, clock: Any) -> None:
    """With track_executions, a success costs one outcomes.add and nothing else."""
    counting = CountingStore()
    install(app, store=counting, clock=clock, track_executions=True)  # type: ignore[arg-type]
    worker = InProcessWorker(app, app.conf.task_default_queue)

    @app.task(shared=False, base=ResilientTask, bind=True, name="plain-tracked")
    def plain(self: Any, n: int) -> int:
        return n + 1

    for n in range(3):
        plain.delay(n)
    assert [d.result for d in worker.drain()] == [1, 2, 3]
    assert counting.calls == ["outcomes.add"] * 3
    tracked = executions(counting.inner.outcomes, window=3600.0, now=START)
    assert tracked.by_task == {"plain-tracked": (3, 0)}
    assert tracked.success_rate == 1.0


def test_each_attempt_counts_once_retries_included(
    app: Celery, store: MemoryStore, clock: Any, worker: InProcessWorker
) -> None:
    """Two failed attempts and a successful retry are three executions, one successful."""
    runtime = install(
        app,
        store=store,
        clock=clock,
        policies={FailureType.TRANSIENT_NETWORK: FAST},
        track_executions=True,
    )
    task = _flaky(app, 2, ConnectionError("refused"))
    task.delay(21)
    assert [d.state for d in worker.drain()] == [states.RETRY, states.RETRY, states.SUCCESS]
    tracked = executions(store.outcomes, window=3600.0, now=START)
    assert tracked.by_task == {task.name: (1, 2)}
    assert (tracked.total, tracked.successes, tracked.failures) == (3, 1, 2)
    assert tracked.success_rate == pytest.approx(1 / 3)
    # The retry statistics the engine adapts from are unchanged by the extra row.
    stats = runtime.engine.statistics(task.name)
    assert set(stats.by_type) == {FailureType.TRANSIENT_NETWORK}
    assert (stats.failures, stats.successes) == (1, 1)
    assert EXECUTIONS_KEY in store.outcomes.counts(task.name, since=START - 1)


def test_a_dead_lettered_first_attempt_and_a_guarded_task_count(
    app: Celery, store: MemoryStore, clock: Any, worker: InProcessWorker
) -> None:
    """A permanent failure is one failed execution; a breaker-guarded success is one success."""
    install(app, store=store, clock=clock, track_executions=True)
    bad = _flaky(app, 5, ValueError("order total must be positive"))
    good = _flaky(app, 0, ValueError("never"), breaker="payments")
    bad.delay(1)
    good.delay(2)
    assert sorted(d.state for d in worker.drain()) == [states.FAILURE, states.SUCCESS]
    tracked = executions(store.outcomes, window=3600.0, now=START)
    assert tracked.by_task == {bad.name: (0, 1), good.name: (1, 0)}


def test_off_records_no_execution(
    app: Celery, store: MemoryStore, clock: Any, worker: InProcessWorker
) -> None:
    """Without the setting, retried runs still feed retry statistics but no execution row."""
    install(app, store=store, clock=clock, policies={FailureType.TRANSIENT_NETWORK: FAST})
    task = _flaky(app, 1, ConnectionError("refused"))
    task.delay(1)
    worker.drain()
    assert EXECUTIONS_KEY not in store.outcomes.counts(task.name, since=START - 1)
    assert not executions(store.outcomes, window=3600.0, now=START).tracked

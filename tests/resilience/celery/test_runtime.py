"""install(), the per-app installation, and the package's public names."""

from __future__ import annotations
import __future__

from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from celery.utils.dispatch import Signal

import resilience.celery
from resilience import FailureType, FakeClock, Priority, RetryPolicy
from resilience.celery import (
    PROCESS_DEAD_LETTERS,
    Resilience,
    ResilientTask,
    TaskOptions,
    install,
    runtime_for,
    signals,
)
from resilience.storage import MemoryStore

if TYPE_CHECKING:
    from celery import Celery

    from .conftest import InProcessWorker


def test_all_lists_the_public_names_sorted() -> None:
    """__all__ matches the package's public names (plus the signals module), sorted."""
    public = {
        name
        for name, value in vars(resilience.celery).items()
        if not name.startswith("_")
        and (not isinstance(value, ModuleType) or name == "signals")
        and value is not __future__.annotations
    }
    assert set(resilience.celery.__all__) == public

    def style(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert resilience.celery.__all__ == sorted(resilience.celery.__all__, key=style)


def test_signals_are_celery_signals() -> None:
    """on_dead_letter and on_breaker_change are celery.utils.dispatch.Signal instances."""
    assert isinstance(signals.on_dead_letter, Signal)
    assert isinstance(signals.on_breaker_change, Signal)


def test_install_registers_the_beat_task_once(app: Celery, store: MemoryStore) -> None:
    """install() registers resilience.process_dead_letters; installing again keeps one task."""
    first = install(app, store=store)
    second = install(app, store=store)
    assert runtime_for(app) is second is not first
    assert PROCESS_DEAD_LETTERS in app.tasks


def test_a_task_of_an_app_never_installed_installs_from_conf(
    app: Celery, worker: InProcessWorker
) -> None:
    """Without install(), the first run installs from app.conf (here a memory store)."""
    app.conf.resilience_store = "memory://"

    @app.task(shared=False, base=ResilientTask, bind=True, name="lazy")
    def lazy(self: Any) -> str:
        return "ok"

    lazy.delay()
    (delivery,) = worker.drain()
    assert delivery.result == "ok"
    assert runtime_for(app).store.url.startswith("memory://")


def test_a_reinstalled_app_rebuilds_each_tasks_plan(
    app: Celery, store: MemoryStore, worker: InProcessWorker
) -> None:
    """After install() again, tasks use the new installation's dead-letter queue."""
    install(app, store=store)

    @app.task(shared=False, base=ResilientTask, bind=True, name="bad")
    def bad(self: Any) -> None:
        raise ValueError("x")

    bad.delay()
    worker.drain()
    fresh = MemoryStore()
    runtime = install(app, store=fresh)
    bad.delay()
    worker.drain()
    assert len(runtime.dead_letters.list().records) == 1


def test_per_task_policies_share_the_apps_breakers_and_history(
    app: Celery, store: MemoryStore
) -> None:
    """A task's own engine differs only in its policies: same breakers, same history."""
    runtime = install(app, store=store)
    own = RetryPolicy(max_retries=9)
    options = TaskOptions(policies={FailureType.TRANSIENT_NETWORK: own}, max_retries=None)
    derived = runtime.engine_for("t", options)
    assert derived is not runtime.engine
    assert derived.policy_for(FailureType.TRANSIENT_NETWORK) == own
    assert runtime.engine.policy_for(FailureType.TRANSIENT_NETWORK) != own
    assert derived.breaker("dep") is runtime.engine.breaker("dep")
    assert derived.history is runtime.engine.history
    capped = runtime.engine_for("t", TaskOptions(max_retries=1))
    assert capped.policy_for(FailureType.TRANSIENT_NETWORK).max_retries == 1
    assert capped.policy_for(FailureType.PERMANENT_VALIDATION).max_retries == 0
    assert runtime.engine_for("t", TaskOptions()) is runtime.engine


def test_priority_defaults_to_the_app_setting(app: Celery, store: MemoryStore) -> None:
    """A task without a priority gets the app's; its own wins otherwise."""
    runtime = install(app, store=store, priority="high")
    assert runtime.priority_for(TaskOptions()) is Priority.HIGH
    assert runtime.priority_for(TaskOptions(priority=Priority.LOW)) is Priority.LOW


def test_guards_are_shared_per_category_ttl_and_lease(
    app: Celery, store: MemoryStore, clock: FakeClock
) -> None:
    """Tasks with the same idempotency settings share one guard; the app lease applies."""
    runtime = install(app, store=store, clock=clock, idempotency_lease=42)
    guard = runtime.guard(category="email", ttl=None, lease=None)
    assert guard is runtime.guard(category="email", ttl=None, lease=None)
    assert guard.lease == 42.0
    assert runtime.guard(category="email", ttl=None, lease=10).lease == 10.0


def test_resilience_repr_names_the_app_and_store(app: Celery, store: MemoryStore) -> None:
    """The installation's repr shows the app and the store URL."""
    runtime = install(app, store=store)
    assert isinstance(runtime, Resilience)
    assert app.main in repr(runtime)
    assert "memory://" in repr(runtime)


@pytest.mark.parametrize("url", ["memory://"])
def test_install_opens_a_store_url(app: Celery, url: str) -> None:
    """store= as a URL is opened with open_store."""
    assert install(app, store=url).store.url.startswith(url)


def test_a_seeded_install_gives_reproducible_retry_delays(app: Celery, store: MemoryStore) -> None:
    """install(rng=Random(seed)) makes the engine's jitter repeat for the same seed."""
    import random

    from resilience.celery import install

    def delays(seed: int) -> list[float | None]:
        runtime = install(app, store=store, clock=FakeClock(), rng=random.Random(seed))
        return [
            runtime.engine.decide("t", ConnectionResetError(104, "reset"), n).delay
            for n in range(3)
        ]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)

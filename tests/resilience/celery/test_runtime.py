"""install(), the per-app installation, and the package's public names."""

from __future__ import annotations
import __future__

from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from celery.utils.dispatch import Signal

import resilience.celery
from resilience import (
    DeadLetterQueue,
    FailureType,
    FakeClock,
    Priority,
    Redaction,
    RetryBudget,
    RetryEngine,
    RetryPolicy,
)
from resilience.celery import (
    PROCESS_DEAD_LETTERS,
    Resilience,
    ResilientTask,
    TaskOptions,
    install,
    installed,
    runtime_for,
    signals,
)
from resilience.errors import ConfigurationError
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


# --------------------------------------------------------------------------- installed()


def test_installed_keeps_the_apps_configuration_on_another_store_and_clock(
    app: Celery, store: MemoryStore
) -> None:
    """install()'s arguments stay in force; store, clock and DLQ move; leaving restores."""
    network = RetryPolicy(max_retries=7, initial_delay=3.0, jitter="none")
    dead_letters = DeadLetterQueue(
        store, redaction=Redaction(keys=("card",)), max_payload_bytes=2048
    )
    before = install(
        app,
        store=store,
        policies={FailureType.TRANSIENT_NETWORK: network},
        priority="low",
        idempotency_lease=30,
        dead_letters=dead_letters,
    )
    clock = FakeClock()
    elsewhere = MemoryStore()
    with installed(app, store=elsewhere, clock=clock) as inside:
        assert runtime_for(app) is inside is not before
        assert inside.store is elsewhere
        assert inside.clock is clock
        assert inside.settings.priority is Priority.LOW
        assert inside.settings.idempotency_lease == 30
        assert inside.engine.policy_for(FailureType.TRANSIENT_NETWORK) == network
        assert inside.dead_letters.store is elsewhere.dead_letters
        assert inside.dead_letters.redaction is dead_letters.redaction
        assert inside.dead_letters.max_payload_bytes == 2048
        # Replays go through the app, as with the installation it stands for.
        assert inside.dead_letters.replay == inside.replay
    assert runtime_for(app) is before


def test_installed_follows_app_conf_changes_like_a_new_install(
    app: Celery, store: MemoryStore
) -> None:
    """A resilience_* setting changed since install() applies inside the block."""
    install(app, store=store)
    slow = RetryPolicy(max_retries=1, initial_delay=60.0, jitter="none")
    app.conf.resilience_policies = {"TRANSIENT_DATABASE": slow}
    with installed(app, store=MemoryStore(), clock=FakeClock()) as inside:
        assert inside.engine.policy_for(FailureType.TRANSIENT_DATABASE) == slow


def test_installed_rebinds_an_engine_install_was_given(app: Celery, store: MemoryStore) -> None:
    """A user-built engine keeps its knobs and budget limits, on the new clock and store."""
    budget = RetryBudget(ratio=0.5, window=120, min_retries=2)
    network = RetryPolicy(max_retries=2, initial_delay=1.0, jitter="none")
    engine = RetryEngine(
        policies={FailureType.TRANSIENT_NETWORK: network},
        store=store,
        budget=budget,
        peak_hours=(1, 5),
        max_retry_after=90,
    )
    before = install(app, store=store, engine=engine)
    clock = FakeClock(start=1_000.0)
    with installed(app, store=MemoryStore(), clock=clock) as inside:
        rebound = inside.engine
        assert rebound is not engine
        assert rebound.policy_for(FailureType.TRANSIENT_NETWORK) == network
        assert (rebound.peak_hours, rebound.max_retry_after) == ((1, 5), 90.0)
        assert rebound.budget is not None
        assert rebound.budget is not budget
        assert (rebound.budget.ratio, rebound.budget.window, rebound.budget.min_retries) == (
            0.5,
            120.0,
            2,
        )
        # Its breakers trip on the virtual clock: open now, probing after the timeout.
        breaker = inside.breaker("payments")
        for _ in range(breaker.failure_threshold or 0):
            breaker.record_failure(ConnectionRefusedError("payments refused"))
        assert breaker.state.value == "open"
        assert breaker.seconds_until_probe() == breaker.reset_timeout
        clock.advance(breaker.reset_timeout / 2)
        assert breaker.seconds_until_probe() == breaker.reset_timeout / 2
        assert engine.breaker("payments").state.value == "closed"
    assert runtime_for(app) is before


def test_installed_on_a_bare_app_leaves_it_bare(app: Celery) -> None:
    """Without an installation, the block installs; after it, a new install() is clean."""
    with installed(app, store="memory://", clock=FakeClock()) as inside:
        assert runtime_for(app) is inside
    assert getattr(app, "_resilience_runtime", None) is None
    # Installing again registers no second beat task (Celery would warn of a duplicate).
    again = install(app, store="memory://")
    assert runtime_for(app) is again
    assert PROCESS_DEAD_LETTERS in app.tasks


def test_installed_rejects_a_store_that_is_not_one(app: Celery, store: MemoryStore) -> None:
    """A bad store names the argument, also when an installation exists."""
    install(app, store=store)
    with (
        pytest.raises(ConfigurationError, match="store must be a store URL or a Store") as caught,
        installed(app, store=42),  # type: ignore[arg-type]
    ):
        pass
    assert caught.value.key == "store"

"""Hypothesis drives whole chaos runs: a failing run shrinks to a minimal fault plan.

(Shrinking the fire / don't-fire decisions of a probabilistic schedule is shown
in test_strategies.py on a bounded example: over a whole run, newer hypothesis
versions spend minutes shrinking each decision's float.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery
from hypothesis import find, settings

from pytest_taskchaos.assertions import ChaosAssertionError, assert_effect_once
from pytest_taskchaos.simulation import Simulation
from pytest_taskchaos.strategies import fault_plans
from resilience import RetryPolicy
from resilience.celery import ResilientTask

if TYPE_CHECKING:
    from pytest_taskchaos.injection import Injection

QUICK = RetryPolicy(max_retries=2, initial_delay=1.0, jitter="none")
FAULTS = ["read_timeout", "deadlock", "oom", "connection_reset", "api_error"]


def charge_app(*, keyed: bool) -> tuple[Celery, Any]:
    """A payment task that charges, then may fail.

    keyed: the task has an idempotency key and passes it to the payment provider,
    which answers a repeated key with the first charge (the fix: the task's key
    alone cannot help, since a run that fails gives its key back for the retry).
    """
    app = Celery("shrink", broker="memory://", set_as_current=False)
    options: dict[str, Any] = {"idempotency_key": "charge:{order}"} if keyed else {}
    provider: set[str] = set()

    @app.task(
        base=ResilientTask,
        bind=True,
        name="shop.charge",
        shared=False,
        resilience={"policies": dict.fromkeys(("TRANSIENT_NETWORK", "TRANSIENT_DATABASE"), QUICK)},
        **options,
    )
    def charge(self: Any, order: int) -> None:
        key = self.request.idempotency_key if keyed else None
        if key is not None and key in provider:
            return  # the provider answers with the first charge
        if key is not None:
            provider.add(key)
        app.conf.simulation.effect("charge", key=f"order-{order}")

    return app, charge


def double_charges(plan: tuple[Injection, ...], *, keyed: bool = False) -> bool:
    """Run three orders under the plan; whether some order was charged twice."""
    app, charge = charge_app(keyed=keyed)
    with Simulation(app, seed=1) as sim:
        app.conf.simulation = sim
        for injected in plan:
            sim.inject(injected)
        for order in range(3):
            charge.delay(order)
        sim.run_until_idle(max_steps=200)
    return charged_twice(sim)


def charged_twice(sim: Simulation) -> bool:
    """Whether assert_effect_once fails on a duplicate (not on a missing charge)."""
    try:
        assert_effect_once(sim.history, "charge")
    except ChaosAssertionError as error:
        return "duplicate side effect" in str(error)
    return False


def test_a_double_charge_shrinks_to_one_fault_after_the_side_effect() -> None:
    """The minimal plan that double-charges is one raising fault at exit, always on."""
    plan = find(
        fault_plans(faults=FAULTS, max_size=3, random=False),
        double_charges,
        settings=settings(database=None, max_examples=300, deadline=None),
    )
    assert len(plan) == 1
    (injected,) = plan
    assert injected.at == "exit"
    assert injected.schedule.describe() in {"always()", "first(1)"}


def test_the_keyed_task_survives_every_drawn_plan() -> None:
    """With the key, no plan of these faults double-charges: find() gives up."""
    from hypothesis.errors import NoSuchExample

    try:
        find(
            fault_plans(faults=FAULTS, max_size=2, random=False),
            lambda plan: double_charges(plan, keyed=True),
            settings=settings(database=None, max_examples=60, deadline=None),
        )
    except NoSuchExample:
        return
    raise AssertionError("a plan double-charged the idempotent task")

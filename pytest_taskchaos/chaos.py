"""The ``chaos`` fixture's controller: inject, run, assert, in one object.

A test gets a :class:`Chaos` whose simulation is already running, with the
faults of the test's ``@pytest.mark.chaos`` markers injected::

    @pytest.mark.chaos("deadlock", times=2, task="tickets.assign")
    def test_assign_survives_deadlocks(chaos):
        assign.delay(ticket_id=7)
        chaos.drain()
        chaos.assert_retried("tickets.assign", times=2)
        chaos.assert_succeeded("tickets.assign", within=60)

Every ``assert_*`` method is the function of the same name in
:mod:`pytest_taskchaos.assertions` applied to this test's history; their
failures print the slice of the history that matters.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from pytest_taskchaos import assertions
from pytest_taskchaos._history import EventKind

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import timedelta

    from pytest_taskchaos._history import Event
    from pytest_taskchaos.injection import Injection
    from pytest_taskchaos.simulation import Simulation
    from resilience import FailureType, RetryPolicy
    from resilience.celery import Resilience
    from resilience.clock import FakeClock

__all__ = ["Chaos"]


class Chaos:
    """One chaos test's controller (the ``chaos`` fixture).

    Args:
        simulation: the running simulation of the test's app.
        seed: the test's seed.
        enabled: ``False`` under ``--chaos-off``: injections are accepted and
            ignored, so the same test runs without faults for comparison.
    """

    def __init__(self, simulation: Simulation, *, seed: int, enabled: bool = True) -> None:
        self.simulation = simulation
        self.seed = seed
        self.enabled = enabled
        self._declared: list[Injection] = []

    # ------------------------------------------------------------------ the run

    @property
    def app(self) -> Any:
        """The Celery app under test."""
        return self.simulation.app

    @property
    def clock(self) -> FakeClock:
        """The virtual clock (also the ``chaos_clock`` fixture)."""
        return self.simulation.clock

    @property
    def now(self) -> float:
        """Virtual seconds since the test began."""
        return self.simulation.now

    @property
    def runtime(self) -> Resilience:
        """The app's ``resilience`` installation: store, dead letters, engine, breakers."""
        return self.simulation.runtime

    @property
    def history(self) -> list[Event]:
        """Every event so far, in order."""
        return self.simulation.history

    @property
    def injections(self) -> list[tuple[Injection, int, int]]:
        """Each declared injection with the calls that reached its point and its firings."""
        if self.enabled:
            return self.simulation.injections
        return [(made, 0, 0) for made in self._declared]

    def inject(self, what: Injection | Any, **keywords: Any) -> Injection:
        """Inject a fault; see :meth:`Simulation.inject` (ignored under ``--chaos-off``)."""
        if not self.enabled:
            from pytest_taskchaos.injection import Injection, injection  # noqa: PLC0415

            made = what if isinstance(what, Injection) else injection(what, **keywords)
            self._declared.append(made)
            return made
        made = self.simulation.inject(what, **keywords)
        self._declared.append(made)
        return made

    def watch(self, spec: str) -> None:
        """Record each call to a dependency point as a side effect; see :meth:`Simulation.watch`."""
        self.simulation.watch(spec)

    def effect(self, name: str, key: object = None) -> None:
        """Record a side effect of the running task; see :meth:`Simulation.effect`."""
        self.simulation.effect(name, key)

    def drain(self, *, until: float | timedelta | None = None, max_steps: int = 10_000) -> int:
        """Run the queued work in virtual time; see :meth:`Simulation.drain`."""
        return self.simulation.drain(until=until, max_steps=max_steps)

    def events(self, kind: EventKind | str | None = None, task: str | None = None) -> list[Event]:
        """The history's events of a kind and/or task."""
        return self.simulation.events(kind=kind, task=task)

    def describe(self, events: list[Event] | None = None) -> str:
        """The history (or some events), one line each."""
        return self.simulation.describe(events)

    def fingerprint(self) -> str:
        """A digest of the history: the same seed and test give the same one."""
        return self.simulation.fingerprint()

    def unfired(self) -> list[str]:
        """The labels of declared injections that never fired (none under ``--chaos-off``)."""
        if not self.enabled:
            return []
        return [made.label for made, _, fired in self.injections if fired == 0]

    def summary(self) -> dict[str, Any]:
        """The test's counts for the session summary and the JSON report."""
        history = self.history
        kinds = Counter(event.kind for event in history)
        faults = Counter(
            str(event.details["fault"])
            for event in history
            if event.kind is EventKind.FAULT_INJECTED
        )
        dead = Counter(
            str(event.details.get("failure_type"))
            for event in history
            if event.kind is EventKind.DEAD_LETTERED
        )
        transitions = Counter(
            f"{event.details['breaker']}: {event.details['old']} -> {event.details['new']}"
            for event in history
            if event.kind is EventKind.BREAKER_CHANGED
        )
        hits = sum(
            1
            for event in history
            if event.kind is EventKind.IDEMPOTENCY and event.details.get("outcome") == "hit"
        )
        retries = sum(
            1
            for event in history
            if event.kind is EventKind.RETRIED and not event.details.get("deferred")
        )
        return {
            "seed": self.seed,
            "chaos_off": not self.enabled,
            "faults_injected": dict(sorted(faults.items())),
            "unfired": self.unfired(),
            "attempts": kinds[EventKind.STARTED],
            "retries": retries,
            "deferrals": kinds[EventKind.RETRIED] - retries,
            "breaker_transitions": dict(sorted(transitions.items())),
            "dead_letters": dict(sorted(dead.items())),
            "duplicates_prevented": hits,
            "virtual_seconds": self.now,
            "fingerprint": self.fingerprint(),
        }

    # ------------------------------------------------------------------ assertions

    def assert_retried(
        self,
        task: str,
        *,
        times: int | None = None,
        at_least: int | None = None,
        at_most: int | None = None,
        per_task_id: bool = False,
    ) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_retried`."""
        __tracebackhide__ = True
        return assertions.assert_retried(
            self.history,
            task,
            times=times,
            at_least=at_least,
            at_most=at_most,
            per_task_id=per_task_id,
        )

    def assert_not_retried(self, task: str) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_not_retried`."""
        __tracebackhide__ = True
        return assertions.assert_not_retried(self.history, task)

    def assert_retry_delays_within(self, task: str, policy: RetryPolicy) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_retry_delays_within`."""
        __tracebackhide__ = True
        return assertions.assert_retry_delays_within(self.history, task, policy)

    def assert_dead_lettered(
        self,
        task: str,
        *,
        failure_type: FailureType | str | None = None,
        count: int | None = None,
    ) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_dead_lettered`."""
        __tracebackhide__ = True
        return assertions.assert_dead_lettered(
            self.history, task, failure_type=failure_type, count=count
        )

    def assert_not_dead_lettered(self, task: str) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_not_dead_lettered`."""
        __tracebackhide__ = True
        return assertions.assert_not_dead_lettered(self.history, task)

    def assert_succeeded(
        self, task: str, *, within: float | timedelta | None = None
    ) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_succeeded`."""
        __tracebackhide__ = True
        return assertions.assert_succeeded(self.history, task, within=within)

    def assert_breaker(
        self,
        breaker: str,
        *,
        opened_after: int | None = None,
        rejected: int | None = None,
        probes: int | None = None,
        closed: bool | None = None,
    ) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_breaker`."""
        __tracebackhide__ = True
        return assertions.assert_breaker(
            self.history,
            breaker,
            opened_after=opened_after,
            rejected=rejected,
            probes=probes,
            closed=closed,
        )

    def assert_breaker_never_opened(self, breaker: str) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_breaker_never_opened`."""
        __tracebackhide__ = True
        return assertions.assert_breaker_never_opened(self.history, breaker)

    def assert_effect_once(self, name: str, *, per_key: bool = True) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_effect_once`."""
        __tracebackhide__ = True
        return assertions.assert_effect_once(self.history, name, per_key=per_key)

    def assert_idempotent(self, task: str) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_idempotent`."""
        __tracebackhide__ = True
        return assertions.assert_idempotent(self.history, task)

    def assert_budget_held(
        self,
        task: str | None = None,
        *,
        ratio: float,
        min_retries: int = 0,
        window: float = 60.0,
    ) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_budget_held`."""
        __tracebackhide__ = True
        return assertions.assert_budget_held(
            self.history, task, ratio=ratio, min_retries=min_retries, window=window
        )

    def assert_retries_spread(
        self, task: str | None = None, *, max_simultaneous: int, resolution: float = 1.0
    ) -> list[Event]:
        """See :func:`pytest_taskchaos.assertions.assert_retries_spread`."""
        __tracebackhide__ = True
        return assertions.assert_retries_spread(
            self.history, task, max_simultaneous=max_simultaneous, resolution=resolution
        )

    def assert_faults_fired(self, faults: Iterable[str] | None = None) -> list[Event]:
        """Every declared injection (or each named fault) fired at least once.

        See :func:`pytest_taskchaos.assertions.assert_faults_fired`.
        """
        __tracebackhide__ = True
        if faults is None and self._declared:
            faults = [made.label for made in self._declared]
        return assertions.assert_faults_fired(self.history, faults)

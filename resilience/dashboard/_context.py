"""What every dashboard handler reads: the store, the queue, the clock, the alert rules.

Also the few operations both the API and the pages perform (a breaker reset, a
snapshot for alerts and metrics), so the two front ends act identically, and the
policies page's view of the retry engine (effective policies, adaptations in force).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from resilience import _operations
from resilience.breaker import CircuitBreaker
from resilience.clock import Clock
from resilience.dashboard._alerts import AlertMonitor
from resilience.dead_letter import DeadLetterQueue, DeadLetterSummary
from resilience.engine import RetryEngine
from resilience.errors import ConfigurationError
from resilience.history import OutcomeHistory
from resilience.policy import RetryPolicy, default_policy
from resilience.storage.base import CircuitState, Store
from resilience.taxonomy import Classification, FailureType

__all__ = [
    "NO_REPLAY",
    "Adaptation",
    "BreakerNotFound",
    "Context",
    "Snapshot",
    "adaptation",
    "adaptations",
    "engine_of",
    "snapshot",
]

NO_REPLAY = (
    "retrying needs a replay: this dashboard was started without a Celery app, so it "
    "cannot re-enqueue tasks (pass celery_app= or replay= to create_app, or "
    "--app MODULE:ATTR to 'resilience dashboard'); nothing was changed"
)


class BreakerNotFound(LookupError):
    """No breaker of that name in the store; ``known`` lists the ones there are."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(
            f"no circuit breaker named {name!r}{_operations.suggest(name, known)} (known: {listed})"
        )
        self.known = known


@dataclass(slots=True, kw_only=True)
class Context:
    """The dashboard's collaborators, shared by every request.

    Attributes:
        store: the store bundle.
        dlq: the dead-letter queue (its ``replay`` may be ``None``: no retries).
        clock: where ``now`` comes from.
        monitor: evaluates alert rules and notifies sinks.
        owns_store: close the store when the app shuts down.
        engine: the retry engine whose policies, history and budget the policies
            page shows (default: the Celery runtime's, see :func:`engine_of`).
    """

    store: Store
    dlq: DeadLetterQueue
    clock: Clock
    monitor: AlertMonitor
    owns_store: bool = False
    engine: RetryEngine | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def breakers(self) -> list[dict[str, object]]:
        """Every breaker's row (see :func:`resilience._operations.breaker_row`)."""
        now = self.clock.time()
        return [
            _operations.breaker_row(name, self.store.breakers.load(name), now)
            for name in _operations.breaker_names(self.store.breakers, self.store.url)
        ]

    def reset_breaker(self, name: str) -> dict[str, str]:
        """Close breaker ``name`` and forget its counts.

        Returns:
            ``{"name", "from", "state"}``.

        Raises:
            BreakerNotFound: no breaker of that name.
        """
        if self.store.breakers.load(name) is None:
            try:
                known = _operations.breaker_names(self.store.breakers, self.store.url)
            except ConfigurationError:
                known = []
            raise BreakerNotFound(name, known)
        breaker = CircuitBreaker(
            name, store=self.store.breakers, on_store_error="raise", clock=self.clock
        )
        before = breaker.state
        breaker.reset()
        return {"name": name, "from": before.value, "state": breaker.state.value}


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """What alerts and metrics are computed from, read once.

    Attributes:
        summary: the dead-letter summary (24 hours).
        depth_by_status_and_type: ``{(status, type): records}``.
        breakers: every breaker's row (empty when the store cannot list them).
        retries: ``{(failure_type, "success" | "failure"): count}`` over the window.
        success_rate: retry success rate over the window, ``None`` without retries.
        executions: the tracked task executions over the window (``track_executions``).
        window: the retry window in seconds.
    """

    summary: DeadLetterSummary
    depth_by_status_and_type: dict[tuple[str, str], int]
    breakers: list[dict[str, object]]
    retries: dict[tuple[str, str], int]
    success_rate: float | None
    executions: _operations.Executions
    window: float


def snapshot(context: Context, *, window: float = 24 * 3600.0) -> Snapshot:
    """Read everything alerts and metrics need, in one pass over the dead letters."""
    now = context.clock.time()
    summary = context.dlq.summary(now=now)
    depth: dict[tuple[str, str], int] = {}
    for record in _operations.all_records(context.store.dead_letters):
        key = (record.status.value, record.failure_type.value)
        depth[key] = depth.get(key, 0) + 1
    try:
        breakers = context.breakers()
    except ConfigurationError:
        breakers = []
    retries: dict[tuple[str, str], int] = {}
    history = OutcomeHistory(context.store.outcomes, window=window, clock=context.clock)
    for task in _operations.task_names(context.store.outcomes, now - window):
        for kind, stats in history.statistics(task, now=now).by_type.items():
            for outcome, count in (("success", stats.successes), ("failure", stats.failures)):
                key = (kind.value, outcome)
                retries[key] = retries.get(key, 0) + count
    ok = sum(c for (_, outcome), c in retries.items() if outcome == "success")
    total = sum(retries.values())
    return Snapshot(
        summary=summary,
        depth_by_status_and_type=depth,
        breakers=breakers,
        retries=retries,
        success_rate=ok / total if total else None,
        executions=_operations.executions(context.store.outcomes, window=window, now=now),
        window=window,
    )


def is_open(row: dict[str, object]) -> bool:
    """Whether a breaker row refuses calls (open or forced open; half-open admits a probe)."""
    return row["state"] in (CircuitState.OPEN.value, CircuitState.FORCED_OPEN.value)


# --------------------------------------------------------------------------- policies


class _Probe(Exception):
    """The stand-in failure a policy probe asks the engine about (never raised)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Adaptation:
    """What the engine would change in one (task, type)'s policy if it failed now.

    Attributes:
        task: the task's name.
        failure_type: the failure type.
        successes: successful retries in the history window.
        failures: failed retries in the history window.
        base: the configured policy.
        adapted: the policy the engine would apply now (``base`` when nothing changes).
        notes: the engine's own words for each adjustment (empty: none in force).
    """

    task: str
    failure_type: FailureType
    successes: int
    failures: int
    base: RetryPolicy
    adapted: RetryPolicy
    notes: tuple[str, ...]

    @property
    def success_rate(self) -> float | None:
        """Successes / outcomes, ``None`` without outcomes."""
        total = self.successes + self.failures
        return self.successes / total if total else None

    @property
    def delay_factor(self) -> float:
        """The adapted first delay over the configured one (1.0: unchanged)."""
        if self.base.initial_delay == 0:
            return 1.0
        return self.adapted.initial_delay / self.base.initial_delay


def engine_of(context: Context) -> RetryEngine | None:
    """The retry engine whose policies the dashboard shows, ``None`` for the defaults.

    ``context.engine`` when set; otherwise the engine of the Celery runtime whose
    ``replay`` the queue uses (``create_app(celery_app=...)`` passes
    ``runtime_for(app).replay``, a bound method of the runtime, whose public
    ``engine`` attribute holds the app's policies).
    """
    if context.engine is not None:
        return context.engine
    owner = getattr(context.dlq.replay, "__self__", None)
    found = getattr(owner, "engine", None)
    return found if isinstance(found, RetryEngine) else None


def adaptation(
    history: OutcomeHistory,
    task: str,
    kind: FailureType,
    base: RetryPolicy,
    *,
    clock: Clock,
    now: float,
) -> Adaptation:
    """Ask a side-effect-free copy of the engine what it would apply to ``task`` now.

    The probe engine has the same policy and history, no budget, no breaker, no
    load probe and no off-peak window, and is asked about a first failure (which
    records nothing): so the answer is exactly the engine's history adaptation,
    computed by the engine itself rather than re-implemented here.
    """
    stats = history.get(task, kind, now=now)
    profile = kind.profile
    fixed = Classification(
        failure_type=kind,
        confidence=1.0,
        remediation=profile.remediation,
        remediation_details=profile.remediation_details,
        retry_recommended=profile.retry_recommended,
        retry_delay_seconds=profile.retry_delay_seconds,
        retry_after=None,
        alert_level=profile.alert_level,
        evidence="dashboard policy probe",
    )
    probe = RetryEngine(
        policies={kind: base},
        history=history,
        classifier=lambda exc, ctx: fixed,
        peak_hours=None,
        clock=clock,
        rng=random.Random(0),
    )
    decision = probe.decide(task, _Probe(), 0, now=now)
    notes = tuple(decision.reason.split("; ")[1:]) if decision.retry else ()
    return Adaptation(
        task=task,
        failure_type=kind,
        successes=stats.successes,
        failures=stats.failures,
        base=base,
        adapted=decision.policy if decision.retry else base,
        notes=notes,
    )


def adaptations(context: Context, engine: RetryEngine | None) -> list[Adaptation]:
    """One :class:`Adaptation` per (task, type) with retry outcomes in the history window."""
    now = context.clock.time()
    history = (
        engine.history
        if engine is not None
        else OutcomeHistory(context.store.outcomes, clock=context.clock)
    )
    found = []
    for task in _operations.task_names(history.store, now - history.window):
        for kind in sorted(history.statistics(task, now=now).by_type, key=list(FailureType).index):
            base = engine.policy_for(kind) if engine is not None else default_policy(kind)
            found.append(adaptation(history, task, kind, base, clock=context.clock, now=now))
    return found

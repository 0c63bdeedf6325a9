"""What every dashboard handler reads: the store, the queue, the clock, the alert rules.

Also the few operations both the API and the pages perform (a breaker reset, a
snapshot for alerts and metrics), so the two front ends act identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resilience import _operations
from resilience.breaker import CircuitBreaker
from resilience.clock import Clock
from resilience.dashboard._alerts import AlertMonitor
from resilience.dead_letter import DeadLetterQueue, DeadLetterSummary
from resilience.errors import ConfigurationError
from resilience.history import OutcomeHistory
from resilience.storage.base import CircuitState, Store

__all__ = ["NO_REPLAY", "BreakerNotFound", "Context", "Snapshot", "snapshot"]

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
    """

    store: Store
    dlq: DeadLetterQueue
    clock: Clock
    monitor: AlertMonitor
    owns_store: bool = False
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
        window: the retry window in seconds.
    """

    summary: DeadLetterSummary
    depth_by_status_and_type: dict[tuple[str, str], int]
    breakers: list[dict[str, object]]
    retries: dict[tuple[str, str], int]
    success_rate: float | None
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
        window=window,
    )


def is_open(row: dict[str, object]) -> bool:
    """Whether a breaker row refuses calls (open or forced open; half-open admits a probe)."""
    return row["state"] in (CircuitState.OPEN.value, CircuitState.FORCED_OPEN.value)

"""The retry engine: one decision per failed attempt, from everything we know.

``RetryEngine.decide`` composes the taxonomy (what failed), the type's policy
(how to back off), the history of this task's retries (do they usually work?),
the load on the queue, the retry budget, the dependency's circuit breaker and
the off-peak window into one frozen :class:`RetryDecision`. Policies are never
mutated: each adaptation returns a new policy, starting from the configured one
on every call, so nothing drifts from call to call.
"""

from __future__ import annotations

import copy
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from resilience.breaker import CircuitBreaker, CircuitState
from resilience.clock import Clock, seconds_of, system_clock
from resilience.errors import ConfigurationError
from resilience.history import OutcomeHistory, TaskStatistics
from resilience.policy import RetryPolicy, default_policy
from resilience.taxonomy import Classification, FailureType, classify

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from resilience.budget import RetryBudget
    from resilience.storage.base import Store

__all__ = ["Priority", "RetryDecision", "RetryEngine"]

_MIN_HISTORY = 10
_HIGH_SUCCESS, _LOW_SUCCESS = 0.8, 0.3
_FAST, _SLOW, _LOADED = 0.7, 1.5, 1.3


class Priority(StrEnum):
    """How urgent a task is; only priorities in ``defer_priorities`` wait for off-peak hours."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryDecision:
    """Whether and when to retry one failed attempt, and why.

    Attributes:
        retry: ``True`` to retry. When ``False``, ``delay`` and ``eta`` are ``None``
            (never 0: a zero delay means "retry now", not "give up").
        delay: seconds from ``now`` to the retry.
        eta: the retry's wall time (epoch seconds).
        reason: a plain sentence saying what decided.
        classification: what the failure was classified as.
        policy: the policy actually applied, after adaptations.
        retry_number: the number of the retry this decision is about (1 = first retry).
        breaker_state: the dependency's breaker state, when a dependency was named.
    """

    retry: bool
    delay: float | None
    eta: float | None
    reason: str
    classification: Classification
    policy: RetryPolicy
    retry_number: int
    breaker_state: CircuitState | None = None


_SPREAD = 0.5  # a shared wait is spread over the following half of it ...
_MAX_SPREAD = 300.0  # ... but over 5 minutes at most


class RetryEngine:
    """Decides retries from taxonomy, policy, history, load, budget, breakers and the clock.

    Args:
        policies: per-type policies that replace :func:`default_policy` for those types.
        store: a shared store (``open_store(url)``): the history counts outcomes in
            ``store.outcomes`` and the default breakers keep their state in
            ``store.breakers``, so every worker on the store learns and trips together.
            ``None`` keeps both in this process.
        classifier: turns an exception into a :class:`Classification`.
        history: retry outcomes per (task, type); in memory by default.
        budget: the retry budget; ``None`` disables it.
        queue_depth: returns the current depth of a queue (``None`` if unknown);
            ``None`` disables load adaptation.
        load_threshold: queue depth above which delays grow x1.3.
        peak_hours: ``(start, end)`` local hours of the peak window (end exclusive;
            may wrap midnight, e.g. ``(22, 6)``); ``None`` defers nothing.
        timezone: IANA name or ``tzinfo`` the peak hours are in.
        defer_priorities: priorities whose retries wait for off-peak hours; they
            come back spread over the first minutes after the peak ends (see
            :meth:`spread`), not all at once.
        max_retry_after: the longest Retry-After honoured, seconds or ``timedelta``;
            a Retry-After is spread past (see :meth:`spread`), then capped by it.
        breaker_factory: builds the breaker for a dependency from its name and the
            policy of the failure that first reached it; the default shares nothing
            across processes (pass one that uses a shared store for that).
        clock: the time source.
        rng: randomness for jitter (seed it for reproducible delays).

    Raises:
        ConfigurationError: a bad peak window, unknown time zone or negative cap.
    """

    def __init__(
        self,
        *,
        policies: Mapping[FailureType, RetryPolicy] | None = None,
        store: Store | None = None,
        classifier: Callable[..., Classification] = classify,
        history: OutcomeHistory | None = None,
        budget: RetryBudget | None = None,
        queue_depth: Callable[[str | None], int | None] | None = None,
        load_threshold: int = 100,
        peak_hours: tuple[int, int] | None = (9, 18),
        timezone: str | tzinfo = "UTC",
        defer_priorities: Collection[Priority | str] = (Priority.LOW,),
        max_retry_after: float | timedelta = 6 * 3600.0,
        breaker_factory: Callable[[str, RetryPolicy], CircuitBreaker] | None = None,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
    ) -> None:
        self._policies = MappingProxyType(dict(policies or {}))
        self._classifier = classifier
        self._store = store
        if history is None:
            history = OutcomeHistory(None if store is None else store.outcomes, clock=clock)
        self.history = history
        self.budget = budget
        self._queue_depth = queue_depth
        self.load_threshold = load_threshold
        self.peak_hours = _check_peak_hours(peak_hours)
        self.timezone = _zone(timezone)
        self.defer_priorities = frozenset(Priority(p) for p in defer_priorities)
        if Priority.CRITICAL in self.defer_priorities:
            raise ConfigurationError(
                "defer_priorities may not contain 'critical': critical retries are never deferred",
                key="defer_priorities",
                value=sorted(self.defer_priorities),
            )
        self.max_retry_after = seconds_of(max_retry_after, name="max_retry_after")
        if self.max_retry_after < 0:
            raise ConfigurationError(
                f"max_retry_after must be >= 0, got {self.max_retry_after!r}",
                key="max_retry_after",
                value=self.max_retry_after,
            )
        self._breaker_factory = breaker_factory or self._default_breaker
        self._breakers: dict[str, CircuitBreaker] = {}
        self._breakers_lock = threading.Lock()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()

    def with_policies(self, policies: Mapping[FailureType, RetryPolicy]) -> RetryEngine:
        """An engine that applies ``policies`` over this one's, sharing everything else.

        History, budget, breakers, clock and randomness are shared, so a task with
        its own policies still learns and trips together with the others.

        Args:
            policies: per-type policies that replace this engine's for those types.
        """
        twin = copy.copy(self)
        twin._policies = MappingProxyType({**self._policies, **policies})
        return twin

    def rebound(
        self, *, store: Store | None, clock: Clock, rng: random.Random | None = None
    ) -> RetryEngine:
        """This engine's configuration on another store, clock and randomness.

        Policies, classifier, queue-depth source, load and off-peak settings and
        the retry budget's limits are kept; history, budget counts and breakers
        start afresh on ``store`` and ``clock``. A ``breaker_factory`` given at
        construction is kept as it is (it builds its breakers on whatever it holds).
        A simulation runs an app's configured engine this way, in virtual time.

        Args:
            store: the store of the history and the breakers (``None``: in memory).
            clock: the time source.
            rng: the jitter's randomness (``None``: a new unseeded generator).
        """
        factory = self._breaker_factory
        own = getattr(factory, "__func__", None) is RetryEngine._default_breaker
        return RetryEngine(
            policies=self._policies,
            store=store,
            classifier=self._classifier,
            budget=None if self.budget is None else self.budget.rebound(clock),
            queue_depth=self._queue_depth,
            load_threshold=self.load_threshold,
            peak_hours=self.peak_hours,
            timezone=self.timezone,
            defer_priorities=self.defer_priorities,
            max_retry_after=self.max_retry_after,
            breaker_factory=None if own else factory,
            clock=clock,
            rng=rng,
        )

    def policy_for(self, failure_type: FailureType) -> RetryPolicy:
        """The configured (not adapted) policy for ``failure_type``."""
        return self._policies.get(failure_type) or default_policy(failure_type)

    def spread(self, seconds: float) -> float:
        """A wait of at least ``seconds``, jittered over the following half of it.

        For waits that many tasks share: every task an open breaker holds back
        waits for the same probe time, every task a server rate-limited was given
        the same Retry-After, every deferred low-priority retry waits for the same
        off-peak start; without a spread they would all come back in the same
        instant (at most 5 minutes are added). :meth:`decide` spreads Retry-After
        waits and off-peak deferrals this way.

        Args:
            seconds: the shortest wait (the time until the probe, a lease's end).

        Returns:
            A wait in ``[seconds, seconds + min(seconds / 2, 300)]``, drawn from the
            engine's (seedable) generator.
        """
        if seconds <= 0:
            return seconds
        return seconds + self._rng.uniform(0.0, min(seconds * _SPREAD, _MAX_SPREAD))

    def breaker(self, dependency: str, *, policy: RetryPolicy | None = None) -> CircuitBreaker:
        """The breaker guarding ``dependency``, created on first use.

        Args:
            dependency: the downstream service's name.
            policy: the policy whose ``breaker`` settings a new breaker takes; by
                default this engine's ``EXTERNAL_API_DOWN`` policy (the one configured
                in ``policies=``, else the default), so a breaker asked for by name (as
                the Celery integration does) follows the configuration.
        """
        with self._breakers_lock:
            found = self._breakers.get(dependency)
            if found is None:
                settings_from = policy or self.policy_for(FailureType.EXTERNAL_API_DOWN)
                found = self._breakers[dependency] = self._breaker_factory(
                    dependency, settings_from
                )
            return found

    def decide(
        self,
        task_name: str,
        exc: BaseException,
        retry_count: int,
        *,
        now: float | None = None,
        context: Mapping[str, object] | None = None,
        priority: Priority | str = Priority.NORMAL,
        dependency: str | None = None,
        queue: str | None = None,
    ) -> RetryDecision:
        """Decide whether and when to retry a failed attempt; call it once per failed attempt.

        Args:
            task_name: the task's name (history and budget are per task).
            exc: what the attempt raised.
            retry_count: retries already made (0 for a failed first attempt).
            now: the wall time of the failure; the clock's time by default.
            context: extra facts for the classifier (queue, execution_time, ...).
            priority: the task's priority (off-peak deferral).
            dependency: the downstream service this task calls; its breaker records
                the failure and an open breaker pushes the retry to its next probe.
            queue: the queue the retry goes to (load adaptation).

        Returns:
            The decision; the failure has been recorded in history, budget and breaker.
        """
        if retry_count < 0:
            raise ConfigurationError(
                f"retry_count must be >= 0, got {retry_count!r}",
                key="retry_count",
                value=retry_count,
            )
        t = self._clock.time() if now is None else now
        # A member needs no conversion (the enum call costs more than the check).
        prio = priority if type(priority) is Priority else Priority(priority)
        ctx: dict[str, object] = dict(context or {})
        ctx.setdefault("task_name", task_name)
        ctx.setdefault("retry_count", retry_count)
        ctx.setdefault("now", t)
        classification = self._classifier(exc, ctx)
        failure_type = classification.failure_type
        base = self.policy_for(failure_type)
        retry_number = retry_count + 1

        self._record_failure(task_name, failure_type, retry_count, t)
        breaker_state: CircuitState | None = None
        probe_in: float | None = None
        if dependency is not None:
            breaker = self.breaker(dependency, policy=base)
            breaker.record_failure(exc)
            breaker_state = breaker.state
            if breaker_state is not CircuitState.CLOSED:
                probe_in = breaker.seconds_until_probe()

        def give_up(reason: str, policy: RetryPolicy = base) -> RetryDecision:
            return RetryDecision(
                retry=False,
                delay=None,
                eta=None,
                reason=reason,
                classification=classification,
                policy=policy,
                retry_number=retry_number,
                breaker_state=breaker_state,
            )

        if not classification.retry_recommended or base.max_retries == 0:
            return give_up(
                f"{failure_type} is not retried ({classification.evidence}): "
                f"{classification.remediation_details}"
            )

        policy, notes = self._adapt(task_name, failure_type, base, queue)
        if retry_count >= policy.max_retries:
            return give_up(
                f"{failure_type}: retries exhausted ({retry_count} of {policy.max_retries} made)"
                + _joined(notes),
                policy,
            )
        if self.budget is not None and not self.budget.try_acquire(task_name, now=t):
            state = self.budget.state(task_name, now=t)
            return give_up(
                f"{failure_type}: retry budget exhausted for {task_name} "
                f"({state.retries} retries of {state.allowed:g} allowed in the last "
                f"{self.budget.window:g}s), not retrying so an outage is not multiplied",
                policy,
            )

        delay = policy.delay(retry_number, rng=self._rng)
        reason = f"{failure_type}: retry {retry_number} of {policy.max_retries} in {delay:g}s"
        if classification.retry_after is not None:
            asked = classification.retry_after
            # Retry-After is the soonest the server takes traffic again, and every task it
            # rate-limited was told the same: spread them past it, then cap.
            delay = min(self.spread(asked), self.max_retry_after)
            if delay < asked:
                how = f", capped at {self.max_retry_after:g}s"
            elif delay > asked:
                how = f" + {delay - asked:.3g}s spread"
            else:
                how = ""
            reason = (
                f"{failure_type}: retry {retry_number} of {policy.max_retries} in {delay:g}s "
                f"as the server asked (Retry-After {asked:g}s{how})"
            )
        if probe_in is not None and probe_in > delay:
            delay = probe_in
            notes.append(f"waits for breaker {dependency!r} to probe in {probe_in:g}s")
        deferred = self._defer(t, t + delay, prio)
        if deferred is not None:
            delay, note = deferred
            notes.append(note)
        return RetryDecision(
            retry=True,
            delay=delay,
            eta=t + delay,
            reason=reason + _joined(notes),
            classification=classification,
            policy=policy,
            retry_number=retry_number,
            breaker_state=breaker_state,
        )

    def record_outcome(
        self,
        task_name: str,
        *,
        success: bool,
        retry_count: int,
        failure_type: FailureType | None = None,
        dependency: str | None = None,
        now: float | None = None,
    ) -> None:
        """Record an attempt that did not go through :meth:`decide` (a success).

        Args:
            task_name: the task's name.
            success: whether the attempt succeeded.
            retry_count: retries made before this attempt (0 for a first attempt).
            failure_type: for a retry, the type of the failure it retried.
            dependency: the dependency whose breaker records the success.
            now: the wall time of the outcome.
        """
        t = self._clock.time() if now is None else now
        if retry_count == 0 and self.budget is not None:
            self.budget.record_first_attempt(task_name, now=t)
        if retry_count > 0 and failure_type is not None:
            self.history.record(task_name, failure_type, success=success)
        if dependency is not None and success:
            self.breaker(dependency).record_success()

    def statistics(self, task_name: str) -> TaskStatistics:
        """Retry outcomes of ``task_name`` per failure type and in total."""
        return self.history.statistics(task_name)

    def _record_failure(
        self, task_name: str, failure_type: FailureType, retry_count: int, now: float
    ) -> None:
        if retry_count == 0:
            if self.budget is not None:
                self.budget.record_first_attempt(task_name, now=now)
        else:
            self.history.record(task_name, failure_type, success=False)

    def _adapt(
        self, task_name: str, failure_type: FailureType, policy: RetryPolicy, queue: str | None
    ) -> tuple[RetryPolicy, list[str]]:
        notes: list[str] = []
        stats = self.history.get(task_name, failure_type)
        rate = stats.success_rate
        if rate is not None and stats.total >= _MIN_HISTORY:
            if rate > _HIGH_SUCCESS:
                policy = policy.scaled(_FAST)
                notes.append(
                    f"delays x{_FAST} as {rate:.0%} of {stats.total} past retries succeeded"
                )
            elif rate < _LOW_SUCCESS:
                policy = policy.scaled(_SLOW).with_max_retries(max(1, policy.max_retries - 1))
                notes.append(
                    f"delays x{_SLOW} and one retry fewer as only {rate:.0%} of "
                    f"{stats.total} past retries succeeded"
                )
        if self._queue_depth is not None:
            depth = self._queue_depth(queue)
            if depth is not None and depth > self.load_threshold:
                policy = policy.scaled(_LOADED)
                notes.append(f"delays x{_LOADED} as queue depth {depth} > {self.load_threshold}")
        return policy, notes

    def _defer(self, now: float, eta: float, priority: Priority) -> tuple[float, str] | None:
        """The delay from ``now`` past the off-peak start, if ``eta`` falls in peak hours."""
        if self.peak_hours is None or priority not in self.defer_priorities:
            return None
        start, end = self.peak_hours
        local = datetime.fromtimestamp(eta, self.timezone)
        hour = local.hour
        in_peak = start <= hour < end if start < end else (hour >= start or hour < end)
        if not in_peak:
            return None
        # Aware-datetime arithmetic is wall-clock arithmetic in the zone, so the
        # off-peak start stays at `end` o'clock local time across DST changes.
        off_peak = local.replace(hour=end, minute=0, second=0, microsecond=0)
        if off_peak <= local:
            off_peak += timedelta(days=1)
        # Every deferred retry waits for the same instant: spread them over the
        # following half of the wait, 5 minutes at most (off-peak lasts an hour or more).
        wait = off_peak.timestamp() - now
        delay = self.spread(wait)
        note = (
            f"deferred to off-peak {off_peak:%Y-%m-%d %H:%M %Z} + {delay - wait:.0f}s spread "
            f"({priority} priority, peak hours {start:02d}:00-{end:02d}:00 {self.timezone})"
        )
        return delay, note

    def _default_breaker(self, dependency: str, policy: RetryPolicy) -> CircuitBreaker:
        shared = None if self._store is None else self._store.breakers
        settings = policy.breaker
        if settings is None:
            return CircuitBreaker(dependency, store=shared, clock=self._clock)
        return CircuitBreaker(
            dependency,
            failure_threshold=settings.failure_threshold,
            reset_timeout=settings.reset_timeout,
            store=shared,
            clock=self._clock,
        )


def _joined(notes: list[str]) -> str:
    return "".join(f"; {n}" for n in notes) if notes else ""


def _zone(value: str | tzinfo) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"timezone {value!r} is not a known IANA time zone", key="timezone", value=value
        ) from exc


def _check_peak_hours(value: tuple[int, int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23 for h in value)
        and value[0] != value[1]
    )
    if not ok:
        raise ConfigurationError(
            f"peak_hours must be (start, end) distinct hours in 0..23, got {value!r}",
            key="peak_hours",
            value=value,
        )
    return value

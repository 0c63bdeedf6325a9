"""Stateful property test of resilience.breaker: random calls, outcomes, time and modes."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from resilience.breaker import CircuitBreaker, CircuitState, Permit, PermitKind
from resilience.clock import FakeClock
from resilience.errors import CircuitOpenError
from resilience.storage import BreakerRecord, MemoryBreakerStore

START = 1_000_000.0
MAX_PROBES = 2
PROBE_TIMEOUT = 25.0
RESET_TIMEOUT = 10.0


class OutageError(Exception):
    """A counted failure (is_failure below)."""


class BadPayloadError(Exception):
    """An uncounted failure."""


class BreakerMachine(RuleBasedStateMachine):
    """Two workers share one breaker; calls start, finish, get interrupted; time moves."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=START)
        self.store = MemoryBreakerStore()
        self.workers = [
            CircuitBreaker(
                "dep",
                failure_threshold=2,
                half_open_max_calls=MAX_PROBES,
                success_threshold=2,
                reset_timeout=RESET_TIMEOUT,
                probe_timeout=PROBE_TIMEOUT,
                is_failure=lambda exc: isinstance(exc, OutageError),
                store=self.store,
                clock=self.clock,
                listeners=[self.changed],
            )
            for _ in range(2)
        ]
        self.changes: list[tuple[CircuitState, CircuitState]] = []
        self.in_flight: list[tuple[int, Permit, float]] = []
        self.version = 0

    def changed(self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        """Listener: remember every reported change."""
        self.changes.append((old, new))

    def record(self) -> BreakerRecord:
        """The stored record (a fresh one before the first write)."""
        return self.store.load("dep") or BreakerRecord()

    @initialize(tripped=st.booleans())
    def begin(self, tripped: bool) -> None:
        """Start closed, or already open and due for a probe."""
        if tripped:
            for _ in range(2):
                self.workers[0].record_failure(OutageError("down"))
            self.clock.advance(RESET_TIMEOUT)

    @rule(worker=st.integers(0, 1), count=st.integers(1, 3))
    def start_calls(self, worker: int, count: int) -> None:
        """Several calls ask for admission at once."""
        for _ in range(count):
            self.start_call(worker)

    @rule(worker=st.integers(0, 1))
    def start_call(self, worker: int) -> None:
        """A call asks for admission; refusals happen only when not closed/disabled."""
        breaker = self.workers[worker]
        effective = breaker.state
        try:
            permit = breaker.before_call()
        except CircuitOpenError as exc:
            refused: CircuitOpenError | None = exc
        else:
            refused = None
        if refused is not None:
            assert effective in {
                CircuitState.OPEN,
                CircuitState.HALF_OPEN,
                CircuitState.FORCED_OPEN,
            }
            if effective is CircuitState.FORCED_OPEN:
                assert refused.retry_after is None
            else:
                assert refused.retry_after is not None
                assert refused.retry_after > 0
            return
        assert effective in {CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.DISABLED}
        self.in_flight.append((worker, permit, self.clock.time()))

    @precondition(lambda self: bool(self.in_flight))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["success", "outage", "bad-input", "interrupt"]),
    )
    def finish_call(self, data: st.DataObject, outcome: str) -> None:
        """A call in flight (any of them, in any order) reports its outcome."""
        index = data.draw(st.integers(0, len(self.in_flight) - 1))
        worker, permit, _ = self.in_flight.pop(index)
        breaker = self.workers[worker]
        if outcome == "success":
            breaker.record_success(permit=permit)
        elif outcome == "outage":
            breaker.record_failure(OutageError("down"), permit=permit)
        elif outcome == "bad-input":
            breaker.record_failure(BadPayloadError("bad"), permit=permit)
        else:
            breaker.record_failure(KeyboardInterrupt(), permit=permit)

    @rule(worker=st.integers(0, 1), failed=st.booleans())
    def unattributed_outcome(self, worker: int, failed: bool) -> None:
        """An outcome fed without a permit, as the retry engine does."""
        if failed:
            self.workers[worker].record_failure(OutageError("down"))
        else:
            self.workers[worker].record_success()

    @rule(seconds=st.sampled_from([0.5, 3.0, RESET_TIMEOUT, PROBE_TIMEOUT]))
    def advance(self, seconds: float) -> None:
        """Time passes."""
        self.clock.advance(seconds)

    @rule(worker=st.integers(0, 1), action=st.sampled_from(["force_open", "disable", "reset"]))
    def operate(self, worker: int, action: str) -> None:
        """An operator changes the mode."""
        getattr(self.workers[worker], action)()

    @invariant()
    def probes_in_flight_are_bounded(self) -> None:
        """Never more than half_open_max_calls live probes of the current episode in flight."""
        record = self.record()
        now = self.clock.time()
        live = [
            permit
            for _, permit, admitted_at in self.in_flight
            if permit.kind is PermitKind.PROBE
            and permit.trips == record.trips
            and admitted_at + PROBE_TIMEOUT > now
            and record.state is CircuitState.HALF_OPEN
            and any(token == permit.token for token, _ in record.probes)
        ]
        assert len(live) <= MAX_PROBES
        held = {token for token, lease in record.probes if lease > now}
        outstanding = {p.token for _, p, _ in self.in_flight if p.kind is PermitKind.PROBE}
        assert held <= outstanding, "every held slot belongs to a call still in flight"

    @invariant()
    def record_is_consistent(self) -> None:
        """The stored fields agree with the stored state."""
        record = self.record()
        state = record.state
        assert record.version >= self.version
        self.version = record.version
        if state is not CircuitState.HALF_OPEN:
            assert record.probes == ()
            assert record.half_open_successes == 0
        if state is CircuitState.CLOSED:
            assert record.consecutive_failures < 2
            assert record.opened_at is None
        elif state is CircuitState.OPEN:
            assert record.opened_at is not None
            assert record.open_until == record.opened_at + RESET_TIMEOUT
        elif state is CircuitState.HALF_OPEN:
            assert len(record.probes) <= MAX_PROBES
            assert record.half_open_successes < 2

    @invariant()
    def workers_agree_and_reading_never_writes(self) -> None:
        """Both workers report the same effective state, and reading it stores nothing."""
        before = self.store.load("dep")
        states = {w.state for w in self.workers}
        for worker in self.workers:
            worker.seconds_until_probe()
        assert self.store.load("dep") is before
        assert len(states) == 1
        record = self.record()
        due = record.state is CircuitState.OPEN and self.clock.time() >= (record.open_until or 0)
        expected = CircuitState.HALF_OPEN if due else record.state
        assert states == {expected}

    @invariant()
    def listeners_saw_a_consistent_chain(self) -> None:
        """Reported changes are real, chain old-to-new, and end at the stored state."""
        for old, new in self.changes:
            assert old is not new
        for (_, new), (old, _) in zip(self.changes, self.changes[1:], strict=False):
            assert new is old
        if self.changes:
            assert self.changes[-1][1] is self.record().state


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)

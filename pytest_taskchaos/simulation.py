"""Run a Celery app's tasks in deterministic virtual time, in-process, and record a history.

::

    with Simulation(app, seed=7) as sim:
        sim.inject("billing.charge", lambda: ConnectionResetError("reset"), times=2)
        charge.delay(order_id=1)
        sim.run_until_idle()
    assert len(sim.events(kind="retried", task="billing.charge")) == 2

How publishing is captured: while a simulation is active, the app's ``send_task``
(which every ``delay`` / ``apply_async`` / signature / ``self.retry`` goes through)
is wrapped to turn ``countdown`` / ``eta`` into a virtual due time and to give
tasks ids from the seeded generator, and the app's ``amqp.send_task_message`` (the
last step before the broker) is replaced to put Celery's fully built message into
a virtual queue ordered by (due time, publish order). Celery still routes and builds
the message, so headers (``retries``, custom headers of a retry) and the body are
the ones a worker would receive; the body comes back as the app's serializer would
return it from the wire (scalar JSON arguments without the round trip, which
cannot change them). Nothing reaches the broker, and ``task_always_eager`` is not used.

How a message runs: the clock moves to its due time, then Celery's tracer
(``celery.app.trace.build_tracer``, built once per task) runs it with the request
a worker builds (id, retries, headers, delivery info), so signals, ``on_retry`` /
``on_failure`` / ``on_success``, result states and ``self.retry()`` behave as on a
worker; a retry's message lands back in the virtual queue at its eta. Inside the
simulation the tracer's ``ExceptionInfo`` is a light one (see ``_einfo``): billiard's
copies every frame for pickling, which one process never needs.

Virtual time: one freezegun freezer per simulation, moved at every message, so
``datetime.now()`` / ``time.time()`` in task code read the virtual clock. It also
freezes ``time.monotonic`` / ``time.perf_counter`` inside the block: measure real
time there with ``time.clock_gettime(time.CLOCK_MONOTONIC)``.

Not simulated yet: message expiry, the publish signals (``before_task_publish`` /
``after_task_publish``), redelivery (``redelivered`` is always false), and events
for the ``IGNORED`` / ``REJECTED`` states (such a run records only ``started``).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from heapq import heappop
from typing import TYPE_CHECKING, Any, Self

from celery import states  # type: ignore[import-untyped]
from celery.app import trace as celery_trace  # type: ignore[import-untyped]
from kombu import serialization

from pytest_taskchaos._einfo import LightExceptionInfo
from pytest_taskchaos._history import Event, EventKind, fingerprint, select
from pytest_taskchaos._parts import (
    Fault,
    InjectionPoint,
    Message,
    SimulationError,
    StepBudgetExceeded,
    VirtualQueue,
    replace,
    restore,
)
from resilience import RetryEngine
from resilience.celery import install, signals
from resilience.clock import FakeClock, seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from resilience.celery import Resilience
    from resilience.storage import Store

__all__ = [
    "DEFAULT_START",
    "Event",
    "EventKind",
    "InjectionPoint",
    "Simulation",
    "SimulationError",
    "StepBudgetExceeded",
]

DEFAULT_START = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
"""Where virtual time begins unless told: a Monday noon, UTC."""

_HOSTNAME = "taskchaos@simulation"
# kombu's (un-annotated) serializer: a captured body takes the wire's round trip.
_dumps: Callable[..., tuple[str, str, Any]] = serialization.dumps
_loads: Callable[..., Any] = serialization.loads


_SCALARS = (str, int, float, bool, type(None))


def _plain_body(body: Any, serializer: str) -> tuple[Any, ...] | None:
    """A body as the JSON wire would return it, or None when only the wire can tell.

    Scalar arguments come back from JSON unchanged (the args tuple as a list), so
    the round trip, a good part of a publish's cost, is skipped for them; anything
    else (containers, objects, signatures in the embed, other serializers) takes it.
    """
    if serializer != "json":
        return None
    args, kwargs, embed = body
    if any(value is not None for value in embed.values()):
        return None
    if any(type(key) is not str for key in kwargs):
        return None
    for value in (*args, *kwargs.values()):
        # Exact types: a subclass (an IntEnum, a str subclass) may not survive.
        if type(value) not in _SCALARS:
            return None
    return (list(args), dict(kwargs), dict(embed))


class Simulation:
    """A Celery app's tasks run in virtual time, in-process, seeded; a context manager.

    Entering installs ``resilience`` on the app with a :class:`FakeClock` and the
    store (``memory://`` unless given), a retry engine whose jitter is drawn from
    the seeded generator, seeds the global ``random`` (Celery's retry jitter) and
    starts one freezegun freezer that follows the virtual clock. Leaving undoes the
    patches, stops the freezer and restores the global ``random``'s state (the app
    keeps the installation, as after any ``install()``).

    Args:
        app: the Celery app whose tasks run in the simulation.
        seed: the seed of every random choice (task ids, jitter).
        start: the virtual wall-clock time at the start (epoch seconds).
        store: a store URL or an opened store; default ``"memory://"``.

    Raises:
        ConfigurationError: a bad argument (``key`` names it).
    """

    def __init__(
        self,
        app: Any,
        *,
        seed: int = 0,
        start: float = DEFAULT_START,
        store: str | Store | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigurationError(f"seed must be an int, got {seed!r}", key="seed", value=seed)
        if isinstance(start, bool) or not isinstance(start, int | float) or start < 0:
            raise ConfigurationError(
                f"start must be epoch seconds >= 0, got {start!r}", key="start", value=start
            )
        self.app = app
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = FakeClock(start=float(start))
        self.start = float(start)
        self.history: list[Event] = []
        self._store: str | Store = "memory://" if store is None else store
        self._runtime: Resilience | None = None
        self._queue = VirtualQueue()
        self._faults: list[Fault] = []
        self._tracers: dict[str, Callable[..., Any]] = {}
        self._patched: dict[str, tuple[bool, Any]] = {}
        self._current: Message | None = None
        self._pending_due: float | None = None
        self._retry_due: dict[str, float] = {}
        self._exit: ExitStack | None = None
        self._frozen: Any = None
        self._original_send_task: Callable[..., Any] | None = None
        self._producer: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        if self._exit is not None:
            raise SimulationError("this Simulation is already active")
        from freezegun import freeze_time  # noqa: PLC0415 -- costs ~10 ms, paid only when used

        stack = ExitStack()
        try:
            runtime = install(self.app, store=self._store, clock=self.clock)
            # install() gives the engine its own unseeded generator; the same settings
            # with a seeded one keep the retry delays reproducible.
            runtime.engine = RetryEngine(
                policies=runtime.settings.policies,
                store=runtime.store,
                clock=self.clock,
                rng=random.Random(self.rng.getrandbits(64)),
            )
            self._runtime = runtime
            saved = random.getstate()
            stack.callback(random.setstate, saved)
            random.seed(self.rng.getrandbits(64))
            freezer = freeze_time(self._wall_clock())
            self._frozen = freezer.start()
            stack.callback(freezer.stop)
            self._patch_publishing(stack)
            # One producer for the whole run: acquiring one from the pool per publish
            # costs more than running the task.
            self._producer = stack.enter_context(self.app.producer_or_acquire())
            replace(stack, celery_trace, "ExceptionInfo", LightExceptionInfo)
            uid = f"taskchaos.simulation.{id(self)}"
            signals.on_dead_letter.connect(self._on_dead_letter, weak=False, dispatch_uid=uid)
            stack.callback(signals.on_dead_letter.disconnect, dispatch_uid=uid)
            stack.callback(self._unpatch_tasks)
            for name in {fault.task_name for fault in self._faults}:
                self._patch_task(name)
        except BaseException:
            stack.close()
            raise
        self._exit = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit = self._exit, None
        self._frozen = None
        if stack is not None:
            stack.close()

    @property
    def runtime(self) -> Resilience:
        """The app's ``resilience`` installation inside the simulation (store, DLQ, engine).

        Raises:
            SimulationError: the simulation was never entered.
        """
        if self._runtime is None:
            raise SimulationError("enter the Simulation (a with block) first")
        return self._runtime

    @property
    def now(self) -> float:
        """Virtual seconds since the simulation began."""
        return self.clock.time() - self.start

    @property
    def pending(self) -> int:
        """How many messages wait in the virtual queue."""
        return len(self._queue.heap)

    # ------------------------------------------------------------------ faults

    def inject(
        self,
        task_name: str,
        exc_factory: Callable[[], BaseException] | BaseException,
        *,
        at: InjectionPoint | str = InjectionPoint.ENTRY,
        times: int | None = None,
    ) -> None:
        """Make a task raise an exception at its entry or exit.

        Args:
            task_name: the registered name of one of the app's tasks.
            exc_factory: an exception class, a callable returning an exception, or an
                exception instance (raised as it is).
            at: ``"entry"`` (before the body) or ``"exit"`` (after its side effects).
            times: fire on the first ``times`` calls only; ``None``: on every call.

        Raises:
            ConfigurationError: an unknown task, a bad ``at`` or ``times``, or a
                factory that is neither callable nor an exception.
        """
        if task_name not in self.app.tasks:
            known = ", ".join(sorted(n for n in self.app.tasks if not n.startswith("celery.")))
            raise ConfigurationError(
                f"unknown task {task_name!r}; the app's tasks: {known}",
                key="task_name",
                value=task_name,
            )
        try:
            point = InjectionPoint(at)
        except ValueError:
            raise ConfigurationError(
                f"at must be 'entry' or 'exit', got {at!r}", key="at", value=at
            ) from None
        if times is not None and (
            isinstance(times, bool) or not isinstance(times, int) or times < 1
        ):
            raise ConfigurationError(
                f"times must be None or an int >= 1, got {times!r}", key="times", value=times
            )
        if not callable(exc_factory) and not isinstance(exc_factory, BaseException):
            raise ConfigurationError(
                f"exc_factory must be an exception, its class or a factory, got {exc_factory!r}",
                key="exc_factory",
                value=exc_factory,
            )
        self._faults.append(Fault(task_name=task_name, factory=exc_factory, at=point, times=times))
        if self._exit is not None:
            self._patch_task(task_name)

    # ------------------------------------------------------------------ running

    def run_until_idle(self, *, max_steps: int = 10_000) -> int:
        """Run messages until the virtual queue is empty; see :meth:`drain`."""
        return self.drain(max_steps=max_steps)

    def drain(self, *, until: float | timedelta | None = None, max_steps: int = 10_000) -> int:
        """Run due messages in (due time, publish order), moving the virtual clock.

        Args:
            until: a virtual deadline in seconds since the start: messages due later
                stay queued and the clock ends at the deadline. ``None``: no deadline.
            max_steps: the most messages to run.

        Returns:
            How many messages ran.

        Raises:
            StepBudgetExceeded: ``max_steps`` ran and work remains.
            SimulationError: not active, or a message names a task the app lacks.
            ConfigurationError: a bad ``until`` or ``max_steps``.
        """
        if self._exit is None:
            raise SimulationError("drain() runs inside the Simulation's with block only")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigurationError(
                f"max_steps must be an int >= 1, got {max_steps!r}",
                key="max_steps",
                value=max_steps,
            )
        deadline = None if until is None else self.start + seconds_of(until, name="until")
        heap = self._queue.heap
        runs: Counter[str] = Counter()
        steps = 0
        while heap and (deadline is None or heap[0][0] <= deadline):
            if steps >= max_steps:
                raise self._budget_error(max_steps, runs)
            message = heappop(heap)[2]
            runs[message.task_name] += 1
            steps += 1
            self._run(message)
        if deadline is not None:
            self._move_to(deadline)
        return steps

    def events(
        self, *, kind: EventKind | str | None = None, task: str | None = None
    ) -> list[Event]:
        """The history's events of a kind and/or task, in order.

        Raises:
            ConfigurationError: ``kind`` names no event kind.
        """
        return select(self.history, kind=kind, task=task)

    def fingerprint(self) -> str:
        """A digest of the history; the same seed and test give the same one."""
        return fingerprint(self.history)

    def describe(self, events: list[Event] | None = None) -> str:
        """The history (or the given events), one line per event, for failure messages."""
        return "\n".join(event.describe() for event in (self.history if events is None else events))

    # ------------------------------------------------------------------ internals

    def _wall_clock(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), tz=UTC)

    def _move_to(self, when: float) -> None:
        now = self.clock.time()
        if when > now:
            self.clock.advance(when - now)
            self._frozen.move_to(self._wall_clock())

    def _record(
        self, kind: EventKind, task_name: str, task_id: str, attempt: int, **details: Any
    ) -> None:
        self.history.append(
            Event(
                kind=kind,
                at=self.clock.time() - self.start,
                task_name=task_name,
                task_id=task_id,
                attempt=attempt,
                details=details,
            )
        )

    def _budget_error(self, max_steps: int, runs: Counter[str]) -> StepBudgetExceeded:
        queued = Counter(entry[2].task_name for entry in self._queue.heap)
        names = sorted(queued, key=lambda name: (-runs[name], name))
        looping = ", ".join(f"{name} (ran {runs[name]} times)" for name in names)
        return StepBudgetExceeded(
            f"drain() ran its budget of {max_steps} steps at t={self.now:g}s and work "
            f"remains; still queued: {looping}. An endless retry loop? Raise max_steps "
            "if the work is legitimately that long.",
            task_names=names,
            runs=runs,
        )

    def _patch_publishing(self, stack: ExitStack) -> None:
        self._original_send_task = self.app.send_task
        replace(stack, self.app, "send_task", self._send_task)
        replace(stack, self.app.amqp, "send_task_message", self._capture)

    def _send_task(  # noqa: PLR0917 -- Celery.send_task's positional parameters
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> Any:
        now = self.clock.time()
        due = now
        if eta is not None:
            if eta.tzinfo is None:
                eta = eta.replace(tzinfo=UTC)
            due = eta.timestamp()
        elif countdown is not None:
            due = now + float(countdown)
        if task_id is None:
            task_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self._pending_due = due
        when = datetime.fromtimestamp(due, tz=UTC) if due > now else None
        assert self._original_send_task is not None  # noqa: S101 -- set on enter
        if options.get("producer") is None and options.get("connection") is None:
            options["producer"] = self._producer
        try:
            return self._original_send_task(
                name, args, kwargs, eta=when, task_id=task_id, **options
            )
        finally:
            self._pending_due = None

    def _capture(self, producer: Any, name: str, message: Any, **options: Any) -> None:
        headers = dict(message.headers)
        # Celery's sender merges custom headers (a retry's) into the message's own,
        # where the worker's request finds them.
        headers.update(options.get("headers") or {})
        properties = dict(message.properties)
        if options.get("priority") is not None:
            properties["priority"] = options["priority"]
        serializer = options.get("serializer") or self.app.conf.task_serializer
        body = _plain_body(message.body, serializer)
        if body is None:
            content_type, encoding, data = _dumps(message.body, serializer=serializer)
            body = tuple(_loads(data, content_type, encoding, accept=None))
        queue = options.get("queue")
        routing_key = options.get("routing_key") or getattr(queue, "routing_key", None)
        exchange = options.get("exchange") or getattr(getattr(queue, "exchange", None), "name", "")
        due = self._pending_due
        if due is None:
            due = self.clock.time()
        task_id = str(headers["id"])
        attempt = int(headers.get("retries") or 0) + 1
        current = self._current
        if current is not None and current.task_id == task_id:
            self._retry_due[task_id] = due
        self._queue.push(
            Message(
                due=due,
                task_name=name,
                task_id=task_id,
                attempt=attempt,
                headers=headers,
                body=body,
                delivery_info={
                    "exchange": exchange or "",
                    "routing_key": routing_key or getattr(queue, "name", None),
                    "priority": properties.get("priority"),
                    "redelivered": False,
                },
                properties=properties,
            )
        )
        self._record(EventKind.PUBLISHED, name, task_id, attempt, eta=due - self.start)

    def _tracer(self, name: str) -> Callable[..., Any]:
        tracer = self._tracers.get(name)
        if tracer is None:
            task = self.app.tasks.get(name)
            if task is None:
                raise SimulationError(f"a message names task {name!r}, which the app lacks")
            tracer = self._tracers[name] = celery_trace.build_tracer(
                name, task, app=self.app, hostname=_HOSTNAME, eager=False, propagate=False
            )
        return tracer

    def _run(self, message: Message) -> None:
        self._move_to(message.due)
        tracer = self._tracer(message.task_name)
        args, kwargs, embed = message.body
        request = dict(message.headers)
        request.update(
            args=args,
            kwargs=kwargs,
            hostname=_HOSTNAME,
            is_eager=False,
            delivery_info=dict(message.delivery_info),
            properties=dict(message.properties),
            reply_to=message.properties.get("reply_to"),
            correlation_id=message.properties.get("correlation_id", message.task_id),
        )
        request.update(embed or {})
        name, task_id, attempt = message.task_name, message.task_id, message.attempt
        self._record(EventKind.STARTED, name, task_id, attempt)
        self._current = message
        try:
            info = tracer(task_id, args, kwargs, request)[1]
        finally:
            self._current = None
        if info is None or info.state == states.SUCCESS:
            self._record(EventKind.SUCCEEDED, name, task_id, attempt)
        elif info.state == states.RETRY:
            cause = getattr(info.retval, "exc", None)
            due = self._retry_due.pop(task_id, self.clock.time())
            self._record(
                EventKind.RETRIED,
                name,
                task_id,
                attempt,
                countdown=due - self.clock.time(),
                exception=None if cause is None else type(cause).__name__,
            )
        elif info.state == states.FAILURE:
            self._record(
                EventKind.FAILED, name, task_id, attempt, exception=type(info.retval).__name__
            )

    def _on_dead_letter(
        self, sender: Any, record: Any, exception: BaseException, decision: Any, **_: Any
    ) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        current = self._current
        failure_type = None
        if decision is not None:
            failure_type = decision.classification.failure_type.value
        self._record(
            EventKind.DEAD_LETTERED,
            sender.name,
            "" if current is None else current.task_id,
            1 if current is None else current.attempt,
            exception=type(exception).__name__,
            failure_type=failure_type,
        )

    def _patch_task(self, name: str) -> None:
        if name in self._patched:
            return
        task = self.app.tasks[name]
        had = "run" in vars(task)
        previous = vars(task).get("run")
        original = task.run
        faults = self._faults

        def run(*args: Any, **kwargs: Any) -> Any:
            self._fire(faults, name, InjectionPoint.ENTRY)
            result = original(*args, **kwargs)
            self._fire(faults, name, InjectionPoint.EXIT)
            return result

        task.run = run
        self._patched[name] = (had, previous)
        # A plain task's tracer holds the task's run from when it was built.
        self._tracers.pop(name, None)

    def _unpatch_tasks(self) -> None:
        for name, (had, previous) in self._patched.items():
            restore(self.app.tasks[name], "run", had=had, previous=previous)
            self._tracers.pop(name, None)
        self._patched.clear()

    def _fire(self, faults: list[Fault], name: str, point: InjectionPoint) -> None:
        for fault in faults:
            if fault.task_name != name or fault.at is not point:
                continue
            if fault.times is not None and fault.fired >= fault.times:
                continue
            fault.fired += 1
            error = fault.make()
            current = self._current
            self._record(
                EventKind.FAULT_INJECTED,
                name,
                "" if current is None else current.task_id,
                1 if current is None else current.attempt,
                fault=type(error).__name__,
                where=point.value,
            )
            raise error

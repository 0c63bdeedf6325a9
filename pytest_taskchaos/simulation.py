"""Run a Celery app's tasks in deterministic virtual time, in-process, and record a history.

::

    with Simulation(app, seed=7) as sim:
        sim.inject("connection_reset", task="billing.charge", times=2)
        charge.delay(order_id=1)
        sim.run_until_idle()
    assert len(sim.events(kind="retried", task="billing.charge")) == 2

How publishing is captured: while a simulation is active, the app's ``send_task``
(which every ``delay`` / ``apply_async`` / signature / ``self.retry`` goes through)
is replaced. It turns ``countdown`` / ``eta`` into a virtual due time, gives tasks
ids from the seeded generator and puts the message into a virtual queue ordered by
(due time, publish order). The message is the one Celery would publish, built by
:class:`~pytest_taskchaos._publish.DirectPublisher` with Celery's steps (routing,
protocol-2 headers such as ``retries``, ``parent_id`` / ``root_id`` and the custom
headers of a retry, ``argsrepr``, properties) but without Celery's per-publish
overhead; what it does not build (linked callbacks, chains, ``expires``, stamped
headers, custom routers or connections) goes through Celery's own ``send_task``,
whose finished message is taken at ``amqp.send_task_message`` (the last step before
the broker). The body comes back as the app's serializer would return it from the
wire (scalar JSON arguments without the round trip, which cannot change them).
Nothing reaches the broker, and ``task_always_eager`` is not used. ``self.retry()``
of the app's tasks runs :func:`~pytest_taskchaos._publish.fast_retry`: Celery's
``Task.retry`` steps with ``Task.apply_async``'s part done inline (the same
signature, ``Retry``, message; ``tests/pytest_taskchaos/test_fast_retry.py``).

How a message runs: the clock moves to its due time, then Celery's tracer
(``celery.app.trace.build_tracer``, built once per task) runs it with the request
a worker builds (id, retries, headers, delivery info), so signals, ``on_retry`` /
``on_failure`` / ``on_success``, result states and ``self.retry()`` behave as on a
worker; a retry's message lands back in the virtual queue at its eta. Inside the
simulation the tracer's ``ExceptionInfo`` is a light one (see ``_einfo``): billiard's
copies every frame for pickling, which one process never needs.

Garbage collection: ``drain()`` turns automatic collection off while it runs and
collects the young generations every 1,000 runs (each failed run leaves a reference
cycle: Celery's ``Retry`` holds itself), then turns it back on.

Virtual time: one freezegun freezer per simulation, moved at every message, so
``datetime.now()`` / ``time.time()`` in task code read the virtual clock. It also
freezes ``time.monotonic`` / ``time.perf_counter`` inside the block: measure real
time there with ``time.clock_gettime(time.CLOCK_MONOTONIC)``.

Faults (see :mod:`pytest_taskchaos.injection`) fire at task entry, at task exit
(after the body's side effects, before the ack), when a message is published
(broker down), when the result is stored (result backend down), or inside calls
to dependencies (DB, HTTP, Redis, any import path). A lost worker ends the run
without an ack: with ``acks_late`` and ``reject_on_worker_lost`` the message is
delivered again (``redelivered`` set), otherwise Celery's main process marks the
task FAILURE with ``WorkerLostError`` and sends ``task_failure``, as a worker does.
Latency moves the virtual clock inside the run; past the task's soft time limit
the run raises ``SoftTimeLimitExceeded``, past the hard one it ends like a lost
worker with ``TimeLimitExceeded``.

Not simulated: message expiry, the publish signals (``before_task_publish`` /
``after_task_publish``), Celery's ``retry_on_worker_lost``, and events for the
``IGNORED`` / ``REJECTED`` states (such a run records only ``started``).
"""

from __future__ import annotations

import dataclasses
import gc
import random
import warnings
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from heapq import heappop
from typing import TYPE_CHECKING, Any, Self

from celery import signals as celery_signals  # type: ignore[import-untyped]
from celery import states
from celery.app import trace as celery_trace  # type: ignore[import-untyped]
from celery.app.task import Task  # type: ignore[import-untyped]
from celery.exceptions import (  # type: ignore[import-untyped]
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from kombu import serialization

from pytest_taskchaos._einfo import LightExceptionInfo
from pytest_taskchaos._history import Event, EventKind, fingerprint, select
from pytest_taskchaos._injector import Active, Injector
from pytest_taskchaos._parts import (
    Message,
    SimulationError,
    StepBudgetExceeded,
    VirtualQueue,
    replace,
)
from pytest_taskchaos._publish import DirectPublisher, fast_retry
from pytest_taskchaos.faults import CATALOG, InjectionPoint
from pytest_taskchaos.injection import Injection, injection
from resilience.celery import install, signals
from resilience.clock import FakeClock, seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from pytest_taskchaos.schedules import DecisionSource
    from resilience.celery import Resilience
    from resilience.storage import Store

__all__ = [
    "DEFAULT_START",
    "Event",
    "EventKind",
    "Injection",
    "Simulation",
    "SimulationError",
    "StepBudgetExceeded",
]

DEFAULT_START = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
"""Where virtual time begins unless told: a Monday noon, UTC."""

_HOSTNAME = "taskchaos@simulation"
_COLLECT_EVERY = 1_000
# The request keys Celery's Context does not count as custom headers (its _get_custom_headers).
_CELERY_KEYS = frozenset(
    {*celery_trace.Context.__dict__, "lang", "task", "argsrepr", "kwargsrepr", "compression"}
)
_MESSAGE_CHARS = 200
_PUBLISH = InjectionPoint.PUBLISH.value
_RESULT = InjectionPoint.RESULT.value


_WARM: list[bool] = []


def _warm_fault_imports() -> None:
    """Import the libraries the catalog's exceptions come from, once, before freezegun runs.

    A compiled module imported while freezegun has replaced ``datetime.date`` (psycopg's
    binary build, for one) warns that the type's size changed; importing them first
    keeps such imports out of the frozen block.
    """
    if not _WARM:
        for entry in CATALOG.values():
            entry.exception()
        _WARM.append(True)


class _RunEnded(BaseException):
    """Ends a run from inside it, past Celery's ``except Exception``: the worker is gone."""

    def __init__(self, exc: BaseException, *, requeue: bool) -> None:
        super().__init__(exc)
        self.exc = exc
        self.requeue = requeue


# kombu's (un-annotated) serializer: a captured body takes the wire's round trip.
_dumps: Callable[..., tuple[str, str, Any]] = serialization.dumps
_loads: Callable[..., Any] = serialization.loads


_SCALARS = frozenset({str, int, float, bool, type(None)})
# uuid.UUID(int=bits, version=4) sets these bits; its str() costs three times this.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def _uuid4(bits: int) -> str:
    """``str(uuid.UUID(int=bits, version=4))``: a task id from 128 seeded random bits."""
    digits = f"{(bits & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


# The simulation builds its events from its own values: no per-event validation.
_event = Event._trusted


def _plain_body(body: Any, serializer: str) -> tuple[Any, ...] | None:
    """A body as the JSON wire would return it, or None when only the wire can tell.

    Scalar arguments come back from JSON unchanged (the args tuple as a list), so
    the round trip, a good part of a publish's cost, is skipped for them; anything
    else (containers, objects, signatures in the embed, other serializers) takes it.
    """
    if serializer != "json":
        return None
    args, kwargs, embed = body
    for value in embed.values():
        if value is not None:
            return None
    # Exact types: a subclass (an IntEnum, a str subclass) may not survive.
    for value in args:
        if type(value) not in _SCALARS:
            return None
    for key, value in kwargs.items():
        if type(key) is not str or type(value) not in _SCALARS:
            return None
    return (list(args), dict(kwargs), dict(embed))


def _release(raised: BaseException, tracer: Callable[..., Any]) -> None:
    """Clear the tracer's finished frame from a retried or failed run's traceback.

    Celery's tracer clears the frames of that traceback (``traceback_clear``) but its
    own, still running then; the frame holds the run's request, ``ExceptionInfo`` and
    result in a reference cycle that only the garbage collector would free. Cleared
    now, they go at once (the frame keeps its code and line for tracebacks; its
    locals, which a worker's copied frames never carry, are gone).
    """
    tb = raised.__traceback__
    if tb is not None and tb.tb_frame.f_code is getattr(tracer, "__code__", None):
        tb.tb_frame.clear()


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
        seed: the seed of every random choice (task ids, jitter, fault schedules).
        start: the virtual wall-clock time at the start (epoch seconds).
        store: a store URL or an opened store; default ``"memory://"``.
        decisions: where probabilistic fault schedules draw from; default a
            generator seeded from ``seed`` (hypothesis passes its own, so a failing
            run shrinks to the fewest firings).

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
        decisions: DecisionSource | None = None,
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
        self._injector = Injector(
            app,
            decisions=random.Random(self.rng.getrandbits(64)) if decisions is None else decisions,
            now=lambda: self.now,
            current=lambda: self._current,
            on_fire=self._on_fire,
            on_call=self._on_watched_call,
        )
        self._tracers: dict[str, Callable[..., Any]] = {}
        self._current: Message | None = None
        self._run_began = 0.0
        self._raised: BaseException | None = None
        self._deferred = False
        self._pending_due: float | None = None
        self._retry_due: dict[str, float] = {}
        self._exit: ExitStack | None = None
        self._frozen: Any = None
        self._original_send_task: Callable[..., Any] | None = None
        self._publisher: DirectPublisher | None = None
        self._producer: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        if self._exit is not None:
            raise SimulationError("this Simulation is already active")
        from freezegun import freeze_time  # noqa: PLC0415 -- costs ~10 ms, paid only when used

        _warm_fault_imports()
        stack = ExitStack()
        try:
            self._runtime = install(
                self.app,
                store=self._store,
                clock=self.clock,
                rng=random.Random(self.rng.getrandbits(64)),
            )
            saved = random.getstate()
            stack.callback(random.setstate, saved)
            random.seed(self.rng.getrandbits(64))
            # pytest's own timing (--durations, junit times) keeps the real clock.
            freezer = freeze_time(self._wall_clock(), ignore=["_pytest", "pluggy"])
            self._frozen = freezer.start()
            stack.callback(freezer.stop)
            self._patch_publishing(stack)
            # One producer for the whole run: acquiring one from the pool per publish
            # costs more than running the task.
            self._producer = stack.enter_context(self.app.producer_or_acquire())
            replace(stack, celery_trace, "ExceptionInfo", LightExceptionInfo)
            self._connect(stack)
            self._injector.start(stack)
            # A plain task's tracer holds the task's run from when it was built.
            self._tracers.clear()
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

    def inject(self, what: Injection | Any, **keywords: Any) -> Injection:
        """Inject a fault into the app's tasks.

        Args:
            what: an :class:`Injection`, or what :func:`~pytest_taskchaos.injection.injection`
                takes first: a catalog name (``"deadlock"``), a
                :class:`~pytest_taskchaos.faults.Fault`, an exception, its class or a factory.
            **keywords: :func:`~pytest_taskchaos.injection.injection`'s keywords
                (``task=``, ``at=``, ``times=``, ``rate=``, ``window=``, ...).

        Returns:
            The injection; :meth:`fired` tells how often it fired.

        Raises:
            ConfigurationError: a bad fault, keyword or point, or a ``task`` pattern
                that matches none of the app's tasks (the message lists them).
        """
        if isinstance(what, Injection):
            if keywords:
                key = next(iter(keywords))
                raise ConfigurationError(
                    f"an Injection is complete; {key!r} cannot be added to it",
                    key=key,
                    value=keywords[key],
                )
            made = what
        else:
            made = injection(what, **keywords)
        self._check_task_pattern(made.task)
        self._injector.add(made)
        if self._exit is not None:
            self._tracers.clear()
        return made

    def fired(self, which: Injection | str | None = None) -> int:
        """How many times an injection fired (by object or label); ``None``: all of them."""
        return sum(
            active.fired
            for active in self._injector.actives
            if which is None or active.injection is which or active.injection.label == which
        )

    @property
    def injections(self) -> list[tuple[Injection, int, int]]:
        """Each injection with the calls that reached its point and how many it fired on."""
        return [(active.injection, active.calls, active.fired) for active in self._injector.actives]

    def watch(self, spec: str) -> None:
        """Record each call to a dependency point as a side effect, without injecting.

        Args:
            spec: ``"db"``, ``"http"``, ``"redis"`` or an import path; each call made
                during a run becomes a ``side_effect`` event named ``spec`` whose key is
                the call (``"requests POST https://api.example.com/charges"``).

        Raises:
            ConfigurationError: the point is unknown or the path does not resolve.
        """
        from pytest_taskchaos import _points  # noqa: PLC0415 -- the injector's own helper

        self._injector.watch(_points.check_point(spec))

    def effect(self, name: str, key: object = None) -> None:
        """Record a side effect of the running task (a charge, an email), for assertions.

        Call it from task code (or from a test double the task calls) right where
        the effect happens; ``assert_effect_once`` then finds duplicates per key.

        Args:
            name: what the effect is (``"charge"``).
            key: what makes two effects the same one (the order id); ``None``: unkeyed.

        Raises:
            ConfigurationError: ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"effect name must be a non-empty string, got {name!r}", key="name", value=name
            )
        current = self._current
        self._record(
            EventKind.SIDE_EFFECT,
            "" if current is None else current.task_name,
            "" if current is None else current.task_id,
            1 if current is None else current.attempt,
            name=name,
            key=None if key is None else str(key),
        )

    def _check_task_pattern(self, pattern: str) -> None:
        if pattern == "*":
            return
        from fnmatch import fnmatchcase  # noqa: PLC0415 -- only for filtered injections

        names = sorted(n for n in self.app.tasks if not n.startswith("celery."))
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ConfigurationError(
                f"task {pattern!r} matches none of the app's tasks: {', '.join(names)}",
                key="task",
                value=pattern,
            )

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
        # Every failed run leaves a reference cycle (Celery's Retry holds itself in its
        # args, and its traceback the run's frames), and the history grows: automatic
        # collections rescan the survivors again and again, a quarter of a drain's time.
        # The young objects are collected every _COLLECT_EVERY runs instead.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            while heap and (deadline is None or heap[0][0] <= deadline):
                if steps >= max_steps:
                    raise self._budget_error(max_steps, runs)
                message = heappop(heap)[2]
                runs[message.task_name] += 1
                steps += 1
                self._run(message)
                if collecting and not steps % _COLLECT_EVERY:
                    gc.collect(1)
        finally:
            if collecting:
                gc.enable()
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
        # details is this call's own dict: the event may keep it without a copy.
        self.history.append(
            _event(kind, self.clock.time() - self.start, task_name, task_id, attempt, details)
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
        self._publisher = DirectPublisher(self.app)
        replace(stack, self.app, "send_task", self._send_task)
        replace(stack, self.app.amqp, "send_task_message", self._capture)
        self._patch_retry(stack)

    def _patch_retry(self, stack: ExitStack) -> None:
        # Class-wide, as Celery resolves it; other apps' tasks go to the previous one.
        assert self._publisher is not None  # noqa: S101 -- set just before
        replace(stack, Task, "retry", fast_retry(self.app, Task.retry, self._publisher))

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
        self._injector.fire(_PUBLISH, name)
        now = self.clock.time()
        due = now
        if eta is not None:
            if eta.tzinfo is None:
                eta = eta.replace(tzinfo=UTC)
            due = eta.timestamp()
        elif countdown is not None:
            due = now + float(countdown)
        if task_id is None:
            task_id = _uuid4(self.rng.getrandbits(128))
        when = datetime.fromtimestamp(due, tz=UTC) if due > now else None
        app = self.app
        producer = options.get("producer") or options.get("publisher") or self._producer
        publisher = self._publisher
        built = (
            None
            if publisher is None
            else publisher.build(name, args, kwargs, when, task_id, options)
        )
        if built is None:
            # What the direct builder leaves to Celery: its send_task builds the
            # message and hands it to _capture.
            assert self._original_send_task is not None  # noqa: S101 -- set on enter
            if options.get("producer") is None and options.get("connection") is None:
                options["producer"] = self._producer
            self._pending_due = due
            try:
                return self._original_send_task(
                    name, args, kwargs, eta=when, task_id=task_id, **options
                )
            finally:
                self._pending_due = None
        # The rest of Celery.send_task: tell the result backend, queue, return the result.
        ignore_result = built.ignore_result
        if not ignore_result:
            app.backend.on_task_call(producer, built.task_id)
        self._queue_message(
            name, built.headers, built.properties, built.body, built.options, due=due
        )
        result = (built.result_cls or app.AsyncResult)(built.task_id)
        result.ignored = ignore_result
        if built.parent:
            built.parent.add_trail(result)
        return result

    def _capture(self, producer: Any, name: str, message: Any, **options: Any) -> None:
        due = self._pending_due
        self._queue_message(
            name,
            dict(message.headers),
            dict(message.properties),
            message.body,
            options,
            due=self.clock.time() if due is None else due,
        )

    def _queue_message(
        self,
        name: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        raw_body: Any,
        options: dict[str, Any],
        *,
        due: float,
    ) -> None:
        """Queue a built message as the worker receives it, and record its publish."""
        # Celery's sender merges custom headers (a retry's) into the message's own,
        # where the worker's request finds them.
        custom = options.get("headers")
        if custom:
            headers.update(custom)
        priority = options.get("priority")
        if priority is not None:
            properties["priority"] = priority
        serializer = options.get("serializer")
        if not serializer:
            publisher = self._publisher
            serializer = (
                self.app.conf.task_serializer
                if publisher is None
                else publisher.serializer(options)
            )
        body = _plain_body(raw_body, serializer)
        if body is None:
            content_type, encoding, data = _dumps(raw_body, serializer=serializer)
            body = tuple(_loads(data, content_type, encoding, accept=None))
        queue = options.get("queue")
        routing_key = options.get("routing_key") or getattr(queue, "routing_key", None)
        exchange = options.get("exchange") or getattr(getattr(queue, "exchange", None), "name", "")
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
            delivery_info=dict(message.delivery_info, redelivered=message.redelivered),
            properties=dict(message.properties),
            reply_to=message.properties.get("reply_to"),
            correlation_id=message.properties.get("correlation_id", message.task_id),
        )
        request.update(embed or {})
        if "headers" not in request:
            # What Celery's Context computes from a worker's request when it has no
            # "headers" (a worker's never has): the message's custom headers, or None.
            # Given here, a retried run's Context skips that scan of every key.
            custom = {key: value for key, value in request.items() if key not in _CELERY_KEYS}
            if custom:
                request["headers"] = custom
        name, task_id, attempt = message.task_name, message.task_id, message.attempt
        record = self._record
        record(
            EventKind.DELIVERED,
            name,
            task_id,
            attempt,
            redelivered=message.redelivered,
            duplicate=message.duplicate,
        )
        record(EventKind.STARTED, name, task_id, attempt)
        self._current = message
        self._run_began = self.clock.time()
        self._raised = None
        self._deferred = False
        try:
            if self._injector.targets(_RESULT):
                with warnings.catch_warnings():
                    # What a worker logs when storing the result fails.
                    warnings.filterwarnings("ignore", "Exception raised outside body")
                    info = tracer(task_id, args, kwargs, request)[1]
            else:
                info = tracer(task_id, args, kwargs, request)[1]
        except _RunEnded as ended:
            self._current = None
            self._run_ended(message, ended, request)
            return
        finally:
            self._current = None
        if info is None or info.state == states.SUCCESS:
            record(EventKind.SUCCEEDED, name, task_id, attempt)
        elif info.state == states.RETRY:
            cause = getattr(info.retval, "exc", None)
            if cause is not None:
                self._record_raised(message, cause)
            due = self._retry_due.pop(task_id, self.clock.time())
            record(
                EventKind.RETRIED,
                name,
                task_id,
                attempt,
                countdown=due - self.clock.time(),
                exception=None if cause is None else type(cause).__name__,
                deferred=self._deferred,
            )
        elif info.state == states.FAILURE:
            self._record_raised(message, info.retval)
            record(EventKind.FAILED, name, task_id, attempt, exception=type(info.retval).__name__)
        record(EventKind.ACKED, name, task_id, attempt)
        if info is not None and isinstance(info.retval, BaseException):
            _release(info.retval, tracer)
        # This frame outlives the run in the cycle of Celery's Retry (its args hold it).
        info = cause = None

    def _record_raised(self, message: Message, exc: BaseException) -> None:
        if self._raised is exc:
            return
        self._raised = exc
        self._record(
            EventKind.RAISED,
            message.task_name,
            message.task_id,
            message.attempt,
            exception=type(exc).__name__,
            message=str(exc)[:_MESSAGE_CHARS],
        )

    def _run_ended(self, message: Message, ended: _RunEnded, request: dict[str, Any]) -> None:
        """The worker died (or hit the hard time limit) mid-run: redeliver or fail, as Celery."""
        name, task_id, attempt = message.task_name, message.task_id, message.attempt
        task = self.app.tasks[name]
        exc = ended.exc
        self._record(
            EventKind.WORKER_LOST,
            name,
            task_id,
            attempt,
            exception=type(exc).__name__,
            requeued=ended.requeue,
        )
        if ended.requeue:
            self._queue.push(dataclasses.replace(message, due=self.clock.time(), redelivered=True))
            self._record(EventKind.REDELIVERED, name, task_id, attempt, reason="worker_lost")
            return
        # Celery's main process: mark FAILURE and send task_failure with the request pushed.
        einfo = LightExceptionInfo((type(exc), exc, exc.__traceback__))
        task.backend.mark_as_failure(task_id, exc, request=task.request, store_result=True)
        task.request_stack.push(celery_trace.Context(request))
        try:
            celery_signals.task_failure.send(
                sender=task,
                task_id=task_id,
                exception=exc,
                args=message.body[0],
                kwargs=message.body[1],
                traceback=einfo.traceback,
                einfo=einfo,
            )
        finally:
            task.request_stack.pop()
        self._record(EventKind.FAILED, name, task_id, attempt, exception=type(exc).__name__)
        self._record(EventKind.ACKED, name, task_id, attempt)

    # ------------------------------------------------------------------ firing

    def _on_fire(self, active: Active, where: str, detail: str | None) -> None:
        """Do what a firing fault does: record it, then raise, lose the worker, ..."""
        fault = active.injection.fault
        current = self._current
        error = fault.exception()
        self._record(
            EventKind.FAULT_INJECTED,
            "" if current is None else current.task_name,
            "" if current is None else current.task_id,
            1 if current is None else current.attempt,
            fault=active.injection.label,
            where=where,
            detail=detail,
            exception=None if error is None else type(error).__name__,
            failure_type=None if fault.failure_type is None else fault.failure_type.value,
        )
        if current is None:
            if error is not None:
                raise error
            return
        if fault.latency:
            self._move_to(self.clock.time() + fault.latency)
            self._check_time_limits(current)
        if fault.duplicate_delivery:
            self._queue.push(
                dataclasses.replace(
                    current, due=self.clock.time(), redelivered=True, duplicate=True
                )
            )
            self._record(
                EventKind.REDELIVERED,
                current.task_name,
                current.task_id,
                current.attempt,
                reason="duplicate_delivery",
            )
        if error is None:
            return
        if fault.worker_lost:
            raise _RunEnded(error, requeue=self._requeues_lost(current.task_name))
        raise error

    def _requeues_lost(self, task_name: str) -> bool:
        task = self.app.tasks[task_name]
        reject = task.reject_on_worker_lost
        if reject is None:
            reject = self.app.conf.task_reject_on_worker_lost
        return bool(task.acks_late and reject)

    def _check_time_limits(self, message: Message) -> None:
        task = self.app.tasks[message.task_name]
        hard, soft = message.headers.get("timelimit") or (None, None)
        hard = task.time_limit if hard is None else hard
        soft = task.soft_time_limit if soft is None else soft
        elapsed = self.clock.time() - self._run_began
        if hard is not None and elapsed >= hard:
            exc = TimeLimitExceeded(hard)
            acks_on_timeout = task.acks_on_timeout
            raise _RunEnded(exc, requeue=bool(task.acks_late and not acks_on_timeout))
        if soft is not None and elapsed >= soft:
            raise SoftTimeLimitExceeded(soft)

    def _on_watched_call(self, spec: str, detail: str) -> None:
        current = self._current
        if current is not None:
            self._record(
                EventKind.SIDE_EFFECT,
                current.task_name,
                current.task_id,
                current.attempt,
                name=spec,
                key=detail,
            )

    # ------------------------------------------------------------------ resilience's signals

    def _connect(self, stack: ExitStack) -> None:
        uid = f"taskchaos.simulation.{id(self)}"
        for signal, receiver in (
            (signals.on_dead_letter, self._on_dead_letter),
            (signals.on_decision, self._on_decision),
            (signals.on_idempotency, self._on_idempotency),
            (signals.on_breaker_call, self._on_breaker_call),
            (signals.on_breaker_change, self._on_breaker_change),
        ):
            signal.connect(receiver, weak=False, dispatch_uid=uid)
            stack.callback(signal.disconnect, dispatch_uid=uid)

    def _mine(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app

    def _here(self) -> tuple[str, str, int]:
        current = self._current
        if current is None:
            return "", "", 1
        return current.task_name, current.task_id, current.attempt

    def _on_decision(
        self, sender: Any, request: Any, exception: BaseException, decision: Any, **_: Any
    ) -> None:
        current = self._current
        if not self._mine(sender) or current is None:
            return
        self._record_raised(current, exception)
        name, task_id, attempt = self._here()
        verdict = decision.classification
        self._record(
            EventKind.CLASSIFIED,
            name,
            task_id,
            attempt,
            failure_type=verdict.failure_type.value,
            confidence=verdict.confidence,
        )
        self._record(
            EventKind.DECIDED,
            name,
            task_id,
            attempt,
            action="retry" if decision.retry else "dead_letter",
            delay=decision.delay,
            reason=decision.reason,
            failure_type=verdict.failure_type.value,
        )

    def _on_idempotency(self, sender: Any, request: Any, key: str, outcome: str, **_: Any) -> None:
        if not self._mine(sender):
            return
        if outcome == "in_progress":
            self._deferred = True
        self._record(EventKind.IDEMPOTENCY, *self._here(), key=key, outcome=outcome)

    def _on_breaker_call(
        self, sender: str, task: Any, admitted: bool, retry_after: float | None, **_: Any
    ) -> None:
        if not self._mine(task):
            return
        if admitted:
            self._record(EventKind.CALL_ADMITTED, *self._here(), breaker=sender)
            return
        self._deferred = True
        self._record(
            EventKind.CALL_REJECTED, *self._here(), breaker=sender, retry_after=retry_after
        )

    def _on_breaker_change(self, sender: str, old_state: Any, new_state: Any, **_: Any) -> None:
        self._record(
            EventKind.BREAKER_CHANGED,
            *self._here(),
            breaker=sender,
            old=str(getattr(old_state, "value", old_state)),
            new=str(getattr(new_state, "value", new_state)),
        )

    def _on_dead_letter(
        self, sender: Any, record: Any, exception: BaseException, decision: Any, **_: Any
    ) -> None:
        if not self._mine(sender):
            return
        current = self._current
        if current is not None:
            self._record_raised(current, exception)
        failure_type = getattr(getattr(record, "failure_type", None), "value", None)
        if decision is not None:
            failure_type = decision.classification.failure_type.value
        task_id, attempt = self._here()[1:]
        self._record(
            EventKind.DEAD_LETTERED,
            sender.name,
            task_id,
            attempt,
            exception=type(exception).__name__,
            failure_type=failure_type,
        )

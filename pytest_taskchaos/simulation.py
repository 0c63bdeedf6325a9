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
copies every frame for pickling, which one process never needs. Celery's stack of
running tasks (``celery._state._task_stack``, which ``current_task`` and every
publish from a task read) is the one Celery builds under ``USE_FAST_LOCALS``: a
``threading.local`` list instead of a ``Local`` whose lookups fail into
``__getattr__`` first, the same stack semantics at a tenth of the cost.

Results: nothing reaches the app's result backend either. For the length of the
simulation the app's backend, and the one a task names for itself, is Celery's
in-memory key-value backend (``cache+memory://``'s ``CacheBackend``, with a cache of
its own per simulation; see ``_results``): results are stored and read as with
Redis (same keys, the app's serializer), so ``AsyncResult(id).state`` / ``.result``
of the results ``delay()`` returned read SUCCESS, RETRY or FAILURE inside the block
and after it; ``task_ignore_result`` / ``ignore_result`` store nothing, as Celery.
The original backends come back, untouched, when the block ends. An app without a
result backend keeps Celery's ``DisabledBackend``. No broker or result server is
ever connected to: an app configured with unreachable ones runs the same.

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

This module holds the public class and the run loop; its parts live in private
modules: the publishing capture in ``_capture``, the history and ``resilience``'s
signals in ``_recorder``, what a firing fault does in ``_faulting``, the in-memory
result backend in ``_results``.
"""

from __future__ import annotations

import gc
import random
import warnings
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from heapq import heappop
from typing import TYPE_CHECKING, Any, Self

from celery import _state as celery_state  # type: ignore[import-untyped]
from celery import states
from celery.app import base as celery_app_base  # type: ignore[import-untyped]
from celery.app import task as celery_app_task
from celery.app import trace as celery_trace
from celery.utils.threads import _FastLocalStack  # type: ignore[import-untyped]

from pytest_taskchaos._capture import Capture
from pytest_taskchaos._einfo import LightExceptionInfo
from pytest_taskchaos._faulting import FaultEffects, RunEnded, warm_fault_imports
from pytest_taskchaos._history import Event, EventKind, fingerprint, select
from pytest_taskchaos._injector import Injector
from pytest_taskchaos._parts import (
    Message,
    SimulationError,
    StepBudgetExceeded,
    VirtualQueue,
    replace,
)
from pytest_taskchaos._recorder import Recorder
from pytest_taskchaos._results import swap_result_backends
from pytest_taskchaos.faults import InjectionPoint
from pytest_taskchaos.injection import Injection, injection
from resilience.celery import installed
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
_RESULT = InjectionPoint.RESULT.value


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


def _fast_task_stack(stack: ExitStack) -> None:
    """Celery's stack of running tasks as ``USE_FAST_LOCALS`` makes it, until ``stack`` closes.

    The modules that imported the stack by name get the new one too; the tasks on
    the old stack (a simulation entered from a running task) are carried over.
    """
    fast = _FastLocalStack()
    for task in celery_state._task_stack.stack:
        fast.push(task)
    for module in (celery_state, celery_app_task, celery_app_base, celery_trace):
        replace(stack, module, "_task_stack", fast)
    replace(stack, celery_state, "push_current_task", fast.push)
    replace(stack, celery_state, "pop_current_task", fast.pop)


class Simulation:
    """A Celery app's tasks run in virtual time, in-process, seeded; a context manager.

    Entering moves the app's ``resilience`` installation onto a :class:`FakeClock`
    and the store (``memory://`` unless given), its engine's jitter drawn from the
    seeded generator (``resilience.celery.installed``: the app's configured
    policies, settings, budget and redaction stay), seeds the global ``random``
    (Celery's retry jitter), makes the app's result backend (and any task's own)
    an in-memory one of this simulation's (an app without one keeps none), and
    starts one freezegun freezer that follows the virtual clock. Leaving undoes the
    patches (the app's own result backend is back), stops the freezer, restores the
    global ``random``'s state and puts the app's previous installation back, also
    when the block raised.

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
        self._recorder = recorder = Recorder(app, clock=self.clock, start=self.start)
        self.history: list[Event] = recorder.history
        self._store: str | Store = "memory://" if store is None else store
        self._runtime: Resilience | None = None
        self._queue = VirtualQueue()
        self._faults = FaultEffects(
            app, clock=self.clock, queue=self._queue, recorder=recorder, move_to=self._move_to
        )
        self._injector = Injector(
            app,
            decisions=random.Random(self.rng.getrandbits(64)) if decisions is None else decisions,
            now=lambda: self.now,
            current=lambda: recorder.current,
            on_fire=self._faults.on_fire,
            on_call=recorder.on_watched_call,
        )
        self._capture = Capture(
            app,
            clock=self.clock,
            rng=self.rng,
            queue=self._queue,
            recorder=recorder,
            injector=self._injector,
        )
        self._tracers: dict[str, Callable[..., Any]] = {}
        self._exit: ExitStack | None = None
        self._frozen: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        if self._exit is not None:
            raise SimulationError("this Simulation is already active")
        from freezegun import freeze_time  # noqa: PLC0415 -- costs ~10 ms, paid only when used

        warm_fault_imports()
        stack = ExitStack()
        try:
            self._runtime = stack.enter_context(
                installed(
                    self.app,
                    store=self._store,
                    clock=self.clock,
                    rng=random.Random(self.rng.getrandbits(64)),
                )
            )
            saved = random.getstate()
            stack.callback(random.setstate, saved)
            random.seed(self.rng.getrandbits(64))
            # pytest's own timing (--durations, junit times) keeps the real clock.
            freezer = freeze_time(self._wall_clock(), ignore=["_pytest", "pluggy"])
            self._frozen = freezer.start()
            stack.callback(freezer.stop)
            self._injector.result_backends = swap_result_backends(stack, self.app)
            self._capture.patch(stack)
            self._patch_retry(stack)
            self._capture.open_producer(stack)
            replace(stack, celery_trace, "ExceptionInfo", LightExceptionInfo)
            _fast_task_stack(stack)
            self._recorder.connect(stack, uid=f"taskchaos.simulation.{id(self)}")
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
        current = self._recorder.current
        self._recorder.record(
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

    def _patch_retry(self, stack: ExitStack) -> None:
        # A seam of its own: test_fast_retry.py turns it off to compare with Celery's retry.
        self._capture.patch_retry(stack)

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
        recorder = self._recorder
        record = recorder.record
        record(
            EventKind.DELIVERED,
            name,
            task_id,
            attempt,
            redelivered=message.redelivered,
            duplicate=message.duplicate,
        )
        record(EventKind.STARTED, name, task_id, attempt)
        recorder.current = message
        self._faults.run_began = self.clock.time()
        recorder.raised = None
        recorder.deferred = False
        try:
            if self._injector.targets(_RESULT):
                with warnings.catch_warnings():
                    # What a worker logs when storing the result fails.
                    warnings.filterwarnings("ignore", "Exception raised outside body")
                    info = tracer(task_id, args, kwargs, request)[1]
            else:
                info = tracer(task_id, args, kwargs, request)[1]
        except RunEnded as ended:
            recorder.current = None
            self._faults.run_ended(message, ended, request)
            return
        finally:
            recorder.current = None
        if info is None or info.state == states.SUCCESS:
            record(EventKind.SUCCEEDED, name, task_id, attempt)
        elif info.state == states.RETRY:
            cause = getattr(info.retval, "exc", None)
            if cause is not None:
                recorder.record_raised(message, cause)
            due = self._capture.retry_due.pop(task_id, self.clock.time())
            record(
                EventKind.RETRIED,
                name,
                task_id,
                attempt,
                countdown=due - self.clock.time(),
                exception=None if cause is None else type(cause).__name__,
                deferred=recorder.deferred,
            )
        elif info.state == states.FAILURE:
            recorder.record_raised(message, info.retval)
            record(EventKind.FAILED, name, task_id, attempt, exception=type(info.retval).__name__)
        record(EventKind.ACKED, name, task_id, attempt)
        if info is not None and isinstance(info.retval, BaseException):
            _release(info.retval, tracer)
        # This frame outlives the run in the cycle of Celery's Retry (its args hold it).
        info = cause = None

"""The worker side of real mode: a scenario's app, faults and recorder in a Celery worker.

``taskchaos run --mode real`` starts ``celery -A pytest_taskchaos._real_worker worker``;
this module's ``app`` is built on first access from the environment the runner sets
(:data:`ENV_PREFIX` variables): the scenario file and name, the seed, the time
scale, the Redis URL and the run's key prefix and queue.

Building it:

- loads the scenario's app (``module:attribute``, as the simulation does) and points
  its broker at Redis, under the run's key prefix, consuming the run's queue;
- installs ``resilience`` on it with a Redis store (shared by the pool's processes)
  and a :class:`ScaledClock`, so policies, breaker timeouts, idempotency leases and
  the retry budget all run in the scenario's virtual seconds; every task's
  ``retry`` divides the countdown by the time scale before Celery sees it;
- patches the scenario's faults into the tasks with the simulation's
  :class:`~pytest_taskchaos._injector.Injector` (call counters shared in Redis, so
  ``times`` and ``every`` count calls across the pool's processes);
- records the run as the simulation's events (Celery's and ``resilience``'s
  signals), appended as JSON to one Redis list the runner reads at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from celery import signals as celery_signals  # type: ignore[import-untyped]

from pytest_taskchaos._history import Event, EventKind
from pytest_taskchaos._injector import Active, Injector
from pytest_taskchaos._parts import Message
from pytest_taskchaos.runner import load_app
from pytest_taskchaos.scenario import load_scenarios
from pytest_taskchaos.simulation import DEFAULT_START
from resilience.budget import RetryBudget
from resilience.celery import install, signals
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from pytest_taskchaos.scenario import Scenario

__all__ = [
    "ENV_PREFIX",
    "Recorder",
    "RunKeys",
    "ScaledClock",
    "app",
    "configure",
    "decode_event",
]

ENV_PREFIX: Final = "TASKCHAOS_REAL_"
"""The environment variables the worker reads start with this."""

_MESSAGE_CHARS = 200

app: Any
"""The worker's app, built from the environment on first access (see ``__getattr__``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunKeys:
    """Where one real run keeps its state in Redis (every key under ``prefix``).

    Attributes:
        prefix: the run's key prefix (broker, store and records).
        queue: the queue the worker consumes.
    """

    prefix: str
    queue: str

    @property
    def events(self) -> str:
        """The list of recorded events (JSON), in the order they happened."""
        return f"{self.prefix}events"

    @property
    def origin(self) -> str:
        """The real epoch second at which virtual time 0 began."""
        return f"{self.prefix}origin"

    @property
    def ready(self) -> str:
        """Set when the worker consumes."""
        return f"{self.prefix}ready"

    def counter(self, index: int, what: str) -> str:
        """The shared ``calls`` or ``fired`` counter of injection ``index``."""
        return f"{self.prefix}fault:{index}:{what}"


class ScaledClock:
    """A ``resilience`` clock whose seconds are virtual: ``scale`` of them per real second.

    Virtual time 0 is the real instant stored under :attr:`RunKeys.origin` (read
    once it is set; until then, the clock stands at 0), and reads as the
    simulation's :data:`~pytest_taskchaos.simulation.DEFAULT_START` on the wall,
    so time-of-day rules (peak hours) see the same day as in the simulation.

    Args:
        client: the Redis client holding the origin.
        keys: the run's keys.
        scale: virtual seconds per real second, > 0.
    """

    def __init__(self, client: Any, keys: RunKeys, *, scale: float) -> None:
        self._client = client
        self._keys = keys
        self.scale = scale
        self._origin: float | None = None

    def origin(self) -> float | None:
        """The real epoch second of virtual 0, once the runner set it."""
        if self._origin is None:
            raw = self._client.get(self._keys.origin)
            if raw is not None:
                self._origin = float(raw)
        return self._origin

    def elapsed(self) -> float:
        """Virtual seconds since the start of the run (0 before it starts)."""
        origin = self.origin()
        return 0.0 if origin is None else max(0.0, (time.time() - origin) * self.scale)

    def time(self) -> float:
        """Virtual wall-clock time, epoch seconds."""
        return DEFAULT_START + self.elapsed()

    def monotonic(self) -> float:
        """Virtual seconds, shared by every process of the run."""
        return self.elapsed()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time (``seconds / scale`` real ones)."""
        time.sleep(max(0.0, seconds) / self.scale)

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time in a coroutine."""
        await asyncio.sleep(max(0.0, seconds) / self.scale)


def configure(celery_app: Any, *, url: str, keys: RunKeys) -> None:
    """Point ``celery_app`` at the run's Redis broker, prefix and queue.

    The runner (publishing) and the worker (consuming) configure their apps alike.

    Args:
        celery_app: the scenario's app.
        url: the Redis URL.
        keys: the run's keys.
    """
    transport = {"global_keyprefix": keys.prefix}
    celery_app.conf.update(
        broker_url=url,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=keys.queue,
        # One message at a time per process: a countdown's ETA message is still
        # held by the worker, and prefetching more would only reorder the run.
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )


def decode_event(raw: bytes | str) -> Event:
    """An event recorded by :class:`Recorder` (one JSON list entry)."""
    kind, at, task_name, task_id, attempt, details = json.loads(raw)
    return Event(
        kind=EventKind(kind),
        at=float(at),
        task_name=str(task_name),
        task_id=str(task_id),
        attempt=max(1, int(attempt)),
        details=details,
    )


@dataclass(slots=True)
class _Run:
    """The run in progress in this process."""

    message: Message
    raised: BaseException | None = None
    deferred: bool = False
    countdown: float | None = None


@dataclass(slots=True)
class Recorder:
    """Append the simulation's events for one run to Redis, in this process's order.

    Args:
        client: the Redis client.
        keys: the run's keys.
        clock: the run's clock (events carry virtual seconds).
    """

    client: Any
    keys: RunKeys
    clock: ScaledClock
    current: _Run | None = field(default=None)

    def record(
        self, kind: EventKind, task_name: str, task_id: str, attempt: int, **details: Any
    ) -> None:
        """Append one event at the current virtual time."""
        entry = [kind.value, self.clock.elapsed(), task_name, task_id, attempt, details]
        self.client.rpush(self.keys.events, json.dumps(entry, default=str))

    def here(self) -> tuple[str, str, int]:
        """The running task's name, id and attempt (empty outside a run)."""
        run = self.current
        if run is None:
            return "", "", 1
        return run.message.task_name, run.message.task_id, run.message.attempt

    def raised(self, exc: BaseException) -> None:
        """Record that the run raised ``exc``, once per exception."""
        run = self.current
        if run is None or run.raised is exc:
            return
        run.raised = exc
        self.record(
            EventKind.RAISED,
            *self.here(),
            exception=type(exc).__name__,
            message=str(exc)[:_MESSAGE_CHARS],
        )


class _SharedInjector(Injector):
    """The simulation's injector, counting calls in Redis so schedules span processes."""

    def __init__(self, celery_app: Any, recorder: Recorder, *, seed: int) -> None:
        super().__init__(
            celery_app,
            decisions=random.Random(f"{seed}:{os.getpid()}"),
            now=recorder.clock.elapsed,
            current=lambda: None if recorder.current is None else recorder.current.message,
            on_fire=self._fired,
            on_call=lambda spec, detail: None,
        )
        self._recorder = recorder
        self._indexes: dict[int, int] = {}

    def add(self, injection: Any) -> Active:
        """Register an injection, numbered in file order for the shared counters."""
        active = super().add(injection)
        self._indexes[id(active)] = len(self._indexes)
        return active

    def reseed(self, seed: int) -> None:
        """A fresh decision source for a forked pool process."""
        self._decisions = random.Random(f"{seed}:{os.getpid()}")

    def count_call(self, active: Active) -> int:
        """The call index from the shared counter, so schedules span pool processes."""
        recorder = self._recorder
        key = recorder.keys.counter(self._indexes[id(active)], "calls")
        return int(recorder.client.incr(key))

    def count_firing(self, active: Active) -> int:
        """The firings from the shared counter."""
        recorder = self._recorder
        key = recorder.keys.counter(self._indexes[id(active)], "fired")
        return int(recorder.client.incr(key))

    def _fired(self, active: Active, where: str, detail: str | None) -> None:
        fault = active.injection.fault
        recorder = self._recorder
        error = fault.exception()
        recorder.record(
            EventKind.FAULT_INJECTED,
            *recorder.here(),
            fault=active.injection.label,
            where=where,
            detail=detail,
            exception=None if error is None else type(error).__name__,
            failure_type=None if fault.failure_type is None else fault.failure_type.value,
        )
        if fault.latency:
            recorder.clock.sleep(fault.latency)
        if error is None:
            return
        if fault.worker_lost:
            recorder.record(EventKind.WORKER_LOST, *recorder.here(), exception=type(error).__name__)
            # What an OOM kill does: the pool process dies mid-run, without an ack.
            os.kill(os.getpid(), signal.SIGKILL)
        raise error


def _scaled_retry(task: Any, recorder: Recorder, scale: float) -> None:
    """Make ``task.retry`` wait ``countdown / scale`` real seconds; note the virtual one."""
    original = task.retry

    def retry(*args: Any, countdown: float | None = None, **kwargs: Any) -> Any:
        run = recorder.current
        if countdown is not None:
            if run is not None:
                run.countdown = float(countdown)
            countdown = float(countdown) / scale
        return original(*args, countdown=countdown, **kwargs)

    task.retry = retry


def _connect(celery_app: Any, recorder: Recorder) -> None:  # noqa: PLR0915 -- one receiver per signal
    """Record the run's events from Celery's and ``resilience``'s signals."""
    emit = recorder.record

    def mine(sender: Any) -> bool:
        return getattr(sender, "app", None) is celery_app

    def prerun(
        sender: Any = None, task_id: str = "", args: Any = (), kwargs: Any = None, **_: Any
    ) -> None:
        if not mine(sender):
            return
        request = sender.request
        attempt = int(request.retries or 0) + 1
        delivery = dict(request.delivery_info or {})
        recorder.current = _Run(
            message=Message(
                due=0.0,
                task_name=sender.name,
                task_id=task_id,
                attempt=attempt,
                headers={},
                body=(list(args or ()), dict(kwargs or {}), {}),
                delivery_info=delivery,
                properties={},
                redelivered=bool(delivery.get("redelivered")),
            )
        )
        emit(
            EventKind.DELIVERED,
            sender.name,
            task_id,
            attempt,
            redelivered=bool(delivery.get("redelivered")),
            duplicate=False,
        )
        emit(EventKind.STARTED, sender.name, task_id, attempt)

    def postrun(sender: Any = None, **_: Any) -> None:
        if mine(sender):
            recorder.current = None

    def success(sender: Any = None, **_: Any) -> None:
        if mine(sender):
            emit(EventKind.SUCCEEDED, *recorder.here())

    def retried(sender: Any = None, reason: Any = None, **_: Any) -> None:
        run = recorder.current
        if not mine(sender) or run is None:
            return
        cause = getattr(reason, "exc", None)
        if isinstance(cause, BaseException):
            recorder.raised(cause)
        emit(
            EventKind.RETRIED,
            *recorder.here(),
            countdown=run.countdown or 0.0,
            exception=None if cause is None else type(cause).__name__,
            deferred=run.deferred,
        )

    def failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        if not mine(sender) or exception is None:
            return
        recorder.raised(exception)
        emit(EventKind.FAILED, *recorder.here(), exception=type(exception).__name__)

    def published(sender: Any = None, headers: Any = None, **_: Any) -> None:
        if not isinstance(headers, dict) or sender not in celery_app.tasks:
            return
        attempt = int(headers.get("retries") or 0) + 1
        emit(EventKind.PUBLISHED, str(sender), str(headers.get("id")), attempt, eta=None)

    def decided(sender: Any, exception: BaseException, decision: Any, **_: Any) -> None:
        if not mine(sender) or recorder.current is None:
            return
        recorder.raised(exception)
        verdict = decision.classification
        here = recorder.here()
        emit(
            EventKind.CLASSIFIED,
            *here,
            failure_type=verdict.failure_type.value,
            confidence=verdict.confidence,
        )
        emit(
            EventKind.DECIDED,
            *here,
            action="retry" if decision.retry else "dead_letter",
            delay=decision.delay,
            reason=decision.reason,
            failure_type=verdict.failure_type.value,
        )

    def idempotency(sender: Any, key: str, outcome: str, **_: Any) -> None:
        if not mine(sender):
            return
        if outcome == "in_progress" and recorder.current is not None:
            recorder.current.deferred = True
        emit(EventKind.IDEMPOTENCY, *recorder.here(), key=key, outcome=outcome)

    def breaker_call(
        sender: str, task: Any, admitted: bool, retry_after: float | None, **_: Any
    ) -> None:
        if not mine(task):
            return
        if admitted:
            emit(EventKind.CALL_ADMITTED, *recorder.here(), breaker=sender)
            return
        if recorder.current is not None:
            recorder.current.deferred = True
        emit(EventKind.CALL_REJECTED, *recorder.here(), breaker=sender, retry_after=retry_after)

    def breaker_change(sender: str, old_state: Any, new_state: Any, **_: Any) -> None:
        emit(
            EventKind.BREAKER_CHANGED,
            *recorder.here(),
            breaker=sender,
            old=str(getattr(old_state, "value", old_state)),
            new=str(getattr(new_state, "value", new_state)),
        )

    def dead_letter(
        sender: Any,
        record: Any = None,
        exception: BaseException | None = None,
        decision: Any = None,
        **_: Any,
    ) -> None:
        if not mine(sender) or exception is None:
            return
        recorder.raised(exception)
        failure_type: str | None = getattr(getattr(record, "failure_type", None), "value", None)
        if decision is not None:
            failure_type = str(decision.classification.failure_type.value)
        task_id, attempt = recorder.here()[1:]
        emit(
            EventKind.DEAD_LETTERED,
            sender.name,
            task_id,
            attempt,
            exception=type(exception).__name__,
            failure_type=failure_type,
        )

    uid = f"taskchaos.real.{recorder.keys.prefix}"
    for signal_, receiver in (
        (celery_signals.task_prerun, prerun),
        (celery_signals.task_postrun, postrun),
        (celery_signals.task_success, success),
        (celery_signals.task_retry, retried),
        (celery_signals.task_failure, failed),
        (celery_signals.after_task_publish, published),
        (signals.on_decision, decided),
        (signals.on_idempotency, idempotency),
        (signals.on_breaker_call, breaker_call),
        (signals.on_breaker_change, breaker_change),
        (signals.on_dead_letter, dead_letter),
    ):
        signal_.connect(receiver, weak=False, dispatch_uid=uid)


def _env(name: str) -> str:
    value = os.environ.get(ENV_PREFIX + name)
    if not value:
        message = f"{ENV_PREFIX}{name} is not set: start real mode with 'taskchaos run --mode real'"
        raise ConfigurationError(message, key=ENV_PREFIX + name, value=value)
    return value


def _scenario(path: str, name: str) -> Scenario:
    for scenario in load_scenarios(path):
        if scenario.name == name:
            return scenario
    message = f"no scenario {name!r} in {path}"
    raise ConfigurationError(message, key="scenario", value=name)


_KEEP: list[ExitStack] = []
"""The worker's patches stay for the life of the process."""


def build() -> Any:
    """The worker's app, from the environment: scenario, faults, clock and recorder.

    Returns:
        The configured Celery app, its tasks patched.

    Raises:
        ConfigurationError: a variable is missing, or the scenario cannot be loaded.
    """
    import redis  # noqa: PLC0415 -- only a real-mode worker needs it

    scenario = _scenario(_env("SCENARIO"), _env("NAME"))
    seed, scale, url = int(_env("SEED")), float(_env("SCALE")), _env("URL")
    keys = RunKeys(prefix=_env("PREFIX"), queue=_env("QUEUE"))
    client = redis.Redis.from_url(url)
    clock = ScaledClock(client, keys, scale=scale)
    celery_app = load_app(scenario.app)
    configure(celery_app, url=url, keys=keys)
    if scenario.policies:
        saved = celery_app.conf.get("resilience_policies")
        celery_app.conf.resilience_policies = {**dict(saved or {}), **scenario.policies}
    from resilience.storage.redis import RedisStore  # noqa: PLC0415 -- optional backend

    runtime = install(
        celery_app,
        store=RedisStore(client, prefix=f"{keys.prefix}store:"),
        clock=clock,
        rng=random.Random(seed),
    )
    settings = scenario.retry_budget
    if settings is not None:
        runtime.engine.budget = RetryBudget(
            ratio=settings.ratio,
            window=settings.window,
            min_retries=settings.min_retries,
            clock=clock,
        )
    recorder = Recorder(client=client, keys=keys, clock=clock)
    injector = _SharedInjector(celery_app, recorder, seed=seed)
    for made in scenario.faults:
        injector.add(made)
    stack = ExitStack()
    injector.start(stack)
    _KEEP.append(stack)
    for name in sorted(celery_app.tasks):
        if not name.startswith("celery."):
            _scaled_retry(celery_app.tasks[name], recorder, scale)
    _connect(celery_app, recorder)

    def ready(**_: Any) -> None:
        client.set(keys.ready, "1")

    def forked(**_: Any) -> None:
        injector.reseed(seed)

    celery_signals.worker_ready.connect(ready, weak=False, dispatch_uid=f"{keys.prefix}ready")
    celery_signals.worker_process_init.connect(
        forked, weak=False, dispatch_uid=f"{keys.prefix}forked"
    )
    return celery_app


def __getattr__(name: str) -> Any:
    """Build the worker's ``app`` on first access (``celery -A`` looks it up by name)."""
    if name == "app":
        built = globals().get("_app")
        if built is None:
            built = globals()["_app"] = build()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

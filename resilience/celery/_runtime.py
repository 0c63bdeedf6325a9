"""``install(app, ...)``: the store, engine, dead-letter queue and breakers of one Celery app.

Everything a resilient task needs at run time hangs off one :class:`Resilience`
object per app, built by :func:`install` (or on a task's first run, from
``app.conf`` and the environment, when ``install`` was never called).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from celery import signals as celery_signals  # type: ignore[import-untyped]

from resilience.celery._config import (
    ResilienceSettings,
    TaskOptions,
    engine_settings_given,
    resolve_settings,
)
from resilience.celery._replay import PROCESS_DEAD_LETTERS, LostRunHandler, replay_record
from resilience.celery.signals import on_breaker_change
from resilience.clock import Clock, system_clock
from resilience.dead_letter import DeadLetterQueue
from resilience.engine import Priority, RetryEngine
from resilience.errors import ConfigurationError
from resilience.idempotency import IdempotencyGuard, OnStoreError
from resilience.storage import open_store
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator, Mapping
    from datetime import timedelta, tzinfo

    from resilience.breaker import CircuitBreaker
    from resilience.policy import RetryPolicy
    from resilience.storage.base import CircuitState, Store
    from resilience.storage.records import DeadLetterRecord

__all__ = ["INSTALLS", "RUNTIME_ATTRIBUTE", "Resilience", "install", "installed", "runtime_for"]

RUNTIME_ATTRIBUTE: Final = "_resilience_runtime"
"""Where the app keeps its :class:`Resilience`."""
_BEAT_ATTRIBUTE: Final = "_resilience_beat_task"

INSTALLS: Final = [0]
"""How many times install() ran in this process: a task's cached plan is rebuilt when it
changes (one list read per run, where reading the app would cost a descriptor call)."""

_log = logging.getLogger("resilience.celery")
_install_lock = threading.Lock()


class Resilience:
    """What :func:`install` set up for one Celery app.

    Attributes:
        app: the Celery app.
        settings: the resolved settings.
        store: the store of idempotency keys and dead letters (and, unless an engine
            was passed, of breakers and retry statistics).
        engine: the retry engine every resilient task of the app asks.
        dead_letters: the dead-letter queue; its ``replay`` re-enqueues through Celery.
        clock: the time source.
    """

    def __init__(
        self,
        app: Any,
        *,
        settings: ResilienceSettings,
        store: Store,
        engine: RetryEngine,
        dead_letters: DeadLetterQueue | None,
        clock: Clock,
    ) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.engine = engine
        self.clock = clock
        if dead_letters is None:
            dead_letters = DeadLetterQueue(
                store, clock=clock, replay=self.replay, policy_for=engine.policy_for
            )
        else:
            if dead_letters.replay is None:
                dead_letters.replay = self.replay
            if dead_letters.policy_for is None:
                # Automatic DLQ retries follow the app's configured policies.
                dead_letters.policy_for = engine.policy_for
        self.dead_letters = dead_letters
        self._lock = threading.Lock()
        self._guards: dict[tuple[str, float | None, float], IdempotencyGuard] = {}
        self._watched: set[str] = set()
        # What install() was given, for installed() to resolve the settings again.
        self._arguments: dict[str, Any] = {}
        self._engine_given = False

    def breaker(self, dependency: str) -> CircuitBreaker:
        """The engine's breaker for ``dependency``, sending ``on_breaker_change``."""
        found = self.engine.breaker(dependency)
        if dependency not in self._watched:
            with self._lock:
                if dependency not in self._watched:
                    found.add_listener(_announce)
                    self._watched.add(dependency)
        return found

    def guard(self, *, category: str, ttl: float | None, lease: float | None) -> IdempotencyGuard:
        """The idempotency guard for a category, TTL and lease (shared by tasks alike)."""
        lease_seconds = self.settings.idempotency_lease if lease is None else lease
        key = (category, ttl, lease_seconds)
        found = self._guards.get(key)
        if found is None:
            with self._lock:
                found = self._guards.get(key)
                if found is None:
                    found = self._guards[key] = IdempotencyGuard(
                        self.store,
                        clock=self.clock,
                        lease=lease_seconds,
                        ttl=ttl,
                        category=category,
                        on_store_error=self.settings.on_store_error,
                    )
        return found

    def engine_for(self, task_name: str, options: TaskOptions) -> RetryEngine:
        """The app's engine, or a copy with the task's own policies and retry cap."""
        if not options.policies and options.max_retries is None:
            return self.engine
        base = self.engine
        merged: dict[FailureType, RetryPolicy] = {}
        if options.max_retries is not None:
            for failure_type in FailureType:
                policy = base.policy_for(failure_type)
                if policy.max_retries > 0:
                    merged[failure_type] = policy.with_max_retries(options.max_retries)
        merged.update(options.policies)
        _log.debug("task %s uses its own retry policies for %s", task_name, sorted(merged))
        # Shares history, budget, breakers and clock with the app's engine, so the task
        # still learns and trips together with every other task of the app.
        return base.with_policies(merged)

    def priority_for(self, options: TaskOptions) -> Priority:
        """The task's priority, else the app's default."""
        return self.settings.priority if options.priority is None else options.priority

    def replay(self, record: DeadLetterRecord) -> str:
        """Re-enqueue a dead letter's task through Celery; returns the new task id.

        Raises:
            ResilienceError: the stored arguments are redacted, cut or not JSON.
        """
        return replay_record(self.app, record, replacement=self.dead_letters.redaction.replacement)

    def process_due(self, *, limit: int = 1000) -> list[str]:
        """Replay the dead letters whose automatic retry is due; returns their ids."""
        return self.dead_letters.process_due(limit=limit)

    def __repr__(self) -> str:
        return f"Resilience(app={getattr(self.app, 'main', None)!r}, store={self.store.url!r})"


def install(
    app: Any,
    *,
    store: str | Store | None = None,
    policies: Mapping[FailureType | str, RetryPolicy | Mapping[str, Any]] | None = None,
    engine: RetryEngine | None = None,
    dead_letters: DeadLetterQueue | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_store_error: OnStoreError | str | None = None,
    priority: Priority | str | None = None,
    idempotency_lease: float | timedelta | None = None,
    in_progress_delay: float | timedelta | None = None,
    min_deferral: float | timedelta | None = None,
    forced_open_delay: float | timedelta | None = None,
    track_executions: bool | None = None,
    timezone: str | tzinfo | None = None,
    peak_hours: tuple[int, int] | str | None = None,
) -> Resilience:
    """Set the defaults of every :class:`ResilientTask` of ``app``; call it once per app.

    Every ``None`` argument is read from the Celery setting of the same name with a
    ``resilience_`` prefix (``app.conf.resilience_store``), then from the
    environment (``RESILIENCE_STORE_URL``, ``RESILIENCE_IDEMPOTENCY_LEASE``, ...),
    then takes its default. Also registers the task
    ``"resilience.process_dead_letters"`` (schedule it with beat) and the receiver
    that dead-letters runs lost with their worker process.

    Args:
        app: the Celery app.
        store: a store URL or an opened store; default ``open_store()``'s (SQLite).
        policies: per-type retry policies for the app's engine.
        engine: a ready engine (then ``policies`` must be ``None``); build it with
            the same store so breakers and statistics are shared.
        dead_letters: a ready dead-letter queue; without a replay callable, it gets
            one that re-enqueues through this app.
        clock: the time source (a ``FakeClock`` in tests).
        rng: the randomness of the engine's jitter; seed it for reproducible retry
            delays (tests, simulations). Ignored when ``engine`` is given.
        on_store_error: ``"fail_closed"`` (default: a task retries while the
            idempotency store is down) or ``"fail_open"`` (it runs unprotected).
        priority: the default priority (``"critical"`` ... ``"low"``).
        idempotency_lease: how long a run holds its key before a redelivery may take
            it over (a killed worker blocks its key this long); default 300 s.
        in_progress_delay: the longest wait before re-checking a key held elsewhere.
        min_deferral: the shortest countdown of a deferral (default 1 s).
        forced_open_delay: the wait before re-checking a breaker forced open.
        track_executions: record every attempt's outcome (success or failure, first
            attempts and retries once each) for the executions and success rate of
            ``resilience stats`` and the dashboard; default ``False`` (a plain success
            then touches no store).
        timezone: the IANA time zone (or ``tzinfo``) of ``peak_hours``; default
            Celery's own ``timezone`` setting when set, else UTC.
        peak_hours: ``(start, end)`` or ``"start-end"`` local hours (default
            ``(9, 18)``) during which retries of low-priority tasks wait for the end
            of the window; ``"none"`` defers nothing. ``timezone`` and ``peak_hours``
            configure the engine install() builds: with ``engine``, set them on it.

    Returns:
        The app's :class:`Resilience` (also reachable as ``runtime_for(app)``).

    Raises:
        ConfigurationError: a bad argument, setting or variable (``key`` names it).
    """
    given: dict[str, Any] = {
        "policies": policies,
        "on_store_error": on_store_error,
        "priority": priority,
        "idempotency_lease": idempotency_lease,
        "in_progress_delay": in_progress_delay,
        "min_deferral": min_deferral,
        "forced_open_delay": forced_open_delay,
        "track_executions": track_executions,
        "timezone": timezone,
        "peak_hours": peak_hours,
    }
    _check_store(store)
    if isinstance(store, str):
        given["store"] = store
    arguments = {k: v for k, v in given.items() if v is not None}
    settings = resolve_settings(arguments, app.conf)
    if engine is not None and settings.policies:
        raise ConfigurationError(
            "pass policies to the RetryEngine you built, not to install() as well",
            key="policies",
            value=sorted(settings.policies),
        )
    explicit = [] if engine is None else engine_settings_given(arguments, app.conf)
    if explicit:
        key, value = explicit[0]
        raise ConfigurationError(
            f"{key} configures the engine install() builds: pass it to the RetryEngine "
            "you built instead",
            key=key,
            value=value,
        )
    time_source = system_clock if clock is None else clock
    opened: Store = (
        open_store(settings.store_url) if store is None or isinstance(store, str) else store
    )
    engine_given = engine is not None
    if engine is None:
        engine = _engine(settings, store=opened, clock=time_source, rng=rng)
    runtime = Resilience(
        app,
        settings=settings,
        store=opened,
        engine=engine,
        dead_letters=dead_letters,
        clock=time_source,
    )
    runtime._arguments = {k: v for k, v in given.items() if v is not None and k != "store"}
    runtime._engine_given = engine_given
    _activate(app, runtime)
    return runtime


@contextmanager
def installed(
    app: Any,
    *,
    store: str | Store | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> Iterator[Resilience]:
    """The app's installation moved onto another store, clock and randomness, in a with block.

    What the app's current installation configured stays: the arguments its
    ``install()`` was given (settings are resolved again with them, so a change to
    ``app.conf`` since then applies, as it would to a new ``install()``), an engine
    it was given (see :meth:`RetryEngine.rebound`: policies, knobs and the retry
    budget's limits; ``resilience_policies`` in ``app.conf`` apply over it) and its
    dead-letter queue's redaction, payload cap and custom ``replay``. Only the
    store, the clock and the randomness change, so code under test (a chaos
    simulation, for one) runs with the configuration it has in production. Without
    an installation it is ``install(app, store=store, clock=clock, rng=rng)``.
    Leaving puts the app's previous installation back (none: none, and the next
    task run installs from ``app.conf`` as usual).

    Args:
        app: the Celery app.
        store: a store URL or an opened store; default ``open_store()``'s.
        clock: the time source (a ``FakeClock`` in tests); default the system clock.
        rng: the randomness of the engine's jitter.

    Yields:
        The installation in force inside the block.

    Raises:
        ConfigurationError: a bad ``store``, or (without an installation) a bad setting.
    """
    previous: Resilience | None = getattr(app, RUNTIME_ATTRIBUTE, None)
    if previous is None:
        runtime = install(app, store=store, clock=clock, rng=rng)
    else:
        _check_store(store)
        opened: Store = (
            store if store is not None and not isinstance(store, str) else (open_store(store))
        )
        time_source = system_clock if clock is None else clock
        settings = resolve_settings(previous._arguments, app.conf)
        settings = dataclasses.replace(
            settings, store_url=store if isinstance(store, str) else None
        )
        if previous._engine_given:
            engine = previous.engine.rebound(store=opened, clock=time_source, rng=rng)
            if settings.policies:
                engine = engine.with_policies(settings.policies)
        else:
            engine = _engine(settings, store=opened, clock=time_source, rng=rng)
        old = previous.dead_letters
        runtime = Resilience(
            app,
            settings=settings,
            store=opened,
            engine=engine,
            dead_letters=DeadLetterQueue(
                opened,
                clock=time_source,
                redaction=old.redaction,
                max_payload_bytes=old.max_payload_bytes,
                # The previous installation's own replay re-enqueues through the app:
                # the new one's does the same. A custom one is kept.
                replay=None if old.replay == previous.replay else old.replay,
                # Likewise its engine's policies: the new engine's apply.
                policy_for=(
                    None if old.policy_for == previous.engine.policy_for else old.policy_for
                ),
                replay_lease=old.replay_lease,
            ),
            clock=time_source,
        )
        runtime._arguments = previous._arguments
        runtime._engine_given = previous._engine_given
        _activate(app, runtime)
    try:
        yield runtime
    finally:
        setattr(app, RUNTIME_ATTRIBUTE, previous)
        INSTALLS[0] += 1


def _engine(
    settings: ResilienceSettings, *, store: Store, clock: Clock, rng: random.Random | None
) -> RetryEngine:
    """The engine install() builds from the app's settings."""
    return RetryEngine(
        policies=settings.policies,
        store=store,
        peak_hours=settings.peak_hours,
        timezone=settings.timezone,
        clock=clock,
        rng=rng,
    )


def _check_store(store: object) -> None:
    """Refuse a ``store=`` that is neither a URL nor a Store, naming the argument."""
    if store is not None and not isinstance(store, str) and not hasattr(store, "idempotency"):
        raise ConfigurationError(
            f"store must be a store URL or a Store, got {store!r}",
            key="store",
            value=type(store).__name__,
        )


def _activate(app: Any, runtime: Resilience) -> None:
    if not getattr(app, _BEAT_ATTRIBUTE, False):
        _register_beat_task(app)
        setattr(app, _BEAT_ATTRIBUTE, True)
    setattr(app, RUNTIME_ATTRIBUTE, runtime)
    INSTALLS[0] += 1
    celery_signals.task_failure.connect(
        _LOST_RUNS, weak=False, dispatch_uid="resilience.celery.lost_runs"
    )


def runtime_for(app: Any) -> Resilience:
    """The app's :class:`Resilience`, installing the defaults on first use."""
    found: Resilience | None = getattr(app, RUNTIME_ATTRIBUTE, None)
    if found is not None:
        return found
    with _install_lock:
        found = getattr(app, RUNTIME_ATTRIBUTE, None)
        if found is None:
            _log.info(
                "install() was not called for Celery app %r: using app.conf and the environment",
                getattr(app, "main", None),
            )
            found = install(app)
        return found


def _register_beat_task(app: Any) -> None:
    # The task reads the app's current installation, so a second install() needs no
    # second registration (Celery warns about a duplicate name).
    def process_dead_letters(limit: int = 1000) -> list[str]:
        """Replay the dead letters whose automatic retry is due; returns their ids."""
        return runtime_for(app).process_due(limit=limit)

    app.task(name=PROCESS_DEAD_LETTERS, shared=False)(process_dead_letters)


def _dead_letters_of(task: Any) -> DeadLetterQueue | None:
    if getattr(task, "_resilience_options", None) is None:
        return None
    return runtime_for(task.app).dead_letters


_LOST_RUNS = LostRunHandler(_dead_letters_of)
_REFUSING: Final = frozenset({"open", "forced_open"})


def _announce(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
    _log.log(
        logging.WARNING if new.value in _REFUSING else logging.INFO,
        "breaker %r: %s -> %s",
        breaker.name,
        old.value,
        new.value,
        extra={"breaker": breaker.name, "old_state": old.value, "new_state": new.value},
    )
    on_breaker_change.send(sender=breaker.name, breaker=breaker, old_state=old, new_state=new)

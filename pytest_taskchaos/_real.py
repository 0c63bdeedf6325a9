"""Real mode: run a scenario on a real Celery worker and Redis broker, in scaled real time.

::

    result = run_real(scenario, url="redis://127.0.0.1:6379/0", time_scale=60)
    differences = compare(run_scenario(scenario), result)   # [] when they agree

A worker subprocess (``celery -A pytest_taskchaos._real_worker worker``) loads the
scenario's app, faults and policies (see :mod:`pytest_taskchaos._real_worker`);
this process publishes the workload through Redis at the scenario's arrival
times divided by the time scale, waits until every task has finished and the
queue is empty, stops the worker, and measures the recorded events with the
simulation's own measures and expectations.

What does not depend on timing, and is compared by :func:`compare`: the verdict,
the tasks published, the completion ratio, dead letters by failure type,
duplicate side effects, and the firings of each injection whose schedule has no
``rate`` and no ``window`` (those draw from a different generator, or depend on
when a call happens, in a real run).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from celery import signals as celery_signals  # type: ignore[import-untyped]

from pytest_taskchaos._history import EventKind, fingerprint
from pytest_taskchaos._real_worker import ENV_PREFIX, RunKeys, configure, decode_event
from pytest_taskchaos._workload import plan
from pytest_taskchaos.runner import (
    ExpectationResult,
    ScenarioResult,
    _check_tasks,
    _evaluate,
    _measure,
    load_app,
)
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_taskchaos._history import Event
    from pytest_taskchaos.scenario import Scenario

__all__ = ["DEFAULT_TIMEOUT", "POOLS", "compare", "resolve_time_scale", "run_real"]

DEFAULT_TIMEOUT: Final = 120.0
"""Real seconds a run may take, from its first publish to idle, before it is stopped."""

POOLS: Final = ("prefork", "solo")
"""The worker pools real mode starts (prefork with two processes, or solo)."""

_STARTUP_TIMEOUT: Final = 60.0
_POLL: Final = 0.05
_UNSUPPORTED_POINTS: Final = ("publish", "result")


def resolve_time_scale(scenario: Scenario, time_scale: float | None) -> float:
    """The time scale of a real run: the argument, else the scenario's ``real.time_scale``.

    Args:
        scenario: the scenario.
        time_scale: ``--time-scale``, or ``None``.

    Returns:
        Virtual seconds per real second.

    Raises:
        ConfigurationError: neither is given, or the value is not a number > 0
            (``key="time_scale"``).
    """
    chosen = time_scale
    if chosen is None and scenario.real is not None:
        chosen = scenario.real.time_scale
    if chosen is None:
        message = (
            f"scenario {scenario.name!r} ({scenario.location}) has no 'real: {{time_scale: F}}' "
            "section; pass --time-scale F (virtual seconds per real second) to run it in real mode"
        )
        raise ConfigurationError(message, key="time_scale", value=None)
    if isinstance(chosen, bool) or not math.isfinite(chosen) or chosen <= 0:
        message = f"time_scale must be a number > 0, got {chosen!r}"
        raise ConfigurationError(message, key="time_scale", value=chosen)
    return float(chosen)


def _check_supported(scenario: Scenario, pool: str) -> None:
    if pool not in POOLS:
        message = f"pool must be one of {', '.join(POOLS)}, got {pool!r}"
        raise ConfigurationError(message, key="pool", value=pool)
    if scenario.source == "<string>" or not Path(scenario.source).is_file():
        message = (
            f"scenario {scenario.name!r} comes from {scenario.source!r}: real mode needs a "
            "scenario file, which the worker process loads again"
        )
        raise ConfigurationError(message, key="scenario", value=scenario.source)
    for index, made in enumerate(scenario.faults):
        fault = made.fault
        where = f"faults[{index}] ({made.label or fault.name})"
        if made.at in _UNSUPPORTED_POINTS or fault.duplicate_delivery:
            problem = "a duplicate delivery" if fault.duplicate_delivery else f"at: {made.at}"
            message = f"{where}: real mode does not inject {problem} (simulation only)"
            raise ConfigurationError(message, key="faults", value=made.label or fault.name)
        if fault.worker_lost and pool == "solo":
            message = f"{where}: a lost worker needs the prefork pool (solo would kill the worker)"
            raise ConfigurationError(message, key="faults", value=made.label or fault.name)


def _redis(url: str) -> Any:
    if not url.startswith(("redis://", "rediss://")):
        message = f"--broker must be a redis:// or rediss:// URL, got {url!r}"
        raise ConfigurationError(message, key="broker", value=url)
    import redis  # noqa: PLC0415 -- only real mode needs it

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"cannot reach the broker at {url!r}: {exc}"
        raise ConfigurationError(message, key="broker", value=url) from exc
    return client


def _start_worker(
    scenario: Scenario, *, url: str, keys: RunKeys, seed: int, scale: float, pool: str, log: Path
) -> subprocess.Popen[bytes]:
    here = str(Path.cwd())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        {
            ENV_PREFIX + "SCENARIO": str(Path(scenario.source).resolve()),
            ENV_PREFIX + "NAME": scenario.name,
            ENV_PREFIX + "SEED": str(seed),
            ENV_PREFIX + "SCALE": repr(scale),
            ENV_PREFIX + "URL": url,
            ENV_PREFIX + "PREFIX": keys.prefix,
            ENV_PREFIX + "QUEUE": keys.queue,
        }
    )
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "pytest_taskchaos._real_worker",
        "worker",
        "-P",
        pool,
        *(["-c", "2"] if pool == "prefork" else []),
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        "-Q",
        keys.queue,
        "-n",
        f"taskchaos-{keys.queue}@%h",
        "--loglevel=WARNING",
    ]
    with log.open("wb") as sink:
        # Its own session: stopping it reaches the pool's processes too.
        return subprocess.Popen(  # noqa: S603 -- our own interpreter and arguments
            command,
            cwd=here,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
    return "\n".join(lines)


def _idle(client: Any, keys: RunKeys, events: list[Event], expected: set[str]) -> bool:
    """Every published task ended (success or failure) and no message is queued or held."""
    outcome: dict[str, EventKind] = {}
    for event in events:
        if event.kind in {EventKind.SUCCEEDED, EventKind.FAILED, EventKind.RETRIED}:
            outcome[event.task_id] = event.kind
        elif event.kind is EventKind.PUBLISHED:
            expected.add(event.task_id)
    if any(
        outcome.get(task_id) not in {EventKind.SUCCEEDED, EventKind.FAILED} for task_id in expected
    ):
        return False
    queued = client.llen(f"{keys.prefix}{keys.queue}")
    held = client.hlen(f"{keys.prefix}unacked")
    return int(queued) == 0 and int(held) == 0


def run_real(
    scenario: Scenario,
    *,
    url: str,
    seed: int | None = None,
    time_scale: float | None = None,
    pool: str = "prefork",
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScenarioResult:
    """Run a scenario on a real worker process with a Redis broker, in scaled real time.

    Args:
        scenario: a scenario loaded from a file (the worker loads the file again).
        url: the Redis URL: broker, ``resilience`` store and the run's records, all
            under a key prefix of their own (removed afterwards).
        seed: overrides the scenario's seed; ``None``: the scenario's, else 0.
        time_scale: virtual seconds per real second; ``None``: the scenario's
            ``real.time_scale``.
        pool: ``"prefork"`` (two processes) or ``"solo"``.
        timeout: real seconds from the first publish until the run must be idle; a
            run still busy then fails the ``finished`` expectation.
        on_progress: called as ``on_progress(published, count)`` while publishing.

    Returns:
        The result, measured and checked as the simulation's; durations are virtual
        (real seconds times the scale).

    Raises:
        ConfigurationError: no time scale, an unreachable or non-Redis URL, a
            scenario not from a file, a fault real mode cannot inject, or a worker
            that does not start (its log's end is in the message).
    """
    chosen = seed if seed is not None else scenario.seed if scenario.seed is not None else 0
    scale = resolve_time_scale(scenario, time_scale)
    _check_supported(scenario, pool)
    client = _redis(url)
    run = uuid.uuid4().hex[:12]
    keys = RunKeys(prefix=f"taskchaos-real:{run}:", queue=f"taskchaos-{run}")
    app = load_app(scenario.app)
    _check_tasks(app, scenario)
    configure(app, url=url, keys=keys)
    folder = Path(tempfile.mkdtemp(prefix="taskchaos-real-"))
    log = folder / "worker.log"
    process = _start_worker(
        scenario, url=url, keys=keys, seed=chosen, scale=scale, pool=pool, log=log
    )
    uid = f"taskchaos.real.publisher.{run}"
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not client.exists(keys.ready):
            if process.poll() is not None or time.monotonic() > deadline:
                why = "exited" if process.poll() is not None else "did not start"
                message = f"the real-mode worker {why}:\n{_tail(log)}"
                raise ConfigurationError(message, key="worker", value=str(log))
            time.sleep(_POLL)
        finished, stopped = _drive(
            app, client, keys, scenario, chosen, scale, timeout, on_progress, uid, process, log
        )
        duration = max(0.0, (time.time() - float(client.get(keys.origin))) * scale)
        history = tuple(decode_event(raw) for raw in client.lrange(keys.events, 0, -1))
        injections = [
            {
                "label": made.label or made.fault.name,
                "calls": int(client.get(keys.counter(index, "calls")) or 0),
                "fired": int(client.get(keys.counter(index, "fired")) or 0),
            }
            for index, made in enumerate(scenario.faults)
        ]
    finally:
        celery_signals.after_task_publish.disconnect(dispatch_uid=uid)
        _stop(process)
        with contextlib.suppress(Exception):
            app.close()
        stale = list(client.scan_iter(match=f"{keys.prefix}*", count=1000))
        if stale:
            client.delete(*stale)
        client.close()
    measures = _measure(history, injections, duration)
    measures["mode"] = "real"
    measures["time_scale"] = scale
    results = _evaluate(scenario, measures, finished=finished, stopped=stopped)
    results[0] = replace(
        results[0],
        expected=f"idle within {timeout:g} real seconds",
        measured="idle" if finished else f"did not finish: {stopped}",
    )
    return ScenarioResult(
        scenario=scenario,
        seed=chosen,
        passed=all(result.passed for result in results),
        expectations=tuple(results),
        measures=MappingProxyType(measures),
        fingerprint=fingerprint(history),
        history=history,
    )


def _drive(  # noqa: PLR0917 -- the run's parts, passed once
    app: Any,
    client: Any,
    keys: RunKeys,
    scenario: Scenario,
    seed: int,
    scale: float,
    timeout: float,
    on_progress: Callable[[int, int], None] | None,
    uid: str,
    process: subprocess.Popen[bytes],
    log: Path,
) -> tuple[bool, str]:
    """Publish the workload at its scaled times and wait until idle; ``(finished, why not)``."""
    messages = plan(scenario.tasks, scenario.workload, seed=seed)
    origin = time.time()
    client.set(keys.origin, repr(origin))

    def published(sender: Any = None, headers: Any = None, **_: Any) -> None:
        if isinstance(headers, dict) and sender in app.tasks:
            at = (time.time() - origin) * scale
            attempt = int(headers.get("retries") or 0) + 1
            entry = ["published", at, str(sender), str(headers.get("id")), attempt, {"eta": at}]
            client.rpush(keys.events, _json(entry))

    celery_signals.after_task_publish.connect(published, weak=False, dispatch_uid=uid)
    expected: set[str] = set()
    for done, message in enumerate(messages):
        wait = origin + message.at / scale - time.time()
        if wait > 0:
            time.sleep(wait)
        task = app.tasks[message.call.name]
        options: dict[str, Any] = {}
        if message.call.queue is not None:
            options["queue"] = message.call.queue
        task_id = str(uuid.uuid4())
        expected.add(task_id)
        task.apply_async(args=message.args, kwargs=message.kwargs, task_id=task_id, **options)
        if message.twice:
            task.apply_async(args=message.args, kwargs=message.kwargs, task_id=task_id, **options)
        if on_progress is not None:
            on_progress(done + 1, len(messages))
    deadline = time.monotonic() + timeout
    quiet = 0
    while True:
        events = [decode_event(raw) for raw in client.lrange(keys.events, 0, -1)]
        # Twice in a row: a retry published between the two reads is seen.
        quiet = quiet + 1 if _idle(client, keys, events, expected) else 0
        if quiet >= 2:
            return True, ""
        if process.poll() is not None:
            return False, f"the worker exited with {process.returncode}:\n{_tail(log)}"
        if time.monotonic() > deadline:
            return False, f"still busy after {timeout:g} real seconds"
        time.sleep(_POLL * 4)


def _json(entry: list[Any]) -> str:
    import json  # noqa: PLC0415 -- beside its only use

    return json.dumps(entry)


def _deterministic(schedule: Any) -> bool:
    """No condition draws at random or depends on when the call happens (a window)."""
    return not any(
        getattr(condition, "random", False) or hasattr(condition, "start")
        for condition in schedule.conditions
    )


def compare(simulated: ScenarioResult, real: ScenarioResult) -> list[str]:
    """How a real run differs from the simulation on what does not depend on timing.

    Args:
        simulated: the simulation's result (same scenario and seed).
        real: :func:`run_real`'s result.

    Returns:
        One line per difference (``"dlq: simulation {...}, real {...}"``); empty when
        they agree on the verdict, tasks, completion ratio, dead letters by type,
        duplicate side effects and the firings of deterministic injections.
    """
    sim, got = simulated.measures, real.measures
    pairs: list[tuple[str, object, object]] = [
        ("verdict", _verdict(simulated), _verdict(real)),
        ("tasks", sim["tasks"], got["tasks"]),
        ("completion_ratio", round(sim["completion_ratio"], 6), round(got["completion_ratio"], 6)),
        ("dlq", dict(sim["dlq"]), dict(got["dlq"])),
        ("duplicate_side_effects", sim["duplicate_side_effects"], got["duplicate_side_effects"]),
    ]
    for made, one, other in zip(real.scenario.faults, sim["faults"], got["faults"], strict=True):
        if _deterministic(made.schedule):
            pairs.append((f"faults[{one['label']}].fired", one["fired"], other["fired"]))
    return [
        f"{name}: simulation {left}, real {right}" for name, left, right in pairs if left != right
    ]


def _verdict(result: ScenarioResult) -> str:
    if result.passed:
        return "PASS"
    failed = [item.name for item in result.failures if isinstance(item, ExpectationResult)]
    return "FAIL (" + ", ".join(failed) + ")"

"""Run one scenario file entry in virtual time and check its expectations.

::

    [scenario] = load_scenarios("scenarios/mail-outage.yaml")
    result = run_scenario(scenario)            # seed: the scenario's, else 0
    assert result.passed, result.failures

The app comes from ``scenario.app`` (``module:attribute``: a Celery app, or a
zero-argument factory called once per run, so each run starts fresh). The
scenario's policies are set as the app's ``resilience_policies`` for the run,
its faults are injected into a :class:`~pytest_taskchaos.simulation.Simulation`
(``memory://`` store), and the workload is published at its virtual times. The
simulation then drains until idle, with a step budget of ``50 * count`` messages:
a run that does not finish is a failed ``finished`` expectation, not a crash.

What is measured (:attr:`ScenarioResult.measures`), all from the run's history:

- ``tasks``: distinct task ids published (the workload's, plus any the tasks
  publish themselves); ``completed``: those with a ``succeeded`` event;
  ``completion_ratio``: their quotient;
- ``attempts`` (runs started), ``retries`` (retries after a failure) and
  ``deferred`` (retries because an open breaker or a busy idempotency key refused
  the run);
- ``faults``: per injection, the calls that reached its point and how many it fired on;
- ``dlq``: dead-lettered runs by failure type;
- ``duplicate_side_effects``: ``side_effect`` events beyond the first per (name,
  key), plus idempotency keys whose guarded body ran to success more than once;
- ``breakers``: every transition with its time and the admitted calls before it;
- ``max_attempts_per_task``: the most runs (deliveries) of one task id;
- ``completion_time``: percentiles of virtual seconds from a task id's first
  publish to its success;
- ``budget_refusals``: retries the retry budget refused;
- ``min_retry_delay``: the shortest wait from a failed run to its retry's due time
  (deferrals excluded; ``None`` without retries);
- ``max_retries_per_second``: the most retries due within one second of virtual
  time, and ``busiest_second``, when;
- ``virtual_duration``: virtual seconds from the start to the end of the run.

A scenario's ``retry_budget`` becomes the engine's ``resilience.RetryBudget`` (on
the simulation's clock) for the run; without one the engine has no budget.

During a run the app's setting ``taskchaos_effect`` (:data:`EFFECT_SETTING`) holds
the simulation's :meth:`~pytest_taskchaos.simulation.Simulation.effect`: task code,
or a fake it calls, that calls ``app.conf.taskchaos_effect(name, key)`` where a side
effect happens makes it a ``side_effect`` event, which ``duplicate_side_effects``
counts per (name, key). The runner has no other way to see an app's side effects.
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pytest_taskchaos._history import Event, EventKind
from pytest_taskchaos._scenario_fields import did_you_mean
from pytest_taskchaos._workload import plan
from pytest_taskchaos.scenario import Scenario
from pytest_taskchaos.simulation import Simulation, StepBudgetExceeded
from resilience.budget import RetryBudget
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pytest_taskchaos.scenario import BreakerExpectation, Comparison

__all__ = [
    "EFFECT_SETTING",
    "STEPS_PER_MESSAGE",
    "ExpectationResult",
    "ScenarioResult",
    "load_app",
    "run_scenario",
]

STEPS_PER_MESSAGE = 50
"""The step budget of a run: this many messages run per workload message."""

EFFECT_SETTING = "taskchaos_effect"
"""The app setting that holds ``effect(name, key)`` during a run (see the module docstring)."""

_BUDGET_REFUSAL = "retry budget exhausted"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectationResult:
    """One checked expectation.

    Attributes:
        name: which expectation (``"completion_ratio"``, ``"breaker[mail-api].closes_within"``).
        expected: what the file asked for (``">= 0.99"``).
        measured: what the run measured, as text.
        passed: whether it holds.
    """

    name: str
    expected: str
    measured: str
    passed: bool

    def describe(self) -> str:
        """``"completion_ratio: expected >= 0.99, measured 0.97"``."""
        return f"{self.name}: expected {self.expected}, measured {self.measured}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    """What one run of a scenario measured and whether its expectations held.

    Attributes:
        scenario: the scenario run.
        seed: the seed used (re-run with it to get the same history).
        passed: every expectation held.
        expectations: each checked expectation, ``finished`` first.
        measures: the figures measured (see the module docstring), JSON-friendly.
        fingerprint: the history's digest; the same seed gives the same one.
        history: every event of the run.
    """

    scenario: Scenario
    seed: int
    passed: bool
    expectations: tuple[ExpectationResult, ...]
    measures: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    fingerprint: str = ""
    history: tuple[Event, ...] = ()

    @property
    def failures(self) -> list[ExpectationResult]:
        """The expectations that do not hold."""
        return [result for result in self.expectations if not result.passed]

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly data (without the history's events).

        Returns:
            ``{"name", "source", "seed", "passed", "fingerprint", "expectations",
            "measures", "events"}``; ``events`` is the history's length.
        """
        return {
            "name": self.scenario.name,
            "source": self.scenario.location,
            "seed": self.seed,
            "passed": self.passed,
            "fingerprint": self.fingerprint,
            "expectations": [
                {
                    "name": result.name,
                    "expected": result.expected,
                    "measured": result.measured,
                    "passed": result.passed,
                }
                for result in self.expectations
            ],
            "measures": _plain(self.measures),
            "events": len(self.history),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, MappingProxyType | dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --------------------------------------------------------------------------- the app


def load_app(path: str) -> Any:
    """The Celery app named by ``module:attribute``, calling it when it is a factory.

    Args:
        path: ``"examples.taskapp.scenario_app:make_scenario_app"``.

    Returns:
        The app (an object with ``tasks`` and ``conf``).

    Raises:
        ConfigurationError: the module does not import, has no such attribute, or
            the attribute (or what the factory returned) is not a Celery app
            (``key="app"``).
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        message = f"app must be 'module:attribute', got {path!r}"
        raise ConfigurationError(message, key="app", value=path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"app {path!r}: cannot import module {module_name!r}: {exc}"
        raise ConfigurationError(message, key="app", value=path) from exc
    found = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            names = [name for name in dir(found) if not name.startswith("_")]
            hint = did_you_mean(part, names)
            message = f"app {path!r}: {module_name!r} has no attribute {attribute!r}{hint}"
            raise ConfigurationError(message, key="app", value=path)
        found = getattr(found, part)
    app = found
    if not _is_app(app) and callable(app):
        try:
            app = app()
        except TypeError as exc:
            message = f"app {path!r}: expected a Celery app or a zero-argument factory: {exc}"
            raise ConfigurationError(message, key="app", value=path) from exc
    if not _is_app(app):
        message = f"app {path!r}: expected a Celery app, got {type(app).__name__}"
        raise ConfigurationError(message, key="app", value=path)
    return app


def _is_app(value: object) -> bool:
    return hasattr(value, "tasks") and hasattr(value, "conf") and hasattr(value, "send_task")


def _check_tasks(app: Any, scenario: Scenario) -> None:
    names = sorted(name for name in app.tasks if not name.startswith("celery."))
    for call in scenario.tasks:
        if call.name not in app.tasks:
            message = (
                f"task {call.name!r} is not registered on {scenario.app!r}"
                f"{did_you_mean(call.name, names)} (tasks: {', '.join(names)})"
            )
            raise ConfigurationError(message, key="tasks", value=call.name)


# --------------------------------------------------------------------------- running


def run_scenario(
    scenario: Scenario,
    *,
    seed: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScenarioResult:
    """Run a scenario in virtual time and check its expectations.

    Args:
        scenario: a loaded scenario.
        seed: overrides the scenario's seed; ``None``: the scenario's, else 0.
        on_progress: called as ``on_progress(published, count)`` while publishing.

    Returns:
        The result; ``passed`` is ``False`` when any expectation fails (a run that
        does not finish within its step budget fails ``finished``).

    Raises:
        ConfigurationError: the app cannot be loaded, lacks a task the workload
            sends, or an injection names a task the app lacks.
    """
    chosen = seed if seed is not None else scenario.seed if scenario.seed is not None else 0
    app = load_app(scenario.app)
    _check_tasks(app, scenario)
    conf = app.conf
    saved = conf.get("resilience_policies")
    saved_effect = conf.get(EFFECT_SETTING)
    if scenario.policies:
        conf.resilience_policies = {**dict(saved or {}), **scenario.policies}
    try:
        with Simulation(app, seed=chosen) as sim:
            conf[EFFECT_SETTING] = sim.effect
            settings = scenario.retry_budget
            if settings is not None:
                # Before any run: the engines of tasks with their own policies copy it.
                sim.runtime.engine.budget = RetryBudget(
                    ratio=settings.ratio,
                    window=settings.window,
                    min_retries=settings.min_retries,
                    clock=sim.clock,
                )
            for made in scenario.faults:
                sim.inject(made)
            finished, stopped = _drive(sim, scenario, chosen, on_progress)
            injections = [
                {"label": made.label or made.fault.name, "calls": calls, "fired": fired}
                for made, calls, fired in sim.injections
            ]
            duration = sim.now
            history = tuple(sim.history)
            digest = sim.fingerprint()
    finally:
        conf[EFFECT_SETTING] = saved_effect
        if scenario.policies:
            conf.resilience_policies = saved
    measures = _measure(history, injections, duration)
    results = _evaluate(scenario, measures, finished=finished, stopped=stopped)
    return ScenarioResult(
        scenario=scenario,
        seed=chosen,
        passed=all(result.passed for result in results),
        expectations=tuple(results),
        measures=MappingProxyType(measures),
        fingerprint=digest,
        history=history,
    )


def _drive(
    sim: Simulation,
    scenario: Scenario,
    seed: int,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[bool, str]:
    """Publish the workload at its times and drain; ``(finished, why not)``."""
    budget = STEPS_PER_MESSAGE * scenario.workload.count
    messages = plan(scenario.tasks, scenario.workload, seed=seed)
    used = 0
    try:
        for done, message in enumerate(messages):
            if message.at > sim.now:
                used += sim.drain(until=message.at, max_steps=max(budget - used, 1))
            task = sim.app.tasks[message.call.name]
            options: dict[str, Any] = {}
            if message.call.queue is not None:
                options["queue"] = message.call.queue
            sent = task.apply_async(args=message.args, kwargs=message.kwargs, **options)
            if message.twice:
                task.apply_async(
                    args=message.args, kwargs=message.kwargs, task_id=sent.id, **options
                )
            if on_progress is not None:
                on_progress(done + 1, len(messages))
        sim.drain(max_steps=max(budget - used, 1))
    except StepBudgetExceeded as exc:
        return False, str(exc)
    return True, ""


# --------------------------------------------------------------------------- measuring


def _percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of sorted ``values``."""
    rank = max(1, math.ceil(percent / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def _duplicates(history: Sequence[Event]) -> tuple[int, list[str]]:
    """Side effects beyond the first per (name, key), and idempotent bodies run twice."""
    effects = Counter(
        (str(event.details.get("name")), event.details.get("key"))
        for event in history
        if event.kind is EventKind.SIDE_EFFECT
    )
    found = [f"{name}:{key}" for (name, key), count in effects.items() if count > 1]
    extra = sum(count - 1 for count in effects.values() if count > 1)
    claims: dict[tuple[str, int], object] = {}
    bodies: Counter[object] = Counter()
    ends = {EventKind.RAISED, EventKind.FAILED, EventKind.RETRIED, EventKind.WORKER_LOST}
    for event in history:
        run = (event.task_id, event.attempt)
        if event.kind is EventKind.IDEMPOTENCY:
            if event.details.get("outcome") == "miss":
                claims[run] = event.details.get("key")
            else:
                claims.pop(run, None)
        elif event.kind is EventKind.SUCCEEDED and run in claims:
            bodies[claims.pop(run)] += 1
        elif event.kind in ends:
            claims.pop(run, None)
    found += [f"idempotency:{key}" for key, count in bodies.items() if count > 1]
    extra += sum(count - 1 for count in bodies.values() if count > 1)
    return extra, sorted(found)


def _breakers(history: Sequence[Event]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    admitted: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    runs: dict[tuple[str, int], str] = {}
    for event in history:
        name = event.details.get("breaker")
        run = (event.task_id, event.attempt)
        if event.kind is EventKind.CALL_ADMITTED and isinstance(name, str):
            admitted[name] += 1
            runs[run] = name
        elif event.kind is EventKind.RAISED and run in runs:
            failed[runs.pop(run)] += 1
        elif event.kind is EventKind.BREAKER_CHANGED and isinstance(name, str):
            entry = found.setdefault(name, {"transitions": [], "trips": 0})
            new = str(event.details.get("new"))
            entry["transitions"].append(
                {
                    "at": event.at,
                    "old": str(event.details.get("old")),
                    "new": new,
                    "calls": admitted[name],
                    "failed_calls": failed[name],
                }
            )
            entry["trips"] += new == "open" and event.details.get("old") == "closed"
    for name, entry in found.items():
        entry["final"] = entry["transitions"][-1]["new"]
        entry["calls"] = admitted[name]
    return found


def _measure(
    history: Sequence[Event], injections: list[dict[str, Any]], duration: float
) -> dict[str, Any]:
    published: dict[str, float] = {}
    succeeded: dict[str, float] = {}
    starts: Counter[str] = Counter()
    retries = deferred = 0
    dlq: Counter[str] = Counter()
    refusals = 0
    waits: list[float] = []
    due: Counter[int] = Counter()
    outage_end: float | None = None  # when the last fault fired
    for event in history:
        kind = event.kind
        if kind is EventKind.PUBLISHED:
            published.setdefault(event.task_id, event.at)
        elif kind is EventKind.SUCCEEDED:
            succeeded.setdefault(event.task_id, event.at)
        elif kind is EventKind.STARTED:
            starts[event.task_id] += 1
        elif kind is EventKind.RETRIED:
            if event.details.get("deferred"):
                deferred += 1
            else:
                retries += 1
                countdown = float(event.details.get("countdown") or 0.0)
                waits.append(countdown)
                due[math.floor(event.at + countdown)] += 1
        elif kind is EventKind.DEAD_LETTERED:
            dlq[str(event.details.get("failure_type"))] += 1
        elif kind is EventKind.FAULT_INJECTED:
            outage_end = event.at
        elif kind is EventKind.DECIDED and _BUDGET_REFUSAL in str(event.details.get("reason")):
            refusals += 1
    times = sorted(at - published[task_id] for task_id, at in succeeded.items())
    duplicates, duplicated = _duplicates(history)
    tasks = len(published)
    return {
        "tasks": tasks,
        "completed": len(succeeded),
        "completion_ratio": len(succeeded) / tasks if tasks else 1.0,
        "attempts": sum(starts.values()),
        "retries": retries,
        "deferred": deferred,
        "faults": injections,
        "faults_fired": sum(item["fired"] for item in injections),
        "unfired_faults": [item["label"] for item in injections if not item["fired"]],
        "dlq": dict(sorted(dlq.items())),
        "dlq_total": sum(dlq.values()),
        "duplicate_side_effects": duplicates,
        "duplicated": duplicated,
        "breakers": _breakers(history),
        "max_attempts_per_task": max(starts.values(), default=0),
        "completion_times": times,
        "budget_refusals": refusals,
        "min_retry_delay": min(waits, default=None),
        "max_retries_per_second": max(due.values(), default=0),
        "busiest_second": min(
            (second for second, count in due.items() if count == max(due.values())),
            default=None,
        ),
        "outage_end": outage_end,
        "virtual_duration": duration,
    }


# --------------------------------------------------------------------------- checking


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.2f}h"
    if value >= 60:
        return f"{value / 60:.1f}m"
    return f"{value:g}s"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _check(name: str, comparison: Comparison, measured: float, shown: str) -> ExpectationResult:
    return ExpectationResult(
        name=name,
        expected=comparison.describe(),
        measured=shown,
        passed=comparison.holds(measured),
    )


def _outage_end(scenario: Scenario, measures: Mapping[str, Any]) -> float | None:
    """When the outage ends: the latest end of the faults' windows, else the last firing.

    An open breaker stops calls, so faults stop firing long before a windowed outage
    is over; the window's end is the outage's end when there is one.
    """
    ends = [
        end
        for made in scenario.faults
        for condition in made.schedule.conditions
        if isinstance(end := getattr(condition, "end", None), float) and math.isfinite(end)
    ]
    if ends:
        return max(ends)
    value = measures.get("outage_end")
    return None if value is None else float(value)


def _breaker_results(
    expect: BreakerExpectation, measures: Mapping[str, Any], *, outage_end: float | None
) -> list[ExpectationResult]:
    entry = measures["breakers"].get(expect.name)
    transitions: list[dict[str, Any]] = [] if entry is None else entry["transitions"]
    results: list[ExpectationResult] = []
    prefix = f"breaker[{expect.name}]"
    opening = next((t for t in transitions if t["new"] == "open"), None)
    if expect.opens_within_calls is not None:
        limit = expect.opens_within_calls
        if opening is None:
            seen = ", ".join(sorted(measures["breakers"])) or "none"
            shown = f"never opened (breakers that changed state: {seen})"
            passed = False
        else:
            shown = (
                f"opened after {opening['failed_calls']} failed calls at {_seconds(opening['at'])}"
            )
            passed = opening["failed_calls"] <= limit
        results.append(
            ExpectationResult(
                name=f"{prefix}.opens_within_calls",
                expected=f"opens after <= {limit} failed calls",
                measured=shown,
                passed=passed,
            )
        )
    if expect.closes_within is not None:
        limit_s = expect.closes_within
        end = outage_end
        closings = [t["at"] for t in transitions if t["new"] == "closed"]
        if opening is None:
            shown, passed = "never opened", False
        elif transitions[-1]["new"] != "closed":
            shown = f"still {transitions[-1]['new']} at the end"
            passed = False
        else:
            since = opening["at"] if end is None else end
            after = max(0.0, closings[-1] - since)
            shown = f"closed {_seconds(after)} after the outage ended (at {_seconds(since)})"
            passed = after <= limit_s
        results.append(
            ExpectationResult(
                name=f"{prefix}.closes_within",
                expected=f"closes <= {_seconds(limit_s)} after the outage ends",
                measured=shown,
                passed=passed,
            )
        )
    return results


def _evaluate(
    scenario: Scenario,
    measures: Mapping[str, Any],
    *,
    finished: bool,
    stopped: str,
) -> list[ExpectationResult]:
    expect = scenario.expect
    budget = STEPS_PER_MESSAGE * scenario.workload.count
    results = [
        ExpectationResult(
            name="finished",
            expected=f"idle within {budget} steps",
            measured="idle" if finished else f"did not finish: {stopped}",
            passed=finished,
        )
    ]
    if expect.completion_ratio is not None:
        ratio = measures["completion_ratio"]
        shown = f"{_number(ratio)} ({measures['completed']}/{measures['tasks']} tasks)"
        results.append(_check("completion_ratio", expect.completion_ratio, ratio, shown))
    if expect.max_dlq is not None:
        total = measures["dlq_total"]
        dlq = measures["dlq"]
        shown = f"{total}" + (f" ({_counts(dlq)})" if dlq else "")
        results.append(_check("max_dlq", expect.max_dlq, total, shown))
    if expect.dlq_only_types is not None:
        allowed = {kind.value for kind in expect.dlq_only_types}
        others = {kind: count for kind, count in measures["dlq"].items() if kind not in allowed}
        results.append(
            ExpectationResult(
                name="dlq_only_types",
                expected="only " + ", ".join(sorted(allowed)),
                measured=_counts(measures["dlq"]) or "empty",
                passed=not others,
            )
        )
    for breaker in expect.breakers:
        results.extend(
            _breaker_results(breaker, measures, outage_end=_outage_end(scenario, measures))
        )
    if expect.duplicate_side_effects is not None:
        count = measures["duplicate_side_effects"]
        keys = measures["duplicated"]
        shown = f"{count}" + (
            f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else ""
        )
        results.append(
            _check("duplicate_side_effects", expect.duplicate_side_effects, count, shown)
        )
    if expect.max_attempts_per_task is not None:
        most = measures["max_attempts_per_task"]
        results.append(
            _check("max_attempts_per_task", expect.max_attempts_per_task, most, str(most))
        )
    times = measures["completion_times"]
    for key, comparison in expect.completion_time.items():
        name = f"completion_time.{key}"
        if not times:
            results.append(
                ExpectationResult(
                    name=name,
                    expected=f"{comparison.op.value} {_seconds(comparison.value)}",
                    measured="no task succeeded",
                    passed=False,
                )
            )
            continue
        value = times[-1] if key == "max" else _percentile(times, float(key[1:]))
        results.append(
            ExpectationResult(
                name=name,
                expected=f"{comparison.op.value} {_seconds(comparison.value)}",
                measured=_seconds(value),
                passed=comparison.holds(value),
            )
        )
    if expect.retries_within_budget:
        refused = measures["budget_refusals"]
        results.append(
            ExpectationResult(
                name="retries_within_budget",
                expected="no retry refused by the retry budget",
                measured=f"{refused} refused",
                passed=refused == 0,
            )
        )
    if expect.all_faults_fired:
        unfired = measures["unfired_faults"]
        results.append(
            ExpectationResult(
                name="all_faults_fired",
                expected="every fault fired",
                measured="never fired: " + ", ".join(unfired) if unfired else "all fired",
                passed=not unfired,
            )
        )
    if expect.min_retry_delay is not None:
        shortest = measures["min_retry_delay"]
        wanted = expect.min_retry_delay
        results.append(
            ExpectationResult(
                name="min_retry_delay",
                expected=f"{wanted.op.value} {_seconds(wanted.value)}",
                measured="no retries" if shortest is None else _seconds(shortest),
                passed=shortest is not None and wanted.holds(shortest),
            )
        )
    if expect.max_retries_per_second is not None:
        most = measures["max_retries_per_second"]
        when = measures["busiest_second"]
        shown = f"{most}" + ("" if when is None else f" (in second {when})")
        results.append(_check("max_retries_per_second", expect.max_retries_per_second, most, shown))
    return results


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{kind}={count}" for kind, count in counts.items())

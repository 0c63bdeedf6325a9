"""Tests for scenario files: the format, the loader, its messages and the JSON Schema."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # stubs are optional

from pytest_taskchaos.faults import CATALOG
from pytest_taskchaos.scenario import (
    SCHEMA_PATH,
    Arrival,
    ArrivalPattern,
    BreakerExpectation,
    Comparison,
    KeyPattern,
    Keys,
    Operator,
    Scenario,
    ScenarioError,
    TaskCall,
    Workload,
    load_scenarios,
    load_scenarios_text,
    validate,
)
from pytest_taskchaos.schedules import CallInfo
from resilience import FailureType, Jitter, Strategy
from resilience.errors import ConfigurationError

SAMPLES = Path(__file__).parent / "scenarios"
DOCS = Path(__file__).parents[2] / "docs" / "scenarios.md"
SOURCE = "scenarios/x.yaml"

BASE = """\
name: base
app: examples.taskapp.app:make_app
tasks:
  - name: taskapp.autoclose_job
    args: ["{n}"]
workload:
  count: 10
"""


def _error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenarios_text(text, source=SOURCE)
    return caught.value


def _lines(text: str) -> list[str]:
    return [str(error) for error in _error(text).errors]


def _fires(scenario: Scenario, index: int, **call: object) -> bool:
    info = CallInfo(task_name=str(call.pop("task_name", "taskapp.autoclose_job")), **call)  # type: ignore[arg-type]
    injection = scenario.faults[index]
    return injection.matches(info.task_name) and injection.schedule.should_fire(info, _Always())


class _Always:
    def random(self) -> float:
        return 0.0


# --------------------------------------------------------------------------- valid files


def test_full_example_loads_into_values() -> None:
    """Every key of the full sample ends up, converted, in the frozen values."""
    [scenario] = load_scenarios(SAMPLES / "full.yaml")
    assert scenario.name == "payment-outage"
    assert scenario.description.startswith("Payment API down")
    assert scenario.tags == ("payments", "breaker")
    assert scenario.seed == 7
    assert scenario.app == "examples.taskapp.app:make_app"
    assert scenario.source == str(SAMPLES / "full.yaml")
    assert scenario.line == 2
    assert scenario.location == f"{SAMPLES / 'full.yaml'}:2"

    reminder, autoclose = scenario.tasks
    assert reminder == TaskCall(
        name="taskapp.send_reminder_email",
        args=("{key}",),
        kwargs={"due_date": "2025-10-01", "ref": "order-{n:04d}"},
        weight=3,
        queue="mail",
    )
    assert autoclose.weight == 1.0
    assert autoclose.queue is None

    assert scenario.workload == Workload(
        count=500,
        arrival=Arrival(pattern=ArrivalPattern.UNIFORM, over=1800.0),
        keys=Keys(pattern=KeyPattern.REPEATED, distinct=50),
        duplicate_ratio=0.05,
        workers=4,
    )

    outage, limit, deadlock = scenario.faults
    assert outage.describe() == "api_down at http of taskapp.send_* when window(300.0, 1500.0)"
    assert outage.fault.options == {"status": 502}
    assert limit.label == "slow-down"
    assert limit.fault.options == {"retry_after": 60.0}
    assert limit.describe() == (
        "slow-down at entry when queue('mail') & only_retries() & probability(0.25)"
    )
    assert deadlock.describe() == (
        "deadlock at entry when first(10) & every(3) & window(1200.0, inf) & only_first_attempts()"
    )

    assert set(scenario.policies) == {
        FailureType.EXTERNAL_API_DOWN,
        FailureType.TRANSIENT_RATE_LIMIT,
    }
    down = scenario.policies[FailureType.EXTERNAL_API_DOWN]
    assert (down.max_retries, down.initial_delay, down.strategy) == (8, 30.0, Strategy.EXPONENTIAL)
    limited = scenario.policies[FailureType.TRANSIENT_RATE_LIMIT]
    assert (limited.initial_delay, limited.max_delay) == (60.0, 3600.0)
    assert limited.breaker is not None
    assert (limited.breaker.failure_threshold, limited.breaker.reset_timeout) == (5, 120.0)

    expect = scenario.expect
    assert expect.completion_ratio == Comparison(op=Operator.GE, value=0.99)
    assert expect.max_dlq == Comparison(op=Operator.LE, value=5)
    assert expect.dlq_only_types == (
        FailureType.PERMANENT_VALIDATION,
        FailureType.PERMANENT_NOT_FOUND,
    )
    assert expect.breakers == (
        BreakerExpectation(name="payments", opens_within_calls=10, closes_within=120.0),
    )
    assert expect.duplicate_side_effects == Comparison(op=Operator.LE, value=0)
    assert expect.max_attempts_per_task == Comparison(op=Operator.LE, value=10)
    assert {key: c.describe() for key, c in expect.completion_time.items()} == {
        "p50": "<= 600",
        "p99": "<= 3600",
        "max": "< 7200",
    }
    assert expect.retries_within_budget is True
    assert expect.all_faults_fired is True


def test_loaded_injections_fire_as_written() -> None:
    """A file's window and task glob are the schedule the simulation evaluates."""
    [scenario] = load_scenarios(SAMPLES / "full.yaml")
    reminder = "taskapp.send_reminder_email"
    assert _fires(scenario, 0, task_name=reminder, now=300.0)
    assert not _fires(scenario, 0, task_name=reminder, now=1500.0)
    assert not _fires(scenario, 0, task_name="taskapp.autoclose_job", now=600.0)


def test_several_scenarios_share_an_anchor() -> None:
    """scenarios: holds a list; x- keys hold anchors; merge keys and dates load as plain data."""
    steady, burst = load_scenarios(SAMPLES / "several.yaml")
    assert (steady.name, burst.name) == ("steady", "burst")
    assert steady.app == burst.app == "examples.taskapp.app:make_app"
    assert steady.tasks[0].kwargs["due_date"] == "2025-10-01"  # a date stays text
    assert steady.workload.arrival == Arrival()
    assert burst.seed == 3
    assert burst.workload.workers == 8
    assert burst.faults[0].fault.latency == 2.0
    assert [b.name for b in burst.expect.breakers] == ["mail-api", "report-api"]
    assert burst.expect.breakers[1].closes_within == 600.0
    assert (steady.line, burst.line) == (9, 12)


def _yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown, flags=re.DOTALL)


def test_docs_examples_are_valid() -> None:
    """The YAML examples of docs/scenarios.md load, as the page says."""
    full, several = _yaml_blocks(DOCS.read_text(encoding="utf-8"))
    [scenario] = load_scenarios_text(full, source="docs/scenarios.md")
    assert scenario.name == "mail-outage"
    assert scenario.workload.keys.key_of(57) == 7
    assert [f.label for f in scenario.faults] == ["api_down", "deadlock", "worker_lost"]
    assert scenario.faults[0].at == "examples.taskapp.external.MailAPI.send"
    assert scenario.expect.completion_time["p99"].value == 3600
    assert [s.name for s in load_scenarios_text(several)] == ["steady", "burst-with-rate-limits"]


def test_minimal_scenario_takes_defaults() -> None:
    """Only name, app, tasks and workload.count are required; the rest defaults."""
    [scenario] = load_scenarios_text(BASE)
    assert scenario.seed is None
    assert scenario.faults == ()
    assert dict(scenario.policies) == {}
    assert scenario.workload == Workload(count=10)
    assert scenario.expect.completion_ratio is None
    assert scenario.expect.all_faults_fired is False
    assert scenario.source == "<string>"


def test_app_is_checked_for_form_only() -> None:
    """A well-formed app path that does not exist loads: validation imports nothing."""
    text = BASE.replace("examples.taskapp.app:make_app", "no_such_package_xyz.app:factory")
    [scenario] = load_scenarios_text(text)
    assert scenario.app == "no_such_package_xyz.app:factory"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("'90'", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
    ],
)
def test_durations(written: str, seconds: float) -> None:
    """Durations are seconds, or text with ms, s, m, h and d units."""
    [scenario] = load_scenarios_text(
        BASE.replace("count: 10", f"count: 10\n  arrival: {{pattern: uniform, over: {written}}}")
    )
    assert scenario.workload.arrival.over == seconds


def test_duration_fault_parameters_accept_units() -> None:
    """A fault parameter in seconds accepts duration text; other strings stay strings."""
    text = BASE + (
        "faults:\n"
        "  - {fault: rate_limit, retry_after: 2m}\n"
        "  - {fault: missing_setting, setting: 5m}\n"
    )
    limit, missing = load_scenarios_text(text)[0].faults
    assert limit.fault.options == {"retry_after": 120.0}
    assert missing.fault.options == {"setting": "5m"}


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [
        (">= 0.99", Operator.GE, 0.99),
        ("<=600", Operator.LE, 600.0),
        ("== 0", Operator.EQ, 0.0),
        ("!= 3", Operator.NE, 3.0),
        ("< 1e3", Operator.LT, 1000.0),
        ("> -2", Operator.GT, -2.0),
        (5, Operator.GE, 5.0),
        ("0.5", Operator.GE, 0.5),
    ],
)
def test_comparison_parse(text: object, op: Operator, value: float) -> None:
    """Comparisons read an operator and a number; a bare number takes the default."""
    assert Comparison.parse(text) == Comparison(op=op, value=value)


def test_comparison_holds_and_describes() -> None:
    """holds() applies the operator to the measured figure; describe() writes it back."""
    at_least = Comparison.parse(">= 0.99")
    assert at_least.holds(0.99)
    assert not at_least.holds(0.98)
    assert Comparison.parse("< 5").holds(4)
    assert not Comparison.parse("< 5").holds(5)
    assert Comparison.parse("!= 0").holds(1)
    assert at_least.describe() == ">= 0.99"
    assert Comparison.parse("<= 1h", duration=True).describe() == "<= 3600"
    assert Comparison.parse(3, default="==").describe() == "== 3"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("=> 0.99", "; did you mean '>='?"),
        ("=< 3", "; did you mean '<='?"),
        ("= 0", "; did you mean '=='?"),
        ("about 3", ""),
        (True, ""),
        (">= nan", ""),
    ],
)
def test_comparison_errors(text: object, hint: str) -> None:
    """A comparison that cannot be read names the operators, and suggests a fix for typos."""
    with pytest.raises(ConfigurationError) as caught:
        Comparison.parse(text)
    shown = repr(text) if isinstance(text, str) else "true"
    assert str(caught.value) == (
        "expected a comparison like '<= 600' (one of <, <=, ==, !=, >=, > and a number), "
        f"got {shown}{hint}"
    )


def test_task_call_render_fills_placeholders() -> None:
    """{n} is the message index and {key} its key; exact placeholders become integers."""
    call = TaskCall(
        name="t",
        args=("{n}", "{key}", ["nested-{n}"]),
        kwargs={"ref": "o-{n:03d}", "doc": {"k": "{key}"}, "braces": "{{n}}", "count": 3},
    )
    args, kwargs = call.render(7, key=2)
    assert args == (7, 2, ["nested-7"])
    assert kwargs == {"ref": "o-007", "doc": {"k": 2}, "braces": "{n}", "count": 3}
    assert call.render(4)[0][:2] == (4, 4)
    assert Keys(pattern=KeyPattern.REPEATED, distinct=3).key_of(7) == 1
    assert Keys().key_of(7) == 7


@pytest.mark.parametrize(
    ("make", "key", "message"),
    [
        (lambda: Workload(count=0), "count", "expected an integer >= 1, got 0"),
        (
            lambda: Workload(count=5, keys=Keys(pattern=KeyPattern.REPEATED, distinct=9)),
            "keys.distinct",
            "expected at most count (5) keys, got 9",
        ),
        (
            lambda: Arrival(pattern=ArrivalPattern.UNIFORM),
            "pattern",
            "uniform arrival needs over (seconds to spread the messages over)",
        ),
        (lambda: Arrival(over=3), "over", "over does not apply to burst arrival"),
        (
            lambda: Arrival(pattern="poison", rate=1),  # type: ignore[arg-type]
            "pattern",
            "expected one of burst, uniform, poisson, got 'poison'; did you mean 'poisson'?",
        ),
        (
            lambda: TaskCall(name="two words"),
            "name",
            "expected a task name like 'taskapp.autoclose_job', got 'two words'",
        ),
        (lambda: TaskCall(name="t", weight=0), "weight", "expected a number > 0, got 0"),
        (
            lambda: BreakerExpectation(name="mail"),
            "name",
            "breaker 'mail' expects nothing: give opens_within_calls or closes_within",
        ),
        (
            lambda: Scenario(name="x", app="m:a", tasks=(), workload=Workload(count=1)),
            "tasks",
            "a scenario needs at least one task",
        ),
    ],
)
def test_values_validate_themselves(make: object, key: str, message: str) -> None:
    """Values built in Python are checked like values read from a file."""
    with pytest.raises(ConfigurationError) as caught:
        make()  # type: ignore[operator]
    assert (caught.value.key, str(caught.value)) == (key, message)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            BASE + "  duplicat_ratio: 0.5\n",
            "scenarios/x.yaml:8:3: workload.duplicat_ratio: unknown key 'duplicat_ratio'; "
            "did you mean 'duplicate_ratio'? (valid keys: count, arrival, keys, "
            "duplicate_ratio, workers)",
            id="unknown-key",
        ),
        pytest.param(
            BASE + "expectations: {}\n",
            "scenarios/x.yaml:8:1: expectations: unknown key 'expectations'; did you mean "
            "'expect'? (valid keys: name, description, tags, seed, app, tasks, workload, faults, "
            "policies, retry_budget, real, expect)",
            id="unknown-top-level-key",
        ),
        pytest.param(
            BASE.replace("count: 10", "count: many"),
            "scenarios/x.yaml:7:3: workload.count: expected an integer >= 1, got 'many'",
            id="wrong-type",
        ),
        pytest.param(
            BASE + "seed: yes\n",
            "scenarios/x.yaml:8:1: seed: expected an integer, got true",
            id="wrong-type-bool",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: api_down\n    window: [1500, 300]\n",
            "scenarios/x.yaml:10:5: faults[0].window: expected [start, end] with start < end, "
            "got [1500, 300]",
            id="inverted-window",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: api_down\n    window: {start: 25m, end: 5m}\n",
            "scenarios/x.yaml:10:5: faults[0].window: expected [start, end] with start < end, "
            "got {start: '25m', end: '5m'}",
            id="inverted-window-mapping",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: api_down\n    window: [300]\n",
            "scenarios/x.yaml:10:5: faults[0].window: expected [start, end] or "
            "{start: ..., end: ...} (end null: no end), got [300]",
            id="window-shape",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: api_down\n    window: [5m, soon]\n",
            "scenarios/x.yaml:10:18: faults[0].window[1]: expected a duration >= 0 (seconds, or "
            "text like '90s', '5m', '1h30m'), got 'soon'",
            id="window-bad-duration",
        ),
        pytest.param(
            BASE.replace("count: 10", "count: 10\n  arrival: {pattern: uniform, over: 5 minutes}"),
            "scenarios/x.yaml:8:31: workload.arrival.over: expected a duration >= 0 (seconds, or "
            "text like '90s', '5m', '1h30m'), got '5 minutes'",
            id="bad-duration",
        ),
        pytest.param(
            BASE.replace("count: 10", "count: 10\n  arrival: {pattern: uniform, over: -5}"),
            "scenarios/x.yaml:8:31: workload.arrival.over: expected a duration >= 0 (seconds, or "
            "text like '90s', '5m', '1h30m'), got -5",
            id="negative-duration",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: api_dwon\n",
            "scenarios/x.yaml:9:5: faults[0].fault: unknown fault 'api_dwon'; did you mean "
            f"'api_down'? Valid faults: {', '.join(sorted(CATALOG))}",
            id="unknown-fault",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: api_down\n    stauts: 502\n",
            "scenarios/x.yaml:10:5: faults[0].stauts: fault 'api_down' has no parameter "
            "'stauts'; it takes: status; did you mean 'status'?",
            id="unknown-fault-parameter",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: deadlock\n    tasks: taskapp.*\n",
            "scenarios/x.yaml:10:5: faults[0].tasks: fault 'deadlock' has no parameter 'tasks'; "
            "it takes: no parameters; did you mean 'task'?",
            id="misspelt-schedule-key",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: api_down\n    status: 500\n",
            "scenarios/x.yaml:10:5: faults[0].status: status must be 502 or 503 for api_down, "
            "got 500",
            id="bad-fault-parameter",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: deadlock\n    at: dbb\n",
            "scenarios/x.yaml:10:5: faults[0].at: unknown dependency point 'dbb'; did you mean "
            "'db'? Valid points: 'db', 'http', 'redis', or an import path like "
            "'myapp.payments.charge'",
            id="bad-point",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: deadlock\n    args: x\n",
            "scenarios/x.yaml:10:5: faults[0].args: 'args' takes a Python callable and has no "
            "YAML form; filter with task, queue, window, times, every or rate",
            id="args-predicate",
        ),
        pytest.param(
            BASE + "faults:\n  - fault: deadlock\n    retries_only: yes please\n",
            "scenarios/x.yaml:10:5: faults[0].retries_only: expected true or false, "
            "got 'yes please'",
            id="bad-boolean",
        ),
        pytest.param(
            BASE + "faults:\n  - times: 2\n",
            "scenarios/x.yaml:9:5: faults[0]: missing required key 'fault'",
            id="fault-missing",
        ),
        pytest.param(
            BASE + "expect:\n  completion_ratio: '=> 0.99'\n",
            "scenarios/x.yaml:9:3: expect.completion_ratio: expected a comparison like '<= 600' "
            "(one of <, <=, ==, !=, >=, > and a number), got '=> 0.99'; did you mean '>='?",
            id="bad-comparison",
        ),
        pytest.param(
            BASE + "expect:\n  completion_ratio: '>= 99'\n",
            "scenarios/x.yaml:9:3: expect.completion_ratio: expected a comparison with a "
            "fraction in [0, 1], got '>= 99'",
            id="ratio-out-of-range",
        ),
        pytest.param(
            BASE + "expect:\n  completion_time: {p50: '<= 10 min'}\n",
            "scenarios/x.yaml:9:21: expect.completion_time.p50: expected a comparison like "
            "'<= 600' (one of <, <=, ==, !=, >=, > and a duration), got '<= 10 min'",
            id="bad-duration-comparison",
        ),
        pytest.param(
            BASE + "expect:\n  completion_time: {median: 60}\n",
            "scenarios/x.yaml:9:21: expect.completion_time.median: unknown key 'median': "
            "expected a percentile (p50, p99, p99.9) or max",
            id="bad-percentile",
        ),
        pytest.param(
            BASE + "expect:\n  dlq_only_types: [PERMANENT_VALIDATON]\n",
            "scenarios/x.yaml:9:20: expect.dlq_only_types[0]: unknown failure type "
            "'PERMANENT_VALIDATON'; did you mean 'PERMANENT_VALIDATION'? Valid types: "
            + ", ".join(t.value for t in FailureType),
            id="bad-failure-type",
        ),
        pytest.param(
            BASE + "policies:\n  external_api_down: {max_retries: 3}\n",
            "scenarios/x.yaml:9:3: policies.external_api_down: unknown failure type "
            "'external_api_down'; did you mean 'EXTERNAL_API_DOWN'? Valid types: "
            + ", ".join(t.value for t in FailureType),
            id="bad-policy-type",
        ),
        pytest.param(
            BASE + "policies:\n  EXTERNAL_API_DOWN: {max_retrys: 3}\n",
            "scenarios/x.yaml:9:23: policies.EXTERNAL_API_DOWN.max_retrys: unknown setting "
            "'max_retrys'; did you mean 'max_retries'? (known: max_retries, initial_delay, "
            "strategy, factor, max_delay, jitter, jitter_ratio, breaker)",
            id="bad-policy-key",
        ),
        pytest.param(
            BASE + "policies:\n  EXTERNAL_API_DOWN:\n    breaker: {failure_threshold: 0, "
            "reset_timeout: 1m}\n",
            "scenarios/x.yaml:10:15: policies.EXTERNAL_API_DOWN.breaker.failure_threshold: "
            "failure_threshold must be an int >= 1, got 0",
            id="bad-policy-breaker",
        ),
        pytest.param(
            BASE + "workload: {count: 5}\n",
            "scenarios/x.yaml:8:1: workload: duplicate key 'workload' (first at line 6, column 1)",
            id="duplicate-key",
        ),
        pytest.param(
            BASE.replace("  count: 10\n", "  count: 10\n  count: 20\n"),
            "scenarios/x.yaml:8:3: workload.count: duplicate key 'count' (first at line 7, "
            "column 3)",
            id="duplicate-nested-key",
        ),
        pytest.param(
            "",
            "scenarios/x.yaml:1:1: the file is empty: expected a scenario (a mapping with name, "
            "app, tasks, workload, ...) or 'scenarios:' and a list of them",
            id="empty-file",
        ),
        pytest.param(
            "# only a comment\n",
            "scenarios/x.yaml:1:1: the file is empty: expected a scenario (a mapping with name, "
            "app, tasks, workload, ...) or 'scenarios:' and a list of them",
            id="comment-only",
        ),
        pytest.param(
            "- name: a\n- name: b\n",
            "scenarios/x.yaml:1:1: expected a scenario (a mapping) or 'scenarios:' at the top, "
            "got [{name: 'a'}, {name: 'b'}]",
            id="not-a-mapping",
        ),
        pytest.param(
            "name: a\napp: [x\nworkload: 3\n",
            "scenarios/x.yaml:3:9: invalid YAML: expected ',' or ']', but got ':' (while parsing "
            "a flow sequence that starts at line 2, column 6)",
            id="yaml-syntax",
        ),
        pytest.param(
            "name: a\n  app: x\n",
            "scenarios/x.yaml:2:6: invalid YAML: mapping values are not allowed here",
            id="yaml-indentation",
        ),
        pytest.param(
            BASE + "description: !!python/object/apply:os.system ['echo hi']\n",
            "scenarios/x.yaml:8:14: description: tag '!!python/object/apply:os.system' is not "
            "allowed: scenario files hold plain data (strings, numbers, booleans, null, lists, "
            "mappings)",
            id="python-tag",
        ),
        pytest.param(
            BASE + "seed: !!int seven\n",
            "scenarios/x.yaml:8:7: seed: 'seven' is not a valid !!int",
            id="bad-explicit-tag",
        ),
        pytest.param(
            BASE.replace("name: base", "name: Base Line"),
            "scenarios/x.yaml:1:1: name: expected a name of lowercase letters, digits, '-' and "
            "'_', got 'Base Line'",
            id="bad-name",
        ),
        pytest.param(
            BASE.replace("examples.taskapp.app:make_app", "examples.taskapp.app.make_app"),
            "scenarios/x.yaml:2:1: app: expected an import path 'module:attribute' (like "
            "'examples.taskapp.app:make_app'), got 'examples.taskapp.app.make_app'",
            id="bad-app",
        ),
        pytest.param(
            BASE.replace('args: ["{n}"]', 'kwargs: {order: "{id}"}'),
            "scenarios/x.yaml:5:14: tasks[0].kwargs.order: unknown placeholder {id} in '{id}': "
            "the placeholders are {n} (the message's index) and {key} (its key's index); write "
            "{{ and }} for literal braces",
            id="bad-placeholder",
        ),
        pytest.param(
            BASE.replace("count: 10", "count: 10\n  keys: {pattern: repeated, distinct: 11}"),
            "scenarios/x.yaml:8:29: workload.keys.distinct: expected at most count (10) keys, "
            "got 11",
            id="more-keys-than-messages",
        ),
        pytest.param(
            BASE + "expect: {all_faults_fired: true}\n",
            "scenarios/x.yaml:8:10: expect.all_faults_fired: all_faults_fired needs at least "
            "one fault in faults",
            id="all-faults-without-faults",
        ),
    ],
)
def test_error_messages(text: str, expected: str) -> None:
    """Each mistake is reported as file:line:column: key.path: message."""
    error = _error(text)
    assert str(error) == expected
    assert error.errors == [error]


def test_missing_required_keys_are_all_listed() -> None:
    """Every missing required key is reported at the mapping that lacks it."""
    assert _lines("name: a\n") == [
        "scenarios/x.yaml:1:1: missing required key 'app'",
        "scenarios/x.yaml:1:1: missing required key 'tasks'",
        "scenarios/x.yaml:1:1: missing required key 'workload'",
    ]


def test_every_mistake_of_a_file_is_collected_in_order() -> None:
    """One load reports all mistakes, in file order, and loads nothing."""
    text = (
        "name: Bad\n"
        "app: examples.taskapp.app:make_app\n"
        "tags: [ok, Not-Ok]\n"
        "tasks: [{name: taskapp.autoclose_job, wieght: 2}]\n"
        "workload: {count: 0, duplicat_ratio: 0.5}\n"
        "faults:\n"
        "  - fault: api_dwon\n"
        "  - fault: deadlock\n"
        "    window: [9, 3]\n"
    )
    error = _error(text)
    assert [(e.line, e.column, e.key_path) for e in error.errors] == [
        (1, 1, "name"),
        (3, 12, "tags[1]"),
        (4, 39, "tasks[0].wieght"),
        (5, 12, "workload.count"),
        (5, 22, "workload.duplicat_ratio"),
        (7, 5, "faults[0].fault"),
        (9, 5, "faults[1].window"),
    ]
    assert str(error).splitlines() == [str(e) for e in error.errors]
    assert (error.line, error.column, error.key_path) == (1, 1, "name")


def test_scenario_error_carries_its_location() -> None:
    """ScenarioError is a ConfigurationError with path, line, column and key path, and pickles."""
    error = _error(BASE + "faults:\n  - fault: api_down\n    window: [1500, 300]\n")
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)
    assert (error.path, error.line, error.column) == (SOURCE, 10, 5)
    assert error.key_path == error.key == "faults[0].window"
    assert error.detail == "expected [start, end] with start < end, got [1500, 300]"
    assert error.value == [1500, 300]
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (str(copy), copy.key_path, copy.column) == (str(error), error.key_path, 5)

    several = _error("name: a\n")
    copy = pickle.loads(pickle.dumps(several))  # noqa: S301 - our own object
    assert [str(e) for e in copy.errors] == [str(e) for e in several.errors]


def test_duplicate_scenario_names_in_a_file() -> None:
    """Names are unique per file."""
    item = "{name: same, app: 'm:app', tasks: [{name: t}], workload: {count: 1}}"
    assert _lines(f"scenarios:\n  - {item}\n  - {item}\n") == [
        "scenarios/x.yaml:3:6: scenarios[1].name: duplicate scenario name 'same' (first at line 2)"
    ]


def test_scenarios_list_form_errors() -> None:
    """With scenarios:, other keys (but x-) are errors, and the list must not be empty."""
    assert _lines("x-common: 1\napp: m:a\nscenarios: []\n") == [
        (
            "scenarios/x.yaml:2:1: app: unknown key 'app': a file with 'scenarios:' holds only "
            "that list (and x-... keys for anchors); put every scenario's keys inside it"
        ),
        "scenarios/x.yaml:3:1: scenarios: expected a non-empty list of scenarios, got []",
    ]


def test_python_tags_never_run(tmp_path: Path) -> None:
    """Unsafe tags are rejected before anything could construct them."""
    flag = tmp_path / "ran"
    text = (
        BASE
        + "description: !!python/object/apply:pathlib.Path.touch "
        + f"[!!python/object/apply:pathlib.Path ['{flag}']]\n"
    )
    error = _error(text)
    assert "tag '!!python/object/apply:pathlib.Path.touch' is not allowed" in str(error)
    assert not flag.exists()


def test_alias_cycles_and_alias_bombs_are_rejected() -> None:
    """A self-referencing alias and an exponential alias expansion are errors, not hangs."""
    assert _lines(BASE.replace("tasks:", "tasks: &t [*t]\nx:")) == [
        "scenarios/x.yaml:3:8: tasks[0]: an alias refers to a value that contains it (a cycle)",
        (
            "scenarios/x.yaml:4:1: x: unknown key 'x' (valid keys: name, description, tags, seed, "
            "app, tasks, workload, faults, policies, retry_budget, real, expect)"
        ),
    ]
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for level in "bcde":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]\n"
    assert _lines(bomb + "f: [*e, *e]\n") == [
        "scenarios/x.yaml:1:1: the file expands to more than 100000 values (through aliases)"
    ]


# --------------------------------------------------------------------------- files


def test_load_scenarios_from_a_directory(tmp_path: Path) -> None:
    """A directory loads its *.yaml and *.yml files, recursively, in name order."""
    (tmp_path / "b.yaml").write_text(BASE.replace("name: base", "name: b"), encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yml").write_text(BASE.replace("name: base", "name: a"), "utf-8")
    (tmp_path / "notes.txt").write_text("not a scenario", encoding="utf-8")
    assert [s.name for s in load_scenarios(tmp_path)] == ["b", "a"]


def test_names_are_unique_across_files(tmp_path: Path) -> None:
    """Two files loaded together cannot define the same scenario name."""
    (tmp_path / "a.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(BASE, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenarios(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'b.yaml'}:1:1: name: duplicate scenario name 'base' "
        f"(also in {tmp_path / 'a.yaml'}:1)"
    )


def test_validate_reports_every_file(tmp_path: Path) -> None:
    """validate() checks files and directories and returns one error per mistake."""
    good = tmp_path / "good.yaml"
    good.write_text(BASE, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("count: 10", "count: 0") + "seed: x\n", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\n")
    missing = tmp_path / "missing.yaml"
    found = validate([tmp_path / "good.yaml", bad, empty, binary, missing])
    assert [str(error) for error in found] == [
        f"{bad}:7:3: workload.count: expected an integer >= 1, got 0",
        f"{bad}:8:1: seed: expected an integer, got 'x'",
        f"{empty}: no scenario files (*.yaml, *.yml) in this directory",
        f"{binary}: not UTF-8 text (invalid start byte)",
        f"{missing}: no such file or directory",
    ]
    assert validate(good) == []
    assert validate(SAMPLES / "full.yaml") == []


def test_invalid_samples_fail_validation() -> None:
    """Each invalid sample file has exactly the mistake its name says."""
    found = {path.name: [e.detail for e in validate(path)] for path in SAMPLES.glob("invalid-*")}
    assert {name: len(details) for name, details in found.items()} == {
        "invalid-unknown-key.yaml": 1,
        "invalid-unknown-fault.yaml": 1,
        "invalid-wrong-type.yaml": 1,
        "invalid-fault-parameter.yaml": 1,
        "invalid-failure-type.yaml": 1,
    }
    assert found["invalid-unknown-fault.yaml"][0].startswith("unknown fault 'api_dwon'")


# --------------------------------------------------------------------------- JSON Schema


def _schema() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def _defs() -> dict[str, dict[str, object]]:
    return _schema()["$defs"]  # type: ignore[return-value]


def _properties(name: str) -> list[str]:
    properties: dict[str, object] = _defs()[name]["properties"]  # type: ignore[assignment]
    return list(properties)


def _valid_keys(text: str) -> list[str]:
    """The keys the loader lists in its unknown-key message for ``text``."""
    found = re.search(r"\(valid keys: ([^)]*)\)", str(_error(text)))
    assert found is not None
    return found.group(1).split(", ")


def test_schema_is_shipped_with_the_package() -> None:
    """The schema sits next to the module and declares draft 2020-12."""
    import pytest_taskchaos

    assert SCHEMA_PATH.parent == Path(str(pytest_taskchaos.__file__)).parent
    assert _schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_keys_match_the_loader() -> None:
    """Each mapping of the schema has the keys the loader accepts, in the same order."""
    assert _properties("scenario") == _valid_keys(BASE + "nmae: x\n")
    assert _properties("workload") == _valid_keys(BASE + "  wrokers: 2\n")
    assert _properties("taskCall") == _valid_keys(BASE.replace("args:", "argz:"))
    assert _properties("expect") == _valid_keys(BASE + "expect: {max_dql: 1}\n")
    breaker = BASE + "expect: {breaker: {name: b, opens_within: 1}}\n"
    assert _properties("breakerExpectation") == _valid_keys(breaker)


def test_schema_enums_match_the_library() -> None:
    """Fault names and parameters, failure types, strategies and jitters come from the code."""
    defs = _defs()
    fault = defs["fault"]
    assert fault["properties"]["fault"]["enum"] == sorted(CATALOG)  # type: ignore[index]
    params = {
        rule["if"]["properties"]["fault"]["const"]: sorted(rule["then"]["properties"])
        for rule in fault["allOf"]  # type: ignore[attr-defined]
    }
    assert params == {
        name: sorted(key for key, _ in entry.params)
        for name, entry in CATALOG.items()
        if entry.params
    }
    assert defs["failureType"]["enum"] == [t.value for t in FailureType]
    policy = defs["policy"]["properties"]
    assert policy["strategy"]["enum"] == [s.value for s in Strategy]  # type: ignore[index]
    assert policy["jitter"]["enum"] == [j.value for j in Jitter]  # type: ignore[index]


def test_schema_and_loader_agree_on_the_samples() -> None:
    """Samples the loader accepts are valid for the schema, and those it rejects are not."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(_schema())
    validator = jsonschema.Draft202012Validator(_schema())
    docs = _yaml_blocks(DOCS.read_text(encoding="utf-8"))
    texts = {path.name: path.read_text(encoding="utf-8") for path in SAMPLES.glob("*.yaml")}
    texts.update({f"docs-{index}": text for index, text in enumerate(docs)})
    verdicts = {
        name: (validate_text(text), validator.is_valid(yaml.safe_load(text)))
        for name, text in texts.items()
    }
    assert {name: loader for name, (loader, _) in verdicts.items()} == {
        name: schema for name, (_, schema) in verdicts.items()
    }
    assert sum(loader for loader, _ in verdicts.values()) == 4  # full, several, 2 docs examples


def validate_text(text: str) -> bool:
    """Whether the loader accepts ``text``."""
    try:
        load_scenarios_text(text)
    except ScenarioError:
        return False
    return True


def test_durations_schema_pattern_matches_the_loader() -> None:
    """The schema's duration pattern accepts exactly the texts the loader reads."""
    pattern = _defs()["duration"]["oneOf"][1]["pattern"]  # type: ignore[index]
    for text in ("90", "1.5", "90s", "5m", "1h30m", "250ms", "2d", " 5 m "):
        assert re.search(pattern, text), text
    for text in ("5 minutes", "-5", "m", "1x", ""):
        assert not re.search(pattern, text), text
    assert math.isclose(
        load_scenarios_text(BASE + "faults: [{fault: latency, seconds: ' 5 m '}]")[0]
        .faults[0]
        .fault.latency,
        300.0,
    )


def test_public_names_are_exported() -> None:
    """__all__ is sorted, names only what exists, and exports every value class of the format."""
    from pytest_taskchaos import _scenario_values, scenario

    def style(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert scenario.__all__ == sorted(scenario.__all__, key=style)
    assert all(hasattr(scenario, name) for name in scenario.__all__)
    classes = {
        name
        for name, value in vars(_scenario_values).items()
        if isinstance(value, type)
        and value.__module__ == _scenario_values.__name__
        and not name.startswith("_")
    }
    assert classes <= set(scenario.__all__)

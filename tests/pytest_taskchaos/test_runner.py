"""Tests of pytest_taskchaos.runner: running scenarios and checking their expectations."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_taskchaos.runner import ScenarioResult, load_app, run_scenario
from pytest_taskchaos.scenario import (
    BreakerExpectation,
    Scenario,
    load_scenarios,
    load_scenarios_text,
)
from resilience.errors import ConfigurationError
from resilience.policy import RetryPolicy
from resilience.taxonomy import FailureType

SCENARIOS = Path(__file__).parents[2] / "scenarios"
APP = "examples.taskapp.scenario_app:make_scenario_app"


def _shipped(name: str) -> Scenario:
    [scenario] = load_scenarios(SCENARIOS / f"{name}.yaml")
    return scenario


def _failed(result: ScenarioResult) -> dict[str, str]:
    return {failure.name: failure.measured for failure in result.failures}


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_shipped_scenario_passes(path: Path) -> None:
    """Every scenario under scenarios/ passes with its own seed."""
    for scenario in load_scenarios(path):
        result = run_scenario(scenario)
        assert result.passed, [failure.describe() for failure in result.failures]
        assert result.expectations[0].name == "finished"


def test_policies_cannot_make_missing_config_retry() -> None:
    """A retry policy for CONFIG_MISSING_SETTING still dead-letters at once (one attempt)."""
    scenario = _shipped("missing-config")
    overridden = dataclasses.replace(
        scenario,
        policies={FailureType.CONFIG_MISSING_SETTING: RetryPolicy(max_retries=3)},
    )
    result = run_scenario(overridden)
    assert result.passed
    assert result.measures["max_attempts_per_task"] == 1


def test_breaker_that_never_opens_fails_with_the_breakers_seen() -> None:
    """A breaker expectation on a breaker that never opened names the ones that did."""
    scenario = _shipped("mail-outage")
    expect = dataclasses.replace(
        scenario.expect,
        breakers=(BreakerExpectation(name="report-api", opens_within_calls=5),),
    )
    result = run_scenario(dataclasses.replace(scenario, expect=expect))
    assert _failed(result) == {
        "breaker[report-api].opens_within_calls": (
            "never opened (breakers that changed state: mail-api)"
        )
    }


def test_no_retries_in_an_outage_fails_completion_and_dlq() -> None:
    """Without retries for EXTERNAL_API_DOWN the mail outage loses messages to the DLQ."""
    scenario = _shipped("mail-outage")
    weakened = dataclasses.replace(
        scenario, policies={FailureType.EXTERNAL_API_DOWN: RetryPolicy(max_retries=0)}
    )
    result = run_scenario(weakened)
    failed = _failed(result)
    assert failed["max_dlq"].startswith(f"{result.measures['dlq_total']} (EXTERNAL_API_DOWN=")
    assert result.measures["dlq_total"] > 0
    assert failed["completion_ratio"].endswith(f"({result.measures['completed']}/300 tasks)")


def test_same_seed_same_fingerprint_other_seed_differs() -> None:
    """A run is reproducible from its seed; another seed gives another history."""
    scenario = _shipped("oom-redelivery")
    first, again = run_scenario(scenario), run_scenario(scenario)
    assert first.seed == 11
    assert first.fingerprint == again.fingerprint
    assert run_scenario(scenario, seed=12).fingerprint != first.fingerprint


def test_step_budget_is_a_failed_expectation_not_a_crash() -> None:
    """Endless redelivery makes 'finished' fail with the simulation's message."""
    [scenario] = load_scenarios_text(
        f"""
name: endless
app: {APP}
tasks: [{{name: taskapp.autoclose_job, kwargs: {{job_id: "{{n}}"}}}}]
workload: {{count: 2}}
faults: [{{fault: worker_lost}}]
"""
    )
    result = run_scenario(scenario)
    assert not result.passed
    [failure] = result.failures
    assert failure.name == "finished"
    assert failure.measured.startswith("did not finish: drain() ran its budget of 100 steps")


def test_to_dict_is_json_friendly() -> None:
    """to_dict holds the verdict, seed, expectations and measures as plain data."""
    import json

    result = run_scenario(_shipped("missing-config"))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["name"] == "missing-config"
    assert data["seed"] == 3
    assert data["passed"] is True
    assert data["measures"]["dlq"] == {"CONFIG_MISSING_SETTING": result.measures["dlq_total"]}
    assert {
        "name": "max_attempts_per_task",
        "expected": "<= 1",
        "measured": "1",
        "passed": True,
    } in data["expectations"]


def test_bad_app_path_is_a_clear_error() -> None:
    """An app path naming a missing attribute says which and suggests the right one."""
    with pytest.raises(ConfigurationError) as caught:
        load_app("examples.taskapp.scenario_app:make_scenario_ap")
    assert str(caught.value) == (
        "app 'examples.taskapp.scenario_app:make_scenario_ap': "
        "'examples.taskapp.scenario_app' has no attribute 'make_scenario_ap'; "
        "did you mean 'make_scenario_app'?"
    )
    with pytest.raises(ConfigurationError, match="cannot import module 'no_such_module'"):
        load_app("no_such_module:app")


def test_unknown_task_is_a_clear_error() -> None:
    """A workload task the app lacks is named, with the app's tasks."""
    [scenario] = load_scenarios_text(
        f"name: x\napp: {APP}\ntasks: [{{name: taskapp.send_reminder}}]\nworkload: {{count: 1}}\n"
    )
    with pytest.raises(ConfigurationError, match=r"task 'taskapp.send_reminder' is not registered"):
        run_scenario(scenario)

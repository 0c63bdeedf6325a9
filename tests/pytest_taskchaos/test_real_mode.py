"""Real mode: shipped scenarios on a real Celery worker and Redis agree with the simulation.

The real runs need the Redis of ``RESILIENCE_TEST_REDIS_URL`` (``scripts/servers.sh``);
without it they are skipped, unless ``RESILIENCE_REQUIRE_SERVERS=1`` (CI), which
turns a missing or unreachable Redis into a failure. The other tests need no server.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import MappingProxyType

import pytest

from pytest_taskchaos import cli
from pytest_taskchaos._real import compare, resolve_time_scale, run_real
from pytest_taskchaos.runner import ScenarioResult, run_scenario
from pytest_taskchaos.scenario import ScenarioError, load_scenarios, load_scenarios_text

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
REAL_RUN_LIMIT = 60.0


@pytest.fixture(autouse=True)
def _in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenario apps are imported from the project root, as ``taskchaos`` does."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def _real(name: str, url: str) -> tuple[ScenarioResult, ScenarioResult, float]:
    [scenario] = load_scenarios(SCENARIOS / f"{name}.yaml")
    simulated = run_scenario(scenario)
    began = time.perf_counter()
    real = run_real(scenario, url=url)
    return simulated, real, time.perf_counter() - began


# --------------------------------------------------------------------------- real runs


def test_missing_config_agrees_with_the_simulation_on_a_real_worker(redis_url: str) -> None:
    """missing-config on a real worker: same verdict, tasks, DLQ by type and firings."""
    simulated, real, seconds = _real("missing-config", redis_url)

    assert seconds < REAL_RUN_LIMIT
    assert compare(simulated, real) == []
    assert real.passed, [failure.describe() for failure in real.failures]
    assert real.measures["mode"] == "real"
    assert real.measures["time_scale"] == 60.0
    assert real.measures["tasks"] == simulated.measures["tasks"] == 100
    assert real.measures["dlq"] == {"CONFIG_MISSING_SETTING": 43}
    assert real.measures["retries"] == 0
    assert real.measures["max_attempts_per_task"] == 1
    [fault] = real.measures["faults"]
    assert fault == {"label": "missing_setting", "calls": 43, "fired": 43}
    # 10 virtual minutes of arrivals at 60x take about 10 real seconds.
    assert 9.5 * 60 <= real.measures["virtual_duration"] <= REAL_RUN_LIMIT * 60


def test_db_failover_agrees_with_the_simulation_on_a_real_worker(redis_url: str) -> None:
    """db-failover on a real worker: every job created once after the failover window."""
    simulated, real, seconds = _real("db-failover", redis_url)

    assert seconds < REAL_RUN_LIMIT
    assert compare(simulated, real) == []
    assert real.passed, [failure.describe() for failure in real.failures]
    assert real.measures["completion_ratio"] == 1.0
    assert real.measures["dlq"] == {}
    assert real.measures["duplicate_side_effects"] == 0
    # Which runs fall in the window depends on timing: only that the fault fired,
    # and that every firing was retried (no DLQ), is timing-independent.
    [fault] = real.measures["faults"]
    assert fault["fired"] > 0
    assert real.measures["retries"] == fault["fired"]
    # Retry countdowns reach Celery scaled: the recorded waits are virtual seconds.
    assert real.measures["min_retry_delay"] >= 1.0


# --------------------------------------------------------------------------- no server


def test_compare_names_each_timing_independent_difference() -> None:
    """A real run that dead-letters differently is reported with both values."""
    [scenario] = load_scenarios(SCENARIOS / "missing-config.yaml")
    simulated = run_scenario(scenario)
    measures = dict(simulated.measures)
    measures["dlq"] = {"CONFIG_MISSING_SETTING": 42}
    measures["faults"] = [{"label": "missing_setting", "calls": 42, "fired": 42}]
    real = dataclasses.replace(simulated, measures=MappingProxyType(measures))

    assert compare(simulated, simulated) == []
    assert compare(simulated, real) == [
        "dlq: simulation {'CONFIG_MISSING_SETTING': 43}, real {'CONFIG_MISSING_SETTING': 42}",
        "faults[missing_setting].fired: simulation 43, real 42",
    ]


def test_compare_ignores_firings_of_windowed_faults() -> None:
    """A window's firings depend on timing: they are not compared, the verdict is."""
    [scenario] = load_scenarios(SCENARIOS / "db-failover.yaml")
    simulated = run_scenario(scenario)
    measures = dict(simulated.measures)
    measures["faults"] = [{"label": "db_connection_lost", "calls": 1, "fired": 1}]
    real = dataclasses.replace(simulated, measures=MappingProxyType(measures))
    failed = dataclasses.replace(real, passed=False, expectations=simulated.expectations[1:2])

    assert compare(simulated, real) == []
    assert compare(simulated, failed) == ["verdict: simulation PASS, real FAIL ()"]


def test_time_scale_comes_from_the_file_or_the_command_line() -> None:
    """real.time_scale is the default; --time-scale overrides it; neither is an error."""
    [marked] = load_scenarios(SCENARIOS / "missing-config.yaml")
    [unmarked] = load_scenarios(SCENARIOS / "mail-outage.yaml")

    assert resolve_time_scale(marked, None) == 60.0
    assert resolve_time_scale(marked, 600) == 600.0
    with pytest.raises(ValueError, match=r"has no 'real: \{time_scale: F\}' section; pass"):
        resolve_time_scale(unmarked, None)
    with pytest.raises(ValueError, match="time_scale must be a number > 0, got 0"):
        resolve_time_scale(marked, 0)


def test_real_section_is_validated_where_it_is_written() -> None:
    """A real section without a positive time_scale fails with its location."""
    text = (SCENARIOS / "missing-config.yaml").read_text(encoding="utf-8")
    assert load_scenarios_text(text)[0].real is not None
    bad = text.replace("real: {time_scale: 60}", "real: {time_scale: -1}")
    with pytest.raises(ScenarioError, match=r"real\.time_scale: expected a number > 0, got -1"):
        load_scenarios_text(bad, source="x.yaml")


def test_real_mode_without_a_broker_is_invalid_input(capsys: pytest.CaptureFixture[str]) -> None:
    """taskchaos run --mode real without --broker exits 2 and says what is missing."""
    code = cli.main(["run", "scenarios/missing-config.yaml", "--mode", "real"])
    assert code == 2
    assert "--mode real needs --broker redis://HOST:PORT/DB" in capsys.readouterr().err


def test_real_mode_of_an_unmarked_scenario_asks_for_a_time_scale(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A scenario without real: and no --time-scale is invalid input in real mode."""
    args = ["run", "scenarios/mail-outage.yaml", "--mode", "real", "--broker", "redis://x:1/0"]
    code = cli.main(args)
    assert code == 2
    wanted = "has no 'real: {time_scale: F}' section; pass --time-scale F"
    assert wanted in capsys.readouterr().err

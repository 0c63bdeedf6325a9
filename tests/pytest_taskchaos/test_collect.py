"""``pytest scenarios/``: scenario files collected and run as tests, the way a user runs them.

Each test writes scenario files (and YAML files that are not scenarios) into a
pytester directory and runs pytest on it in-process. Until the plugin itself
declares ``pytest_collect_file``, the directory's conftest declares the hook the
plugin will hold (and the ``chaos_scenarios`` ini key).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_taskchaos._collect import DEFAULT_PATTERNS, is_scenario_path

CONFTEST = """
import pytest_taskchaos.plugin as plugin

if not hasattr(plugin, "pytest_collect_file"):

    def pytest_collect_file(file_path, parent):
        from pytest_taskchaos._collect import collect_scenario_file

        return collect_scenario_file(file_path, parent)


def pytest_addoption(parser):
    try:
        parser.addini("chaos_scenarios", "scenario file patterns", type="args")
    except ValueError:  # the plugin declares it already
        pass
"""

APP = "examples.taskapp.scenario_app:make_scenario_app"

# Two small scenarios over the example app: the first passes, the second expects
# what cannot happen (nothing completes), so it fails with measured values.
TWO = f"""
x-base: &base
  app: {APP}
  seed: 7
  tasks:
    - name: taskapp.autoclose_job
      kwargs: {{job_id: "{{n}}"}}
  workload: {{count: 5}}

scenarios:
  - <<: *base
    name: closes-jobs
    tags: [jobs]
    expect: {{completion_ratio: 1.0, max_dlq: 0}}
  - <<: *base
    name: impossible
    expect:
      completion_ratio: "<= 0.5"
      max_attempts_per_task: 1
"""

PASSING = f"""
name: ppm
app: {APP}
tasks:
  - name: taskapp.create_ppm_job
    kwargs: {{schedule_id: "{{n}}", due_date: "2025-11-01"}}
workload: {{count: 3}}
expect: {{completion_ratio: 1.0}}
"""

CI_CONFIG = """
name: CI
on: [push]
jobs:
  test: {runs-on: ubuntu-latest, steps: [{run: pytest}]}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory with the hook's conftest."""
    pytester.makeconftest(CONFTEST)
    return pytester


def _write(pytester: pytest.Pytester, relative: str, text: str) -> Path:
    path = pytester.path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_collects_scenario_files_and_nothing_else(project: pytest.Pytester) -> None:
    """Only YAML directly inside a scenarios/ directory is collected, one item per scenario."""
    _write(project, "scenarios/jobs.yaml", TWO)
    _write(project, "scenarios/ppm.yml", PASSING)
    _write(project, ".github/workflows/ci.yml", CI_CONFIG)
    _write(project, "docker-compose.yaml", "services: {redis: {image: redis}}\n")
    _write(project, "config/scenario.yaml", PASSING.replace("name: ppm", "name: elsewhere"))
    _write(project, "scenarios/notes.txt", "not yaml\n")
    result = project.runpytest("--collect-only", "-q", ".", ".github")
    result.stdout.fnmatch_lines(
        [
            "scenarios/jobs.yaml::closes-jobs",
            "scenarios/jobs.yaml::impossible",
            "scenarios/ppm.yml::ppm",
            "",
            "3 tests collected*",
        ]
    )
    result.stdout.no_fnmatch_line("*ci.yml*")
    result.stdout.no_fnmatch_line("*elsewhere*")
    assert result.ret == 0
    # -k matches a scenario's tags as well as its name.
    result = project.runpytest(
        "--collect-only", "-q", "scenarios/", "-k", "jobs and not impossible"
    )
    result.stdout.fnmatch_lines(["scenarios/jobs.yaml::closes-jobs", "", "1/3 tests collected*"])


def test_outcomes_failed_expectations_and_junit_xml(project: pytest.Pytester) -> None:
    """A failing scenario prints each failed expectation and how to re-run it; JUnit XML too."""
    _write(project, "scenarios/jobs.yaml", TWO)
    result = project.runpytest("scenarios/", "--junitxml=junit.xml", "-o", "junit_family=xunit1")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ scenario: impossible _*",
            (
                "scenario 'impossible' (scenarios/jobs.yaml:15) failed with seed 7: "
                "1 of 3 expectations did not hold"
            ),
            "  completion_ratio: expected <= 0.5, measured 1 (5/5 tasks)",
            "run: 5 tasks, 5 attempts, 0 retries, 0 dead-lettered, *s virtual; fingerprint *",
            "re-run: pytest 'scenarios/jobs.yaml::impossible' --chaos-seed=7",
            "*FAILED scenarios/jobs.yaml::impossible*",
        ]
    )
    # The expectation that held is not listed among the failures.
    result.stdout.no_fnmatch_line("*max_attempts_per_task: expected*")

    root = ET.parse(project.path / "junit.xml").getroot()  # noqa: S314 -- our own output
    cases = {case.get("name", ""): case for case in root.iter("testcase")}
    assert sorted(cases) == ["closes-jobs", "impossible"]
    assert cases["closes-jobs"].find("failure") is None
    failure = cases["impossible"].find("failure")
    assert failure is not None
    text = failure.text or ""
    assert "completion_ratio: expected <= 0.5, measured 1 (5/5 tasks)" in text
    assert "re-run: pytest 'scenarios/jobs.yaml::impossible' --chaos-seed=7" in text
    properties = {
        prop.get("name"): prop.get("value") for prop in cases["impossible"].iter("property")
    }
    assert properties["seed"] == "7"
    assert len(properties["fingerprint"] or "") == 64
    assert cases["impossible"].get("file") == "scenarios/jobs.yaml"
    assert cases["impossible"].get("line") == "14"


def test_session_seed_overrides_the_scenario_seed(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--chaos-seed (or TASKCHAOS_SEED) replaces the file's seed, and the re-run line says so."""
    _write(project, "scenarios/jobs.yaml", TWO)
    result = project.runpytest("scenarios/jobs.yaml::impossible", "--chaos-seed=42")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failed with seed 42*", "re-run: pytest '*' --chaos-seed=42"])
    monkeypatch.setenv("TASKCHAOS_SEED", "5")
    result = project.runpytest("scenarios/jobs.yaml::impossible")
    result.stdout.fnmatch_lines(["*failed with seed 5*"])


def test_without_any_seed_a_scenario_without_seed_uses_zero(project: pytest.Pytester) -> None:
    """No session seed and no seed: in the file: the run uses seed 0, reproducibly."""
    _write(project, "scenarios/ppm.yaml", PASSING.replace("1.0}", '"< 0.5"}'))
    result = project.runpytest("scenarios/")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["re-run: pytest 'scenarios/ppm.yaml::ppm' --chaos-seed=0"])


def test_invalid_file_is_a_collection_error_with_its_location(project: pytest.Pytester) -> None:
    """A mistake in a scenario file fails collection with file:line:column: key: message."""
    _write(project, "scenarios/jobs.yaml", TWO)
    _write(project, "scenarios/broken.yaml", PASSING.replace("count: 3", "count: 3, wrokers: 2"))
    result = project.runpytest("scenarios/")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting scenarios/broken.yaml*",
            (
                "scenarios/broken.yaml:7:22: workload.wrokers: unknown key 'wrokers'; "
                "did you mean 'workers'? *"
            ),
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_reportinfo_points_at_the_scenario(project: pytest.Pytester) -> None:
    """Each item reports its file and the line where its scenario starts."""
    _write(project, "scenarios/jobs.yaml", TWO)
    items, _ = project.inline_genitems("scenarios/")
    assert [item.reportinfo() for item in items] == [
        (project.path / "scenarios/jobs.yaml", 10, "scenario: closes-jobs"),
        (project.path / "scenarios/jobs.yaml", 14, "scenario: impossible"),
    ]
    assert [item.location for item in items] == [
        ("scenarios/jobs.yaml", 10, "scenario: closes-jobs"),
        ("scenarios/jobs.yaml", 14, "scenario: impossible"),
    ]


def test_ini_patterns_choose_the_files(project: pytest.Pytester) -> None:
    """chaos_scenarios replaces the default patterns; a leading / anchors one at the rootdir."""
    project.makeini("[pytest]\nchaos_scenarios = /scenarios/*.yaml chaos/*.yml\n")
    _write(project, "scenarios/ppm.yaml", PASSING)
    _write(project, "tests/scenarios/sample.yaml", "not: [a scenario\n")
    _write(project, "more/chaos/jobs.yml", TWO)
    result = project.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "more/chaos/jobs.yml::closes-jobs",
            "more/chaos/jobs.yml::impossible",
            "scenarios/ppm.yaml::ppm",
            "",
            "3 tests collected*",
        ]
    )
    assert result.ret == 0


def test_app_that_cannot_load_fails_the_item_with_the_reason(project: pytest.Pytester) -> None:
    """A scenario whose app does not import fails its item (not the session) with the cause."""
    _write(project, "scenarios/ppm.yaml", PASSING.replace(APP, "nowhere.app:make"))
    result = project.runpytest("scenarios/")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["scenario 'ppm' (scenarios/ppm.yaml:2) cannot run: app 'nowhere.app:make': cannot import*"]
    )


@pytest.mark.parametrize(
    ("relative", "patterns", "claimed"),
    [
        ("scenarios/a.yaml", DEFAULT_PATTERNS, True),
        ("scenarios/a.yml", DEFAULT_PATTERNS, True),
        ("tests/scenarios/a.yaml", DEFAULT_PATTERNS, True),
        ("scenarios/deeper/a.yaml", DEFAULT_PATTERNS, False),
        ("scenarios/a.json", DEFAULT_PATTERNS, False),
        (".github/workflows/ci.yml", DEFAULT_PATTERNS, False),
        ("docker-compose.yml", DEFAULT_PATTERNS, False),
        ("tests/scenarios/a.yaml", ("/scenarios/*.yaml",), False),
        ("scenarios/a.yaml", ("/scenarios/*.yaml",), True),
        ("chaos/x/a.yaml", ("chaos/*/*.yaml",), True),
        ("chaos/a.yaml", ("chaos/*/*.yaml",), False),
        ("scenarios/a.yaml", ("*.txt",), False),
    ],
)
def test_is_scenario_path(relative: str, patterns: tuple[str, ...], claimed: bool) -> None:
    """Patterns match trailing path parts; / anchors; only *.yaml and *.yml are ever claimed."""
    root = Path("/repo")
    assert is_scenario_path(root / relative, rootdir=root, patterns=patterns) is claimed

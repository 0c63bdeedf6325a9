"""Tests of the taskchaos command (pytest_taskchaos.cli.main)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_taskchaos.cli import main

if TYPE_CHECKING:
    import pytest

SCENARIOS = Path(__file__).parents[2] / "scenarios"
APP = "examples.taskapp.scenario_app:make_scenario_app"
PASSING = f"""
name: quick
app: {APP}
tasks: [{{name: taskapp.autoclose_job, kwargs: {{job_id: "{{n}}"}}}}]
workload: {{count: 5}}
expect: {{completion_ratio: 1.0, max_dlq: 0}}
"""
FAILING = f"""
name: doomed
seed: 5
app: {APP}
tasks: [{{name: taskapp.create_ppm_job, kwargs: {{schedule_id: "{{n}}", due_date: "2025-11-01"}}}}]
workload: {{count: 4}}
faults: [{{fault: missing_setting, setting: X}}]
expect: {{completion_ratio: 1.0}}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_run_passing_prints_table_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A passing scenario prints its row with PASS and exit status 0."""
    path = _write(tmp_path, "quick.yaml", PASSING)
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "scenario",
        "tasks",
        "faults",
        "retries",
        "dlq",
        "dups",
        "trips",
        "virtual",
        "verdict",
    ]
    assert out.splitlines()[1].split() == ["quick", "5", "0", "0", "0", "0", "0", "0s", "PASS"]
    assert "1 passed, 0 failed" in out


def test_run_failing_exits_1_with_measured_value_and_rerun_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed expectation gives exit 1, the measured value and a re-run line with the seed."""
    path = _write(tmp_path, "doomed.yaml", FAILING)
    assert main(["run", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL completion_ratio: expected >= 1, measured 0 (0/4 tasks)" in out
    assert f"re-run: taskchaos run {path} --seed 5" in out


def test_seed_option_overrides_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--seed replaces the file's seed in the re-run line."""
    path = _write(tmp_path, "doomed.yaml", FAILING)
    assert main(["run", str(path), "--seed", "9"]) == 1
    assert f"re-run: taskchaos run {path} --seed 9" in capsys.readouterr().out


def test_json_and_junit_reports(tmp_path: Path) -> None:
    """--json and --junit write one entry per scenario with verdicts and failure messages."""
    _write(tmp_path, "a.yaml", PASSING)
    _write(tmp_path, "b.yaml", FAILING)
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    assert main(["run", str(tmp_path), "--json", str(report), "--junit", str(junit)]) == 1
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["passed"] is False
    assert [(s["name"], s["passed"]) for s in data["scenarios"]] == [
        ("quick", True),
        ("doomed", False),
    ]
    suite = ET.parse(junit).getroot()  # noqa: S314 -- the file this test just wrote
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    [failure] = suite.iter("failure")
    assert failure.get("message") == "completion_ratio: expected >= 1, measured 0 (0/4 tasks)"


def test_invalid_file_exits_2_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One invalid file among valid ones: exit 2, file:line:col printed, no table, no report."""
    _write(tmp_path, "a.yaml", PASSING)
    _write(
        tmp_path,
        "bad.yaml",
        PASSING.replace("name: quick", "name: bad").replace("count: 5", "cuont: 5"),
    )
    report = tmp_path / "r.json"
    assert main(["run", str(tmp_path), "--json", str(report)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{tmp_path / 'bad.yaml'}:5:" in captured.err
    assert "unknown key 'cuont'" in captured.err
    assert not report.exists()


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate: 0 for the shipped scenarios, 2 with the location of a mistake."""
    assert main(["validate", str(SCENARIOS)]) == 0
    assert "scenarios valid" in capsys.readouterr().out
    bad = _write(
        tmp_path, "bad.yaml", PASSING.replace("autoclose_job, kwargs", "autoclose_job, kwarg")
    )
    assert main(["validate", str(bad)]) == 2
    assert f"{bad}:4:" in capsys.readouterr().err


UNREACHABLE_APP = """
import os

from celery import Celery

from resilience import RetryPolicy
from resilience.celery import ResilientTask

FAST = {"TRANSIENT_DATABASE": RetryPolicy(max_retries=3, initial_delay=10.0, jitter="none")}


def make_app():
    url = os.environ["TASKCHAOS_TEST_UNREACHABLE_REDIS"]
    app = Celery("unreachable", broker=f"{url}/0", backend=f"{url}/1", set_as_current=False)

    @app.task(
        base=ResilientTask,
        bind=True,
        name="shop.charge",
        shared=False,
        resilience={"policies": FAST},
    )
    def charge(self, order):
        return order

    return app
"""
UNREACHABLE = """
name: unreachable-servers
app: unreachable_servers_app:make_app
tasks: [{name: shop.charge, args: ["{n}"]}]
workload: {count: 5}
faults: [{fault: deadlock, times: 2}]
expect: {completion_ratio: 1.0, max_dlq: 0, all_faults_fired: true}
"""


def test_run_passes_a_scenario_whose_app_has_an_unreachable_redis_broker_and_backend(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unreachable: str,
    connects: list[Any],
) -> None:
    """The app as a worker runs it (Redis broker and result backend, down): PASS, no connect."""
    _write(tmp_path, "unreachable_servers_app.py", UNREACHABLE_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TASKCHAOS_TEST_UNREACHABLE_REDIS", unreachable)
    path = _write(tmp_path, "unreachable.yaml", UNREACHABLE)
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:4] == ["unreachable-servers", "5", "2", "2"]
    assert "1 passed, 0 failed" in out
    assert connects == []


def test_list_faults(capsys: pytest.CaptureFixture[str]) -> None:
    """list-faults prints each catalog fault with its type, point and parameters."""
    assert main(["list-faults"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "failure"]
    rate = next(line for line in lines if line.startswith("rate_limit "))
    assert rate.split()[:4] == ["rate_limit", "TRANSIENT_RATE_LIMIT", "entry", "retry_after=30.0"]


def test_explain_prints_the_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """explain prints events grouped by minute, then the verdict; exit 1 when it fails."""
    path = _write(tmp_path, "doomed.yaml", FAILING)
    assert main(["explain", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("-- minute 0\nt=0s published taskapp.create_ppm_job[")
    assert "dead_lettered taskapp.create_ppm_job" in out
    assert "doomed: FAIL (seed 5)" in out


def test_validate_defaults_to_the_scenarios_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`taskchaos validate` with no path checks scenarios/, as `taskchaos run` runs it."""
    monkeypatch.chdir(SCENARIOS.parent)
    assert main(["validate"]) == 0
    assert capsys.readouterr().out == f"{len(list(SCENARIOS.glob('*.yaml')))} scenarios valid\n"


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    """`taskchaos explain ... | head`: a closed pipe ends the command quietly with 0."""
    path = _write(tmp_path, "ok.yaml", PASSING)
    script = (
        "import sys\n"
        "from pytest_taskchaos.cli import main\n"
        f"raise SystemExit(main(['explain', {str(path)!r}]))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=SCENARIOS.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.readline().startswith(b"-- minute 0")
    child.stdout.close()  # the reader leaves, as head does after its lines
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()
    assert b"BrokenPipeError" not in err, err.decode()


def test_real_mode_options_without_real_mode_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--time-scale or --broker in simulation mode would be ignored: exit 2 instead."""
    assert main(["run", str(SCENARIOS), "--time-scale", "60"]) == 2
    assert "--time-scale is for --mode real only" in capsys.readouterr().err
    assert main(["run", str(SCENARIOS), "--broker", "redis://127.0.0.1:1/0"]) == 2
    assert "--broker is for --mode real only" in capsys.readouterr().err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command is a usage error with exit status 2."""
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err

"""The taskchaos plugin run the way a user runs it: pytester sessions against a small shop app.

Each test writes a Celery app (``shopapp.py``), an ini file naming it and a test
module, runs pytest on them (in-process unless a subprocess is needed, as for
pytest-xdist) and checks what a user sees: outcomes, the header, the report
sections, the terminal summary, the JSON report and usage errors.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from typing import Any

import pytest

from pytest_taskchaos.faults import CATALOG
from pytest_taskchaos.plugin import test_seed

SHOP_APP = """
from celery import Celery

from resilience import RetryPolicy
from resilience.celery import ResilientTask

FAST = RetryPolicy(max_retries=3, initial_delay=10.0, jitter="none")
POLICIES = dict.fromkeys(("TRANSIENT_DATABASE", "TRANSIENT_NETWORK", "EXTERNAL_API_DOWN"), FAST)
RESILIENCE = {"policies": POLICIES}

app = Celery("shop", broker="memory://", set_as_current=False)


def call_gateway(order):
    return order


@app.task(base=ResilientTask, bind=True, shared=False, name="shop.charge", resilience=RESILIENCE)
def charge(self, order):
    return order


@app.task(
    base=ResilientTask,
    bind=True,
    shared=False,
    name="shop.charge_once",
    idempotency_key=lambda order: f"order-{order}",
    resilience=RESILIENCE,
)
def charge_once(self, order):
    return order


@app.task(
    base=ResilientTask,
    bind=True,
    shared=False,
    name="shop.pay",
    breaker="payments",
    resilience=RESILIENCE,
)
def pay(self, order):
    return call_gateway(order)
"""

INI = "[pytest]\nchaos_app = shopapp:app\n"

RETRIES = """
import pytest
from shopapp import charge


@pytest.mark.chaos("deadlock", times=2, task="shop.charge")
def test_retries(chaos):
    charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=2)
    chaos.assert_succeeded("shop.charge", within=30)


@pytest.mark.chaos("deadlock", times=2, task="shop.charge")
def test_expects_three_retries(chaos):
    charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=3)
"""


def project(
    pytester: pytest.Pytester, tests: str | None = None, *, ini: str = INI, **modules: str
) -> None:
    """Write the shop app, the ini file and test modules (``test_shop`` and ``modules``)."""
    pytester.makepyfile(shopapp=SHOP_APP)
    pytester.makeini(ini)
    if tests is not None:
        modules["test_shop"] = tests
    if modules:
        pytester.makepyfile(**modules)


def header_seed(result: pytest.RunResult) -> int:
    """The session seed the run's header printed, with the line that says how to reuse it."""
    text = result.stdout.str()
    found = re.search(r"^taskchaos: seed (\d+) \(re-run with --chaos-seed=(\d+)\)$", text, re.M)
    assert found is not None, text
    assert found.group(1) == found.group(2)
    return int(found.group(1))


def report_of(pytester: pytest.Pytester, name: str = "report.json") -> dict[str, Any]:
    """The JSON report a run wrote."""
    document: dict[str, Any] = json.loads((pytester.path / name).read_text(encoding="utf-8"))
    return document


def assert_usage_error(result: pytest.RunResult, *lines: str) -> None:
    """The run stopped before collecting with a usage error printing these lines."""
    __tracebackhide__ = True
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(list(lines))


@pytest.fixture(scope="module", autouse=True)
def _warm_imports() -> None:
    """Import celery, hypothesis and the catalog's libraries once, outside the runs.

    pytester forgets the modules an in-process run imported when the run ends; without
    this every run would import celery, psycopg, django and hypothesis again (seconds).
    """
    for entry in CATALOG.values():
        entry.exception()
    import hypothesis  # noqa: F401

    import pytest_taskchaos.simulation  # noqa: F401


@pytest.fixture(autouse=True)
def _standalone_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs see no TASKCHAOS_* variable of the shell, nor the outer run's xdist worker.

    Under an outer ``-n``, pytest-benchmark would see PYTEST_XDIST_WORKER in an inner run
    and warn, which the outer ``filterwarnings = error`` turns into an internal error.
    """
    for name in list(os.environ):
        if name.startswith(("TASKCHAOS_", "PYTEST_XDIST_")):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------- seeds


def test_a_failing_chaos_test_prints_its_seed_and_a_rerun_that_reproduces_it(
    pytester: pytest.Pytester,
) -> None:
    """Header and 'taskchaos' section name the seed; the printed re-run gives the same history."""
    project(pytester, RETRIES)
    first = pytester.runpytest("--chaos-report=first.json")
    first.assert_outcomes(passed=1, failed=1)
    seed = header_seed(first)
    nodeid = "test_shop.py::test_expects_three_retries"
    first.stdout.fnmatch_lines(
        [
            "*_ test_expects_three_retries _*",
            "E * expected task 'shop.charge' to be retried exactly 3 times",
            "E * measured 2 retries (non-deferred retried events)",
            "*- taskchaos -*",
            f"seed: {test_seed(seed, nodeid)} (session seed {seed})",
            f"re-run: pytest '{nodeid}' --chaos-seed={seed}",
            "history: 23 events; the last 15:",
            "t=0s retried shop.charge* #1 countdown=10.0 deferred=False *",
            "t=30s acked shop.charge* #3",
            "*= taskchaos summary =*",
        ]
    )
    output = first.stdout.str()
    assert output.count("- taskchaos -") == 1, "only the failing test has the section"
    assert "pytest_taskchaos/chaos.py" not in output, "Chaos.assert_* hide their frames"

    printed = next(line for line in first.outlines if line.startswith("re-run: pytest "))
    arguments = shlex.split(printed.removeprefix("re-run: pytest "))
    assert arguments == [nodeid, f"--chaos-seed={seed}"]
    rerun = pytester.runpytest(*arguments, "--chaos-report=rerun.json")
    rerun.assert_outcomes(failed=1)
    assert header_seed(rerun) == seed
    before, after = report_of(pytester, "first.json"), report_of(pytester, "rerun.json")
    assert list(after["tests"]) == [nodeid]
    assert after["tests"][nodeid]["outcome"] == before["tests"][nodeid]["outcome"] == "failed"
    assert after["tests"][nodeid]["fingerprint"] == before["tests"][nodeid]["fingerprint"]
    assert after["tests"][nodeid]["timeline"] == before["tests"][nodeid]["timeline"]


PROBABILISTIC = """
import pytest
from shopapp import charge


@pytest.mark.chaos("connection_reset", rate=0.5, first_attempts_only=True, task="shop.charge")
def test_some_charges_fail_once(chaos):
    for order in range(16):
        charge.delay(order)
    chaos.drain()
    chaos.assert_succeeded("shop.charge")
"""


def _only_test(report: dict[str, Any]) -> dict[str, Any]:
    """The report's entry of its only test."""
    (entry,) = report["tests"].values()
    assert isinstance(entry, dict)
    return entry


def _firings(report: dict[str, Any]) -> list[int]:
    """The publish order (1-based) of the messages whose first attempt the fault hit."""
    entry = _only_test(report)
    published = [event["task_id"] for event in entry["timeline"] if event["kind"] == "published"]
    return [
        published.index(event["task_id"]) + 1
        for event in entry["timeline"]
        if event["kind"] == "fault_injected"
    ]


def test_the_same_seed_repeats_a_probabilistic_fault_and_another_seed_does_not(
    pytester: pytest.Pytester,
) -> None:
    """rate=0.5 under --chaos-seed: equal fingerprints for equal seeds, other firings otherwise."""
    project(pytester, PROBABILISTIC)
    runs = {}
    for name, seed in (("one", 1), ("again", 1), ("two", 2)):
        result = pytester.runpytest(f"--chaos-seed={seed}", f"--chaos-report={name}.json")
        result.assert_outcomes(passed=1)
        runs[name] = report_of(pytester, f"{name}.json")
    fingerprints = {name: _only_test(report)["fingerprint"] for name, report in runs.items()}
    assert fingerprints["one"] == fingerprints["again"]
    assert fingerprints["one"] != fingerprints["two"]
    assert _firings(runs["one"]) == _firings(runs["again"])
    assert _firings(runs["one"]) != _firings(runs["two"])
    assert 0 < len(_firings(runs["one"])) < 16, "a rate of 0.5 hits some first attempts"


SEEDS = """
import pytest
from shopapp import charge


def test_session_seeded(chaos):
    charge.delay(1)
    chaos.drain()


@pytest.mark.chaos(seed=42)
def test_marker_seeded(chaos):
    assert chaos.seed == 42
    charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=1)  # fails (no fault): shows the re-run line
"""


def test_the_seed_comes_from_the_marker_then_cli_then_environment_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """seed=42 in the marker wins; otherwise --chaos-seed beats TASKCHAOS_SEED beats chaos_seed."""
    project(pytester, SEEDS, ini=INI + "chaos_seed = 11\n")
    free, fixed = "test_shop.py::test_session_seeded", "test_shop.py::test_marker_seeded"

    def seeds(*args: str) -> tuple[int, int, int]:
        result = pytester.runpytest("--chaos-report=report.json", *args)
        result.assert_outcomes(passed=1, failed=1)
        tests = report_of(pytester)["tests"]
        return header_seed(result), tests[free]["seed"], tests[fixed]["seed"]

    assert seeds() == (11, test_seed(11, free), 42)
    monkeypatch.setenv("TASKCHAOS_SEED", "22")
    assert seeds() == (22, test_seed(22, free), 42)
    assert seeds("--chaos-seed=33") == (33, test_seed(33, free), 42)
    rerun = pytester.runpytest("--chaos-seed=33", fixed)
    rerun.stdout.fnmatch_lines(
        ["seed: 42 (session seed 33)", f"re-run: pytest '{fixed}'  (the marker fixes the seed)"]
    )


def test_chaos_seed_last_reuses_the_previous_runs_seed(pytester: pytest.Pytester) -> None:
    """--chaos-seed=last reads the cache; with no previous run, or no cache, a usage error."""
    project(pytester, RETRIES)
    assert_usage_error(
        pytester.runpytest("--chaos-seed=last"),
        "ERROR: --chaos-seed=last: no previous chaos run recorded a seed (the cache is empty)",
    )
    assert_usage_error(
        pytester.runpytest("-p", "no:cacheprovider", "--chaos-seed=last"),
        "ERROR: --chaos-seed=last reads pytest's cache, which is disabled (-p no:cacheprovider)",
    )
    seed = header_seed(pytester.runpytest())
    again = pytester.runpytest("--chaos-seed=last")
    assert header_seed(again) == seed
    again.assert_outcomes(passed=1, failed=1)


def test_a_seed_that_is_not_an_integer_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--chaos-seed=abc and TASKCHAOS_SEED=-3 stop the run and name the value."""
    project(pytester, RETRIES)
    assert_usage_error(
        pytester.runpytest("--chaos-seed=abc"),
        "ERROR: chaos seed must be an integer or 'last', got 'abc'",
    )
    monkeypatch.setenv("TASKCHAOS_SEED", "-3")
    assert_usage_error(pytester.runpytest(), "ERROR: chaos seed must be >= 0, got -3")


# --------------------------------------------------------------------------- summary and report

SUMMARY = """
import pytest
from shopapp import charge, charge_once, pay


@pytest.mark.chaos("deadlock", times=2, task="shop.charge")
def test_retries(chaos, chaos_clock):
    start = chaos_clock.time()
    charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=2)
    assert chaos_clock is chaos.clock
    assert chaos_clock.time() - start == chaos.now == 30


@pytest.mark.chaos("deadlock", task="shop.charge")
def test_dead_letters(chaos):
    charge.delay(2)
    chaos.drain()
    chaos.assert_dead_lettered("shop.charge", failure_type="TRANSIENT_DATABASE", count=1)


@pytest.mark.chaos("duplicate_delivery", task="shop.charge_once")
def test_duplicates(chaos):
    charge_once.delay(3)
    chaos.drain()
    chaos.assert_idempotent("shop.charge_once")


@pytest.mark.chaos("api_down", task="shop.pay", window=(0, 300))
def test_breaker(chaos):
    for order in range(8):
        pay.delay(order)
    chaos.drain(max_steps=500)
    chaos.assert_breaker("payments", closed=True)


@pytest.mark.chaos("read_timeout", at="shopapp.call_gateway", task="shop.charge")
def test_unfired(chaos):
    charge.delay(4)
    chaos.drain()
    chaos.assert_not_retried("shop.charge")
"""


def test_the_summary_and_the_json_report_count_what_the_faults_did(
    pytester: pytest.Pytester,
) -> None:
    """One summary section and the JSON report: faults, retries, breakers, DLQ, duplicates, time."""
    project(pytester, SUMMARY)
    result = pytester.runpytest("--chaos-seed=9", "--chaos-report=reports/chaos.json")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "*= taskchaos summary =*",
            "chaos tests: 5   seed: 9",
            "faults injected: api_down 3, deadlock 6, duplicate_delivery 1",
            "attempts: 28   retries: 8   duplicates prevented: 1   virtual time: *s",
            (
                "breaker transitions: payments: closed -> open 1, "
                "payments: half_open -> closed 1, payments: open -> half_open 1"
            ),
            "dead letters by type: TRANSIENT_DATABASE 1",
            "faults that never fired (1):",
            "  test_shop.py::test_unfired: read_timeout",
            "report: reports/chaos.json",
            "*= 5 passed in *",
        ]
    )
    report = report_of(pytester, "reports/chaos.json")
    assert report["seed"] == 9
    virtual = report["totals"].pop("virtual_seconds")
    # Deferred calls wait past the breaker's probe by a seeded spread.
    assert virtual == sum(entry["virtual_seconds"] for entry in report["tests"].values())
    assert virtual > 1900.0
    result.stdout.fnmatch_lines([f"*virtual time: {virtual:.1f}s"])
    assert report["totals"] == {
        "tests": 5,
        "attempts": 28,
        "retries": 8,
        "duplicates_prevented": 1,
        "faults_injected": {"api_down": 3, "deadlock": 6, "duplicate_delivery": 1},
        "dead_letters": {"TRANSIENT_DATABASE": 1},
        "breaker_transitions": {
            "payments: closed -> open": 1,
            "payments: half_open -> closed": 1,
            "payments: open -> half_open": 1,
        },
        "unfired": ["test_shop.py::test_unfired: read_timeout"],
    }
    tests = report["tests"]
    names = ["test_breaker", "test_dead_letters", "test_duplicates", "test_retries", "test_unfired"]
    assert sorted(tests) == [f"test_shop.py::{name}" for name in names]
    retries = tests["test_shop.py::test_retries"]
    nodeid = "test_shop.py::test_retries"
    assert {
        key: value for key, value in retries.items() if key not in {"timeline", "fingerprint"}
    } == {
        "outcome": "passed",
        "seed": test_seed(9, nodeid),
        "chaos_off": False,
        "faults_injected": {"deadlock": 2},
        "unfired": [],
        "attempts": 3,
        "retries": 2,
        "deferrals": 0,
        "breaker_transitions": {},
        "dead_letters": {},
        "duplicates_prevented": 0,
        "virtual_seconds": 30.0,
    }
    assert re.fullmatch(r"[0-9a-f]{64}", retries["fingerprint"])
    timeline = retries["timeline"]
    task_id = timeline[0]["task_id"]
    assert timeline[:4] == [
        {
            "at": 0.0,
            "kind": "published",
            "task": "shop.charge",
            "task_id": task_id,
            "attempt": 1,
            "details": {"eta": 0.0},
        },
        {
            "at": 0.0,
            "kind": "delivered",
            "task": "shop.charge",
            "task_id": task_id,
            "attempt": 1,
            "details": {"duplicate": False, "redelivered": False},
        },
        {
            "at": 0.0,
            "kind": "started",
            "task": "shop.charge",
            "task_id": task_id,
            "attempt": 1,
            "details": {},
        },
        {
            "at": 0.0,
            "kind": "fault_injected",
            "task": "shop.charge",
            "task_id": task_id,
            "attempt": 1,
            "details": {
                "detail": None,
                "exception": "DeadlockDetected",
                "failure_type": "TRANSIENT_DATABASE",
                "fault": "deadlock",
                "where": "entry",
            },
        },
    ]
    assert [(event["at"], event["kind"]) for event in timeline[-2:]] == [
        (30.0, "succeeded"),
        (30.0, "acked"),
    ]


# --------------------------------------------------------------------------- switches

OFF = """
import pytest
from shopapp import charge


@pytest.mark.chaos("deadlock", times=1, task="shop.charge")
def test_expects_a_retry(chaos):
    charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=1)


@pytest.mark.chaos("deadlock", times=1, task="shop.charge")
def test_expects_no_retry(chaos):
    charge.delay(1)
    chaos.drain()
    chaos.assert_not_retried("shop.charge")
"""


def test_chaos_off_runs_the_marked_tests_without_their_faults(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--chaos-off (or ini chaos_off): no fault fires, header and summary say so; env beats ini."""
    project(pytester, OFF)
    result = pytester.runpytest("--chaos-off", "--chaos-report=report.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "taskchaos: seed * (re-run with --chaos-seed=*), faults OFF (--chaos-off)",
            "FAILED test_shop.py::test_expects_a_retry - *",
        ]
    )
    result.stdout.fnmatch_lines(
        ["chaos tests: 2 (faults OFF: --chaos-off)   seed: *", "faults injected: none"]
    )
    tests = report_of(pytester)["tests"]
    assert [entry["chaos_off"] for entry in tests.values()] == [True, True]
    # Faults that were switched off are not "unfired": nothing is listed as missed.
    assert tests["test_shop.py::test_expects_no_retry"]["unfired"] == []
    assert "never fired" not in result.stdout.str()

    project(pytester, ini=INI + "chaos_off = true\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_shop.py::test_expects_a_retry - *"])
    monkeypatch.setenv("TASKCHAOS_OFF", "0")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_shop.py::test_expects_no_retry - *"])
    monkeypatch.setenv("TASKCHAOS_OFF", "maybe")
    assert_usage_error(
        pytester.runpytest(),
        "ERROR: TASKCHAOS_OFF='maybe': expected 1/true/yes/on or 0/false/no/off",
    )


UNFIRED = """
import pytest
from shopapp import charge


@pytest.mark.chaos("read_timeout", at="shopapp.call_gateway", task="shop.charge")
def test_gateway_is_never_called(chaos):
    charge.delay(1)
    chaos.drain()


@pytest.mark.chaos("deadlock", times=1, task="shop.charge")
def test_deadlock_fires(chaos):
    charge.delay(1)
    chaos.drain()
"""


def test_fail_on_unfired_fails_a_test_whose_fault_never_fired(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unfired faults are listed; with the flag (or its env) the test fails, unless chaos is off."""
    project(pytester, UNFIRED)
    listed = pytester.runpytest()
    listed.assert_outcomes(passed=2)
    listed.stdout.fnmatch_lines(
        [
            "faults that never fired (1):",
            "  test_shop.py::test_gateway_is_never_called: read_timeout",
        ]
    )
    failed = pytester.runpytest("--chaos-fail-on-unfired")
    failed.assert_outcomes(passed=1, failed=1)
    failed.stdout.fnmatch_lines(
        [
            "*_ test_gateway_is_never_called _*",
            "--chaos-fail-on-unfired: injected fault(s) never fired: read_timeout",
            "t=0s published shop.charge* #1 eta=0.0",
            "*- taskchaos -*",
            "FAILED test_shop.py::test_gateway_is_never_called - *",
        ]
    )
    monkeypatch.setenv("TASKCHAOS_FAIL_ON_UNFIRED", "yes")
    pytester.runpytest().assert_outcomes(passed=1, failed=1)
    off = pytester.runpytest("--chaos-off")
    off.assert_outcomes(passed=2)


VERIFY = """
import os

import pytest
from shopapp import charge


def note(line):
    with open("journal.txt", "a", encoding="utf-8") as journal:
        journal.write(line + "\\n")


@pytest.fixture(scope="module")
def shared():
    note("module setup")
    yield
    note("module teardown")


@pytest.fixture
def own(shared):
    note("function setup")
    yield
    note("function teardown")


@pytest.mark.chaos("deadlock", times=1, task="shop.charge")
def test_deterministic(chaos, own):
    note("run")
    charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=1)


def test_reads_os_urandom(chaos):
    charge.apply_async((2,), countdown=int.from_bytes(os.urandom(4), "big"))
    chaos.drain()
"""


def test_verify_determinism_runs_each_test_twice_and_fails_on_different_histories(
    pytester: pytest.Pytester,
) -> None:
    """A seeded test passes after two runs (fresh own fixtures); os.urandom makes one fail."""
    project(pytester, VERIFY)
    result = pytester.runpytest("--chaos-verify-determinism")
    result.assert_outcomes(passed=1, failed=1)
    journal = (pytester.path / "journal.txt").read_text(encoding="utf-8").splitlines()
    assert journal == [
        "module setup",
        "function setup",
        "run",
        "function teardown",
        "function setup",
        "run",
        "function teardown",
        "module teardown",
    ]
    result.stdout.fnmatch_lines(
        [
            "*_ test_reads_os_urandom _*",
            (
                "--chaos-verify-determinism: two runs with seed * gave different histories; "
                "first difference at event #1:"
            ),
            "  run 1: t=0s published shop.charge* #1 eta=*",
            "  run 2: t=0s published shop.charge* #1 eta=*",
            (
                "Something in the test or the tasks is not seeded (the global random, uuid4, "
                "the real time, set ordering?)."
            ),
            "*- taskchaos -*",
        ]
    )


# --------------------------------------------------------------------------- markers

BAD_MARKERS = {
    "unknown": ('"deadlok"', "unknown fault 'deadlok'; did you mean 'deadlock'? Valid faults: *"),
    "parameter": (
        '"rate_limit", retry_afterr=30',
        "fault 'rate_limit' has no parameter 'retry_afterr'; it takes: retry_after",
    ),
    "rate": ('"deadlock", rate=2', "rate must be a number in [[]0, 1], got 2"),
    "times": ('"deadlock", times=-1', "times must be >= 1, got -1"),
    "window": (
        '"deadlock", window=(5, 1)',
        "window [[]5.0, 1.0) is empty or inverted: end must be after start",
    ),
    "at": (
        '"read_timeout", at="nowhere.module.func"',
        "dependency point 'nowhere.module.func': no module named 'nowhere'",
    ),
}


def test_bad_marker_arguments_fail_collection_naming_file_line_and_problem(
    pytester: pytest.Pytester,
) -> None:
    """Each bad @pytest.mark.chaos is a collection error at the marker's file:line."""
    project(pytester)
    for name, (arguments, _) in BAD_MARKERS.items():
        source = (
            f"import pytest\n\n\n@pytest.mark.chaos({arguments})\n"
            f"def test_{name}(chaos):\n    pass\n"
        )
        pytester.makepyfile(**{f"test_bad_{name}": source})
    result = pytester.runpytest()
    result.assert_outcomes(errors=len(BAD_MARKERS))
    for name, (_, problem) in sorted(BAD_MARKERS.items()):
        result.stdout.fnmatch_lines(
            [
                f"*_ ERROR collecting test_bad_{name}.py _*",
                f"test_bad_{name}.py:4: test_{name}: bad @pytest.mark.chaos: {problem}",
            ]
        )


MARKED = """
import pytest


@pytest.mark.chaos("deadlock")
def test_marked():
    pass
"""


def test_without_the_plugin_the_marker_is_unknown(pytester: pytest.Pytester) -> None:
    """-p no:taskchaos: no header, no fixture, and --strict-markers rejects the chaos marker."""
    project(pytester, MARKED)
    on = pytester.runpytest("--markers")
    on.stdout.fnmatch_lines(
        ["@pytest.mark.chaos(*faults, seed=None, *): run the test in taskchaos'*"]
    )
    off = pytester.runpytest("-p", "no:taskchaos")
    off.assert_outcomes(passed=1)
    assert "taskchaos" not in off.stdout.str()
    # In a subprocess: in-process runs share pytest.mark's cache of known markers.
    strict = pytester.runpytest_subprocess("-p", "no:taskchaos", "--strict-markers")
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines(["*'chaos' not found in `markers` configuration option*"])


def test_the_plugin_runs_without_pytest_xdist(pytester: pytest.Pytester) -> None:
    """Its xdist hooks are optional: with xdist absent a chaos session still runs."""
    project(pytester, RETRIES)
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*= taskchaos summary =*", "chaos tests: 2   seed: *"])


# --------------------------------------------------------------------------- the app

OVERRIDE = """
import pytest
import shopapp


@pytest.fixture
def chaos_app():
    return shopapp.app


@pytest.mark.chaos("deadlock", times=1, task="shop.charge")
def test_uses_the_fixture(chaos):
    assert chaos.app is shopapp.app
    shopapp.charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=1)
"""

NO_APP = """
def test_needs_an_app(chaos):
    pass
"""


def test_the_app_comes_from_a_chaos_app_fixture_or_the_ini_and_its_absence_says_how(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chaos_app fixture works without the ini key; with neither, the error says how to set it."""
    project(pytester, ini="[pytest]\n", test_override=OVERRIDE, test_no_app=NO_APP)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_needs_an_app _*",
            (
                "E * the chaos fixture needs your Celery app: set chaos_app = "
                "'package.module:app' in the pytest ini file (or env TASKCHAOS_APP), "
                "or define a chaos_app fixture returning it"
            ),
        ]
    )
    monkeypatch.setenv("TASKCHAOS_APP", "shopapp:nope")
    result = pytester.runpytest("test_no_app.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["E *chaos_app*TASKCHAOS_APP): app 'shopapp:nope': 'shopapp' has no attribute 'nope'*"]
    )


UNREACHABLE_SERVERS = """
import socket

import pytest
from shopapp import app, charge


@pytest.fixture
def refused(monkeypatch):
    attempted = []

    def refuse(sock, address):
        attempted.append(address)
        raise ConnectionRefusedError(address)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempted


@pytest.mark.chaos("deadlock", times=2, task="shop.charge")
def test_runs_in_memory(refused, chaos):
    result = charge.delay(1)
    chaos.drain()
    chaos.assert_retried("shop.charge", times=2)
    assert (result.state, result.result) == ("SUCCESS", 1)
    assert type(app.backend).__name__ == "CacheBackend"
    assert refused == []


def test_the_apps_backend_is_back():
    assert type(app.backend).__name__ == "RedisBackend"
"""


def test_an_app_whose_broker_and_result_backend_are_unreachable_runs_its_chaos_tests(
    pytester: pytest.Pytester, unreachable: str
) -> None:
    """The user's app as configured for production (Redis everywhere, nothing listening) passes."""
    pytester.makepyfile(
        shopapp=SHOP_APP.replace(
            'broker="memory://"', f'broker="{unreachable}/0", backend="{unreachable}/1"'
        )
    )
    pytester.makeini(INI)
    pytester.makepyfile(test_servers=UNREACHABLE_SERVERS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)


# --------------------------------------------------------------------------- xdist

SPLIT_A = """
import pytest
from shopapp import charge


@pytest.mark.chaos("connection_reset", rate=0.5, task="shop.charge")
def test_first(chaos):
    for order in range(4):
        charge.delay(order)
    chaos.drain()


@pytest.mark.chaos("deadlock", times=1, task="shop.charge")
def test_second(chaos):
    charge.delay(1)
    chaos.drain()
"""

SPLIT_B = """
import pytest
from shopapp import charge


@pytest.mark.chaos("deadlock", times=2, task="shop.charge")
def test_fails(chaos):
    charge.delay(1)
    chaos.drain()
    chaos.assert_not_retried("shop.charge")
"""


def test_under_xdist_workers_share_the_seed_and_one_summary_adds_them_up(
    pytester: pytest.Pytester,
) -> None:
    """-n 2: every worker uses the controller's seed; the controller prints one summary of all."""
    project(pytester, test_a=SPLIT_A, test_b=SPLIT_B)
    spread = pytester.runpytest_subprocess(
        "-n", "2", "--dist=loadfile", "-v", "--chaos-report=xdist.json"
    )
    spread.assert_outcomes(passed=2, failed=1)
    seed = header_seed(spread)
    output = spread.stdout.str()
    assert "[gw0]" in output
    assert "[gw1]" in output
    assert output.count("taskchaos summary") == 1
    spread.stdout.fnmatch_lines(
        [
            "*- taskchaos -*",
            f"re-run: pytest 'test_b.py::test_fails' --chaos-seed={seed}",
            "*= taskchaos summary =*",
            f"chaos tests: 3   seed: {seed}",
        ]
    )
    distributed = report_of(pytester, "xdist.json")
    assert distributed["seed"] == seed
    assert {nodeid: entry["seed"] for nodeid, entry in distributed["tests"].items()} == {
        nodeid: test_seed(seed, nodeid)
        for nodeid in ("test_a.py::test_first", "test_a.py::test_second", "test_b.py::test_fails")
    }

    serial = pytester.runpytest(f"--chaos-seed={seed}", "--chaos-report=serial.json")
    serial.assert_outcomes(passed=2, failed=1)
    alone = report_of(pytester, "serial.json")
    assert alone["totals"] == distributed["totals"]
    assert {nodeid: entry["fingerprint"] for nodeid, entry in alone["tests"].items()} == {
        nodeid: entry["fingerprint"] for nodeid, entry in distributed["tests"].items()
    }

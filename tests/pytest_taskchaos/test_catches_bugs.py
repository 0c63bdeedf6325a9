"""The chaos plugin catches real bugs: each buggy task fails, its fixed twin passes.

The tasks live in ``bugs_app.py``. Every bug is checked twice: here, through the
``chaos`` fixture and the assertion's exact message, and in a ``pytester`` project
where the buggy task and its twin run the very same chaos test, as a user runs it
(the outcome, the message in the output, the taskchaos section with the seed).

The tutorial in ``docs/testing.md`` is run here too: its files are ``notest``
blocks (pytest-markdown-docs cannot give them the ``chaos`` fixture), so this
module writes them into a project, runs pytest on it and compares the output
with what the page shows.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_taskchaos.assertions import ChaosAssertionError
from pytest_taskchaos.faults import CATALOG
from pytest_taskchaos.simulation import StepBudgetExceeded

if TYPE_CHECKING:
    from types import ModuleType

    from pytest_taskchaos.chaos import Chaos

_HERE = Path(__file__).parent
_BUGS_APP = _HERE / "bugs_app.py"
_DOC = _HERE.parent.parent / "docs" / "testing.md"
_SEED = 20260105  # the session seed of every pytester run: a fixed re-run line


def _load_bugs_app() -> ModuleType:
    # tests/ is not a package: load the module by path under a private name.
    spec = importlib.util.spec_from_file_location("_taskchaos_bugs_app", _BUGS_APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bugs_app = _load_bugs_app()


@pytest.fixture
def shop() -> Any:
    """A fresh shop: its own app, tasks and fake payment provider."""
    return bugs_app.Shop()


@pytest.fixture
def chaos_app(shop: Any) -> Any:
    """The app the ``chaos`` fixture simulates."""
    return shop.app


def publish(shop: Any, task: str, count: int) -> None:
    """Send ``count`` messages of ``task``, one per order id."""
    for order_id in range(count):
        shop.app.tasks[task].delay(order_id=order_id)


# --------------------------------------------------------------------- 1. double charge


@pytest.mark.chaos("read_timeout", at="exit", times=1)
def test_a_retried_read_timeout_charges_a_task_without_idempotency_twice(
    chaos: Chaos, shop: Any
) -> None:
    """The response is lost after the charge: the retry charges again, and the effect says so."""
    shop.payments.record = chaos.effect
    shop.app.tasks["shop.charge"].delay(order_id=7, amount=1999)
    chaos.drain()
    assert shop.payments.charges == [(7, 1999), (7, 1999)]
    with pytest.raises(ChaosAssertionError) as caught:
        chaos.assert_effect_once("charge")
    message = str(caught.value)
    assert message.startswith("expected side effect 'charge' to execute exactly once per key\n")
    assert "duplicate side effect 'charge' for key '7': executed 2 times" in message
    assert "fault='read_timeout'" in message  # the history slice shows the cause


@pytest.mark.chaos("read_timeout", at="exit", times=1)
def test_a_key_on_the_task_alone_does_not_stop_the_double_charge(chaos: Chaos, shop: Any) -> None:
    """A run that raised gives its key back, so the retry runs the body (and charges) again."""
    shop.payments.record = chaos.effect
    shop.app.tasks["shop.charge_task_key_only"].delay(order_id=7, amount=1999)
    chaos.drain()
    with pytest.raises(ChaosAssertionError, match="for key '7': executed 2 times"):
        chaos.assert_effect_once("charge")


@pytest.mark.chaos("read_timeout", at="exit", times=1)
def test_the_key_passed_to_the_provider_charges_once(chaos: Chaos, shop: Any) -> None:
    """With the task's key on the provider's request the retry runs, and charges nothing."""
    shop.payments.record = chaos.effect
    shop.app.tasks["shop.charge_idempotent"].delay(order_id=7, amount=1999)
    chaos.drain()
    chaos.assert_retried("shop.charge_idempotent", times=1)  # the fault did fire
    chaos.assert_effect_once("charge")
    chaos.assert_succeeded("shop.charge_idempotent")
    assert shop.payments.charges == [(7, 1999)]


# --------------------------------------------------------------------- 2. validation retried


def test_retrying_every_exception_forever_exhausts_the_step_budget(chaos: Chaos, shop: Any) -> None:
    """autoretry_for=(Exception,) with max_retries=None: drain() stops and names the task."""
    shop.app.tasks["shop.import_row"].delay(row={"amount": "n/a"})
    with pytest.raises(StepBudgetExceeded) as caught:
        chaos.drain(max_steps=50)
    assert caught.value.task_names == ["shop.import_row"]
    assert "still queued: shop.import_row (ran 50 times). An endless retry loop?" in str(
        caught.value
    )


def test_retrying_a_validation_error_fails_assert_not_retried(chaos: Chaos, shop: Any) -> None:
    """An hour of virtual time holds a retry every 3 minutes; the message lists them."""
    shop.app.tasks["shop.import_row"].delay(row={"amount": "n/a"})
    chaos.drain(until=3600)
    with pytest.raises(ChaosAssertionError) as caught:
        chaos.assert_not_retried("shop.import_row")
    lines = str(caught.value).splitlines()
    assert lines[:2] == [
        "expected task 'shop.import_row' not to be retried",
        "measured 21 retries:",
    ]
    assert "countdown=180.0" in lines[2]
    assert "exception='ValueError'" in lines[2]


def test_a_validation_error_is_dead_lettered_not_retried(chaos: Chaos, shop: Any) -> None:
    """ResilientTask files the ValueError as PERMANENT_VALIDATION and dead-letters it at once."""
    shop.app.tasks["shop.import_row_resilient"].delay(row={"amount": "n/a"})
    assert chaos.drain(max_steps=50) == 1
    chaos.assert_not_retried("shop.import_row_resilient")
    chaos.assert_dead_lettered(
        "shop.import_row_resilient", failure_type="PERMANENT_VALIDATION", count=1
    )


# --------------------------------------------------------------------- 3. down API hammered

OUTAGE = (0, 600)  # the payments API is down for the first 10 minutes


def calls_during_outage(chaos: Chaos) -> int:
    """Calls that reached the payments API while it was down: each one got the injected 503."""
    return len(chaos.events("fault_injected"))


@pytest.mark.chaos("api_down", window=OUTAGE)
def test_without_a_breaker_every_retry_calls_the_down_api(chaos: Chaos, shop: Any) -> None:
    """50 orders retried about every minute: hundreds of calls into the outage, no breaker."""
    publish(shop, "shop.capture", 50)
    chaos.drain()
    chaos.assert_succeeded("shop.capture")  # retries alone get there, eventually
    assert calls_during_outage(chaos) > 250
    with pytest.raises(ChaosAssertionError) as caught:
        chaos.assert_breaker("payments_api", opened_after=3, closed=True)
    assert str(caught.value).splitlines()[:2] == [
        "no events for breaker 'payments_api'",
        "breakers in the history: none",
    ]


@pytest.mark.chaos("api_down", window=OUTAGE)
def test_a_breaker_holds_the_tasks_back_during_the_outage(chaos: Chaos, shop: Any) -> None:
    """Three failures open the breaker; the rest wait for its probe, after the outage."""
    publish(shop, "shop.capture_with_breaker", 50)
    chaos.drain()
    assert calls_during_outage(chaos) == 3
    chaos.assert_breaker("payments_api", opened_after=3, closed=True)
    chaos.assert_succeeded("shop.capture_with_breaker")
    chaos.assert_not_dead_lettered("shop.capture_with_breaker")
    assert sorted(shop.payments.captures) == list(range(50))


# --------------------------------------------------------------------- 4. thundering herd

HERD = 200  # receipts that fail at the same moment
MOST_AT_ONCE = 40  # a fifth of them due in the same second is a herd


@pytest.mark.chaos("connection_reset", first_attempts_only=True)
def test_retries_without_jitter_come_back_as_a_thundering_herd(chaos: Chaos, shop: Any) -> None:
    """jitter='none': all 200 retries are due in the same second, and the message says so."""
    publish(shop, "shop.send_receipt", HERD)
    chaos.drain()
    chaos.assert_succeeded("shop.send_receipt")
    with pytest.raises(ChaosAssertionError) as caught:
        chaos.assert_retries_spread("shop.send_receipt", max_simultaneous=MOST_AT_ONCE)
    lines = str(caught.value).splitlines()
    assert lines[:3] == [
        (
            "thundering herd: expected at most 40 retries of task 'shop.send_receipt' due in "
            "any 1s interval"
        ),
        "  200 retries due in [60s, 61s)",
        "add jitter to the retry policy (Jitter.FULL or Jitter.PROPORTIONAL) to spread the retries",
    ]


@pytest.mark.chaos("connection_reset", first_attempts_only=True)
def test_jittered_retries_spread_out(chaos: Chaos, shop: Any) -> None:
    """The default proportional jitter spreads the 200 retries over 54 s to 66 s."""
    publish(shop, "shop.send_receipt_jittered", HERD)
    chaos.drain()
    retried = chaos.assert_retries_spread(
        "shop.send_receipt_jittered", max_simultaneous=MOST_AT_ONCE
    )
    assert len(retried) == HERD
    due = [event.at + event.details["countdown"] for event in retried]
    assert 54 <= min(due) < max(due) <= 66
    chaos.assert_succeeded("shop.send_receipt_jittered")


@pytest.mark.chaos("api_down", window=OUTAGE)
def test_tasks_held_back_by_a_breaker_do_not_return_as_a_herd(chaos: Chaos, shop: Any) -> None:
    """The captures the breaker deferred do not all come due in the probe's second.

    Found by this plugin: resilience.celery used to defer every task an open breaker
    held back to the same probe time, so they returned together.
    """
    publish(shop, "shop.capture_with_breaker", 50)
    chaos.drain()
    chaos.assert_retries_spread("shop.capture_with_breaker", max_simultaneous=MOST_AT_ONCE)


# --------------------------------------------------------------------- as a user sees it

_PROJECT_HEADER = """
import pytest

import bugs_app


@pytest.fixture
def shop():
    return bugs_app.Shop()


@pytest.fixture
def chaos_app(shop):
    return shop.app
"""

_CASES = {
    "double_charge": (
        """
@pytest.mark.parametrize("task", ["shop.charge", "shop.charge_idempotent"])
@pytest.mark.chaos("read_timeout", at="exit", times=1)
def test_a_lost_response_does_not_charge_twice(chaos, shop, task):
    shop.payments.record = chaos.effect
    shop.app.tasks[task].delay(order_id=7, amount=1999)
    chaos.drain()
    chaos.assert_effect_once("charge")
""",
        "test_a_lost_response_does_not_charge_twice[shop.charge]",
        ["*ChaosAssertionError: expected side effect 'charge' to execute exactly once per key"],
        ["*duplicate side effect 'charge' for key '7': executed 2 times"],
    ),
    "validation_retried": (
        """
@pytest.mark.parametrize("task", ["shop.import_row", "shop.import_row_resilient"])
def test_a_row_that_cannot_be_valid_is_not_retried(chaos, task):
    chaos.app.tasks[task].delay(row={"amount": "n/a"})
    chaos.drain(max_steps=50)
    chaos.assert_not_retried(task)
    chaos.assert_dead_lettered(task, failure_type="PERMANENT_VALIDATION")
""",
        "test_a_row_that_cannot_be_valid_is_not_retried[shop.import_row]",
        [
            (
                "*StepBudgetExceeded: drain() ran its budget of 50 steps at t=*s and work "
                "remains; still queued: shop.import_row (ran 50 times). An endless retry loop?*"
            )
        ],
        [],
    ),
    "api_hammered": (
        """
@pytest.mark.parametrize("task", ["shop.capture", "shop.capture_with_breaker"])
@pytest.mark.chaos("api_down", window=(0, 600))
def test_an_outage_is_not_hammered(chaos, shop, task):
    for order_id in range(50):
        chaos.app.tasks[task].delay(order_id=order_id)
    chaos.drain()
    calls = len(chaos.events("fault_injected"))
    assert calls <= 5, f"{calls} calls hit payments_api while it was down: no circuit breaker?"
    chaos.assert_breaker("payments_api", opened_after=3, closed=True)
    chaos.assert_succeeded(task)
""",
        "test_an_outage_is_not_hammered[shop.capture]",
        ["*AssertionError: * calls hit payments_api while it was down: no circuit breaker?"],
        [],
    ),
    "thundering_herd": (
        """
@pytest.mark.parametrize("task", ["shop.send_receipt", "shop.send_receipt_jittered"])
@pytest.mark.chaos("connection_reset", first_attempts_only=True)
def test_a_network_blip_does_not_cause_a_thundering_herd(chaos, task):
    for order_id in range(200):
        chaos.app.tasks[task].delay(order_id=order_id)
    chaos.drain()
    chaos.assert_succeeded(task)
    chaos.assert_retries_spread(task, max_simultaneous=40)
""",
        "test_a_network_blip_does_not_cause_a_thundering_herd[shop.send_receipt]",
        ["*ChaosAssertionError: thundering herd: expected at most 40 retries of task*"],
        ["*200 retries due in [[]60s, 61s)"],
    ),
}


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project that is not an xdist worker, even when this suite runs under xdist."""
    # Inherited, these make plugins of the inner run (pytest-benchmark) behave as on a worker.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    return pytester


def _literal(text: str) -> str:
    """``text`` as an fnmatch pattern that matches only itself ([, ], * and ? escaped)."""
    return re.sub(r"([\[\]*?])", r"[\1]", text)


@pytest.mark.parametrize("case", sorted(_CASES))
def test_the_buggy_twin_fails_and_the_fixed_twin_passes_the_same_test(
    project: pytest.Pytester, case: str
) -> None:
    """Run as a user runs it: one failure naming the bug, with the seed and a re-run line."""
    body, failing, message, detail = _CASES[case]
    project.makepyfile(
        bugs_app=_BUGS_APP.read_text(encoding="utf-8"),
        **{f"test_{case}": _PROJECT_HEADER + body},
    )
    result = project.runpytest("-p", "no:cacheprovider", f"--chaos-seed={_SEED}")
    result.assert_outcomes(failed=1, passed=1)
    nodeid = f"test_{case}.py::{failing}"
    result.stdout.fnmatch_lines(
        [
            f"taskchaos: seed {_SEED} (re-run with --chaos-seed={_SEED})",
            *message,
            *detail,
            "*- taskchaos -*",
            f"seed: * (session seed {_SEED})",
            _literal(f"re-run: pytest '{nodeid}' --chaos-seed={_SEED}"),
            "history: * events; the last *:",
            "*taskchaos summary*",
            f"chaos tests: 2   seed: {_SEED}",
            _literal(f"FAILED {nodeid}") + "*",
        ]
    )


# --------------------------------------------------------------------- docs/testing.md

_FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
_FILE = re.compile(r"^# (?P<name>[\w./]+)(?: \((?P<variant>[\w ]+)\))?$")


def _doc() -> str:
    return _DOC.read_text(encoding="utf-8")


def _doc_files() -> dict[str, str]:
    """The page's file blocks, by name: a block whose first line is ``# shop.py``.

    A ``# shop.py (fixed)`` block is stored as ``shop.py (fixed)``.
    """
    files: dict[str, str] = {}
    for fence in _FENCE.finditer(_doc()):
        first, _, _ = fence["body"].partition("\n")
        found = _FILE.match(first)
        if found:
            variant = found["variant"]
            name = found["name"] if variant is None else f"{found['name']} ({variant})"
            files[name] = fence["body"]
    return files


def _doc_output(label: str) -> list[str]:
    """The lines of the page's ``text`` block that starts with ``$ pytest`` and ``label``."""
    for fence in _FENCE.finditer(_doc()):
        first, _, rest = fence["body"].partition("\n")
        if fence["info"].strip() == "text" and first == f"$ {label}":
            return rest.splitlines()
    msg = f"docs/testing.md has no text block starting with '$ {label}'"
    raise AssertionError(msg)


_VOLATILE = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|\d+\.\d+")
_SEPARATOR = re.compile(r"([=_-])\1+ (.+?) \1+")


def _pattern(line: str) -> str:
    """An fnmatch pattern for one line of an output excerpt shown in the docs.

    Task ids and decimal numbers (jittered delays) may differ, separator lines may
    have another width, and a line ending in `` ...`` was cut there.
    """
    tail = "*" if line.endswith(" ...") else ""
    line = line.removesuffix(" ...")
    separator = _SEPARATOR.fullmatch(line)
    if separator:
        mark = separator[1]
        return f"*{_literal(mark)} {_literal(separator[2])} {_literal(mark)}*"
    return "*".join(_literal(part) for part in _VOLATILE.split(line)) + tail


def _patterns(lines: list[str]) -> list[str]:
    """Patterns for an output excerpt, in order; a line of ``...`` stands for elided lines."""
    return [_pattern(line) for line in lines if line.strip() != "..."]


def test_the_tutorial_fails_as_shown_then_passes_once_fixed(project: pytest.Pytester) -> None:
    """The page's project, run as it says: the failure it shows, then a pass with its fix."""
    files = _doc_files()
    assert {"pytest.ini", "shop.py", "test_shop.py", "shop.py (fixed)"} <= set(files)
    for name in ("pytest.ini", "shop.py", "test_shop.py"):
        project.path.joinpath(name).write_text(files[name], encoding="utf-8")
    command = _doc_output("pytest test_shop.py --chaos-seed=1234")
    # A subprocess, as the page's project is a user's: its tasks are shared, and shared
    # tasks join every Celery app created after them in the process.
    failed = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "test_shop.py", "--chaos-seed=1234"
    )
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(_patterns(command))

    project.path.joinpath("shop.py").write_text(files["shop.py (fixed)"], encoding="utf-8")
    passed = project.runpytest_subprocess("-p", "no:cacheprovider", "test_shop.py")
    passed.assert_outcomes(passed=1)
    passed.stdout.fnmatch_lines(["taskchaos: seed * (re-run with --chaos-seed=*)"])


def test_the_fault_table_matches_the_catalog() -> None:
    """Every catalog fault has a row with its failure type, default point and parameters."""
    rows = {
        cells[0].strip("` "): [cell.strip() for cell in cells[1:]]
        for line in _doc().splitlines()
        if line.startswith("| `")
        for cells in [line.strip("|").split("|")]
    }
    for name, entry in CATALOG.items():
        assert name in rows, f"docs/testing.md: no row for fault {name!r}"
        failure_type, point, params = rows[name][:3]
        expected = "—" if entry.failure_type is None else f"`{entry.failure_type.value}`"
        assert failure_type == expected, name
        assert point == f"`{entry.point.value}`", name
        shown = sorted(re.findall(r"`(\w+)=", params))
        assert shown == sorted(entry.options), name


def test_every_assertion_is_documented_with_an_example() -> None:
    """Each chaos.assert_* method is called in a runnable example of docs/testing.md."""
    from pytest_taskchaos.chaos import Chaos

    runnable = "".join(
        fence["body"] for fence in _FENCE.finditer(_doc()) if fence["info"].strip() == "python"
    )
    names = sorted(name for name in vars(Chaos) if name.startswith("assert_"))
    assert len(names) >= 13
    missing = [name for name in names if f"chaos.{name}(" not in runnable]
    assert missing == []

"""The ``taskchaos`` pytest plugin (entry point ``pytest11``).

Inert until used: this module holds hooks, options and fixtures only and imports
nothing heavy at import time (Celery, freezegun and the simulation load when a
test first asks for the ``chaos`` fixture), because pytest loads it in every run
of every project that has the package installed. Disable it with ``-p no:taskchaos``.

Options, each with an ini key and an environment variable; the first one set
wins: marker argument, command line, environment, ini file.

========================== ========================== ==========================
command line               ini                        environment
========================== ========================== ==========================
``--chaos-seed=N|last``    ``chaos_seed``             ``TASKCHAOS_SEED``
``--chaos-off``            ``chaos_off``              ``TASKCHAOS_OFF``
``--chaos-report=PATH``    ``chaos_report``           ``TASKCHAOS_REPORT``
``--chaos-fail-on-unfired`` ``chaos_fail_on_unfired``  ``TASKCHAOS_FAIL_ON_UNFIRED``
``--chaos-verify-determinism`` ``chaos_verify_determinism`` ``TASKCHAOS_VERIFY_DETERMINISM``
(none)                     ``chaos_app``              ``TASKCHAOS_APP``
(none)                     ``chaos_store``            ``TASKCHAOS_STORE``
========================== ========================== ==========================
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

    from _pytest.nodes import Node

    from pytest_taskchaos.chaos import Chaos
    from pytest_taskchaos.injection import Injection
    from resilience.clock import FakeClock

_MARKER_HELP = (
    "chaos(*faults, seed=None, store=None, faults=None, **keywords): run the test in "
    "taskchaos' deterministic simulation with these faults injected. Faults are catalog "
    "names ('deadlock', 'rate_limit', ...; see `taskchaos list-faults`), Fault or "
    "Injection objects; keywords configure them: task=, at=, times=, every=, rate=, "
    "window=(start, end), queue=, retries_only=, first_attempts_only=, and the fault's "
    "own parameters (retry_after=30, status=502, seconds=90, setting='API_KEY')."
)
_CACHE_KEY = "taskchaos/last_seed"
_REPORT_SECTION = "taskchaos"
_TIMELINE_TAIL = 15

_SEED_KEY = pytest.StashKey[int]()
_STATE_KEY = pytest.StashKey["_Session"]()
_TEST_KEY = pytest.StashKey["_TestRun"]()
_INJECTIONS_KEY = pytest.StashKey[list["Injection"]]()


class _TestRun:
    """What the plugin keeps of one chaos test while it runs."""

    def __init__(self, chaos: Chaos, *, marker_seed: bool) -> None:
        self.chaos = chaos
        self.marker_seed = marker_seed


class _Session:
    """The session's settings and the summaries of its chaos tests."""

    def __init__(self, config: pytest.Config, seed: int) -> None:
        self.seed = seed
        self.off = _flag(config, "chaos_off")
        self.fail_on_unfired = _flag(config, "chaos_fail_on_unfired")
        self.verify = _flag(config, "chaos_verify_determinism")
        self.report = _setting(config, "chaos_report")
        self.tests: dict[str, dict[str, Any]] = {}


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``--chaos-*`` options and their ini keys."""
    group = parser.getgroup("taskchaos", "chaos testing of Celery tasks (taskchaos)")
    group.addoption(
        "--chaos-seed",
        dest="chaos_seed",
        default=None,
        metavar="N|last",
        help="session seed of every chaos test (an int, or 'last' for the previous run's); "
        "default: ini chaos_seed, env TASKCHAOS_SEED, else a fresh one, printed",
    )
    group.addoption(
        "--chaos-off",
        dest="chaos_off",
        action="store_true",
        default=None,
        help="run chaos tests with every fault disabled, to compare",
    )
    group.addoption(
        "--chaos-report",
        dest="chaos_report",
        default=None,
        metavar="PATH",
        help="write the chaos summary and per-test timelines as JSON to PATH",
    )
    group.addoption(
        "--chaos-fail-on-unfired",
        dest="chaos_fail_on_unfired",
        action="store_true",
        default=None,
        help="fail a chaos test when one of its injected faults never fired",
    )
    group.addoption(
        "--chaos-verify-determinism",
        dest="chaos_verify_determinism",
        action="store_true",
        default=None,
        help="run each chaos test twice and fail it when the two histories differ",
    )
    parser.addini("chaos_seed", "session seed of chaos tests (see --chaos-seed)", default="")
    parser.addini("chaos_off", "run chaos tests without faults", type="bool", default=False)
    parser.addini("chaos_report", "path of the JSON chaos report", default="")
    parser.addini(
        "chaos_fail_on_unfired",
        "fail chaos tests whose faults never fired",
        type="bool",
        default=False,
    )
    parser.addini(
        "chaos_verify_determinism",
        "run each chaos test twice and compare",
        type="bool",
        default=False,
    )
    parser.addini(
        "chaos_app",
        "import path of the Celery app (or a factory) chaos tests run: 'package.module:app'",
        default="",
    )
    parser.addini(
        "chaos_store", "store URL inside chaos tests (default memory://)", default="memory://"
    )
    parser.addini(
        "chaos_scenarios",
        "glob patterns of the scenario files pytest collects (a leading / anchors at the rootdir)",
        type="args",
        default=["scenarios/*.yaml", "scenarios/*.yml"],
    )


def _env_name(name: str) -> str:
    return "TASKCHAOS_" + name.removeprefix("chaos_").upper()


def _setting(config: pytest.Config, name: str) -> str | None:
    """A string option: command line, then environment, then ini; ``None`` when unset."""
    value = config.getoption(name, default=None) if name in _CLI else None
    if value is None:
        value = os.environ.get(_env_name(name)) or None
    if value is None:
        value = str(config.getini(name)) or None
    return value


def _flag(config: pytest.Config, name: str) -> bool:
    """A boolean option: command line, then environment, then ini."""
    if config.getoption(name, default=None):
        return True
    env = os.environ.get(_env_name(name))
    if env is not None and env.strip():
        lowered = env.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        msg = f"{_env_name(name)}={env!r}: expected 1/true/yes/on or 0/false/no/off"
        raise pytest.UsageError(msg)
    return bool(config.getini(name))


_CLI = frozenset({"chaos_seed", "chaos_report"})


def _session_seed(config: pytest.Config) -> int:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "taskchaos_seed" in workerinput:
        return int(workerinput["taskchaos_seed"])
    raw = _setting(config, "chaos_seed")
    if raw is None:
        return secrets.randbelow(2**32)
    raw = raw.strip()
    if raw == "last":
        cache = getattr(config, "cache", None)
        if cache is None:
            msg = "--chaos-seed=last reads pytest's cache, which is disabled (-p no:cacheprovider)"
            raise pytest.UsageError(msg)
        last = cache.get(_CACHE_KEY, None)
        if last is None:
            msg = "--chaos-seed=last: no previous chaos run recorded a seed (the cache is empty)"
            raise pytest.UsageError(msg)
        return int(last)
    try:
        seed = int(raw, 0)
    except ValueError:
        msg = f"chaos seed must be an integer or 'last', got {raw!r}"
        raise pytest.UsageError(msg) from None
    if seed < 0:
        msg = f"chaos seed must be >= 0, got {seed}"
        raise pytest.UsageError(msg)
    return seed


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; settle the session seed."""
    config.addinivalue_line("markers", _MARKER_HELP)
    config.stash[_STATE_KEY] = _Session(config, _session_seed(config))


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist it must not fail the run
def pytest_configure_node(node: Any) -> None:
    """(pytest-xdist) Give every worker the controller's session seed."""
    node.workerinput["taskchaos_seed"] = node.config.stash[_STATE_KEY].seed


def pytest_report_header(config: pytest.Config) -> str:
    """Print the session seed and how to reuse it."""
    state = config.stash[_STATE_KEY]
    off = ", faults OFF (--chaos-off)" if state.off else ""
    return f"taskchaos: seed {state.seed} (re-run with --chaos-seed={state.seed}){off}"


def test_seed(session_seed: int, nodeid: str) -> int:
    """The seed of one test: derived from the session seed and the test's node id.

    Args:
        session_seed: the session's seed.
        nodeid: the test's pytest node id.

    Returns:
        A 63-bit seed, the same for the same pair.
    """
    digest = hashlib.sha256(f"{session_seed}:{nodeid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


test_seed.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


# --------------------------------------------------------------------------- markers


def _marker_injections(item: pytest.Item) -> tuple[list[Injection], int | None, str | None]:
    """The injections, seed and store of an item's chaos markers (closest marker first)."""
    from pytest_taskchaos.injection import Injection, injection  # noqa: PLC0415

    made: list[Injection] = []
    seed: int | None = None
    store: str | None = None
    for mark in reversed(list(item.iter_markers("chaos"))):
        keywords = dict(mark.kwargs)
        mark_seed = keywords.pop("seed", None)
        if mark_seed is not None:
            if isinstance(mark_seed, bool) or not isinstance(mark_seed, int) or mark_seed < 0:
                msg = f"seed must be an int >= 0, got {mark_seed!r}"
                raise _MarkerError(msg)
            seed = mark_seed
        mark_store = keywords.pop("store", None)
        if mark_store is not None:
            if not isinstance(mark_store, str):
                msg = f"store must be a store URL string, got {mark_store!r}"
                raise _MarkerError(msg)
            store = mark_store
        listed = keywords.pop("faults", None) or []
        if not isinstance(listed, list | tuple):
            msg = f"faults must be a list, got {listed!r}"
            raise _MarkerError(msg)
        for what in (*mark.args, *listed):
            if isinstance(what, Injection):
                made.append(what)
            elif isinstance(what, dict):
                entry = dict(what)
                if "fault" not in entry:
                    msg = f"a faults=[...] entry needs a 'fault' key, got {what!r}"
                    raise _MarkerError(msg)
                made.append(injection(entry.pop("fault"), **entry))
            else:
                made.append(injection(what, **keywords))
        if not mark.args and keywords:
            key = next(iter(keywords))
            msg = (
                f"{key}={keywords[key]!r} configures no fault: name one, as chaos('deadlock', ...)"
            )
            raise _MarkerError(msg)
    return made, seed, store


class _MarkerError(ValueError):
    """A chaos marker's arguments are wrong."""


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, Any]:
    """Check every chaos marker when its test is collected: bad faults fail collection."""
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if not isinstance(item, pytest.Item) or item.get_closest_marker("chaos") is None:
            continue
        try:
            made, _, _ = _marker_injections(item)
        except Exception as error:  # noqa: BLE001 -- every bad argument is reported alike
            path, line, _ = item.location
            where = f"{path}:{(line or 0) + 1}"
            msg = f"{where}: {item.name}: bad @pytest.mark.chaos: {error}"
            raise collector.CollectError(msg) from None
        item.stash[_INJECTIONS_KEY] = made
        if "chaos" not in getattr(item, "fixturenames", ["chaos"]):
            item.fixturenames.append("chaos")  # type: ignore[attr-defined]
    return result


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect scenario files (``scenarios/*.yaml``): one test item per scenario."""
    from pytest_taskchaos._collect import collect_scenario_file  # noqa: PLC0415 -- light

    return collect_scenario_file(file_path, parent)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def chaos_app(request: pytest.FixtureRequest) -> Any:
    """The Celery app chaos tests run: override this fixture, or set ini ``chaos_app``.

    Raises:
        pytest.UsageError: neither is set, or the import path does not give an app.
    """
    path = _setting(request.config, "chaos_app")
    if path is None:
        msg = (
            "the chaos fixture needs your Celery app: set chaos_app = 'package.module:app' in "
            "the pytest ini file (or env TASKCHAOS_APP), or define a chaos_app fixture "
            "returning it"
        )
        raise pytest.UsageError(msg)
    from pytest_taskchaos.runner import load_app  # noqa: PLC0415 -- imports Celery
    from resilience.errors import ConfigurationError  # noqa: PLC0415

    try:
        return load_app(path)
    except ConfigurationError as error:
        msg = f"chaos_app (ini chaos_app or env TASKCHAOS_APP): {error}"
        raise pytest.UsageError(msg) from None


@pytest.fixture
def chaos(request: pytest.FixtureRequest, chaos_app: Any) -> Iterator[Chaos]:
    """The chaos controller: a running simulation of ``chaos_app`` with the marker's faults.

    Yields:
        The :class:`~pytest_taskchaos.chaos.Chaos` of this test.
    """
    from pytest_taskchaos.chaos import Chaos  # noqa: PLC0415 -- heavy, loaded on first use
    from pytest_taskchaos.simulation import Simulation  # noqa: PLC0415

    state = request.config.stash[_STATE_KEY]
    item = request.node
    made = item.stash.get(_INJECTIONS_KEY, None)
    if made is None:
        made = []
    marker_seed, store = None, None
    if item.get_closest_marker("chaos") is not None:
        made, marker_seed, store = _marker_injections(item)
    seed = test_seed(state.seed, item.nodeid) if marker_seed is None else marker_seed
    store = store or _setting(request.config, "chaos_store") or "memory://"
    simulation = Simulation(chaos_app, seed=seed, store=store)
    with simulation:
        controller = Chaos(simulation, seed=seed, enabled=not state.off)
        for each in made:
            controller.inject(each)
        run = _TestRun(controller, marker_seed=marker_seed is not None)
        item.stash[_TEST_KEY] = run
        entry: dict[str, Any] = {"outcome": "not run"}
        state.tests[item.nodeid] = entry
        yield controller
        entry.update(controller.summary())
        entry["timeline"] = [_event_json(event) for event in controller.history]


@pytest.fixture
def chaos_clock(chaos: Chaos) -> FakeClock:
    """The chaos test's virtual clock (advance it, read it; ``drain`` moves it too)."""
    return chaos.clock


def _event_json(event: Any) -> dict[str, Any]:
    return {
        "at": event.at,
        "kind": event.kind.value,
        "task": event.task_name,
        "task_id": event.task_id,
        "attempt": event.attempt,
        "details": {key: _plain(value) for key, value in event.details.items()},
    }


def _plain(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --------------------------------------------------------------------------- reporting


def _rerun_line(item: pytest.Item, run: _TestRun, seed: int) -> str:
    if run.marker_seed:
        return f"re-run: pytest '{item.nodeid}'  (the marker fixes the seed)"
    return f"re-run: pytest '{item.nodeid}' --chaos-seed={seed}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the seed, a re-run line and the timeline's tail to a failing chaos test's report."""
    report = yield
    run = item.stash.get(_TEST_KEY, None)
    if run is None:
        return report
    state = item.config.stash[_STATE_KEY]
    if _FIRST_PASS_KEY in item.stash:
        # --chaos-verify-determinism's silent first run: keep its history at the moment
        # the real run's is read, after the call and before fixture teardown.
        if call.when == "call":
            item.stash[_VERIFY_KEY] = [event.describe() for event in run.chaos.history]
        return report
    first = item.stash.get(_VERIFY_KEY, None)
    first_error = item.stash.get(_VERIFY_ERROR_KEY, None)
    if call.when == "call" and report.passed and first_error is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"--chaos-verify-determinism: tearing down the first of the two runs failed: "
            f"{first_error}"
        )
    elif call.when == "call" and report.passed and first is not None:
        second = [event.describe() for event in run.chaos.history]
        if first != second:
            report.outcome = "failed"
            report.longrepr = (
                f"--chaos-verify-determinism: two runs with seed {run.chaos.seed} gave different "
                f"histories; {_divergence(first, second)}\nSomething in the test or the tasks "
                "is not seeded (the global random, uuid4, the real time, set ordering?)."
            )
    if call.when == "call" and report.passed and state.fail_on_unfired:
        unfired = run.chaos.unfired()
        if unfired and run.chaos.enabled:
            report.outcome = "failed"
            report.longrepr = (
                f"--chaos-fail-on-unfired: injected fault(s) never fired: {', '.join(unfired)}\n"
                + run.chaos.describe(run.chaos.history[-_TIMELINE_TAIL:])
            )
    if report.failed:
        history = run.chaos.history
        tail = history[-_TIMELINE_TAIL:]
        lines = [
            f"seed: {run.chaos.seed} (session seed {state.seed})",
            _rerun_line(item, run, state.seed),
            f"history: {len(history)} events; the last {len(tail)}:",
            run.chaos.describe(tail),
        ]
        report.sections.append((_REPORT_SECTION, "\n".join(lines)))
    entry = state.tests.get(item.nodeid)
    if entry is not None and (report.when == "call" or report.failed):
        entry["outcome"] = report.outcome if report.when == "call" else f"error in {report.when}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Under ``--chaos-verify-determinism``, run a chaos test once silently before its run."""
    state = item.config.stash[_STATE_KEY]
    if state.verify and "chaos" in getattr(item, "fixturenames", ()):
        from _pytest.runner import runtestprotocol  # noqa: PLC0415 -- as pytest-rerunfailures

        item.stash[_FIRST_PASS_KEY] = True
        try:
            # nextitem=item keeps the wider-scoped fixtures up for the real run...
            runtestprotocol(item, nextitem=item, log=False)
        finally:
            del item.stash[_FIRST_PASS_KEY]
        # ...and this tears down the test's own ones, which the real run sets up afresh.
        setup_state = item.session._setupstate  # private, but there is no public way
        teardown = pytest.CallInfo.from_call(
            lambda: setup_state.teardown_exact(_ParentsOf(item)),  # type: ignore[arg-type]
            when="teardown",
            reraise=(pytest.exit.Exception, KeyboardInterrupt),
        )
        if teardown.excinfo is not None:
            item.stash[_VERIFY_ERROR_KEY] = teardown.excinfo.exconly()
        if _TEST_KEY in item.stash:
            del item.stash[_TEST_KEY]
    return (yield)


class _ParentsOf:
    """Stands for a next test with the same parents as ``item``, but not ``item`` itself.

    ``SetupState.teardown_exact`` tears down what that next test does not need: the
    fixtures of ``item`` alone.
    """

    def __init__(self, item: pytest.Item) -> None:
        self._chain = item.listchain()[:-1]

    def listchain(self) -> list[Node]:
        return self._chain


_VERIFY_KEY = pytest.StashKey[list[str]]()
_VERIFY_ERROR_KEY = pytest.StashKey[str]()
_FIRST_PASS_KEY = pytest.StashKey[bool]()


def _divergence(first: list[str], second: list[str]) -> str:
    for index, (one, two) in enumerate(zip(first, second, strict=False)):
        if one != two:
            return f"first difference at event #{index + 1}:\n  run 1: {one}\n  run 2: {two}"
    return f"run 1 has {len(first)} events, run 2 has {len(second)}"


# --------------------------------------------------------------------------- session summary


@pytest.hookimpl(optionalhook=True)  # an xdist hook, like pytest_configure_node
def pytest_testnodedown(node: Any, error: object) -> None:
    """(pytest-xdist) Gather a worker's chaos summaries into the controller's."""
    output = getattr(node, "workeroutput", {}) or {}
    tests = output.get("taskchaos_tests")
    if tests:
        node.config.stash[_STATE_KEY].tests.update(json.loads(tests))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Hand a worker's summaries to the controller; remember the seed; write the report."""
    config = session.config
    state = config.stash[_STATE_KEY]
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["taskchaos_tests"] = json.dumps(state.tests)
        return
    if not state.tests:
        return
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache.set(_CACHE_KEY, state.seed)
    if state.report:
        path = Path(state.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"seed": state.seed, "totals": _totals(state.tests), "tests": state.tests}
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _totals(tests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    transitions: Counter[str] = Counter()
    totals: dict[str, Any] = {
        "tests": len(tests),
        "attempts": 0,
        "retries": 0,
        "duplicates_prevented": 0,
        "virtual_seconds": 0.0,
    }
    unfired: list[str] = []
    for nodeid, entry in sorted(tests.items()):
        faults.update(entry.get("faults_injected", {}))
        dead.update(entry.get("dead_letters", {}))
        transitions.update(entry.get("breaker_transitions", {}))
        for key in ("attempts", "retries", "duplicates_prevented", "virtual_seconds"):
            totals[key] += entry.get(key, 0)
        unfired.extend(f"{nodeid}: {label}" for label in entry.get("unfired", []))
    totals["faults_injected"] = dict(sorted(faults.items()))
    totals["dead_letters"] = dict(sorted(dead.items()))
    totals["breaker_transitions"] = dict(sorted(transitions.items()))
    totals["unfired"] = unfired
    return totals


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The chaos section: faults, retries, breakers, DLQ, duplicates, virtual time, seed."""
    state = config.stash[_STATE_KEY]
    if not state.tests or getattr(config, "workerinput", None) is not None:
        return
    totals = _totals(state.tests)
    write = terminalreporter.write_line
    terminalreporter.section("taskchaos summary")
    off = " (faults OFF: --chaos-off)" if state.off else ""
    write(f"chaos tests: {totals['tests']}{off}   seed: {state.seed}")
    write(f"faults injected: {_counts(totals['faults_injected'])}")
    write(
        f"attempts: {totals['attempts']}   retries: {totals['retries']}   "
        f"duplicates prevented: {totals['duplicates_prevented']}   "
        f"virtual time: {totals['virtual_seconds']:.1f}s"
    )
    write(f"breaker transitions: {_counts(totals['breaker_transitions'])}")
    write(f"dead letters by type: {_counts(totals['dead_letters'])}")
    if totals["unfired"]:
        write(f"faults that never fired ({len(totals['unfired'])}):", yellow=True)
        for line in totals["unfired"]:
            write(f"  {line}", yellow=True)
    if state.report:
        write(f"report: {state.report}")

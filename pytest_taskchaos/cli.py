"""The ``taskchaos`` command: run, validate and explain scenario files; list the faults.

::

    taskchaos run [PATHS...] [--seed N] [--json PATH] [--junit PATH] [--html PATH]
                  [--mode {sim,real}] [--broker URL] [--time-scale F]
    taskchaos validate [PATHS...]
    taskchaos list-faults
    taskchaos explain SCENARIO_FILE [--name NAME] [--seed N]

A scenario's ``app`` is imported with the current directory on ``sys.path`` (as
``celery -A`` does), so ``taskchaos run scenarios/`` finds the project's modules.

Exit status: 0 when everything passed (or is valid), 1 when an expectation
failed, 2 for invalid input (a scenario file's mistakes are printed as
``file:line:column: key.path: message``, and nothing runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pytest_taskchaos._html import render_html
from pytest_taskchaos.faults import CATALOG
from pytest_taskchaos.runner import ExpectationResult, ScenarioResult, run_scenario
from pytest_taskchaos.scenario import ScenarioError, load_scenarios, validate
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from pytest_taskchaos.scenario import Scenario

__all__ = ["main"]

_DEFAULT_PATH = "scenarios/"
_OK, _FAILED, _INVALID = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskchaos",
        description="Run fault scenarios against Celery tasks in virtual time.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run scenario files and check their expectations")
    run.add_argument("paths", nargs="*", metavar="PATH", help=f"default: {_DEFAULT_PATH}")
    run.add_argument(
        "--seed", type=int, help="the seed of every run (default: each file's, else 0)"
    )
    run.add_argument("--json", metavar="PATH", help="write the results as JSON")
    run.add_argument("--junit", metavar="PATH", help="write the results as JUnit XML")
    run.add_argument(
        "--html", metavar="PATH", help="write a self-contained HTML report (charts, DLQ, timeline)"
    )
    run.add_argument(
        "--mode",
        choices=("sim", "real"),
        default="sim",
        help="sim: virtual time in-process (default); real: a real Celery worker and Redis",
    )
    run.add_argument("--broker", metavar="URL", help="real mode: the Redis URL (redis://...)")
    run.add_argument(
        "--time-scale",
        type=float,
        metavar="F",
        help="real mode: virtual seconds per real second (default: each file's real.time_scale)",
    )
    check = commands.add_parser("validate", help="check scenario files without running them")
    check.add_argument("paths", nargs="*", metavar="PATH", help=f"default: {_DEFAULT_PATH}")
    commands.add_parser("list-faults", help="the fault catalog")
    explain = commands.add_parser("explain", help="a scenario run's timeline, event by event")
    explain.add_argument("path", metavar="SCENARIO_FILE")
    explain.add_argument("--name", help="the scenario, when the file holds several")
    explain.add_argument("--seed", type=int)
    return parser


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep the library's retry warnings off the terminal unless logging is configured."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def _print_errors(errors: Sequence[ScenarioError], err: TextIO) -> None:
    for error in errors:
        for line in str(error).splitlines():
            print(line, file=err)
    print(f"{len(errors)} {'mistake' if len(errors) == 1 else 'mistakes'} found", file=err)


def _load(paths: Sequence[str], err: TextIO) -> list[Scenario] | None:
    errors = validate(paths)
    if errors:
        _print_errors(errors, err)
        return None
    scenarios: list[Scenario] = []
    for path in paths:
        scenarios.extend(load_scenarios(path))
    return scenarios


def _cell(result: ScenarioResult) -> list[str]:
    m = result.measures
    dlq = ",".join(f"{kind}={count}" for kind, count in m["dlq"].items()) or "0"
    trips = sum(entry["trips"] for entry in m["breakers"].values())
    failures = result.failures
    verdict = "PASS" if result.passed else f"FAIL {failures[0].describe()}"
    return [
        result.scenario.name,
        str(m["tasks"]),
        str(m["faults_fired"]),
        str(m["retries"]),
        dlq,
        str(m["duplicate_side_effects"]),
        str(trips),
        _duration(m["virtual_duration"]),
        verdict,
    ]


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.0f}s"


_HEADERS = ["scenario", "tasks", "faults", "retries", "dlq", "dups", "trips", "virtual", "verdict"]


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


def _junit(results: Sequence[ScenarioResult], path: str, seconds: dict[str, float]) -> None:
    failed = sum(not result.passed for result in results)
    suite = ET.Element(
        "testsuite",
        name="taskchaos",
        tests=str(len(results)),
        failures=str(failed),
        errors="0",
        time=f"{sum(seconds.values()):.3f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=Path(result.scenario.source).stem,
            name=result.scenario.name,
            time=f"{seconds.get(result.scenario.name, 0.0):.3f}",
        )
        if not result.passed:
            lines = [failure.describe() for failure in result.failures]
            failure = ET.SubElement(case, "failure", message="; ".join(lines))
            failure.text = "\n".join(
                [*lines, f"re-run: taskchaos run {result.scenario.source} --seed {result.seed}"]
            )
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="seed", value=str(result.seed))
        ET.SubElement(props, "property", name="fingerprint", value=result.fingerprint)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _progress(name: str, err: TextIO) -> Any:
    if not err.isatty():
        return None

    def show(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            print(f"\r{name}: published {done}/{total}", end="", file=err, flush=True)

    return show


def _run_real(
    scenario: Scenario, args: argparse.Namespace, out: TextIO, err: TextIO
) -> ScenarioResult:
    """Run on a real worker, then check it against the simulation (a difference fails it)."""
    from pytest_taskchaos._real import compare, run_real  # noqa: PLC0415 -- real mode only

    if not args.broker:
        message = "--mode real needs --broker redis://HOST:PORT/DB (the real worker's broker)"
        raise ConfigurationError(message, key="broker", value=None)
    real = run_real(
        scenario,
        url=args.broker,
        seed=args.seed,
        time_scale=args.time_scale,
        on_progress=_progress(scenario.name, err),
    )
    differences = compare(run_scenario(scenario, seed=real.seed), real)
    scale = real.measures["time_scale"]
    if not differences:
        print(f"{scenario.name}: real (x{scale:g}) agrees with the simulation", file=out)
        return real
    for line in differences:
        print(f"{scenario.name}: real (x{scale:g}) differs from the simulation: {line}", file=out)
    agreement = ExpectationResult(
        name="agrees_with_simulation",
        expected="the simulation's verdict and timing-independent counts",
        measured="; ".join(differences),
        passed=False,
    )
    return dataclasses.replace(real, passed=False, expectations=(*real.expectations, agreement))


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.mode != "real":
        given = [
            flag
            for flag, value in (("--broker", args.broker), ("--time-scale", args.time_scale))
            if value is not None
        ]
        if given:
            verb = "is" if len(given) == 1 else "are"
            print(f"taskchaos run: {' and '.join(given)} {verb} for --mode real only", file=err)
            return _INVALID
    paths = args.paths or [_DEFAULT_PATH]
    scenarios = _load(paths, err)
    if scenarios is None:
        return _INVALID
    results: list[ScenarioResult] = []
    seconds: dict[str, float] = {}
    for scenario in scenarios:
        began = time.perf_counter()
        try:
            if args.mode == "real":
                result = _run_real(scenario, args, out, err)
            else:
                result = run_scenario(
                    scenario, seed=args.seed, on_progress=_progress(scenario.name, err)
                )
        except ConfigurationError as exc:
            print(f"{scenario.location}: {exc}", file=err)
            return _INVALID
        finally:
            if err.isatty():
                print("\r\033[K", end="", file=err, flush=True)
        seconds[scenario.name] = time.perf_counter() - began
        results.append(result)
    _table([_HEADERS, *(_cell(result) for result in results)], out)
    failed = [result for result in results if not result.passed]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed", file=out)
    for result in failed:
        print(f"\n{result.scenario.name} ({result.scenario.location}):", file=out)
        for failure in result.failures:
            print(f"  {failure.describe()}", file=out)
        print(f"  re-run: taskchaos run {result.scenario.source} --seed {result.seed}", file=out)
    if args.json:
        data = {"passed": not failed, "scenarios": [result.to_dict() for result in results]}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.junit:
        _junit(results, args.junit, seconds)
    if args.html:
        Path(args.html).write_text(render_html(results), encoding="utf-8")
    return _FAILED if failed else _OK


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    paths = args.paths or [_DEFAULT_PATH]
    errors = validate(paths)
    if errors:
        _print_errors(errors, err)
        return _INVALID
    count = sum(len(load_scenarios(path)) for path in paths)
    print(f"{count} {'scenario' if count == 1 else 'scenarios'} valid", file=out)
    return _OK


def _list_faults(out: TextIO) -> int:
    rows = [["name", "failure type", "point", "parameters", "description"]]
    for name in sorted(CATALOG):
        fault = CATALOG[name]
        params = ", ".join(f"{key}={value}" for key, value in fault.params) or "-"
        kind = "-" if fault.failure_type is None else fault.failure_type.value
        rows.append([name, kind, fault.point.value, params, fault.description])
    _table(rows, out)
    return _OK


def _explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scenarios = _load([args.path], err)
    if scenarios is None:
        return _INVALID
    if args.name is None and len(scenarios) > 1:
        names = ", ".join(scenario.name for scenario in scenarios)
        print(f"{args.path} holds several scenarios; pick one with --name: {names}", file=err)
        return _INVALID
    chosen = [s for s in scenarios if args.name is None or s.name == args.name]
    if not chosen:
        names = ", ".join(scenario.name for scenario in scenarios)
        print(f"no scenario {args.name!r} in {args.path}; it holds: {names}", file=err)
        return _INVALID
    try:
        result = run_scenario(chosen[0], seed=args.seed)
    except ConfigurationError as exc:
        print(f"{chosen[0].location}: {exc}", file=err)
        return _INVALID
    minute = -1
    for event in result.history:
        if int(event.at // 60) != minute:
            minute = int(event.at // 60)
            print(f"-- minute {minute}", file=out)
        print(event.describe(), file=out)
    verdict = "PASS" if result.passed else "FAIL"
    print(f"\n{result.scenario.name}: {verdict} (seed {result.seed})", file=out)
    for expectation in result.expectations:
        mark = "ok  " if expectation.passed else "FAIL"
        print(f"  {mark} {expectation.describe()}", file=out)
    return _OK if result.passed else _FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskchaos`` command.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 all passed / valid, 1 an expectation failed, 2 invalid input.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and _INVALID
    out, err = sys.stdout, sys.stderr
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        with _quiet_logs():
            if args.command == "run":
                return _run(args, out, err)
            if args.command == "validate":
                return _validate(args, out, err)
            if args.command == "list-faults":
                return _list_faults(out)
            return _explain(args, out, err)
    except BrokenPipeError:  # `taskchaos explain ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _OK


if __name__ == "__main__":
    raise SystemExit(main())

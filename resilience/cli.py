"""The ``resilience`` command: operate the stores and classify failures from a shell.

Subcommands::

    resilience classify "psycopg.errors.DeadlockDetected: deadlock detected"
    resilience classify < traceback.txt     # a pasted traceback or Celery log line
    resilience policy TRANSIENT_DATABASE --seed 7
    resilience demo            # real local failures, classified, with their retry schedules
    resilience dlq list --status PENDING --type TRANSIENT_NETWORK
    resilience breakers        # state, failure counts, time to next probe
    resilience stats           # executions, retries per task and type, DLQ depth by status

Exit status: 0 ok; 1 not found, nothing done or a conflict; 2 bad input or usage;
3 the store could not be reached (see ``docs/cli.md``).
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import random
import re
import sys
from typing import TYPE_CHECKING, Any

from resilience import _demo, _operations
from resilience._cli_dlq import _load_app as load_app
from resilience._cli_dlq import add_dlq_parser
from resilience._cli_format import (
    NOTHING,
    OK,
    UNAVAILABLE,
    USAGE,
    CommandError,
    confirm,
    dump_json,
    iso,
    open_cli_store,
    parse_duration,
    suggest,
    table,
    usage_errors,
)
from resilience.breaker import CircuitBreaker
from resilience.clock import system_clock
from resilience.engine import RetryEngine
from resilience.errors import StorageUnavailable
from resilience.policy import default_policy
from resilience.storage.records import DeadLetterStatus
from resilience.taxonomy import Classification, FailureType, classify

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resilience.policy import RetryPolicy
    from resilience.storage.base import Store

__all__ = ["exception_from_text", "main"]

_ERRNO = re.compile(r"\[Errno (-?\d+)\]")
# Celery's worker log: "Task proj.add[<id>] raised unexpected: ConnectionError('refused')".
_CELERY_LOG = re.compile(r"raised unexpected: ([A-Za-z_][\w.]*)\((.*)\)\s*$", re.DOTALL)
_FRAME = re.compile(r'^\s+File "')
_QUALNAME = re.compile(r"^\s*([A-Za-z_][\w.]*)(?::\s?(.*))?$", re.DOTALL)


def exception_from_text(text: str) -> BaseException:
    """Rebuild an exception from the last line of a traceback (``"module.Class: message"``).

    A builtin class name gives the real builtin (with ``errno`` parsed from
    ``[Errno N]``); any other dotted name gives a stand-in class with that module
    and name, which is all the classifier needs: it matches qualified names
    without importing the library.

    Args:
        text: e.g. ``"redis.exceptions.ConnectionError: Error 111 connecting"``.

    Raises:
        ValueError: when ``text`` does not start with a class name.
    """
    match = _QUALNAME.match(text.strip().splitlines()[-1] if text.strip() else "")
    if match is None:
        raise ValueError(
            f"expected 'ClassName: message' or 'package.module.ClassName: message', got {text!r}"
        )
    name, message = match.group(1), match.group(2) or ""
    builtin: object = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        errno_match = _ERRNO.search(message)
        if errno_match and issubclass(builtin, OSError):
            strerror = message[errno_match.end() :].strip()
            return builtin(int(errno_match.group(1)), strerror)
        return builtin(message)
    module, _, qualname = name.rpartition(".")
    stand_in: type[Exception] = type(qualname, (Exception,), {"__module__": module or "__main__"})
    return stand_in(message)


def _classification_dict(c: Classification) -> dict[str, object]:
    return {
        "failure_type": c.failure_type.value,
        "category": c.failure_type.category.value,
        "confidence": round(c.confidence, 3),
        "remediation": c.remediation.value,
        "remediation_details": c.remediation_details,
        "retry_recommended": c.retry_recommended,
        "retry_delay_seconds": c.retry_delay_seconds,
        "retry_after": c.retry_after,
        "alert_level": c.alert_level.value,
        "evidence": c.evidence,
    }


def _schedule(policy: RetryPolicy, seed: int | None) -> list[float]:
    rng = random.Random(seed)
    return [round(d, 3) for d in policy.schedule(rng=rng)]


def _exception_line(text: str) -> str:
    """The ``Class: message`` line of a pasted traceback or Celery log line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    logged = _CELERY_LOG.search(lines[-1])
    if logged is not None:
        name, arguments = logged.group(1), logged.group(2).strip()
        if len(arguments) >= 2 and arguments[0] == arguments[-1] and arguments[0] in "'\"":
            arguments = arguments[1:-1]
        return f"{name}: {arguments}"
    # In a traceback the exception line is the first unindented line after the last
    # frame; what follows it (psycopg2's DETAIL/HINT/CONTEXT lines, a message's
    # later lines, "[...] ERROR" of a log excerpt) is not the exception's name.
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    if frames:
        for line in lines[frames[-1] + 1 :]:
            if not line.startswith((" ", "\t")) and _QUALNAME.match(line):
                return line
    # No frames: the last line that names a class.
    for line in reversed(lines):
        if not line.startswith((" ", "\t")) and _QUALNAME.match(line) and ":" in line:
            return line
    return lines[-1]


def _cmd_classify(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.exception in (None, "-") else args.exception
    try:
        exc = exception_from_text(_exception_line(text))
    except ValueError as error:
        print(f"resilience classify: {error}", file=sys.stderr)
        return 2
    context: dict[str, object] = {"task_name": args.task, "retry_count": args.retry_count}
    c = classify(exc, context)
    if args.json:
        print(json.dumps(_classification_dict(c), indent=2))
        return 0
    for key, value in _classification_dict(c).items():
        print(f"{key:>20}: {value}")
    return 0


def _parse_type(value: str) -> FailureType:
    try:
        return FailureType(value.upper())
    except ValueError:
        names = ", ".join(t.value for t in FailureType)
        raise argparse.ArgumentTypeError(
            f"unknown failure type {value!r}; expected one of: {names}"
        ) from None


def _cmd_policy(args: argparse.Namespace) -> int:
    types = [args.failure_type] if args.failure_type else list(FailureType)
    policies = [(t, default_policy(t)) for t in types]
    if args.json:
        rows = [
            {"failure_type": t.value, "policy": p.to_dict(), "schedule": _schedule(p, args.seed)}
            for t, p in policies
        ]
        print(json.dumps(rows[0] if args.failure_type else rows, indent=2))
        return 0
    for failure_type, policy in policies:
        print(
            f"{failure_type:<24} retries={policy.max_retries} strategy={policy.strategy} "
            f"initial={policy.initial_delay:g}s cap={policy.max_delay:g}s "
            f"schedule={_schedule(policy, args.seed)}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    engine = RetryEngine(rng=random.Random(args.seed))
    results = []
    for label, exc in _demo.real_failures():
        c = classify(exc, {"task_name": "demo"})
        policy = engine.policy_for(c.failure_type)
        schedule = _schedule(policy, args.seed) if c.retry_recommended else []
        if c.retry_after is not None and schedule:
            schedule[0] = c.retry_after
        results.append((label, exc, c, schedule))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "scenario": label,
                        "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
                        "message": _demo.short(exc),
                        **_classification_dict(c),
                        "schedule": schedule,
                    }
                    for label, exc, c, schedule in results
                ],
                indent=2,
            )
        )
        return 0
    print("Real failures triggered on this machine, classified, with their retry schedules:\n")
    for label, exc, c, schedule in results:
        print(f"* {label}")
        print(f"    raised     {type(exc).__module__}.{type(exc).__qualname__}: {_demo.short(exc)}")
        print(f"    type       {c.failure_type} (confidence {c.confidence:.2f}, {c.alert_level})")
        print(f"    evidence   {c.evidence}")
        print(f"    do         {c.remediation}: {c.remediation_details}")
        retries = ", ".join(f"{d:g}s" for d in schedule) if schedule else "none (not retried)"
        print(f"    retries    {retries}\n")
    return 0


def _breaker_names(store: object, url: str) -> list[str]:
    return usage_errors(_operations.breaker_names)(store, url)


def _cmd_breakers(args: argparse.Namespace) -> int:
    store = open_cli_store(args.store)
    try:
        if args.breaker_action == "reset":
            return _reset_breaker(store, args)
        now = system_clock.time()
        rows = [
            _operations.breaker_row(name, store.breakers.load(name), now)
            for name in _breaker_names(store.breakers, store.url)
        ]
    finally:
        store.close()
    if args.json:
        print(dump_json(rows))
        return OK
    if not rows:
        print("no breakers in the store yet")
        return OK
    print(
        table(
            ["NAME", "STATE", "FAILURES", "WINDOW", "TRIPS", "OPENED", "NEXT PROBE IN"],
            (
                [
                    r["name"],
                    r["state"],
                    r["consecutive_failures"],
                    f"{r['window_failures']}/{r['window_calls']}",
                    r["trips"],
                    iso(r["opened_at"]),  # type: ignore[arg-type]
                    "never (forced open)"
                    if r["seconds_until_probe"] is None
                    else f"{r['seconds_until_probe']:g}s",
                ]
                for r in rows
            ),
        )
    )
    return OK


def _reset_breaker(store: Store, args: argparse.Namespace) -> int:
    name: str = args.name
    if store.breakers.load(name) is None:
        known = _breaker_names(store.breakers, store.url)
        listed = ", ".join(known) if known else "none"
        raise CommandError(
            f"no breaker named {name!r} in {store.url}{suggest(name, known)} (known: {listed})",
            status=NOTHING,
        )
    confirm(f"Close breaker {name!r} and forget its counts?", yes=args.yes)
    breaker = CircuitBreaker(name, store=store.breakers, on_store_error="raise")
    before = breaker.state
    breaker.reset()
    if args.json:
        print(dump_json({"name": name, "from": before.value, "state": breaker.state.value}))
    else:
        print(f"breaker {name!r}: {before.value} -> {breaker.state.value}")
    return OK


def _rate(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{100 * value:.1f}%"


def _stats_row(row: dict[str, Any], *, tracked: bool) -> list[object]:
    cells: list[object] = [
        row["task"],
        row["retries"],
        _rate(row["retry_success_rate"]),
        _counts(row["failed_retries_by_type"]),
        f"{row['dead_letters']} {_counts(row['dead_letters_by_type'])}",
    ]
    if tracked:
        cells[1:1] = [row["executions"], _rate(row["success_rate"])]
    return cells


def _cmd_stats(args: argparse.Namespace) -> int:
    window = parse_duration(args.window, option="--window")
    if window <= 0:
        raise CommandError(f"--window: must be positive, got {args.window!r}", status=USAGE)
    store = open_cli_store(args.store)
    try:
        report = _operations.stats_report(store, window=window, now=system_clock.time())
    finally:
        store.close()
    rows: list[dict[str, Any]] = report["tasks"]  # type: ignore[assignment]
    depth: dict[str, int] = report["dead_letters_by_status"]  # type: ignore[assignment]
    if args.json:
        print(dump_json(report))
        return OK
    executions: dict[str, Any] = report["executions"]  # type: ignore[assignment]
    tracked = bool(executions["tracked"])
    if tracked:
        print(
            f"executions in the last {args.window}: {executions['executions']}, "
            f"success rate {100 * executions['success_rate']:.1f}% "
            "(successful attempts / attempts)"
        )
    else:
        print(f"{executions['note']}")
    print(f"retries in the last {args.window} (outcomes store), dead letters (all time):\n")
    if rows:
        heads = ["TASK", "RETRIES", "RETRY SUCCESS", "FAILED RETRIES BY TYPE", "DEAD LETTERS"]
        if tracked:
            heads[1:1] = ["EXECUTIONS", "SUCCESS"]
        print(table(heads, (_stats_row(r, tracked=tracked) for r in rows)))
    else:
        print("no executions, retries or dead letters recorded")
    print("\ndead-letter queue depth:")
    print(table(["STATUS", "RECORDS"], ([s.value, depth[s.value]] for s in DeadLetterStatus)))
    return OK


def _cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        # Imported here: the dashboard's libraries are an optional extra.
        import uvicorn  # noqa: PLC0415

        from resilience.dashboard import create_app  # noqa: PLC0415
    except ImportError as exc:
        raise CommandError(
            f"the dashboard needs its extra: pip install 'pytest-taskchaos[dashboard]' ({exc})",
            status=USAGE,
        ) from None
    celery_app = load_app(args.app) if args.app else None
    store = open_cli_store(args.store)
    try:
        app = usage_errors(create_app)(
            store, celery_app=celery_app, alert_interval=args.alert_interval
        )
    except CommandError:
        store.close()
        raise
    print(
        f"resilience dashboard: serving {store.url} on http://{args.host}:{args.port}/ "
        f"({'retries through ' + args.app if args.app else 'no --app: retries disabled'})",
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        store.close()
    return OK


def _counts(by_type: dict[str, int]) -> str:
    return ", ".join(f"{t}={n}" for t, n in sorted(by_type.items(), key=lambda i: -i[1])) or "-"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilience",
        description="Classify task failures and show the retry policies applied to them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "classify", help="classify an exception: 'module.Class: message', or a traceback on stdin"
    )
    p.add_argument(
        "exception",
        nargs="?",
        default=None,
        help="the last line of a traceback, e.g. 'TimeoutError: timed out'; "
        "omit (or '-') to read a pasted traceback or Celery log line from stdin",
    )
    p.add_argument("--task", default=None, help="task name (scopes user rules)")
    p.add_argument("--retry-count", type=int, default=0, help="retries already made")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser("policy", help="show the default retry policy of a failure type")
    p.add_argument("failure_type", nargs="?", type=_parse_type, help="omit to list all 18")
    p.add_argument("--seed", type=int, default=0, help="seed for the jittered schedule")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_policy)

    p = sub.add_parser(
        "demo", help="trigger real failures locally, classify them and show their retries"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the jittered schedules")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_demo)

    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="the store (default: $RESILIENCE_STORE_URL, else sqlite:///resilience.sqlite3)",
    )
    add_dlq_parser(sub, store_option)

    p = sub.add_parser(
        "breakers",
        parents=[store_option],
        help="list circuit breakers (state, failure counts, time to next probe)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_breakers, breaker_action=None)
    resets = p.add_subparsers(dest="breaker_action", metavar="ACTION")
    r = resets.add_parser("reset", parents=[store_option], help="close a breaker")
    r.add_argument("name", help="the breaker's name")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    r.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "stats",
        parents=[store_option],
        help="executions and retries per task and type, DLQ depth by status",
    )
    p.add_argument("--window", default="24h", metavar="DURATION", help="retry window (24h)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser(
        "dashboard",
        parents=[store_option],
        help="serve the web dashboard and JSON API (tokens from the environment)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTR",
        help="the Celery app (resilience.celery.install'ed) that retries re-enqueue through",
    )
    p.add_argument(
        "--alert-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="check alerts and notify the sinks every SECONDS while serving (60; 0: only "
        "when a page, /api/alerts/ or /metrics is read)",
    )
    p.set_defaults(func=_cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resilience`` command.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 ok; 1 not found, nothing done or a conflict; 2 bad
        input or usage; 3 the store could not be reached.
    """
    args = _parser().parse_args(argv)
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    try:
        status: int = args.func(args)
    except CommandError as error:
        print(f"resilience {command}: {error}", file=sys.stderr)
        return error.status
    except StorageUnavailable as error:
        print(f"resilience {command}: the store is unavailable: {error}", file=sys.stderr)
        return UNAVAILABLE
    except BrokenPipeError:  # `resilience dlq list | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

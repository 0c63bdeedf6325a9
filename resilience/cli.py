"""The ``resilience`` command: classify failures and show retry policies from a shell.

Subcommands::

    resilience classify "psycopg.errors.DeadlockDetected: deadlock detected"
    resilience policy TRANSIENT_DATABASE --seed 7
    resilience demo            # real local failures, classified, with their retry schedules

Exit status: 0 on success, 2 on bad input (argparse's convention).
"""

from __future__ import annotations

import argparse
import builtins
import json
import random
import re
import sys
from typing import TYPE_CHECKING

from resilience import _demo
from resilience.engine import RetryEngine
from resilience.policy import default_policy
from resilience.taxonomy import Classification, FailureType, classify

if TYPE_CHECKING:
    from collections.abc import Sequence

    from resilience.policy import RetryPolicy

__all__ = ["exception_from_text", "main"]

_ERRNO = re.compile(r"\[Errno (-?\d+)\]")
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


def _cmd_classify(args: argparse.Namespace) -> int:
    try:
        exc = exception_from_text(args.exception)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilience",
        description="Classify task failures and show the retry policies applied to them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("classify", help="classify an exception given as 'module.Class: message'")
    p.add_argument("exception", help="the last line of a traceback, e.g. 'TimeoutError: timed out'")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resilience`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

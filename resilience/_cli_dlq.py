"""``resilience dlq ...``: list, show, retry, abandon, resolve, bulk-retry and purge dead letters.

Every subcommand opens the store named by ``--store`` and closes it when done.
Retries re-enqueue through a Celery app given as ``--app module:attr``; without
one, ``retry`` and ``bulk-retry`` refuse, because marking a record retried
without re-enqueuing its task would lose it.
"""

from __future__ import annotations

import getpass
import importlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from resilience._cli_format import (
    NOTHING,
    OK,
    USAGE,
    CommandError,
    confirm,
    dump_json,
    iso,
    member,
    open_cli_store,
    parse_duration,
    table,
    usage_errors,
)
from resilience._operations import dead_letter_filter
from resilience.dead_letter import DeadLetterQueue
from resilience.errors import ConfigurationError, DeadLetterConflict, ResilienceError
from resilience.storage.records import DeadLetterFilter, DeadLetterStatus

if TYPE_CHECKING:
    import argparse

    from resilience.dead_letter import Replay
    from resilience.storage.records import DeadLetterRecord

__all__ = ["add_dlq_parser"]

_MESSAGE_WIDTH = 60


def add_dlq_parser(sub: Any, store_option: argparse.ArgumentParser) -> None:
    """Register ``dlq`` and its subcommands on the top-level subparsers ``sub``.

    Args:
        sub: the top-level ``add_subparsers()`` result.
        store_option: a parent parser holding ``--store``.
    """
    dlq = sub.add_parser("dlq", help="inspect and act on the dead-letter queue")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = [store_option]

    p = actions.add_parser("list", parents=common, help="list dead letters (newest first)")
    _add_filters(p)
    p.add_argument("--limit", type=int, default=50, help="page size, 1..1000 (50)")
    p.add_argument("--after", default=None, metavar="CURSOR", help="the previous page's cursor")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = actions.add_parser("show", parents=common, help="show one dead letter in full")
    p.add_argument("id", help="the record id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_show)

    p = actions.add_parser("retry", parents=common, help="re-enqueue one PENDING dead letter")
    p.add_argument("id", help="the record id")
    _add_app(p)
    p.add_argument("--note", default=None, help="a note for the record's history")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_retry)

    p = actions.add_parser("abandon", parents=common, help="give up on a dead letter")
    p.add_argument("id", help="the record id")
    p.add_argument("--reason", required=True, help="why (kept in the record's history)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_abandon)

    p = actions.add_parser("resolve", parents=common, help="mark a dead letter resolved")
    p.add_argument("id", help="the record id")
    p.add_argument("--note", default=None, help="a note for the record's history")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_resolve)

    p = actions.add_parser(
        "bulk-retry", parents=common, help="re-enqueue every PENDING dead letter matching filters"
    )
    _add_filters(p)
    _add_app(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_bulk_retry)

    p = actions.add_parser("purge", parents=common, help="delete finished dead letters")
    p.add_argument(
        "--older-than",
        default="0s",
        metavar="DURATION",
        help="only records idle this long, e.g. 30d, 12h (default 0s: all)",
    )
    p.add_argument(
        "--status",
        action="append",
        default=None,
        metavar="S",
        help="statuses to purge (repeatable; default RESOLVED and ABANDONED)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_purge)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", action="append", default=None, metavar="S", help="repeatable")
    p.add_argument("--task", default=None, metavar="T", help="an exact task name")
    p.add_argument(
        "--type", dest="failure_type", action="append", default=None, metavar="FAILURE_TYPE"
    )
    p.add_argument("--since", default=None, metavar="ISO", help="last failure at or after")
    p.add_argument("--until", default=None, metavar="ISO", help="last failure before")
    p.add_argument("--text", default=None, metavar="T", help="a substring of the message")


def _add_app(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTR",
        help="the Celery app to re-enqueue through (resilience.celery.install'ed)",
    )


def _filter(args: argparse.Namespace) -> DeadLetterFilter:
    return usage_errors(dead_letter_filter)(
        statuses=args.status or (),
        task=args.task,
        types=args.failure_type or (),
        since=args.since,
        until=args.until,
        text=args.text,
        prefix="--",
    )


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli"


def _summary_row(record: DeadLetterRecord) -> list[object]:
    message = " ".join(record.message.split())
    if len(message) > _MESSAGE_WIDTH:
        message = message[: _MESSAGE_WIDTH - 3] + "..."
    return [
        record.id,
        record.status.value,
        record.task_name,
        record.failure_type.value,
        record.retry_count,
        iso(record.last_failed_at),
        f"{record.exception_class}: {message}",
    ]


def _cmd_list(args: argparse.Namespace) -> int:
    where = _filter(args)
    store = open_cli_store(args.store)
    try:
        dlq = DeadLetterQueue(store)
        try:
            page = dlq.list(
                status=where.statuses,
                task_name=where.task_name,
                failure_type=where.failure_types,
                since=where.since,
                until=where.until,
                text=where.text,
                limit=args.limit,
                after=args.after,
            )
        except ConfigurationError as exc:
            option = {"limit": "--limit", "after": "--after"}.get(exc.key or "", exc.key)
            raise CommandError(f"{option}: {exc}", status=USAGE) from None
    finally:
        store.close()
    if args.json:
        print(
            dump_json(
                {
                    "records": [record.to_dict() for record in page.records],
                    "next_cursor": page.next_cursor,
                }
            )
        )
        return OK
    if not page.records:
        print("no dead letters match")
        return OK
    headers = ["ID", "STATUS", "TASK", "TYPE", "RETRIES", "LAST FAILED", "ERROR"]
    print(table(headers, (_summary_row(r) for r in page.records)))
    if page.next_cursor is not None:
        print(f"\nmore: --after {page.next_cursor}")
    return OK


def _get(dlq: DeadLetterQueue, record_id: str, store_url: str) -> DeadLetterRecord:
    record = dlq.get(record_id)
    if record is None:
        raise CommandError(f"no dead letter with id {record_id!r} in {store_url}", status=NOTHING)
    return record


def _cmd_show(args: argparse.Namespace) -> int:
    store = open_cli_store(args.store)
    try:
        record = _get(DeadLetterQueue(store), args.id, store.url)
    finally:
        store.close()
    if args.json:
        print(dump_json(record.to_dict()))
        return OK
    fields: list[tuple[str, object]] = [
        ("id", record.id),
        ("status", record.status.value),
        ("task", record.task_name),
        ("task id", record.task_id),
        ("failure type", f"{record.failure_type.value} (confidence {record.confidence:.2f})"),
        ("exception", record.exception_class),
        ("message", record.message),
        ("retries", record.retry_count),
        ("first failed", iso(record.first_failed_at)),
        ("last failed", iso(record.last_failed_at)),
        ("next retry", iso(record.next_retry_at)),
        ("priority", record.priority),
        ("queue", record.queue),
        ("correlation id", record.correlation_id),
        ("flags", ", ".join(record.flags) or None),
        ("args", json.dumps(record.args)),
        ("kwargs", json.dumps(record.kwargs)),
    ]
    for key, value in fields:
        print(f"{key:>14}: {'-' if value is None else value}")
    print("\nhistory:")
    print(
        table(
            ["AT", "ACTOR", "ACTION", "FROM", "TO", "TASK ID", "NOTE"],
            (
                [
                    iso(h.at),
                    h.actor,
                    h.action,
                    h.from_status.value if h.from_status else None,
                    h.to_status.value if h.to_status else None,
                    h.task_id,
                    h.note,
                ]
                for h in record.history
            ),
        )
    )
    print("\ntraceback:")
    print(record.traceback.rstrip() or "-")
    return OK


def _load_app(spec: str | None) -> Any:
    if not spec:
        raise CommandError(
            "a retry re-enqueues the task through Celery: pass --app MODULE:ATTR naming the Celery "
            "app (with resilience.celery.install) whose workers run the task; "
            "nothing was changed",
            status=USAGE,
        )
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CommandError(
            f"--app: expected MODULE:ATTR such as 'proj.celery:app', got {spec!r}", status=USAGE
        )
    # Like `celery -A`: the app's module is usually in the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"--app: cannot import {module_name!r}: {exc}", status=USAGE) from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise CommandError(
            f"--app: {module_name!r} has no attribute {attr!r}", status=USAGE
        ) from None
    if not callable(getattr(app, "signature", None)):
        raise CommandError(f"--app: {spec!r} is not a Celery app, got {app!r}", status=USAGE)
    return app


def _replay(app: Any, store_url: str) -> Replay:
    # Imported here: Celery is optional, and only retries need it.
    from resilience.celery import runtime_for  # noqa: PLC0415

    runtime = runtime_for(app)
    if runtime.store.url != store_url:
        print(
            f"warning: the app reports replayed runs to {runtime.store.url}, "
            f"not to {store_url}: the records will stay RETRYING there",
            file=sys.stderr,
        )
    return runtime.replay


def _cmd_retry(args: argparse.Namespace) -> int:
    app = _load_app(args.app)
    store = open_cli_store(args.store)
    try:
        dlq = DeadLetterQueue(store, replay=_replay(app, store.url))
        _get(dlq, args.id, store.url)
        try:
            record = dlq.retry(args.id, actor=_actor(), note=args.note)
        except DeadLetterConflict as exc:
            raise CommandError(str(exc), status=NOTHING) from None
        except ResilienceError as exc:
            raise CommandError(f"{exc} (the record is back to PENDING)", status=NOTHING) from None
    finally:
        store.close()
    task_id = record.history[-1].task_id
    if args.json:
        print(dump_json({"id": record.id, "status": record.status.value, "task_id": task_id}))
    else:
        print(f"{record.id}: re-enqueued {record.task_name} as task {task_id} (RETRYING)")
    return OK


def _change(args: argparse.Namespace, verb: str) -> int:
    store = open_cli_store(args.store)
    try:
        dlq = DeadLetterQueue(store)
        _get(dlq, args.id, store.url)
        try:
            if verb == "abandon":
                record = dlq.abandon(args.id, actor=_actor(), reason=args.reason)
            else:
                record = dlq.resolve(args.id, actor=_actor(), note=args.note)
        except DeadLetterConflict as exc:
            raise CommandError(str(exc), status=NOTHING) from None
        except ConfigurationError as exc:
            raise CommandError(f"--{exc.key}: {exc}", status=USAGE) from None
    finally:
        store.close()
    if args.json:
        print(dump_json({"id": record.id, "status": record.status.value}))
    else:
        print(f"{record.id}: {record.status.value}")
    return OK


def _cmd_abandon(args: argparse.Namespace) -> int:
    return _change(args, "abandon")


def _cmd_resolve(args: argparse.Namespace) -> int:
    return _change(args, "resolve")


def _cmd_bulk_retry(args: argparse.Namespace) -> int:
    where = _filter(args)
    if where.statuses is not None and where.statuses != {DeadLetterStatus.PENDING}:
        raise CommandError(
            "--status: bulk-retry retries PENDING records only; drop --status or pass PENDING",
            status=USAGE,
        )
    app = _load_app(args.app)
    store = open_cli_store(args.store)
    try:
        dlq = DeadLetterQueue(store, replay=_replay(app, store.url))
        pending = DeadLetterFilter(
            statuses=frozenset({DeadLetterStatus.PENDING}),
            task_name=where.task_name,
            failure_types=where.failure_types,
            since=where.since,
            until=where.until,
            text=where.text,
        )
        matching = dlq.store.count(pending)
        if matching == 0:
            raise CommandError("no PENDING dead letter matches; nothing retried", status=NOTHING)
        confirm(
            f"Re-enqueue {matching} PENDING dead letter(s) through {args.app}?",
            yes=args.yes,
        )
        result = dlq.bulk_retry(where=pending, actor=_actor())
    finally:
        store.close()
    if args.json:
        print(dump_json({"retried": list(result.retried), "skipped": dict(result.skipped)}))
    else:
        print(f"retried {len(result.retried)}, skipped {len(result.skipped)}")
        for record_id, reason in result.skipped.items():
            print(f"  skipped {record_id}: {reason}")
    return OK if result.retried else NOTHING


def _cmd_purge(args: argparse.Namespace) -> int:
    age = parse_duration(args.older_than, option="--older-than")
    statuses = (
        (DeadLetterStatus.RESOLVED, DeadLetterStatus.ABANDONED)
        if not args.status
        else tuple(member(DeadLetterStatus, s, option="--status") for s in args.status)
    )
    names = "/".join(s.value for s in statuses)
    store = open_cli_store(args.store)
    try:
        dlq = DeadLetterQueue(store)
        candidates = dlq.store.count(
            DeadLetterFilter(statuses=frozenset(statuses), until=dlq.clock.time() - age)
        )
        if candidates == 0:
            raise CommandError(
                f"no {names} dead letter idle for {args.older_than}; nothing purged",
                status=NOTHING,
            )
        confirm(
            f"Delete up to {candidates} {names} dead letter(s) idle for {args.older_than}?",
            yes=args.yes,
        )
        purged = dlq.purge(older_than=age, statuses=statuses)
    finally:
        store.close()
    if args.json:
        print(dump_json({"purged": purged}))
    else:
        print(f"purged {purged} dead letter(s)")
    return OK if purged else NOTHING

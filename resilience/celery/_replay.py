"""Dead-letter replay through Celery, the beat task, and dead-lettering of lost workers.

A replay re-enqueues the record's task as an ordinary Celery message (same name,
args, kwargs, queue and priority; a new task id) carrying the record's id in the
``resilience_dead_letter`` header. The replayed run reports back through that
header: a success resolves the record, a failure puts it back to PENDING with
``record_retry_failed`` (never a second record). A replay that never reports (its
message lost, a worker that does not know the task) leaves the record RETRYING
until the queue's ``replay_lease`` has passed; then the beat task (or an
operator's retry) takes it over and replays it again.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Final

from billiard.exceptions import WorkerLostError  # type: ignore[import-untyped]
from celery.exceptions import TimeLimitExceeded  # type: ignore[import-untyped]
from celery.utils import uuid  # type: ignore[import-untyped]

from resilience._redaction import TRUNCATED_TAG
from resilience._serialization import REPR_TAG
from resilience.celery.signals import on_dead_letter
from resilience.errors import ResilienceError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from resilience.dead_letter import DeadLetterQueue
    from resilience.storage.records import DeadLetterRecord

__all__ = [
    "DEAD_LETTER_HEADER",
    "PROCESS_DEAD_LETTERS",
    "LostRunHandler",
    "replay_blockers",
    "replay_record",
]

DEAD_LETTER_HEADER: Final = "resilience_dead_letter"
"""The message header naming the dead letter a replayed run reports back to."""

PROCESS_DEAD_LETTERS: Final = "resilience.process_dead_letters"
"""The name of the beat-friendly task that replays due dead letters."""

_log = logging.getLogger("resilience.celery")
_TRUNCATED_TEXT = re.compile(r"\.\.\.\[truncated \d+ bytes\]\.\.\.")


def replay_blockers(record: DeadLetterRecord, *, replacement: str) -> list[str]:
    """Why the stored arguments are not the original ones (empty when they are).

    Redacted values, values JSON could not hold and cut values are stored as
    markers; replaying them would run the task with the markers as arguments.
    """
    found: set[str] = set()

    def walk(value: object) -> Iterator[None]:
        if isinstance(value, str):
            if replacement and replacement in value:
                found.add("redacted")
            if _TRUNCATED_TEXT.search(value):
                found.add("truncated")
        elif isinstance(value, dict):
            if REPR_TAG in value:
                found.add("not JSON (stored as a repr)")
            if TRUNCATED_TAG in value:
                found.add("truncated")
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)
        yield None

    for _ in walk([record.args, record.kwargs]):
        pass
    return sorted(found)


def replay_record(app: Any, record: DeadLetterRecord, *, replacement: str) -> str:
    """Re-enqueue a dead letter's task on ``app``; returns the new task id.

    Raises:
        ResilienceError: the stored arguments are not the original ones (redacted,
            cut or not JSON): re-enqueue the task yourself, then resolve the record.
    """
    blockers = replay_blockers(record, replacement=replacement)
    if blockers:
        raise ResilienceError(
            f"dead letter {record.id} cannot be replayed: its stored arguments are "
            f"{', '.join(blockers)}; enqueue {record.task_name} with the real arguments "
            "yourself and resolve the record"
        )
    task_id: str = uuid()
    options: dict[str, Any] = {"task_id": task_id, "headers": {DEAD_LETTER_HEADER: record.id}}
    if record.queue:
        options["queue"] = record.queue
    if record.priority:
        options["priority"] = record.priority
    # A signature by name runs the registered task (eagerly under task_always_eager)
    # and falls back to send_task when this process does not know the task.
    app.signature(record.task_name, args=list(record.args), kwargs=dict(record.kwargs)).apply_async(
        **options
    )
    return task_id


class LostRunHandler:
    """A ``task_failure`` receiver that dead-letters runs whose worker process died.

    A body that raises is handled where it runs; a killed pool process
    (``WorkerLostError``: SIGKILL, OOM) or a hard time limit ends the run outside the
    body, and Celery reports it in the main worker process. When the message is not
    redelivered (no ``acks_late`` + ``reject_on_worker_lost``), Celery marks the task
    FAILURE and sends ``task_failure``: this keeps it in the dead-letter queue.
    """

    def __init__(self, dead_letters_for: Callable[[Any], DeadLetterQueue | None]) -> None:
        self._dead_letters_for = dead_letters_for

    def __call__(
        self,
        sender: Any = None,
        *,
        task_id: str | None = None,
        exception: BaseException | None = None,
        args: Any = None,
        kwargs: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        """Dead-letter ``sender``'s run if it was lost with its worker process."""
        if exception is None or not isinstance(exception, WorkerLostError | TimeLimitExceeded):
            return
        dead_letters = self._dead_letters_for(sender)
        if dead_letters is None:
            return
        request = getattr(sender, "request", None)
        headers = dict(getattr(request, "headers", None) or {})
        delivery = getattr(request, "delivery_info", None) or {}
        record = dead_letters.add(
            task_name=sender.name,
            exc=exception,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            task_id=task_id,
            retry_count=_int(headers.get("resilience_failures")),
            priority=min(9, max(0, _int(delivery.get("priority")))),
            queue=delivery.get("routing_key") or None,
            traceback_text=getattr(einfo, "traceback", None),
            actor="worker",
        )
        _log.error(
            "%s[%s] lost its worker process (%s): dead-lettered as %s",
            sender.name,
            task_id,
            type(exception).__name__,
            record.id,
            extra={
                "task_id": task_id,
                "task_name": sender.name,
                "failure_type": record.failure_type.value,
                "decision": "dead_letter",
                "dead_letter_id": record.id,
            },
        )
        on_dead_letter.send(sender=sender, record=record, exception=exception, decision=None)


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0

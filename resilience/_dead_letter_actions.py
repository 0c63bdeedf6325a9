"""How the dead-letter queue changes a record: compare-and-set loops and replays.

Every change reads the record, checks its status, appends a history entry and
writes it back with one compare-and-set on its version; a lost race re-reads
and re-checks, so an action either applies to the status it expects or raises
:class:`~resilience.errors.DeadLetterConflict` naming the status it found.

A RETRYING record waits for its replayed run to report back. When that report
has not come within the replay lease (the message was lost, the worker did not
know the task, it crashed before running it), the record is *stale*: a retry
takes it over (RETRYING -> RETRYING, action ``take_over``) by the same
compare-and-set, so of two takeovers exactly one re-enqueues.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from resilience._dead_letter_payload import qualified_name, safe_message
from resilience._redaction import truncate_text
from resilience.errors import ConfigurationError, DeadLetterConflict
from resilience.storage.records import (
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
    HistoryEntry,
)

if TYPE_CHECKING:
    from resilience._redaction import Redaction
    from resilience.storage.base import DeadLetterStore

__all__ = [
    "NOTE_BYTES",
    "PAGE",
    "PENDING",
    "REPLAY_FAILURE_DELAY",
    "REPLAY_LEASE",
    "RETRYING",
    "Ledger",
    "Replay",
    "replay_started_at",
    "scan",
]

Replay: TypeAlias = Callable[[DeadLetterRecord], str | None]
"""Re-enqueues a dead letter's task and returns the new task id (or ``None``)."""

REPLAY_FAILURE_DELAY = 60.0
"""Seconds an automatic retry is deferred when the replay callable raised (broker down)."""

REPLAY_LEASE = 3600.0
"""Seconds a RETRYING record waits for its replay to report before a retry may take it over."""

PAGE = 500
"""Records fetched per query when an action walks many records."""

NOTE_BYTES = 500
"""The cap of a history note built from an exception."""

PENDING = frozenset({DeadLetterStatus.PENDING})
RETRYING = frozenset({DeadLetterStatus.RETRYING})

_log = logging.getLogger("resilience.dead_letter")


def scan(
    store: DeadLetterStore, where: DeadLetterFilter, order: DeadLetterOrder
) -> Iterator[DeadLetterRecord]:
    """Every record matching ``where`` in ``order``, a page at a time (keyset cursors)."""
    after: str | None = None
    while True:
        page = store.query(where, order=order, limit=PAGE, after=after)
        yield from page.records
        if page.next_cursor is None:
            return
        after = page.next_cursor


def replay_started_at(record: DeadLetterRecord) -> float:
    """When a RETRYING record's current replay began: its last history entry.

    While a record is RETRYING, its only history entries are the claim
    (``retry`` or ``take_over``) and the ``enqueued`` note that follows it.
    """
    return record.history[-1].at if record.history else record.last_failed_at


class Ledger:
    """Status changes and replays of the records in one store.

    Args:
        store: the dead-letter role of a store.
        redaction: scrubs the notes built from replay errors.
        lease: seconds a RETRYING record waits for its replay to report back
            before a retry may take it over (see :meth:`stale`).
    """

    __slots__ = ("lease", "redaction", "store")

    def __init__(
        self, store: DeadLetterStore, redaction: Redaction, *, lease: float = REPLAY_LEASE
    ) -> None:
        self.store = store
        self.redaction = redaction
        self.lease = lease

    def stale(self, record: DeadLetterRecord, at: float) -> bool:
        """Whether ``record`` is RETRYING and its replay has not reported within the lease."""
        return (
            record.status is DeadLetterStatus.RETRYING
            and replay_started_at(record) + self.lease <= at
        )

    def claimable(self, record: DeadLetterRecord, at: float) -> bool:
        """Whether a retry may claim ``record`` now: PENDING, or RETRYING and stale."""
        return record.status is DeadLetterStatus.PENDING or self.stale(record, at)

    def change(
        self,
        record_id: str,
        *,
        allowed: frozenset[DeadLetterStatus] | None,
        action: str,
        actor: str,
        at: float,
        to_status: DeadLetterStatus | None = None,
        note: str | None = None,
        task_id: str | None = None,
        current: DeadLetterRecord | None = None,
        changes: Callable[[DeadLetterRecord], dict[str, Any]] | None = None,
    ) -> DeadLetterRecord:
        """Apply one action by compare-and-set; ``allowed=None`` accepts any status."""
        _check_note(note)
        while True:
            if current is None:
                current = self.store.get(record_id)
            if current is None:
                raise _missing(record_id, action)
            if allowed is not None and current.status not in allowed:
                expected = " or ".join(sorted(s.value for s in allowed))
                raise _refused(current, action, expected)
            target = current.status if to_status is None else to_status
            entry = HistoryEntry(
                at=at,
                actor=actor,
                action=action,
                note=note,
                from_status=current.status,
                to_status=target,
                task_id=task_id,
            )
            extra = changes(current) if changes is not None else {}
            updated = current.with_action(entry, status=target, **extra)
            if self.store.compare_and_set(current.version, updated):
                return updated
            current = None  # someone else wrote first: re-read and re-check

    def claim(
        self,
        record_id: str,
        *,
        actor: str,
        note: str | None,
        at: float,
        current: DeadLetterRecord | None = None,
    ) -> DeadLetterRecord:
        """PENDING -> RETRYING (``retry``), or a stale RETRYING record taken over (``take_over``).

        One compare-and-set on the version that was checked: of two concurrent
        claims exactly one succeeds. The loser re-reads the record, finds it
        RETRYING with a fresh replay and gets a :class:`DeadLetterConflict`.
        """
        _check_note(note)
        while True:
            if current is None:
                current = self.store.get(record_id)
            if current is None:
                raise _missing(record_id, "retry")
            if current.status is DeadLetterStatus.PENDING:
                action, text = "retry", note
            elif self.stale(current, at):
                action, text = "take_over", self._takeover_note(current, at, note)
            elif current.status is DeadLetterStatus.RETRYING:
                age = at - replay_started_at(current)
                raise _refused(
                    current,
                    "retry",
                    f"PENDING, or RETRYING with no report from its replay for the "
                    f"{_seconds(self.lease)} replay lease; this replay started "
                    f"{_seconds(age)} ago",
                )
            else:
                raise _refused(current, "retry", "PENDING")
            entry = HistoryEntry(
                at=at,
                actor=actor,
                action=action,
                note=text,
                from_status=current.status,
                to_status=DeadLetterStatus.RETRYING,
            )
            claimed = current.with_action(entry, status=DeadLetterStatus.RETRYING)
            if self.store.compare_and_set(current.version, claimed):
                if action == "take_over":
                    _log.warning("dead letter %s: %s (by %s)", current.id, text, actor)
                return claimed
            current = None  # someone else wrote first: re-read and re-check

    def _takeover_note(self, current: DeadLetterRecord, at: float, note: str | None) -> str:
        last = current.history[-1] if current.history else None
        task_id = last.task_id if last is not None and last.action == "enqueued" else None
        replay = "its replay" if task_id is None else f"its replay (task {task_id})"
        age = at - replay_started_at(current)
        text = (
            f"took over: {replay} started {_seconds(age)} ago and has not reported "
            f"within the {_seconds(self.lease)} replay lease"
        )
        return text if not note else f"{text}; {note}"

    def enqueue(
        self, claimed: DeadLetterRecord, replay: Replay, *, actor: str, at: float
    ) -> DeadLetterRecord:
        """Run ``replay`` on a claimed record and note its task id.

        If ``replay`` raises, the record goes back to PENDING with the error in
        its history, and the error propagates.
        """
        try:
            result = replay(claimed)
        except BaseException as exc:
            self._replay_failed(claimed, exc, actor=actor, at=at)
            raise
        task_id = None if result is None else str(result)
        # Any status: the replayed run may already have finished and reported back.
        return self.change(
            claimed.id,
            current=claimed,
            allowed=None,
            action="enqueued",
            actor=actor,
            task_id=task_id,
            at=at,
        )

    def attempt(
        self,
        record: DeadLetterRecord,
        *,
        replay: Replay,
        actor: str,
        note: str | None,
        at: float,
    ) -> str | None:
        """Claim and enqueue ``record``; ``None`` on success, else why it was skipped.

        ``record`` may be PENDING or a stale RETRYING record (taken over).
        """
        if not self.claimable(record, at):
            return f"status is {record.status.value}"
        try:
            claimed = self.claim(record.id, current=record, actor=actor, note=note, at=at)
        except DeadLetterConflict as conflict:
            return "not found" if conflict.status is None else f"status is {conflict.status}"
        try:
            self.enqueue(claimed, replay, actor=actor, at=at)
        except Exception as exc:  # noqa: BLE001 - reported per record; the rest still run
            _log.warning("replay of dead letter %s failed: %s", record.id, type(exc).__name__)
            return f"replay failed: {type(exc).__name__}"
        return None

    def _replay_failed(
        self, claimed: DeadLetterRecord, exc: BaseException, *, actor: str, at: float
    ) -> None:
        detail = self.redaction.scrub(
            f"replay raised {qualified_name(type(exc))}: {safe_message(exc)}"
        )

        def changes(current: DeadLetterRecord) -> dict[str, Any]:
            due = current.next_retry_at
            return {"next_retry_at": None if due is None else max(due, at + REPLAY_FAILURE_DELAY)}

        try:
            self.change(
                claimed.id,
                current=claimed,
                allowed=RETRYING,
                to_status=DeadLetterStatus.PENDING,
                action="replay_failed",
                actor=actor,
                note=truncate_text(detail, NOTE_BYTES)[0],
                at=at,
                changes=changes,
            )
        except DeadLetterConflict as conflict:
            exc.add_note(f"dead letter {claimed.id} was not put back to PENDING: {conflict}")


def _check_note(note: object) -> None:
    if note is not None and not isinstance(note, str):
        raise ConfigurationError(f"note must be a str or None, got {note!r}", key="note")


def _missing(record_id: str, action: str) -> DeadLetterConflict:
    return DeadLetterConflict(
        f"dead letter {record_id!r} does not exist; cannot {action} it",
        record_id=record_id,
        status=None,
    )


def _refused(current: DeadLetterRecord, action: str, expected: str) -> DeadLetterConflict:
    return DeadLetterConflict(
        f"dead letter {current.id!r} is {current.status.value}; "
        f"cannot {action} it (expects {expected})",
        record_id=current.id,
        status=current.status.value,
    )


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if abs(value) >= 100 else f"{value:.3g}s"

"""How the dead-letter queue changes a record: compare-and-set loops and replays.

Every change reads the record, checks its status, appends a history entry and
writes it back with one compare-and-set on its version; a lost race re-reads
and re-checks, so an action either applies to the status it expects or raises
:class:`~resilience.errors.DeadLetterConflict` naming the status it found.
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
    "RETRYING",
    "Ledger",
    "Replay",
    "scan",
]

Replay: TypeAlias = Callable[[DeadLetterRecord], str | None]
"""Re-enqueues a dead letter's task and returns the new task id (or ``None``)."""

REPLAY_FAILURE_DELAY = 60.0
"""Seconds an automatic retry is deferred when the replay callable raised (broker down)."""

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


class Ledger:
    """Status changes and replays of the records in one store."""

    __slots__ = ("redaction", "store")

    def __init__(self, store: DeadLetterStore, redaction: Redaction) -> None:
        self.store = store
        self.redaction = redaction

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
        if note is not None and not isinstance(note, str):
            raise ConfigurationError(f"note must be a str or None, got {note!r}", key="note")
        while True:
            if current is None:
                current = self.store.get(record_id)
            if current is None:
                raise DeadLetterConflict(
                    f"dead letter {record_id!r} does not exist; cannot {action} it",
                    record_id=record_id,
                    status=None,
                )
            if allowed is not None and current.status not in allowed:
                expected = " or ".join(sorted(s.value for s in allowed))
                raise DeadLetterConflict(
                    f"dead letter {record_id!r} is {current.status.value}; "
                    f"cannot {action} it (expects {expected})",
                    record_id=record_id,
                    status=current.status.value,
                )
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
        """PENDING -> RETRYING; of two concurrent claims exactly one succeeds."""
        return self.change(
            record_id,
            current=current,
            allowed=PENDING,
            to_status=DeadLetterStatus.RETRYING,
            action="retry",
            actor=actor,
            note=note,
            at=at,
        )

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
        """Claim and enqueue ``record``; ``None`` on success, else why it was skipped."""
        if record.status is not DeadLetterStatus.PENDING:
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

"""The dead-letter queue: keep failed task runs, let operators retry, abandon or resolve them.

Statuses and the actions that move between them (anything else raises
:class:`~resilience.errors.DeadLetterConflict` naming the current status)::

    add ----------------------------> PENDING
    PENDING --retry / process_due---> RETRYING   (then the replay callable enqueues the task)
    RETRYING --retry / process_due--> RETRYING   (take_over: only once its replay has not
                                                  reported within replay_lease)
    RETRYING --replay raised--------> PENDING    (nothing lost; the error is in the history)
    RETRYING --record_retry_failed--> PENDING    (retry_count + 1, next automatic retry per policy)
    PENDING | RETRYING --resolve----> RESOLVED
    PENDING | RETRYING --abandon----> ABANDONED

Automatic retries follow the retry policy of the failure's type that ``policy_for``
returns (the Celery integration passes its engine's configured policies): none
when that policy has ``max_retries == 0`` or the type is not retryable.

Every change is one compare-and-set on the record's version, so two operators (or
two replay loops) acting on one record never both succeed: the loser gets a
``DeadLetterConflict``. Every change appends a :class:`~resilience.storage.HistoryEntry`.

Records hold JSON only (never pickle): non-JSON arguments are stored as tagged
reprs and flagged ``"non_json"``; secrets are redacted (``"redacted"``, see
:class:`Redaction`); oversized texts and arguments are cut with an explicit
marker (``"truncated"``), never rejected.
"""

from __future__ import annotations

import builtins
import heapq
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from resilience._dead_letter_actions import (
    NOTE_BYTES,
    PAGE,
    PENDING,
    REPLAY_FAILURE_DELAY,
    REPLAY_LEASE,
    RETRYING,
    Ledger,
    Replay,
    scan,
)
from resilience._dead_letter_payload import (
    FLAG_ORDER,
    capture,
    check_duration,
    check_failure,
    check_finite,
    check_instant,
    check_limit,
    check_member,
    check_members,
    check_text,
    new_id,
)
from resilience._dead_letter_summary import DeadLetterSummary, summarise
from resilience._redaction import Redaction, truncate_text
from resilience._spool import SpoolingDeadLetterStore
from resilience.clock import Clock, system_clock
from resilience.errors import ConfigurationError
from resilience.policy import RetryPolicy, default_policy
from resilience.storage.base import DeadLetterStore
from resilience.storage.records import (
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterPage,
    DeadLetterRecord,
    DeadLetterStatus,
    HistoryEntry,
    sort_key,
)
from resilience.taxonomy import Classification, FailureType, classify

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from resilience.storage.base import Store

__all__ = [
    "REPLAY_FAILURE_DELAY",
    "REPLAY_LEASE",
    "BulkResult",
    "DeadLetterQueue",
    "DeadLetterSummary",
    "Redaction",
    "Replay",
    "SpoolingDeadLetterStore",
]

_log = logging.getLogger("resilience.dead_letter")

_MAX_LIMIT = 1000
_ACTIVE = frozenset({DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING})
_DUE_NOTE = "automatic retry: next_retry_at has passed"


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkResult:
    """What a bulk retry did.

    Attributes:
        retried: ids that were re-enqueued, in the order they were retried.
        skipped: id -> reason for each selected record that was not re-enqueued
            (``"not found"``, ``"status is RESOLVED"``, ``"replay failed: ..."``).
    """

    retried: tuple[str, ...]
    skipped: Mapping[str, str]


class DeadLetterQueue:
    """Failed task runs kept for operators and automatic replays.

    Args:
        store: a store bundle (``open_store(url)``) or its ``dead_letters`` role
            (for example a :class:`SpoolingDeadLetterStore`).
        clock: where ``now`` comes from when a method is not given one.
        redaction: what to hide before storing; ``None`` means the default
            :class:`Redaction`. ``Redaction(keys=(), patterns=(), card_numbers=False)``
            stores payloads as they are.
        max_payload_bytes: the cap, in UTF-8 bytes, of each of the message, the
            traceback, the args JSON and the kwargs JSON (at least 1024).
        replay: re-enqueues a record's task and returns the new task id; needed by
            :meth:`retry`, :meth:`bulk_retry` and :meth:`process_due`.
        policy_for: the retry policy of a failure type, which automatic retries
            follow (``None``: :func:`~resilience.policy.default_policy`). Give it
            your engine's configured policies, ``engine.policy_for``; the Celery
            integration does. A type whose policy has ``max_retries == 0`` is
            never retried automatically.
        replay_lease: seconds (or a ``timedelta``) a RETRYING record waits for its
            replayed run to report back; after that it is stale, and :meth:`retry`
            or :meth:`process_due` take it over and replay it again. Make it longer
            than a replay can wait in the queue plus run (default one hour).

    Raises:
        ConfigurationError: a store without a dead-letter role, a bad cap, replay,
            policy lookup or lease.

    Example:
        >>> from resilience.storage import MemoryStore
        >>> dlq = DeadLetterQueue(MemoryStore(), replay=lambda record: "task-2")
        >>> record = dlq.add(task_name="send_email", exc=ValueError("bad address"), now=0.0)
        >>> dlq.retry(record.id, actor="ann").status
        <DeadLetterStatus.RETRYING: 'RETRYING'>
    """

    def __init__(
        self,
        store: Store | DeadLetterStore,
        *,
        clock: Clock = system_clock,
        redaction: Redaction | None = None,
        max_payload_bytes: int = 64 * 1024,
        replay: Replay | None = None,
        policy_for: Callable[[FailureType], RetryPolicy] | None = None,
        replay_lease: float | timedelta = REPLAY_LEASE,
    ) -> None:
        role = getattr(store, "dead_letters", None)
        if role is None:
            if not isinstance(store, DeadLetterStore):
                raise ConfigurationError(
                    f"store must be a Store or a DeadLetterStore, got {store!r}",
                    key="store",
                    value=store,
                )
            role = store
        if (
            isinstance(max_payload_bytes, bool)
            or not isinstance(max_payload_bytes, int)
            or max_payload_bytes < 1024
        ):
            raise ConfigurationError(
                f"max_payload_bytes must be an int >= 1024, got {max_payload_bytes!r}",
                key="max_payload_bytes",
                value=max_payload_bytes,
            )
        if redaction is not None and not isinstance(redaction, Redaction):
            raise ConfigurationError(
                f"redaction must be a Redaction or None, got {redaction!r}",
                key="redaction",
                value=redaction,
            )
        if replay is not None and not callable(replay):
            raise ConfigurationError(
                f"replay must be callable, got {replay!r}", key="replay", value=replay
            )
        if policy_for is not None and not callable(policy_for):
            raise ConfigurationError(
                f"policy_for must be callable or None, got {policy_for!r}",
                key="policy_for",
                value=policy_for,
            )
        lease = check_duration("replay_lease", replay_lease)
        if lease <= 0:
            raise ConfigurationError(
                f"replay_lease must be > 0, got {replay_lease!r}",
                key="replay_lease",
                value=replay_lease,
            )
        self.store: DeadLetterStore = role
        self.clock = clock
        self.redaction = Redaction() if redaction is None else redaction
        self.max_payload_bytes = max_payload_bytes
        self.replay = replay
        self.policy_for = policy_for
        self._ledger = Ledger(role, self.redaction, lease=lease)

    @property
    def replay_lease(self) -> float:
        """Seconds a RETRYING record waits for its replay to report before it is stale."""
        return self._ledger.lease

    # ------------------------------------------------------------------ adding

    def add(
        self,
        *,
        task_name: str,
        exc: BaseException,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        retry_count: int = 0,
        classification: Classification | None = None,
        priority: int = 0,
        queue: str | None = None,
        correlation_id: str | None = None,
        traceback_text: str | None = None,
        first_failed_at: float | None = None,
        actor: str = "worker",
        policy: RetryPolicy | None = None,
        now: float | None = None,
    ) -> DeadLetterRecord:
        """Store a failed run; the record is durable when this returns.

        Args:
            task_name: the task's registered name.
            exc: the exception that ended the run; its traceback is formatted from
                the exception itself (with its ``__cause__``/``__context__`` chain).
            args: positional arguments (JSON-encoded; non-JSON values tagged).
            kwargs: keyword arguments (JSON-encoded, redacted).
            task_id: the failed run's task id.
            retry_count: retries made before dead-lettering.
            classification: the verdict, when the caller has it; else ``classify(exc)``.
            priority: replay priority 0..9, higher first.
            queue: the queue the task ran on.
            correlation_id: the caller's tracing id.
            traceback_text: an already formatted traceback (Celery's ``einfo``) to
                store instead of formatting ``exc``, for exceptions that crossed a
                process boundary without their traceback.
            first_failed_at: when the run first failed (default: ``now``).
            actor: who dead-lettered it, for the history.
            policy: the retry policy of this failure, when the caller knows a more
                specific one than ``policy_for`` (the Celery integration passes the
                task's own); default ``policy_for(failure_type)``.
            now: the current time (default: the clock's).

        Returns:
            The stored record (status ``PENDING``). ``next_retry_at`` is set when the
            classification recommends a retry and the policy allows retries
            (``max_retries > 0``): ``now`` plus the policy's ``initial_delay``, or
            the server's Retry-After when the failure carried one.

        Raises:
            ConfigurationError: an invalid argument (``key`` names it).
        """
        at = self._now(now)
        check_failure(
            task_name=task_name,
            exc=exc,
            args=args,
            kwargs=kwargs,
            retry_count=retry_count,
            priority=priority,
            optional_texts={
                "task_id": task_id,
                "queue": queue,
                "correlation_id": correlation_id,
                "traceback_text": traceback_text,
            },
        )
        check_text("actor", actor)
        _check_policy(policy)
        first = at if first_failed_at is None else check_finite("first_failed_at", first_failed_at)
        verdict = classification
        if verdict is None:
            verdict = classify(exc, {"task_name": task_name, "retry_count": retry_count})
        rules = self._policy(verdict.failure_type) if policy is None else policy
        due = None
        if verdict.retry_recommended and rules is not None and rules.max_retries > 0:
            # A server's Retry-After wins, within the policy's longest delay (a bogus
            # header must not schedule the retry for next century).
            wait = rules.initial_delay
            if verdict.retry_after is not None:
                wait = min(verdict.retry_after, max(rules.max_delay, rules.initial_delay))
            due = at + wait
        payload = capture(
            exc,
            args=args,
            kwargs=kwargs,
            traceback_text=traceback_text,
            notes=(verdict.evidence,),
            redaction=self.redaction,
            max_bytes=self.max_payload_bytes,
        )
        record = DeadLetterRecord(
            id=new_id(at),
            task_id=task_id,
            task_name=task_name,
            args=payload.args,
            kwargs=payload.kwargs,
            failure_type=verdict.failure_type,
            confidence=verdict.confidence,
            exception_class=payload.exception_class,
            message=payload.message,
            traceback=payload.traceback,
            retry_count=retry_count,
            first_failed_at=first,
            last_failed_at=at,
            next_retry_at=due,
            status=DeadLetterStatus.PENDING,
            priority=priority,
            queue=queue,
            correlation_id=correlation_id,
            flags=payload.flags,
            history=(
                HistoryEntry(
                    at=at,
                    actor=actor,
                    action="add",
                    note=truncate_text(payload.notes[0], NOTE_BYTES)[0] or None,
                    to_status=DeadLetterStatus.PENDING,
                    task_id=task_id,
                ),
            ),
        )
        self.store.add(record)
        _log.info(
            "dead-lettered %s (%s) as %s [%s]",
            task_name,
            record.exception_class,
            record.id,
            record.failure_type.value,
        )
        return record

    # ------------------------------------------------------------------ reading

    def get(self, record_id: str) -> DeadLetterRecord | None:
        """The record with ``record_id``, or ``None``."""
        return self.store.get(record_id)

    def list(
        self,
        *,
        status: DeadLetterStatus | str | Iterable[DeadLetterStatus | str] | None = None,
        task_name: str | None = None,
        failure_type: FailureType | str | Iterable[FailureType | str] | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        text: str | None = None,
        order: DeadLetterOrder | str = DeadLetterOrder.NEWEST,
        limit: int = 50,
        after: str | None = None,
    ) -> DeadLetterPage:
        """One page of records matching every given filter.

        Args:
            status: one status or several.
            task_name: an exact task name.
            failure_type: one failure type or several.
            since: ``last_failed_at >= since`` (epoch seconds or an aware datetime).
            until: ``last_failed_at < until``.
            text: a case-insensitive substring of the message.
            order: ``NEWEST`` (last failure first) or ``REPLAY`` (priority, then age).
            limit: page size, 1..1000.
            after: the previous page's ``next_cursor``.

        Returns:
            The page; pass ``next_cursor`` back as ``after`` for the next one. Paging
            is keyset-based: records added meanwhile never shift or repeat a page.

        Raises:
            ConfigurationError: an unknown status, type or order, a bad limit,
                a naive datetime or a malformed cursor.
        """
        where = DeadLetterFilter(
            statuses=check_members(DeadLetterStatus, status, key="status"),
            task_name=task_name,
            failure_types=check_members(FailureType, failure_type, key="failure_type"),
            since=check_instant("since", since),
            until=check_instant("until", until),
            text=text or None,
        )
        sort = check_member(DeadLetterOrder, order, key="order")
        return self.store.query(
            where,
            order=sort,
            limit=check_limit(limit, key="limit", maximum=_MAX_LIMIT),
            after=after,
        )

    def replay_order(self, *, limit: int = 50) -> builtins.list[DeadLetterRecord]:
        """The next ``limit`` PENDING records in replay order: priority first, then age."""
        where = DeadLetterFilter(statuses=PENDING)
        page = self.store.query(
            where,
            order=DeadLetterOrder.REPLAY,
            limit=check_limit(limit, key="limit", maximum=_MAX_LIMIT),
        )
        return builtins.list(page.records)

    def summary(
        self, *, hours: int = 24, top: int = 10, now: float | None = None
    ) -> DeadLetterSummary:
        """Counts by status and type, top tasks, mean retries, failures per hour.

        One pass over every record (meant for dashboards, not hot paths).

        Args:
            hours: how many clock hours ``failures_per_hour`` covers (1..8760).
            top: how many tasks ``top_tasks`` lists (1..1000).
            now: the time the summary describes (default: the clock's).

        Raises:
            ConfigurationError: ``hours`` or ``top`` out of range or not an int.
        """
        return summarise(
            self.store,
            hours=check_limit(hours, key="hours", maximum=24 * 365),
            top=check_limit(top, key="top", maximum=_MAX_LIMIT),
            now=self._now(now),
        )

    # ------------------------------------------------------------------ actions

    def retry(
        self, record_id: str, *, actor: str, note: str | None = None, now: float | None = None
    ) -> DeadLetterRecord:
        """Re-enqueue one PENDING (or stale RETRYING) record through the ``replay`` callable.

        The record moves to RETRYING by compare-and-set *before* the task is
        enqueued, so of two concurrent retries exactly one enqueues. If ``replay``
        raises, the record goes back to PENDING (with the error in its history) and
        the error propagates: a failed retry is never lost.

        A RETRYING record whose replay has not reported back within
        ``replay_lease`` (its message was lost, or the worker did not know the
        task) is stale: retrying it takes it over (a ``take_over`` history entry
        says so) and replays it again. A RETRYING record within its lease is
        refused: its replay may still run.

        Args:
            record_id: the record.
            actor: who retries (for the history).
            note: a free-text note.
            now: the current time (default: the clock's).

        Returns:
            The record, RETRYING, with the new task id in its last history entry.

        Raises:
            DeadLetterConflict: the record is not PENDING nor stale RETRYING (or
                does not exist).
            ConfigurationError: no ``replay`` callable was configured.
        """
        replay = self._replay()
        check_text("actor", actor)
        at = self._now(now)
        claimed = self._ledger.claim(record_id, actor=actor, note=note, at=at)
        return self._ledger.enqueue(claimed, replay, actor=actor, at=at)

    def bulk_retry(
        self,
        *,
        ids: Iterable[str] | None = None,
        where: DeadLetterFilter | None = None,
        actor: str,
        note: str | None = None,
        now: float | None = None,
    ) -> BulkResult:
        """Retry many records: the given ids, the records matching a filter, or both.

        Records are retried in replay order, a page at a time, each with its own
        compare-and-set, so a concurrent retry of the same record enqueues once.
        A filter without ``statuses`` selects PENDING records only; a selected
        RETRYING record is taken over when stale (see :meth:`retry`), else skipped.

        Args:
            ids: the records to retry.
            where: a filter; with ``ids`` too, a record must satisfy both.
            actor: who retries.
            note: a note for every record's history.
            now: the current time (default: the clock's).

        Returns:
            The retried ids and the skipped ones with reasons.

        Raises:
            ConfigurationError: neither ``ids`` nor ``where`` given (a retry of
                everything must be asked for with an explicit filter), or no
                ``replay`` callable.
        """
        replay = self._replay()
        check_text("actor", actor)
        if ids is None and where is None:
            raise ConfigurationError(
                "bulk_retry needs ids= or where= (use where=DeadLetterFilter() "
                "to retry every PENDING record)",
                key="ids",
            )
        at = self._now(now)
        retried: builtins.list[str] = []
        skipped: dict[str, str] = {}

        def attempt(record: DeadLetterRecord) -> None:
            reason = self._ledger.attempt(record, replay=replay, actor=actor, note=note, at=at)
            if reason is None:
                retried.append(record.id)
            else:
                skipped[record.id] = reason

        base = where if where is not None else DeadLetterFilter()
        if ids is None:
            if base.statuses is None:
                base = replace(base, statuses=PENDING)
            for record in scan(self.store, base, DeadLetterOrder.REPLAY):
                attempt(record)
        else:
            wanted = builtins.list(dict.fromkeys(ids))
            missing = "does not match the filter" if where is not None else "not found"
            for start in range(0, len(wanted), PAGE):
                chunk = wanted[start : start + PAGE]
                selected = frozenset(chunk) if base.ids is None else frozenset(chunk) & base.ids
                seen: set[str] = set()
                for record in scan(self.store, replace(base, ids=selected), DeadLetterOrder.REPLAY):
                    seen.add(record.id)
                    attempt(record)
                skipped.update((record_id, missing) for record_id in chunk if record_id not in seen)
        return BulkResult(retried=tuple(retried), skipped=MappingProxyType(skipped))

    def process_due(self, now: float | None = None, *, limit: int = 1000) -> builtins.list[str]:
        """Retry PENDING records whose ``next_retry_at`` has come, and stale RETRYING ones.

        Meant to be called periodically (the Celery layer schedules it). Records go
        in replay order (priority, then age). A RETRYING record whose replay has not
        reported back within ``replay_lease`` is taken over and replayed again (see
        :meth:`retry`). A record whose replay raises goes back to PENDING with its
        automatic retry deferred by :data:`REPLAY_FAILURE_DELAY`; the others are
        still tried.

        Args:
            now: the current time (default: the clock's).
            limit: the most records attempted in this call (1..100000).

        Returns:
            The ids re-enqueued, in order.

        Raises:
            ConfigurationError: no ``replay`` callable, or a bad limit.
        """
        replay = self._replay()
        at = self._now(now)
        budget = check_limit(limit, key="limit", maximum=100_000)
        retried: builtins.list[str] = []
        ledger = self._ledger
        order = DeadLetterOrder.REPLAY
        due = scan(self.store, DeadLetterFilter(statuses=PENDING, due_by=at), order)
        retrying = scan(self.store, DeadLetterFilter(statuses=RETRYING), order)
        stale = (record for record in retrying if ledger.stale(record, at))
        records = heapq.merge(due, stale, key=_replay_position)
        for attempted, record in enumerate(records, 1):
            reason = ledger.attempt(
                record,
                replay=replay,
                actor="process_due",
                # A takeover's own entry says why.
                note=_DUE_NOTE if record.status is DeadLetterStatus.PENDING else None,
                at=at,
            )
            if reason is None:
                retried.append(record.id)
            if attempted >= budget:
                break
        return retried

    def resolve(
        self, record_id: str, *, actor: str, note: str | None = None, now: float | None = None
    ) -> DeadLetterRecord:
        """Mark a PENDING or RETRYING record RESOLVED (fixed, or its replay succeeded).

        Raises:
            DeadLetterConflict: the record is RESOLVED or ABANDONED already, or gone.
        """
        check_text("actor", actor)
        return self._ledger.change(
            record_id,
            allowed=_ACTIVE,
            to_status=DeadLetterStatus.RESOLVED,
            action="resolve",
            actor=actor,
            note=note,
            at=self._now(now),
            changes=lambda _: {"next_retry_at": None},
        )

    def abandon(
        self, record_id: str, *, actor: str, reason: str, now: float | None = None
    ) -> DeadLetterRecord:
        """Give up on a PENDING or RETRYING record; ``reason`` is kept in its history.

        Raises:
            DeadLetterConflict: the record is RESOLVED or ABANDONED already, or gone.
            ConfigurationError: an empty reason.
        """
        check_text("actor", actor)
        check_text("reason", reason)
        return self._ledger.change(
            record_id,
            allowed=_ACTIVE,
            to_status=DeadLetterStatus.ABANDONED,
            action="abandon",
            actor=actor,
            note=reason,
            at=self._now(now),
            changes=lambda _: {"next_retry_at": None},
        )

    def record_retry_failed(
        self,
        record_id: str,
        *,
        exc: BaseException,
        actor: str = "worker",
        traceback_text: str | None = None,
        classification: Classification | None = None,
        policy: RetryPolicy | None = None,
        now: float | None = None,
    ) -> DeadLetterRecord:
        """Report that a replayed run failed again: RETRYING -> PENDING.

        ``retry_count`` grows by one; the failure fields (type, message, traceback)
        describe the new failure (scrubbed by the redaction patterns); the next
        automatic retry is ``now + policy.delay(retry_count)`` with the policy of
        the new failure's type (``policy_for(type)``), or none once that policy's
        ``max_retries`` is spent or the type is not retryable.

        Args:
            record_id: the record that was replayed.
            exc: the replayed run's exception.
            actor: who reports it.
            traceback_text: an already formatted traceback to store instead.
            classification: the verdict, when the caller has it; else ``classify(exc)``.
            policy: the retry policy of the new failure, when the caller knows a
                more specific one (the task's own); default ``policy_for(type)``.
            now: the current time (default: the clock's).

        Raises:
            DeadLetterConflict: the record is not RETRYING (or gone).
        """
        check_text("actor", actor)
        _check_policy(policy)
        at = self._now(now)
        verdict = classify(exc) if classification is None else classification
        rules = self._policy(verdict.failure_type) if policy is None else policy
        payload = capture(
            exc,
            args=(),
            kwargs=None,
            traceback_text=traceback_text,
            notes=(),
            redaction=self.redaction,
            max_bytes=self.max_payload_bytes,
        )

        def changes(current: DeadLetterRecord) -> dict[str, Any]:
            count = current.retry_count + 1
            due = None
            if verdict.retry_recommended and rules is not None and rules.allows(count):
                due = at + rules.delay(count)
            return {
                "retry_count": count,
                "last_failed_at": at,
                "next_retry_at": due,
                "failure_type": verdict.failure_type,
                "confidence": verdict.confidence,
                "exception_class": payload.exception_class,
                "message": payload.message,
                "traceback": payload.traceback,
                "flags": tuple(f for f in FLAG_ORDER if f in {*current.flags, *payload.flags}),
            }

        return self._ledger.change(
            record_id,
            allowed=RETRYING,
            to_status=DeadLetterStatus.PENDING,
            action="retry_failed",
            actor=actor,
            note=truncate_text(f"{payload.exception_class}: {payload.message}", NOTE_BYTES)[0],
            at=at,
            changes=changes,
        )

    def purge(
        self,
        *,
        older_than: float | timedelta,
        statuses: Iterable[DeadLetterStatus | str] = (
            DeadLetterStatus.RESOLVED,
            DeadLetterStatus.ABANDONED,
        ),
        now: float | None = None,
    ) -> int:
        """Delete records in ``statuses`` whose last activity is older than ``older_than``.

        A record's last activity is the later of its last failure and its last
        history entry, so a record resolved today is kept for the whole retention
        period even if it first failed long ago.

        Args:
            older_than: the retention period (seconds or a ``timedelta``, >= 0).
            statuses: which statuses may be purged (default: RESOLVED, ABANDONED).
            now: the current time (default: the clock's).

        Returns:
            How many records were deleted.

        Raises:
            ConfigurationError: a negative or non-finite period, or an unknown status.
        """
        age = check_duration("older_than", older_than)
        states = check_members(DeadLetterStatus, statuses, key="statuses")
        if not states:
            raise ConfigurationError("statuses must name at least one status", key="statuses")
        cutoff = self._now(now) - age
        purged = 0
        doomed: builtins.list[str] = []
        candidates = DeadLetterFilter(statuses=states, until=cutoff)
        for record in scan(self.store, candidates, DeadLetterOrder.NEWEST):
            last = max([record.last_failed_at, *(entry.at for entry in record.history)])
            if last < cutoff:
                doomed.append(record.id)
            if len(doomed) >= PAGE:
                purged += self.store.purge(DeadLetterFilter(ids=frozenset(doomed), statuses=states))
                doomed.clear()
        if doomed:
            purged += self.store.purge(DeadLetterFilter(ids=frozenset(doomed), statuses=states))
        return purged

    # ------------------------------------------------------------------ internals

    def _now(self, now: float | None) -> float:
        return self.clock.time() if now is None else check_finite("now", now)

    def _policy(self, failure_type: FailureType) -> RetryPolicy | None:
        """The policy automatic retries of ``failure_type`` follow; ``None`` if the lookup fails.

        A dead letter must be stored even when a custom lookup breaks: it then
        gets no automatic retry (an operator decides) and the error is logged.
        """
        if self.policy_for is None:
            return default_policy(failure_type)
        try:
            found: object = self.policy_for(failure_type)
        except Exception:  # noqa: BLE001 - the record must be stored all the same
            _log.exception("policy_for(%s) raised: no automatic retry", failure_type.value)
            return None
        if not isinstance(found, RetryPolicy):
            _log.error(
                "policy_for(%s) returned %r, not a RetryPolicy: no automatic retry",
                failure_type.value,
                found,
            )
            return None
        return found

    def _replay(self) -> Replay:
        if self.replay is None:
            raise ConfigurationError(
                "this DeadLetterQueue has no replay callable; pass replay= to re-enqueue tasks",
                key="replay",
            )
        return self.replay

    def __repr__(self) -> str:
        return f"DeadLetterQueue(store={self.store!r})"


def _replay_position(record: DeadLetterRecord) -> tuple[Any, ...]:
    return sort_key(DeadLetterOrder.REPLAY, record)


def _check_policy(policy: object) -> None:
    if policy is not None and not isinstance(policy, RetryPolicy):
        raise ConfigurationError(
            f"policy must be a RetryPolicy or None, got {policy!r}", key="policy", value=policy
        )

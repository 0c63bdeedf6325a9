"""Records of the idempotency, dead-letter and outcome roles, and the DLQ query vocabulary.

Every record is a frozen dataclass that round-trips through JSON-compatible dicts
(``to_dict``/``from_dict``), which is what the shared backends store. Times are
wall-clock seconds since the epoch, passed in by the caller (``now=``), so a
fake clock drives TTLs and leases on every backend alike.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, NoReturn

from resilience.errors import ConfigurationError
from resilience.taxonomy import FailureType

__all__ = [
    "MAX_KEY_LENGTH",
    "Acquisition",
    "DeadLetterFilter",
    "DeadLetterOrder",
    "DeadLetterPage",
    "DeadLetterRecord",
    "DeadLetterStatus",
    "HistoryEntry",
    "IdempotencyRecord",
    "IdempotencyState",
    "OutcomeCounts",
    "decode_cursor",
    "encode_cursor",
    "sort_key",
]

MAX_KEY_LENGTH = 200
"""The longest key any backend is given; longer keys are hashed by the caller, never cut."""


def _reject(record: str, key: str, value: object, why: str) -> NoReturn:
    raise ConfigurationError(f"{record}.{key} {why}, got {value!r}", key=key, value=value)


# --------------------------------------------------------------------------- idempotency


class IdempotencyState(StrEnum):
    """Where one idempotency key stands."""

    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    """The stored state of one idempotency key.

    Attributes:
        key: the key (at most :data:`MAX_KEY_LENGTH` characters).
        state: in progress, completed or failed.
        fingerprint: SHA-256 of the canonical payload that claimed the key; the
            same key with another payload is a mismatch, not a duplicate.
        token: the fencing token, one higher on every successful acquire of the
            key; only the holder of the current token may complete or release it.
        lease_until: while in progress, when the owner's lease ends (a crashed
            worker's key can be taken over after it); ``None`` otherwise.
        expires_at: when the record stops counting (the key's TTL).
        result: the JSON text of the result, once completed.
        created_at: when the key was first claimed.
        updated_at: when the record last changed.
    """

    key: str
    state: IdempotencyState
    fingerprint: str
    token: int
    lease_until: float | None
    expires_at: float
    result: str | None = None
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict of every field."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdempotencyRecord:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigurationError: a missing or malformed field (``key`` names it).
        """
        try:
            return cls(
                key=str(data["key"]),
                state=IdempotencyState(data["state"]),
                fingerprint=str(data["fingerprint"]),
                token=int(data["token"]),
                lease_until=None if data["lease_until"] is None else float(data["lease_until"]),
                expires_at=float(data["expires_at"]),
                result=data.get("result"),
                created_at=float(data["created_at"]),
                updated_at=float(data["updated_at"]),
            )
        except KeyError as exc:
            _reject("IdempotencyRecord", str(exc.args[0]), None, "is missing")
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"IdempotencyRecord is malformed: {exc}", key="record", value=data
            ) from exc

    def live(self, now: float) -> bool:
        """Whether the record still counts at ``now`` (its TTL has not passed)."""
        return self.expires_at > now

    def lease_remaining(self, now: float) -> float:
        """Seconds left on an in-progress lease (0 when none or expired)."""
        if self.state is not IdempotencyState.IN_PROGRESS or self.lease_until is None:
            return 0.0
        return max(0.0, self.lease_until - now)


@dataclass(frozen=True, slots=True, kw_only=True)
class Acquisition:
    """What an acquire attempt found.

    Attributes:
        acquired: ``True`` if the caller now owns the key (``record.token`` is theirs).
        record: the key's record after the attempt: the caller's new in-progress
            record, or the live record that stopped the claim (completed, in
            progress under another lease, or claimed with another fingerprint).
    """

    acquired: bool
    record: IdempotencyRecord


# --------------------------------------------------------------------------- dead letters


class DeadLetterStatus(StrEnum):
    """Where a dead letter stands; ``value == name``."""

    PENDING = "PENDING"
    RETRYING = "RETRYING"
    RESOLVED = "RESOLVED"
    ABANDONED = "ABANDONED"


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    """One operator (or automatic) action on a dead letter; history is append-only.

    Attributes:
        at: when it happened.
        actor: who did it (a user name, ``"process_due"``, ``"celery"``).
        action: what was done (``"add"``, ``"retry"``, ``"abandon"``, ``"resolve"``...).
        note: a free-text reason.
        from_status: the status before.
        to_status: the status after.
        task_id: the task id of a re-enqueued run, when the action enqueued one.
    """

    at: float
    actor: str
    action: str
    note: str | None = None
    from_status: DeadLetterStatus | None = None
    to_status: DeadLetterStatus | None = None
    task_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "note": self.note,
            "from_status": None if self.from_status is None else self.from_status.value,
            "to_status": None if self.to_status is None else self.to_status.value,
            "task_id": self.task_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryEntry:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            at=float(data["at"]),
            actor=str(data["actor"]),
            action=str(data["action"]),
            note=data.get("note"),
            from_status=_status_or_none(data.get("from_status")),
            to_status=_status_or_none(data.get("to_status")),
            task_id=data.get("task_id"),
        )


def _status_or_none(value: object) -> DeadLetterStatus | None:
    return None if value is None else DeadLetterStatus(str(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterRecord:
    """A task run that failed for good (or for now), kept for an operator or a replay.

    Attributes:
        id: unique, assigned on add.
        task_id: the Celery task id of the failed run, when there was one.
        task_name: the task's registered name.
        args: positional arguments as JSON data (non-JSON values as tagged reprs).
        kwargs: keyword arguments as JSON data, secrets redacted.
        failure_type: the taxonomy's verdict.
        confidence: the verdict's confidence.
        exception_class: qualified class name of the exception.
        message: the exception message (secrets scrubbed, size-capped).
        traceback: the formatted traceback including the cause chain.
        retry_count: retries made before the task was dead-lettered.
        first_failed_at: when it first failed.
        last_failed_at: when it last failed.
        next_retry_at: when an automatic retry is due (transient types), else ``None``.
        status: pending, retrying, resolved or abandoned.
        priority: replay priority, higher first (0..9, Celery's range).
        queue: the queue the task ran on.
        correlation_id: the caller's correlation id, for tracing.
        flags: markers about the payload (``"non_json"``, ``"truncated"``, ``"redacted"``).
        history: append-only operator actions, oldest first.
        version: bumped on every write; the compare-and-set key.
    """

    id: str
    task_id: str | None = None
    task_name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    failure_type: FailureType = FailureType.UNKNOWN
    confidence: float = 0.0
    exception_class: str = ""
    message: str = ""
    traceback: str = ""
    retry_count: int = 0
    first_failed_at: float
    last_failed_at: float
    next_retry_at: float | None = None
    status: DeadLetterStatus = DeadLetterStatus.PENDING
    priority: int = 0
    queue: str | None = None
    correlation_id: str | None = None
    flags: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict of every field."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["failure_type"] = self.failure_type.value
        data["status"] = self.status.value
        data["flags"] = list(self.flags)
        data["history"] = [entry.to_dict() for entry in self.history]
        return data

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeadLetterRecord:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigurationError: a missing or malformed field (``key`` names it).
        """
        try:
            return cls(
                id=str(data["id"]),
                task_id=data.get("task_id"),
                task_name=str(data["task_name"]),
                args=list(data.get("args") or []),
                kwargs=dict(data.get("kwargs") or {}),
                failure_type=FailureType(data["failure_type"]),
                confidence=float(data["confidence"]),
                exception_class=str(data["exception_class"]),
                message=str(data["message"]),
                traceback=str(data["traceback"]),
                retry_count=int(data["retry_count"]),
                first_failed_at=float(data["first_failed_at"]),
                last_failed_at=float(data["last_failed_at"]),
                next_retry_at=(
                    None if data.get("next_retry_at") is None else float(data["next_retry_at"])
                ),
                status=DeadLetterStatus(data["status"]),
                priority=int(data.get("priority") or 0),
                queue=data.get("queue"),
                correlation_id=data.get("correlation_id"),
                flags=tuple(data.get("flags") or ()),
                history=tuple(HistoryEntry.from_dict(e) for e in data.get("history") or ()),
                version=int(data["version"]),
            )
        except KeyError as exc:
            _reject("DeadLetterRecord", str(exc.args[0]), None, "is missing")
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"DeadLetterRecord is malformed: {exc}", key="record", value=data.get("id")
            ) from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetterRecord:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def with_action(self, entry: HistoryEntry, **changes: Any) -> DeadLetterRecord:
        """A new version of this record with ``entry`` appended and ``changes`` applied.

        The version is bumped by one: pass the result to ``compare_and_set`` with
        this record's version.
        """
        return replace(self, history=(*self.history, entry), version=self.version + 1, **changes)


class DeadLetterOrder(StrEnum):
    """How a query sorts dead letters; each order is total (ties broken by id)."""

    NEWEST = "newest"
    """Most recent failure first: ``last_failed_at`` descending, then ``id`` descending."""

    REPLAY = "replay"
    """Replay order: ``priority`` descending, then oldest first failure, then ``id``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterFilter:
    """Which dead letters a query, a count, a bulk action or a purge applies to.

    Every given criterion must hold (AND); ``None`` means "any".

    Attributes:
        ids: only these ids.
        statuses: only these statuses.
        task_name: only this task (exact name).
        failure_types: only these failure types.
        since: ``last_failed_at >= since``.
        until: ``last_failed_at < until``.
        text: case-insensitive substring of the message.
        due_by: ``next_retry_at`` set and ``<= due_by`` (automatic retries that are due).
    """

    ids: frozenset[str] | None = None
    statuses: frozenset[DeadLetterStatus] | None = None
    task_name: str | None = None
    failure_types: frozenset[FailureType] | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    due_by: float | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        """Whether ``record`` passes every criterion (the reference for all backends)."""
        return (
            (self.ids is None or record.id in self.ids)
            and (self.statuses is None or record.status in self.statuses)
            and (self.task_name is None or record.task_name == self.task_name)
            and (self.failure_types is None or record.failure_type in self.failure_types)
            and (self.since is None or record.last_failed_at >= self.since)
            and (self.until is None or record.last_failed_at < self.until)
            and (self.text is None or self.text.casefold() in record.message.casefold())
            and (
                self.due_by is None
                or (record.next_retry_at is not None and record.next_retry_at <= self.due_by)
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterPage:
    """One page of a query.

    Attributes:
        records: the records, in the query's order.
        next_cursor: pass it as ``after=`` for the next page; ``None`` on the last page.
    """

    records: tuple[DeadLetterRecord, ...]
    next_cursor: str | None


def sort_key(order: DeadLetterOrder, record: DeadLetterRecord) -> tuple[Any, ...]:
    """The ascending sort key of ``record`` in ``order`` (Python-side backends sort by it)."""
    if order is DeadLetterOrder.NEWEST:
        return (-record.last_failed_at, _inverted(record.id))
    return (-record.priority, record.first_failed_at, record.id)


def _inverted(text: str) -> tuple[int, ...]:
    # Sorting ascending by this sorts ``text`` descending (ids are ASCII).
    return (*(-ord(ch) for ch in text), 1)


def encode_cursor(order: DeadLetterOrder, record: DeadLetterRecord) -> str:
    """An opaque cursor that resumes ``order`` right after ``record``."""
    if order is DeadLetterOrder.NEWEST:
        position: list[Any] = [order.value, record.last_failed_at, record.id]
    else:
        position = [order.value, record.priority, record.first_failed_at, record.id]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(order: DeadLetterOrder, cursor: str) -> tuple[Any, ...]:
    """Decode a cursor into the position it resumes after.

    Returns:
        ``(last_failed_at, id)`` for NEWEST, ``(priority, first_failed_at, id)`` for REPLAY.

    Raises:
        ConfigurationError: a cursor that is malformed or belongs to another order.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        same_order = position[0] == order.value
        values = tuple(position[1:])
        if order is DeadLetterOrder.NEWEST:
            decoded: tuple[Any, ...] = (float(values[0]), str(values[1]))
        else:
            decoded = (int(values[0]), float(values[1]), str(values[2]))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ConfigurationError(
            f"invalid dead-letter cursor {cursor!r} for order {order.value!r}: {exc}",
            key="after",
            value=cursor,
        ) from exc
    if not same_order:
        raise ConfigurationError(
            f"dead-letter cursor {cursor!r} belongs to order {position[0]!r}, not {order.value!r}",
            key="after",
            value=cursor,
        )
    return decoded


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeCounts:
    """Retry outcomes of one (task, failure type) over a window."""

    successes: int = 0
    failures: int = 0

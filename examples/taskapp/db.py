"""The example app's domain in SQLite: jobs, tickets, escalations, PPM schedules, emails, reports.

Every write a task makes is idempotent by construction: a unique constraint on the
business key plus ``INSERT ... ON CONFLICT DO NOTHING`` (or a guarded ``UPDATE``),
so a redelivered or replayed task finds its own earlier effect instead of doing it
twice. Times are stored as ISO-8601 UTC text.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = [
    "SCHEMA",
    "EmailRecord",
    "JobKind",
    "JobStatus",
    "NotFoundError",
    "PpmSchedule",
    "Report",
    "ReportSchedule",
    "Ticket",
    "TicketStatus",
    "add_escalation",
    "close_completed_job",
    "connect",
    "email_sent",
    "find_report",
    "get_ppm_schedule",
    "get_report",
    "get_ticket",
    "init_db",
    "insert_ppm_job",
    "iso",
    "job_status",
    "parse_date",
    "record_email",
    "record_report",
    "report_schedules",
    "transaction",
]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS ppm_schedules (
    id INTEGER PRIMARY KEY,
    asset TEXT NOT NULL,
    title TEXT NOT NULL,
    frequency_days INTEGER NOT NULL CHECK (frequency_days > 0),
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('reactive', 'ppm')),
    title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'completed', 'closed')),
    ppm_schedule_id INTEGER REFERENCES ppm_schedules (id),
    due_date TEXT,
    created_at TEXT NOT NULL,
    closed_at TEXT,
    -- One maintenance job per schedule occurrence, however often the task runs.
    UNIQUE (ppm_schedule_id, due_date)
);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    due_at TEXT NOT NULL,
    assignee_email TEXT NOT NULL,
    escalation_level INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS escalations (
    id INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL REFERENCES tickets (id),
    level INTEGER NOT NULL CHECK (level > 0),
    escalated_at TEXT NOT NULL,
    UNIQUE (ticket_id, level)
);
CREATE TABLE IF NOT EXISTS emails_sent (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS report_schedules (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    recipients TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    schedule_id INTEGER NOT NULL REFERENCES report_schedules (id),
    report_date TEXT NOT NULL,
    document_id TEXT NOT NULL,
    checksum TEXT NOT NULL,
    generated_at TEXT NOT NULL,
    UNIQUE (schedule_id, report_date)
);
"""


class JobKind(StrEnum):
    """Where a job came from."""

    REACTIVE = "reactive"
    PPM = "ppm"


class JobStatus(StrEnum):
    """A job's life cycle; only a completed job may be closed."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CLOSED = "closed"


class TicketStatus(StrEnum):
    """Whether a ticket still needs attention."""

    OPEN = "open"
    RESOLVED = "resolved"


class NotFoundError(LookupError):
    """A task named a row that does not exist: permanent, retrying cannot help.

    The arguments are positional because Celery rebuilds a failed task's exception
    from its ``args`` (``NotFoundError(*exc.args)``) when it reads the result back.

    Args:
        table: the table searched.
        key: the id looked up.

    Attributes:
        table: the table searched.
        key: the id looked up.
    """

    def __init__(self, table: str, key: object) -> None:
        super().__init__(table, key)
        self.table = table
        self.key = key

    def __str__(self) -> str:
        return f"{self.table} {self.key!r} not found"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    """A help-desk ticket with a resolution deadline."""

    id: int
    subject: str
    status: TicketStatus
    due_at: datetime
    assignee_email: str
    escalation_level: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PpmSchedule:
    """A planned-preventive-maintenance schedule for one asset."""

    id: int
    asset: str
    title: str
    frequency_days: int
    active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSchedule:
    """A report rendered every day and mailed to its recipients."""

    id: int
    name: str
    recipients: tuple[str, ...]
    active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """One rendered occurrence of a scheduled report."""

    id: int
    schedule_id: int
    report_date: str
    document_id: str
    checksum: str
    generated_at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailRecord:
    """An email the app sent, keyed by the request that sent it."""

    idempotency_key: str
    kind: str
    recipient: str
    subject: str
    message_id: str
    sent_at: str


def iso(moment: datetime | float) -> str:
    """``moment`` (an aware datetime or epoch seconds) as ISO-8601 UTC text.

    Args:
        moment: the instant to format.

    Returns:
        e.g. ``"2025-10-01T09:00:00+00:00"``.
    """
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat()
    return datetime.fromtimestamp(moment, tz=UTC).isoformat()


def connect(db_path: str | Path) -> sqlite3.Connection:
    """Open the database in autocommit mode with rows addressable by column name.

    Worker processes share the file, so writers wait for the lock (``busy_timeout``)
    instead of failing at once; a lock held longer still surfaces as
    ``sqlite3.OperationalError("database is locked")``, a transient failure.

    Args:
        db_path: the SQLite file.

    Returns:
        A connection; close it when done (or use :func:`transaction`).
    """
    conn = sqlite3.connect(db_path, timeout=10.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def transaction(db_path: str | Path) -> Iterator[sqlite3.Connection]:
    """A connection inside one write transaction, committed on success, rolled back on error.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so a read-then-write inside
    the block cannot interleave with another process's write.

    Args:
        db_path: the SQLite file.

    Yields:
        The connection.
    """
    conn = connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


def init_db(db_path: str | Path) -> None:
    """Create the domain tables if they do not exist (safe to call repeatedly).

    Args:
        db_path: the SQLite file; created when missing.
    """
    conn = connect(db_path)
    try:
        # WAL lets readers in other worker processes proceed while one writes.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
    finally:
        conn.close()


def job_status(conn: sqlite3.Connection, job_id: int) -> JobStatus:
    """The status of job ``job_id``.

    Raises:
        NotFoundError: no such job.
    """
    row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(table="jobs", key=job_id)
    return JobStatus(row["status"])


def close_completed_job(conn: sqlite3.Connection, *, job_id: int, closed_at: str) -> bool:
    """Close job ``job_id`` if its work is completed.

    The guard in the ``WHERE`` clause makes a second run a no-op: a closed job is no
    longer ``completed``, and its ``closed_at`` keeps the first run's time.

    Args:
        conn: an open connection.
        job_id: the job.
        closed_at: ISO time to record.

    Returns:
        ``True`` if this call closed the job, ``False`` if it was not completed (or
        already closed).

    Raises:
        NotFoundError: no such job.
    """
    cursor = conn.execute(
        "UPDATE jobs SET status = 'closed', closed_at = ? WHERE id = ? AND status = 'completed'",
        (closed_at, job_id),
    )
    if cursor.rowcount == 1:
        return True
    job_status(conn, job_id)  # raises NotFoundError for a missing job
    return False


def get_ticket(conn: sqlite3.Connection, ticket_id: int) -> Ticket:
    """Ticket ``ticket_id``.

    Raises:
        NotFoundError: no such ticket.
    """
    row = conn.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
    if row is None:
        raise NotFoundError(table="tickets", key=ticket_id)
    return Ticket(
        id=row["id"],
        subject=row["subject"],
        status=TicketStatus(row["status"]),
        due_at=datetime.fromisoformat(row["due_at"]),
        assignee_email=row["assignee_email"],
        escalation_level=row["escalation_level"],
    )


def add_escalation(
    conn: sqlite3.Connection, *, ticket_id: int, level: int, escalated_at: str
) -> bool:
    """Record that ``ticket_id`` reached escalation ``level`` (once per level).

    Args:
        conn: an open connection.
        ticket_id: the ticket.
        level: 1 or more.
        escalated_at: ISO time to record.

    Returns:
        ``True`` if this call inserted the level, ``False`` if it was already there.
    """
    cursor = conn.execute(
        "INSERT INTO escalations (ticket_id, level, escalated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (ticket_id, level) DO NOTHING",
        (ticket_id, level, escalated_at),
    )
    # MAX keeps the level monotonic when runs for different levels race.
    conn.execute(
        "UPDATE tickets SET escalation_level = MAX(escalation_level, ?) WHERE id = ?",
        (level, ticket_id),
    )
    return cursor.rowcount == 1


def get_ppm_schedule(conn: sqlite3.Connection, schedule_id: int) -> PpmSchedule:
    """PPM schedule ``schedule_id``.

    Raises:
        NotFoundError: no such schedule.
    """
    row = conn.execute("SELECT * FROM ppm_schedules WHERE id = ?", (schedule_id,)).fetchone()
    if row is None:
        raise NotFoundError(table="ppm_schedules", key=schedule_id)
    return PpmSchedule(
        id=row["id"],
        asset=row["asset"],
        title=row["title"],
        frequency_days=row["frequency_days"],
        active=bool(row["active"]),
    )


def insert_ppm_job(
    conn: sqlite3.Connection, *, schedule: PpmSchedule, due_date: str, created_at: str
) -> tuple[int, bool]:
    """The job for ``schedule``'s occurrence on ``due_date``, created if it does not exist.

    Args:
        conn: an open connection.
        schedule: the schedule.
        due_date: ``YYYY-MM-DD``.
        created_at: ISO time to record for a new job.

    Returns:
        ``(job_id, created)``.
    """
    cursor = conn.execute(
        "INSERT INTO jobs (kind, title, status, ppm_schedule_id, due_date, created_at)"
        " VALUES ('ppm', ?, 'open', ?, ?, ?)"
        " ON CONFLICT (ppm_schedule_id, due_date) DO NOTHING",
        (f"{schedule.title} ({schedule.asset})", schedule.id, due_date, created_at),
    )
    created = cursor.rowcount == 1
    row = conn.execute(
        "SELECT id FROM jobs WHERE ppm_schedule_id = ? AND due_date = ?",
        (schedule.id, due_date),
    ).fetchone()
    return int(row["id"]), created


def email_sent(conn: sqlite3.Connection, idempotency_key: str) -> EmailRecord | None:
    """The email sent for ``idempotency_key``, or ``None`` if none was recorded."""
    row = conn.execute(
        "SELECT * FROM emails_sent WHERE idempotency_key = ?", (idempotency_key,)
    ).fetchone()
    if row is None:
        return None
    return EmailRecord(
        idempotency_key=row["idempotency_key"],
        kind=row["kind"],
        recipient=row["recipient"],
        subject=row["subject"],
        message_id=row["message_id"],
        sent_at=row["sent_at"],
    )


def record_email(conn: sqlite3.Connection, record: EmailRecord) -> bool:
    """Record a sent email once per idempotency key.

    Returns:
        ``True`` if this call recorded it, ``False`` if the key was already there.
    """
    cursor = conn.execute(
        "INSERT INTO emails_sent (idempotency_key, kind, recipient, subject, message_id, sent_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
        (
            record.idempotency_key,
            record.kind,
            record.recipient,
            record.subject,
            record.message_id,
            record.sent_at,
        ),
    )
    return cursor.rowcount == 1


def report_schedules(conn: sqlite3.Connection) -> list[ReportSchedule]:
    """The active report schedules, by id."""
    rows = conn.execute("SELECT * FROM report_schedules WHERE active = 1 ORDER BY id").fetchall()
    return [
        ReportSchedule(
            id=row["id"],
            name=row["name"],
            recipients=tuple(json.loads(row["recipients"])),
            active=True,
        )
        for row in rows
    ]


def _report(row: sqlite3.Row) -> Report:
    return Report(
        id=row["id"],
        schedule_id=row["schedule_id"],
        report_date=row["report_date"],
        document_id=row["document_id"],
        checksum=row["checksum"],
        generated_at=row["generated_at"],
    )


def find_report(conn: sqlite3.Connection, *, schedule_id: int, report_date: str) -> Report | None:
    """The report rendered for ``schedule_id`` on ``report_date``, or ``None``."""
    row = conn.execute(
        "SELECT * FROM reports WHERE schedule_id = ? AND report_date = ?",
        (schedule_id, report_date),
    ).fetchone()
    return None if row is None else _report(row)


def get_report(conn: sqlite3.Connection, report_id: int) -> Report:
    """Rendered report ``report_id``.

    Raises:
        NotFoundError: no such report.
    """
    row = conn.execute("SELECT * FROM reports WHERE id = ?", (report_id,)).fetchone()
    if row is None:
        raise NotFoundError(table="reports", key=report_id)
    return _report(row)


def record_report(
    conn: sqlite3.Connection,
    *,
    schedule_id: int,
    report_date: str,
    document_id: str,
    checksum: str,
    generated_at: str,
) -> Report:
    """Record the rendered report for ``(schedule_id, report_date)`` once.

    Returns:
        The stored report: this call's, or the one an earlier run stored.
    """
    conn.execute(
        "INSERT INTO reports (schedule_id, report_date, document_id, checksum, generated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (schedule_id, report_date) DO NOTHING",
        (schedule_id, report_date, document_id, checksum, generated_at),
    )
    found = find_report(conn, schedule_id=schedule_id, report_date=report_date)
    if found is None:  # pragma: no cover - the row was inserted or already present
        raise NotFoundError(table="reports", key=(schedule_id, report_date))
    return found


def parse_date(value: str, *, name: str) -> str:
    """``value`` checked as a ``YYYY-MM-DD`` date and returned in that form.

    Raises:
        ValueError: not a date (a permanent failure: the message names the argument).
    """
    try:
        return date.fromisoformat(value).isoformat()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a YYYY-MM-DD date, got {value!r}") from exc

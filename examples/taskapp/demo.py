"""Deterministic demo data for the example app: :func:`seed`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from examples.taskapp.db import JobStatus, TicketStatus, init_db, iso, transaction

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DEMO_NOW", "SeedSummary", "seed"]

# A fixed "now" for the demo data, so seeded databases are identical run to run.
DEMO_NOW: Final = datetime(2025, 10, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedSummary:
    """The ids of the demo rows :func:`seed` created, for scenarios to refer to."""

    completed_job_ids: tuple[int, ...]
    open_job_ids: tuple[int, ...]
    overdue_ticket_ids: tuple[int, ...]
    resolved_ticket_ids: tuple[int, ...]
    bad_address_ticket_ids: tuple[int, ...]
    ppm_schedule_ids: tuple[int, ...]
    report_schedule_ids: tuple[int, ...]
    today: str


def seed(db_path: str | Path, *, now: datetime = DEMO_NOW) -> SeedSummary:
    """Create the tables and a small, deterministic demo data set.

    Seeding an already seeded file adds a second copy of the rows; seed a fresh file.

    Args:
        db_path: the SQLite file.
        now: the demo's "now"; ticket deadlines and dates are placed around it.

    Returns:
        The ids of what was created.
    """
    init_db(db_path)
    created = iso(now - timedelta(days=3))
    today = now.date().isoformat()
    with transaction(db_path) as conn:

        def insert(sql: str, params: tuple[object, ...]) -> int:
            row_id = conn.execute(sql, params).lastrowid
            assert row_id is not None  # noqa: S101 - an INSERT always sets it
            return row_id

        job_sql = "INSERT INTO jobs (kind, title, status, created_at) VALUES ('reactive', ?, ?, ?)"
        completed = tuple(
            insert(job_sql, (title, JobStatus.COMPLETED, created))
            for title in ("Replace lobby light", "Unblock kitchen drain", "Fix door closer")
        )
        still_open = tuple(
            insert(job_sql, (title, status, created))
            for title, status in (
                ("Repaint stairwell", JobStatus.OPEN),
                ("Service lift 2", JobStatus.IN_PROGRESS),
            )
        )
        ticket_sql = (
            "INSERT INTO tickets (subject, status, due_at, assignee_email) VALUES (?, ?, ?, ?)"
        )
        overdue = tuple(
            insert(ticket_sql, (subject, TicketStatus.OPEN, iso(now - late), email))
            for subject, late, email in (
                ("No heating on floor 3", timedelta(hours=2), "facilities@example.com"),
                ("Leaking roof, block B", timedelta(hours=30), "roofing@example.com"),
            )
        )
        resolved = (
            insert(
                ticket_sql,
                (
                    "Flickering light",
                    TicketStatus.RESOLVED,
                    iso(now - timedelta(hours=5)),
                    "ops@example.com",
                ),
            ),
        )
        # An unusable address: the mail API rejects it, a permanent failure.
        bad_address = (
            insert(
                ticket_sql,
                ("Broken window", TicketStatus.OPEN, iso(now - timedelta(hours=1)), "nobody"),
            ),
        )
        schedule_sql = (
            "INSERT INTO ppm_schedules (asset, title, frequency_days, active) VALUES (?, ?, ?, ?)"
        )
        schedules = tuple(
            insert(schedule_sql, params)
            for params in (
                ("Boiler 1", "Annual boiler service", 365, 1),
                ("Fire alarm panel", "Monthly fire alarm test", 30, 1),
                ("Chiller", "Quarterly chiller inspection", 90, 1),
            )
        )
        report_sql = "INSERT INTO report_schedules (name, recipients, active) VALUES (?, ?, 1)"
        reports = tuple(
            insert(report_sql, (name, json.dumps(recipients)))
            for name, recipients in (
                ("Daily open tickets", ["manager@example.com", "ops@example.com"]),
                ("Daily completed jobs", ["manager@example.com"]),
            )
        )
    return SeedSummary(
        completed_job_ids=completed,
        open_job_ids=still_open,
        overdue_ticket_ids=overdue,
        resolved_ticket_ids=resolved,
        bad_address_ticket_ids=bad_address,
        ppm_schedule_ids=schedules,
        report_schedule_ids=reports,
        today=today,
    )

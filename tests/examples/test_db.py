"""The example app's SQLite domain: every write is idempotent by its business key."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

from examples.taskapp import db
from examples.taskapp.demo import DEMO_NOW, seed
from resilience import FailureType, classify

if TYPE_CHECKING:
    from pathlib import Path

    from examples.taskapp.demo import SeedSummary


def _count(db_path: str, sql: str, *params: object) -> int:
    conn = db.connect(db_path)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


def test_init_db_can_run_twice(db_path: str) -> None:
    """Creating the schema on an existing database changes nothing and does not fail."""
    db.init_db(db_path)
    db.init_db(db_path)
    with closing(db.connect(db_path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    tables = {row[0] for row in rows}
    assert {
        "jobs",
        "tickets",
        "escalations",
        "ppm_schedules",
        "emails_sent",
        "report_schedules",
        "reports",
    } <= tables


def test_seed_is_deterministic(tmp_path: Path) -> None:
    """Two seeded files hold exactly the same rows."""
    first, second = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    assert seed(first) == seed(second)
    with closing(sqlite3.connect(first)) as conn_a, closing(sqlite3.connect(second)) as conn_b:
        dump_a, dump_b = list(conn_a.iterdump()), list(conn_b.iterdump())
    assert dump_a == dump_b


def test_seed_places_tickets_around_now(db_path: str, demo: SeedSummary) -> None:
    """Overdue tickets are open and past due; the resolved one is resolved."""
    with closing(db.connect(db_path)) as conn:
        overdue = [db.get_ticket(conn, ticket_id) for ticket_id in demo.overdue_ticket_ids]
        resolved = db.get_ticket(conn, demo.resolved_ticket_ids[0])
    assert all(ticket.status is db.TicketStatus.OPEN for ticket in overdue)
    assert all(ticket.due_at < DEMO_NOW for ticket in overdue)
    assert resolved.status is db.TicketStatus.RESOLVED
    assert demo.today == "2025-10-01"


def test_close_completed_job_closes_once(db_path: str, demo: SeedSummary) -> None:
    """The first close wins; a second one is a no-op that keeps the first closed_at."""
    job_id = demo.completed_job_ids[0]
    with db.transaction(db_path) as conn:
        assert db.close_completed_job(conn, job_id=job_id, closed_at="first") is True
    with db.transaction(db_path) as conn:
        assert db.close_completed_job(conn, job_id=job_id, closed_at="second") is False
        assert db.job_status(conn, job_id) is db.JobStatus.CLOSED
        closed_at = conn.execute("SELECT closed_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert closed_at[0] == "first"


def test_close_completed_job_leaves_unfinished_work_open(db_path: str, demo: SeedSummary) -> None:
    """A job that is open or in progress is not closed."""
    with db.transaction(db_path) as conn:
        for job_id in demo.open_job_ids:
            assert db.close_completed_job(conn, job_id=job_id, closed_at="now") is False
            assert db.job_status(conn, job_id) is not db.JobStatus.CLOSED


def test_missing_rows_raise_a_permanent_not_found(db_path: str, demo: SeedSummary) -> None:
    """A missing id raises NotFoundError naming table and key, classified as not retryable."""
    del demo
    with closing(db.connect(db_path)) as conn:
        with pytest.raises(db.NotFoundError) as caught:
            db.close_completed_job(conn, job_id=999, closed_at="now")
        for lookup in (db.get_ticket, db.get_ppm_schedule, db.get_report):
            with pytest.raises(db.NotFoundError):
                lookup(conn, 999)
    assert (caught.value.table, caught.value.key) == ("jobs", 999)
    classification = classify(caught.value)
    assert classification.failure_type is FailureType.PERMANENT_NOT_FOUND
    assert classification.retry_recommended is False


def test_escalation_is_recorded_once_per_level(db_path: str, demo: SeedSummary) -> None:
    """The same level twice is one row; the ticket's level never goes down."""
    ticket_id = demo.overdue_ticket_ids[0]
    with db.transaction(db_path) as conn:
        assert db.add_escalation(conn, ticket_id=ticket_id, level=2, escalated_at="t1") is True
        assert db.add_escalation(conn, ticket_id=ticket_id, level=2, escalated_at="t2") is False
        assert db.add_escalation(conn, ticket_id=ticket_id, level=1, escalated_at="t3") is True
        assert db.get_ticket(conn, ticket_id).escalation_level == 2
    assert _count(db_path, "SELECT COUNT(*) FROM escalations WHERE ticket_id = ?", ticket_id) == 2


def test_ppm_job_is_unique_per_occurrence(db_path: str, demo: SeedSummary) -> None:
    """One job per (schedule, due date): a repeat returns the same id, not a new job."""
    with db.transaction(db_path) as conn:
        schedule = db.get_ppm_schedule(conn, demo.ppm_schedule_ids[0])
        first = db.insert_ppm_job(conn, schedule=schedule, due_date="2025-10-02", created_at="t")
        again = db.insert_ppm_job(conn, schedule=schedule, due_date="2025-10-02", created_at="t")
        other = db.insert_ppm_job(conn, schedule=schedule, due_date="2026-10-02", created_at="t")
    assert first[1] is True
    assert again == (first[0], False)
    assert other[0] != first[0]
    assert other[1] is True


def test_email_is_recorded_once_per_key(db_path: str, demo: SeedSummary) -> None:
    """A second record with the same key is ignored and the first one is kept."""
    del demo
    record = db.EmailRecord(
        idempotency_key="reminder:1:2025-10-01",
        kind="reminder",
        recipient="a@example.com",
        subject="s",
        message_id="msg-1",
        sent_at="t",
    )
    with db.transaction(db_path) as conn:
        assert db.record_email(conn, record) is True
        assert db.record_email(conn, record) is False
        assert db.email_sent(conn, record.idempotency_key) == record
        assert db.email_sent(conn, "reminder:2:2025-10-01") is None


def test_record_report_returns_the_first_rendering(db_path: str, demo: SeedSummary) -> None:
    """Recording a report twice keeps the first document and returns it."""
    schedule_id = demo.report_schedule_ids[0]
    with db.transaction(db_path) as conn:
        first = db.record_report(
            conn,
            schedule_id=schedule_id,
            report_date="2025-10-01",
            document_id="doc-a",
            checksum="c",
            generated_at="t",
        )
        again = db.record_report(
            conn,
            schedule_id=schedule_id,
            report_date="2025-10-01",
            document_id="doc-b",
            checksum="c",
            generated_at="t",
        )
        assert db.get_report(conn, first.id) == first
    assert again == first
    assert first.document_id == "doc-a"


def test_transaction_rolls_back_on_error(db_path: str, demo: SeedSummary) -> None:
    """A failing block leaves no partial write behind."""
    job_id = demo.completed_job_ids[0]

    def close_then_fail() -> None:
        with db.transaction(db_path) as conn:
            db.close_completed_job(conn, job_id=job_id, closed_at="now")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        close_then_fail()
    with closing(db.connect(db_path)) as conn:
        assert db.job_status(conn, job_id) is db.JobStatus.COMPLETED


@pytest.mark.parametrize("bad", ["2025-13-01", "tomorrow", ""])
def test_parse_date_rejects_non_dates_permanently(bad: str) -> None:
    """A malformed date raises ValueError naming the argument, classified as validation."""
    with pytest.raises(ValueError, match="due_date must be a YYYY-MM-DD date") as caught:
        db.parse_date(bad, name="due_date")
    assert classify(caught.value).failure_type is FailureType.PERMANENT_VALIDATION


def test_iso_formats_datetimes_and_epochs_alike() -> None:
    """An aware datetime and its epoch seconds give the same UTC text."""
    assert db.iso(DEMO_NOW) == db.iso(DEMO_NOW.timestamp()) == "2025-10-01T09:00:00+00:00"

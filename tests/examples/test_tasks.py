"""The six task bodies as plain functions: each side effect happens once per business key."""

from __future__ import annotations

from contextlib import closing
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.taskapp import db, external, tasks
from examples.taskapp.demo import DEMO_NOW
from examples.taskapp.external import FailureMode, MailAPI, ReportAPI, Service, ServiceError
from examples.taskapp.tasks import TaskContext
from resilience import FailureType, classify
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from examples.taskapp.demo import SeedSummary
    from resilience.clock import FakeClock


def _rows(db_path: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with closing(db.connect(db_path)) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


def _emails(db_path: str) -> list[tuple[object, ...]]:
    return _rows(db_path, "SELECT idempotency_key, recipient FROM emails_sent ORDER BY id")


def test_context_refuses_an_empty_db_path() -> None:
    """A context without a database is a configuration error naming db_path."""
    with pytest.raises(ConfigurationError) as caught:
        TaskContext(db_path="")
    assert caught.value.key == "db_path"


def test_task_names_and_options_cover_the_six_tasks() -> None:
    """Every task has options, acks late and redelivers when its worker dies."""
    assert set(tasks.TASK_OPTIONS) == set(tasks.TASK_NAMES)
    assert len(tasks.TASK_NAMES) == 6
    for name, options in tasks.TASK_OPTIONS.items():
        assert options["acks_late"] is True, name
        assert options["reject_on_worker_lost"] is True, name
    mail_tasks = {tasks.SEND_REMINDER_EMAIL, tasks.SEND_GENERATED_REPORT_ON_MAIL}
    assert all(tasks.TASK_OPTIONS[name]["breaker"] == "mail-api" for name in mail_tasks)
    assert tasks.TASK_OPTIONS[tasks.CREATE_SCHEDULED_REPORTS]["breaker"] == "report-api"
    # A per-ticket key would swallow the next level's escalation for the key's TTL.
    assert "idempotency_key" not in tasks.TASK_OPTIONS[tasks.TICKET_ESCALATION]


def test_autoclose_closes_a_completed_job_once(
    ctx: TaskContext, demo: SeedSummary, clock: FakeClock
) -> None:
    """The first run closes the job at the clock's time; a repeat changes nothing."""
    job_id = demo.completed_job_ids[0]
    first = tasks.autoclose_job(ctx, job_id=job_id)
    clock.advance(60)
    again = tasks.autoclose_job(ctx, job_id=job_id)
    assert first == {"job_id": job_id, "closed": True, "status": "closed"}
    assert again == {"job_id": job_id, "closed": False, "status": "closed"}
    closed_at = _rows(ctx.db_path, "SELECT closed_at FROM jobs WHERE id = ?", job_id)
    assert closed_at == [(db.iso(DEMO_NOW),)]


def test_autoclose_leaves_unfinished_jobs_open(ctx: TaskContext, demo: SeedSummary) -> None:
    """A job still open or in progress is reported and left as it is."""
    results = [tasks.autoclose_job(ctx, job_id=job_id) for job_id in demo.open_job_ids]
    assert [(r["closed"], r["status"]) for r in results] == [
        (False, "open"),
        (False, "in_progress"),
    ]


def test_autoclose_of_a_missing_job_is_permanent(ctx: TaskContext) -> None:
    """A job id that does not exist fails with a not-found error, not retried."""
    with pytest.raises(db.NotFoundError) as caught:
        tasks.autoclose_job(ctx, job_id=404)
    assert classify(caught.value).retry_recommended is False


@given(
    overdue=st.integers(min_value=-(10**6), max_value=10**7),
    later=st.integers(min_value=0, max_value=10**7),
)
def test_escalation_level_only_grows_and_stays_within_three(overdue: int, later: int) -> None:
    """The level is 0 before the deadline, at most 3, and never drops as time passes."""
    due = DEMO_NOW
    now = due + timedelta(seconds=overdue)
    level = tasks.escalation_level(due_at=due, now=now)
    assert 0 <= level <= len(tasks.ESCALATION_STEPS)
    assert (level == 0) == (overdue <= 0)
    assert tasks.escalation_level(due_at=due, now=now + timedelta(seconds=later)) >= level


def test_escalation_levels_follow_the_steps() -> None:
    """Due 1 s ago is level 1, 4 h is level 2, 24 h is level 3."""
    due = DEMO_NOW
    for overdue, level in [(1, 1), (4 * 3600 - 1, 1), (4 * 3600, 2), (24 * 3600, 3), (10**7, 3)]:
        assert tasks.escalation_level(due_at=due, now=due + timedelta(seconds=overdue)) == level


def test_escalation_happens_once_per_level(
    ctx: TaskContext, demo: SeedSummary, clock: FakeClock
) -> None:
    """Repeats add no row and no email; a later level adds one of each."""
    ticket_id = demo.overdue_ticket_ids[0]  # 2 h overdue at DEMO_NOW
    first = tasks.ticket_escalation(ctx, ticket_id=ticket_id)
    again = tasks.ticket_escalation(ctx, ticket_id=ticket_id)
    assert (first["level"], first["escalated"]) == (1, True)
    assert (again["level"], again["escalated"]) == (1, False)
    assert again["message_id"] == first["message_id"]
    clock.advance(timedelta(hours=2))
    later = tasks.ticket_escalation(ctx, ticket_id=ticket_id)
    assert (later["level"], later["escalated"]) == (2, True)
    levels = _rows(ctx.db_path, "SELECT level FROM escalations WHERE ticket_id = ?", ticket_id)
    assert levels == [(1,), (2,)]
    assert [key for key, _ in _emails(ctx.db_path)] == [
        f"escalation:{ticket_id}:1",
        f"escalation:{ticket_id}:2",
    ]
    assert [m.requests for m in MailAPI(db_path=ctx.db_path).outbox()] == [1, 1]


def test_escalation_skips_resolved_tickets(ctx: TaskContext, demo: SeedSummary) -> None:
    """A resolved ticket is not escalated and nobody is mailed."""
    result = tasks.ticket_escalation(ctx, ticket_id=demo.resolved_ticket_ids[0])
    assert result == {
        "ticket_id": demo.resolved_ticket_ids[0],
        "level": 0,
        "escalated": False,
        "message_id": None,
    }
    assert _rows(ctx.db_path, "SELECT * FROM escalations") == []
    assert _emails(ctx.db_path) == []


def test_escalation_retried_after_a_mail_outage_mails_once(
    ctx: TaskContext, demo: SeedSummary
) -> None:
    """The row survives the failed notification; the retry mails without a second row."""
    ticket_id = demo.overdue_ticket_ids[1]  # 30 h overdue: level 3
    external.set_failure(ctx.db_path, service=Service.MAIL, mode=FailureMode.UNAVAILABLE)
    with pytest.raises(ServiceError):
        tasks.ticket_escalation(ctx, ticket_id=ticket_id)
    result = tasks.ticket_escalation(ctx, ticket_id=ticket_id)
    assert (result["level"], result["escalated"]) == (3, False)
    assert _rows(ctx.db_path, "SELECT level FROM escalations") == [(3,)]
    assert len(_emails(ctx.db_path)) == 1


def test_escalation_to_a_bad_address_fails_permanently(ctx: TaskContext, demo: SeedSummary) -> None:
    """The mail API rejects the assignee's address: a validation failure for the DLQ."""
    with pytest.raises(ServiceError) as caught:
        tasks.ticket_escalation(ctx, ticket_id=demo.bad_address_ticket_ids[0])
    assert classify(caught.value).failure_type is FailureType.PERMANENT_VALIDATION
    assert _emails(ctx.db_path) == []


def test_ppm_job_is_created_once_per_occurrence(ctx: TaskContext, demo: SeedSummary) -> None:
    """A repeat returns the same job; the next occurrence gets its own job."""
    schedule_id = demo.ppm_schedule_ids[1]
    first = tasks.create_ppm_job(ctx, schedule_id=schedule_id, due_date="2025-10-31")
    again = tasks.create_ppm_job(ctx, schedule_id=schedule_id, due_date="2025-10-31")
    following = tasks.create_ppm_job(ctx, schedule_id=schedule_id, due_date="2025-11-30")
    assert first["created"] is True
    assert again == {"job_id": first["job_id"], "created": False}
    assert following["created"] is True
    rows = _rows(
        ctx.db_path,
        "SELECT kind, status, due_date FROM jobs WHERE ppm_schedule_id = ? ORDER BY id",
        schedule_id,
    )
    assert rows == [("ppm", "open", "2025-10-31"), ("ppm", "open", "2025-11-30")]


def test_ppm_job_for_an_inactive_schedule_is_skipped(ctx: TaskContext, demo: SeedSummary) -> None:
    """A deactivated schedule creates no job."""
    schedule_id = demo.ppm_schedule_ids[0]
    with db.transaction(ctx.db_path) as conn:
        conn.execute("UPDATE ppm_schedules SET active = 0 WHERE id = ?", (schedule_id,))
    result = tasks.create_ppm_job(ctx, schedule_id=schedule_id, due_date="2025-10-31")
    assert result == {"job_id": None, "created": False}
    assert _rows(ctx.db_path, "SELECT id FROM jobs WHERE ppm_schedule_id = ?", schedule_id) == []


def test_ppm_job_with_a_bad_date_is_a_validation_failure(
    ctx: TaskContext, demo: SeedSummary
) -> None:
    """A malformed due date fails before any write, classified as validation."""
    with pytest.raises(ValueError, match="due_date") as caught:
        tasks.create_ppm_job(ctx, schedule_id=demo.ppm_schedule_ids[0], due_date="31/10/2025")
    assert classify(caught.value).failure_type is FailureType.PERMANENT_VALIDATION
    assert _rows(ctx.db_path, "SELECT id FROM jobs WHERE kind = 'ppm'") == []


def test_reminder_is_sent_once(ctx: TaskContext, demo: SeedSummary) -> None:
    """A repeated reminder returns the first message id without calling the mail API."""
    ticket_id = demo.overdue_ticket_ids[0]
    first = tasks.send_reminder_email(ctx, ticket_id=ticket_id, due_date="2025-10-01")
    again = tasks.send_reminder_email(ctx, ticket_id=ticket_id, due_date="2025-10-01")
    assert first["sent"] is True
    assert again == {"ticket_id": ticket_id, "message_id": first["message_id"], "sent": False}
    outbox = MailAPI(db_path=ctx.db_path).outbox()
    assert [(m.idempotency_key, m.requests) for m in outbox] == [
        (f"reminder:{ticket_id}:2025-10-01", 1)
    ]
    assert outbox[0].recipient == "facilities@example.com"
    assert _emails(ctx.db_path) == [(f"reminder:{ticket_id}:2025-10-01", "facilities@example.com")]


def test_reminder_whose_answer_was_lost_is_delivered_once(
    ctx: TaskContext, demo: SeedSummary
) -> None:
    """The provider sent it but the answer timed out: the retry adds no second email."""
    ticket_id = demo.overdue_ticket_ids[0]
    external.set_failure(ctx.db_path, service=Service.MAIL, mode=FailureMode.TIMEOUT_AFTER_DELIVERY)
    with pytest.raises(TimeoutError):
        tasks.send_reminder_email(ctx, ticket_id=ticket_id, due_date="2025-10-01")
    assert _emails(ctx.db_path) == []  # the app never learnt it was sent
    result = tasks.send_reminder_email(ctx, ticket_id=ticket_id, due_date="2025-10-01")
    assert result["sent"] is True
    outbox = MailAPI(db_path=ctx.db_path).outbox()
    assert [m.requests for m in outbox] == [2]
    assert outbox[0].message_id == result["message_id"]
    assert len(_emails(ctx.db_path)) == 1


def test_reminder_for_a_resolved_ticket_sends_nothing(ctx: TaskContext, demo: SeedSummary) -> None:
    """Nobody is reminded about a ticket already resolved."""
    result = tasks.send_reminder_email(
        ctx, ticket_id=demo.resolved_ticket_ids[0], due_date="2025-10-01"
    )
    assert result["sent"] is False
    assert result["message_id"] is None
    assert MailAPI(db_path=ctx.db_path).outbox() == []


def test_reminders_for_other_due_dates_are_other_emails(
    ctx: TaskContext, demo: SeedSummary
) -> None:
    """The key is (ticket, due date): a new deadline gets its own reminder."""
    ticket_id = demo.overdue_ticket_ids[0]
    tasks.send_reminder_email(ctx, ticket_id=ticket_id, due_date="2025-10-01")
    tasks.send_reminder_email(ctx, ticket_id=ticket_id, due_date="2025-10-08")
    assert len(MailAPI(db_path=ctx.db_path).outbox()) == 2


def test_scheduled_reports_render_once_and_fan_out(
    ctx: TaskContext, demo: SeedSummary, fanned_out: list[tuple[int, str]]
) -> None:
    """Each active schedule is rendered once per day; every run fans out every recipient."""
    first = tasks.create_scheduled_reports(ctx, report_date="2025-10-01")
    again = tasks.create_scheduled_reports(ctx, report_date="2025-10-01")
    assert first["rendered"] == 2
    assert again["rendered"] == 0
    assert again["report_ids"] == first["report_ids"]
    assert first["mails_enqueued"] == again["mails_enqueued"] == 3
    daily, jobs = first["report_ids"]
    expected = [
        (daily, "manager@example.com"),
        (daily, "ops@example.com"),
        (jobs, "manager@example.com"),
    ]
    assert fanned_out == expected * 2
    documents = ReportAPI(db_path=ctx.db_path).documents()
    assert [d.requests for d in documents] == [1, 1]
    schedules = _rows(ctx.db_path, "SELECT schedule_id FROM reports ORDER BY id")
    assert schedules == [(schedule_id,) for schedule_id in demo.report_schedule_ids]


def test_scheduled_reports_resume_after_a_failure_midway(
    ctx: TaskContext, fanned_out: list[tuple[int, str]]
) -> None:
    """A run failing on the second report keeps the first; the retry renders only the second."""
    calls = 0
    original = ReportAPI.render

    def fail_second(self: ReportAPI, **kwargs: str) -> external.RenderedDocument:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise external.ServiceError("boom", service=Service.REPORTS, status_code=503)
        return original(self, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(external.ReportAPI, "render", fail_second)
        with pytest.raises(ServiceError):
            tasks.create_scheduled_reports(ctx, report_date="2025-10-01")
        assert len(_rows(ctx.db_path, "SELECT id FROM reports")) == 1
        result = tasks.create_scheduled_reports(ctx, report_date="2025-10-01")
    assert result["rendered"] == 1
    assert len(result["report_ids"]) == 2
    assert [d.requests for d in ReportAPI(db_path=ctx.db_path).documents()] == [1, 1]
    assert len(fanned_out) == 2 + 3  # the failed run fanned out its first report


def test_scheduled_reports_without_a_fan_out_send_nothing(db_path: str, demo: SeedSummary) -> None:
    """A context with no enqueue callable renders but enqueues no mail."""
    del demo
    result = tasks.create_scheduled_reports(TaskContext(db_path=db_path), report_date="2025-10-01")
    assert (result["rendered"], result["mails_enqueued"]) == (2, 0)


def test_generated_report_is_mailed_once_per_recipient(
    ctx: TaskContext, fanned_out: list[tuple[int, str]]
) -> None:
    """Running every fanned-out mail twice delivers one email per (report, recipient)."""
    tasks.create_scheduled_reports(ctx, report_date="2025-10-01")
    for report_id, recipient in fanned_out * 2:
        tasks.send_generated_report_on_mail(ctx, report_id=report_id, recipient=recipient)
    outbox = MailAPI(db_path=ctx.db_path).outbox()
    assert [m.requests for m in outbox] == [1, 1, 1]
    documents = {d.document_id for d in ReportAPI(db_path=ctx.db_path).documents()}
    assert all(len(m.attachments) == 1 and m.attachments[0] in documents for m in outbox)
    assert len(_emails(ctx.db_path)) == 3


def test_generated_report_that_does_not_exist_is_permanent(ctx: TaskContext) -> None:
    """Mailing an unknown report fails with not-found before calling the mail API."""
    with pytest.raises(db.NotFoundError):
        tasks.send_generated_report_on_mail(ctx, report_id=77, recipient="a@example.com")
    assert MailAPI(db_path=ctx.db_path).outbox() == []


def test_tasks_call_the_mail_api_through_its_patchable_path(
    ctx: TaskContext, demo: SeedSummary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Patching examples.taskapp.external.MailAPI.send reaches the task's call."""
    calls: list[str] = []

    def refuse(self: MailAPI, **kwargs: object) -> str:
        calls.append(str(kwargs["idempotency_key"]))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("examples.taskapp.external.MailAPI.send", refuse)
    with pytest.raises(ConnectionRefusedError):
        tasks.send_reminder_email(ctx, ticket_id=demo.overdue_ticket_ids[0], due_date="2025-10-01")
    assert calls == [f"reminder:{demo.overdue_ticket_ids[0]}:2025-10-01"]
    assert _emails(ctx.db_path) == []

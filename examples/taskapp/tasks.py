"""The six background tasks of a facility-management app, and their resilience options.

Each task is a plain function of a :class:`TaskContext` (usable without Celery) and
is registered on a Celery app by :func:`register_tasks` with ``ResilientTask`` as
base. Two layers keep every side effect single:

1. ``resilience`` deduplicates deliveries by the task's idempotency key (a
   duplicate gets the stored result without running the body);
2. the body's own writes are idempotent by business key (unique constraints,
   ``ON CONFLICT DO NOTHING``, guarded ``UPDATE``), and calls to external services
   pass the same key, so a run interrupted after its side effect and then
   redelivered, or replayed from the dead-letter queue, finds the effect in place.

The idempotency keys below are the business keys, so both layers agree on what
"the same request" means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from examples.taskapp import db, external
from resilience.clock import Clock, system_clock
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AUTOCLOSE_JOB",
    "CREATE_PPM_JOB",
    "CREATE_SCHEDULED_REPORTS",
    "ESCALATION_STEPS",
    "SEND_GENERATED_REPORT_ON_MAIL",
    "SEND_REMINDER_EMAIL",
    "TASK_NAMES",
    "TASK_OPTIONS",
    "TICKET_ESCALATION",
    "TaskContext",
    "autoclose_job",
    "context_of",
    "create_ppm_job",
    "create_scheduled_reports",
    "escalation_level",
    "register_tasks",
    "send_generated_report_on_mail",
    "send_reminder_email",
    "ticket_escalation",
]

AUTOCLOSE_JOB: Final = "taskapp.autoclose_job"
TICKET_ESCALATION: Final = "taskapp.ticket_escalation"
CREATE_PPM_JOB: Final = "taskapp.create_ppm_job"
SEND_REMINDER_EMAIL: Final = "taskapp.send_reminder_email"
CREATE_SCHEDULED_REPORTS: Final = "taskapp.create_scheduled_reports"
SEND_GENERATED_REPORT_ON_MAIL: Final = "taskapp.send_generated_report_on_mail"
TASK_NAMES: Final = (
    AUTOCLOSE_JOB,
    TICKET_ESCALATION,
    CREATE_PPM_JOB,
    SEND_REMINDER_EMAIL,
    CREATE_SCHEDULED_REPORTS,
    SEND_GENERATED_REPORT_ON_MAIL,
)

# Overdue time at which a ticket reaches each escalation level (level = index + 1).
ESCALATION_STEPS: Final = (timedelta(0), timedelta(hours=4), timedelta(hours=24))

_AUTOCLOSE_KEY: Final = "autoclose:{job_id}"
_ESCALATION_MAIL_KEY: Final = "escalation:{ticket_id}:{level}"
_PPM_KEY: Final = "ppm:{schedule_id}:{due_date}"
_REMINDER_KEY: Final = "reminder:{ticket_id}:{due_date}"
_REPORTS_KEY: Final = "scheduled-reports:{report_date}"
_RENDER_KEY: Final = "report:{schedule_id}:{report_date}"
_REPORT_MAIL_KEY: Final = "report-mail:{report_id}:{recipient}"

# Celery options per task. Every task here is idempotent, so each acknowledges
# late and asks for redelivery when its worker dies: a killed run is repeated,
# never lost, and the repeat finds its effect in place.
_SAFE_DELIVERY: Final[Mapping[str, object]] = MappingProxyType(
    {"acks_late": True, "reject_on_worker_lost": True}
)
TASK_OPTIONS: Final[Mapping[str, Mapping[str, object]]] = MappingProxyType(
    {
        AUTOCLOSE_JOB: {
            **_SAFE_DELIVERY,
            "idempotency_key": _AUTOCLOSE_KEY,
            "resilience": {"priority": "low"},
        },
        # No task-level key: escalation runs again and again for the same ticket
        # as it gets later, and a per-ticket key would swallow the next level's run
        # for the key's whole TTL. The (ticket_id, level) constraint and the
        # per-level mail key make each level happen once.
        TICKET_ESCALATION: {
            **_SAFE_DELIVERY,
            "breaker": "mail-api",
            "resilience": {"priority": "high"},
        },
        # A missed maintenance occurrence is a compliance gap: keep its key longest.
        CREATE_PPM_JOB: {
            **_SAFE_DELIVERY,
            "idempotency_key": _PPM_KEY,
            "idempotency_category": "critical",
            "resilience": {"priority": "high"},
        },
        SEND_REMINDER_EMAIL: {
            **_SAFE_DELIVERY,
            "breaker": "mail-api",
            "idempotency_key": _REMINDER_KEY,
            "idempotency_category": "email",
            "resilience": {"priority": "low"},
        },
        # Low priority: rendering may wait for off-peak hours.
        CREATE_SCHEDULED_REPORTS: {
            **_SAFE_DELIVERY,
            "breaker": "report-api",
            "idempotency_key": _REPORTS_KEY,
            "idempotency_category": "report",
            "resilience": {"priority": "low"},
        },
        SEND_GENERATED_REPORT_ON_MAIL: {
            **_SAFE_DELIVERY,
            "breaker": "mail-api",
            "idempotency_key": _REPORT_MAIL_KEY,
            "idempotency_category": "email",
            "resilience": {"priority": "normal"},
        },
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskContext:
    """What a task body needs besides its arguments.

    Attributes:
        db_path: the app's SQLite file (domain tables and the fake providers' tables).
        clock: where "now" comes from.
        enqueue_report_mail: called with ``(report_id, recipient)`` for every mail
            :func:`create_scheduled_reports` fans out; ``None`` sends none.
        effect: called with ``(name, key)`` when a task has done a side effect (see
            :meth:`record_effect`); a scenario run sets it to count duplicates;
            ``None``: effects are not reported.
    """

    db_path: str
    clock: Clock = system_clock
    enqueue_report_mail: Callable[[int, str], object] | None = field(default=None, compare=False)
    effect: Callable[[str, str], object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.db_path, str) or not self.db_path:
            raise ConfigurationError(
                f"db_path must be a non-empty path, got {self.db_path!r}",
                key="db_path",
                value=self.db_path,
            )

    def now(self) -> datetime:
        """The clock's wall time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.clock.time(), tz=UTC)

    def record_effect(self, name: str, key: str) -> None:
        """Report a side effect this run has just committed to :attr:`effect`, if set.

        Args:
            name: what the effect is (``"escalation"``).
            key: which one (``"17:3"``); the same effect done twice has the same key.
        """
        if self.effect is not None:
            self.effect(name, key)


def escalation_level(*, due_at: datetime, now: datetime) -> int:
    """The escalation level a ticket due at ``due_at`` has reached at ``now``.

    Args:
        due_at: the ticket's deadline.
        now: the current time.

    Returns:
        0 before the deadline, then 1, 2, 3 at each step of :data:`ESCALATION_STEPS`.
    """
    overdue = now - due_at
    if overdue <= timedelta(0):
        return 0
    return sum(1 for step in ESCALATION_STEPS if overdue >= step)


def _send_once(
    ctx: TaskContext,
    *,
    key: str,
    kind: str,
    to: str,
    subject: str,
    body: str,
    attachments: tuple[str, ...] = (),
) -> tuple[str, bool]:
    """Send an email at most once per ``key``: ``(message_id, sent_by_this_call)``.

    A message the provider delivers is reported as the side effect ``("email", key)``.
    """
    conn = db.connect(ctx.db_path)
    try:
        earlier = db.email_sent(conn, key)
    finally:
        conn.close()
    if earlier is not None:
        return earlier.message_id, False

    def delivered(_message_id: str) -> None:
        # The provider put a new message in its outbox, not the first one's id again.
        ctx.record_effect("email", key)

    # A run killed between the send and the INSERT below sends again on redelivery;
    # the provider deduplicates on the same key, so the recipient gets one email.
    message_id = external.MailAPI(db_path=ctx.db_path, on_delivered=delivered).send(
        to=to, subject=subject, body=body, idempotency_key=key, attachments=attachments
    )
    record = db.EmailRecord(
        idempotency_key=key,
        kind=kind,
        recipient=to,
        subject=subject,
        message_id=message_id,
        sent_at=db.iso(ctx.now()),
    )
    with db.transaction(ctx.db_path) as conn:
        recorded = db.record_email(conn, record)
    return message_id, recorded


def autoclose_job(ctx: TaskContext, *, job_id: int) -> dict[str, Any]:
    """Close job ``job_id`` if its work is completed; a job not yet completed stays as it is.

    Args:
        ctx: the app's context.
        job_id: the job.

    Returns:
        ``{"job_id", "closed", "status"}``; ``closed`` is ``True`` only for the run
        that closed it.

    Raises:
        NotFoundError: no such job (permanent).
    """
    with db.transaction(ctx.db_path) as conn:
        closed = db.close_completed_job(conn, job_id=job_id, closed_at=db.iso(ctx.now()))
        status = db.job_status(conn, job_id)
    return {"job_id": job_id, "closed": closed, "status": str(status)}


def ticket_escalation(ctx: TaskContext, *, ticket_id: int) -> dict[str, Any]:
    """Escalate an overdue ticket to the level it has reached and notify its assignee once.

    Args:
        ctx: the app's context.
        ticket_id: the ticket.

    Returns:
        ``{"ticket_id", "level", "escalated", "message_id"}``; level 0 (nothing done)
        for a resolved ticket or one not yet due.

    Raises:
        NotFoundError: no such ticket (permanent).
        ServiceError: the mail API failed or rejected the assignee's address.
    """
    now = ctx.now()
    with db.transaction(ctx.db_path) as conn:
        ticket = db.get_ticket(conn, ticket_id)
        level = 0
        if ticket.status is db.TicketStatus.OPEN:
            level = escalation_level(due_at=ticket.due_at, now=now)
        escalated = level > 0 and db.add_escalation(
            conn, ticket_id=ticket_id, level=level, escalated_at=db.iso(now)
        )
    if escalated:
        # Committed: this run, and only this one, recorded the level.
        ctx.record_effect("escalation", f"{ticket_id}:{level}")
    if level == 0:
        return {"ticket_id": ticket_id, "level": 0, "escalated": False, "message_id": None}
    message_id, _ = _send_once(
        ctx,
        key=_ESCALATION_MAIL_KEY.format(ticket_id=ticket_id, level=level),
        kind="escalation",
        to=ticket.assignee_email,
        subject=f"Ticket #{ticket_id} escalated to level {level}",
        body=f"{ticket.subject!r} was due {db.iso(ticket.due_at)} and is still open.",
    )
    return {
        "ticket_id": ticket_id,
        "level": level,
        "escalated": escalated,
        "message_id": message_id,
    }


def create_ppm_job(ctx: TaskContext, *, schedule_id: int, due_date: str) -> dict[str, Any]:
    """Create the maintenance job for one occurrence of a PPM schedule (once per occurrence).

    Args:
        ctx: the app's context.
        schedule_id: the schedule.
        due_date: the occurrence, ``YYYY-MM-DD``.

    Returns:
        ``{"job_id", "created"}``; ``job_id`` is ``None`` for an inactive schedule.

    Raises:
        ValueError: ``due_date`` is not a date (permanent).
        NotFoundError: no such schedule (permanent).
    """
    due = db.parse_date(due_date, name="due_date")
    with db.transaction(ctx.db_path) as conn:
        schedule = db.get_ppm_schedule(conn, schedule_id)
        if not schedule.active:
            return {"job_id": None, "created": False}
        job_id, created = db.insert_ppm_job(
            conn, schedule=schedule, due_date=due, created_at=db.iso(ctx.now())
        )
    if created:
        # Committed: this run, and only this one, inserted the occurrence's job.
        ctx.record_effect("ppm_job", f"{schedule_id}:{due}")
    return {"job_id": job_id, "created": created}


def send_reminder_email(ctx: TaskContext, *, ticket_id: int, due_date: str) -> dict[str, Any]:
    """Remind a ticket's assignee that it is due, once per ``(ticket_id, due_date)``.

    Args:
        ctx: the app's context.
        ticket_id: the ticket.
        due_date: the deadline the reminder is about, ``YYYY-MM-DD``.

    Returns:
        ``{"ticket_id", "message_id", "sent"}``; no mail (``message_id`` ``None``) for
        a resolved ticket.

    Raises:
        ValueError: ``due_date`` is not a date (permanent).
        NotFoundError: no such ticket (permanent).
        ServiceError: the mail API failed or rejected the address.
    """
    due = db.parse_date(due_date, name="due_date")
    conn = db.connect(ctx.db_path)
    try:
        ticket = db.get_ticket(conn, ticket_id)
    finally:
        conn.close()
    if ticket.status is db.TicketStatus.RESOLVED:
        return {"ticket_id": ticket_id, "message_id": None, "sent": False}
    message_id, sent = _send_once(
        ctx,
        key=_REMINDER_KEY.format(ticket_id=ticket_id, due_date=due),
        kind="reminder",
        to=ticket.assignee_email,
        subject=f"Reminder: ticket #{ticket_id} is due on {due}",
        body=f"{ticket.subject!r} is due on {due}.",
    )
    return {"ticket_id": ticket_id, "message_id": message_id, "sent": sent}


def create_scheduled_reports(ctx: TaskContext, *, report_date: str) -> dict[str, Any]:
    """Render every active scheduled report for ``report_date`` and fan out their mails.

    A report already rendered for the date is not rendered again. Mails are fanned
    out for every report of the date, including earlier runs' ones, so a run killed
    between rendering and fan-out loses no mail; duplicates are absorbed by
    :func:`send_generated_report_on_mail`'s key.

    Args:
        ctx: the app's context.
        report_date: ``YYYY-MM-DD``.

    Returns:
        ``{"report_date", "report_ids", "rendered", "mails_enqueued"}``.

    Raises:
        ValueError: ``report_date`` is not a date (permanent).
        ServiceError: the report API failed.
    """
    day = db.parse_date(report_date, name="report_date")
    conn = db.connect(ctx.db_path)
    try:
        schedules = db.report_schedules(conn)
    finally:
        conn.close()
    api = external.ReportAPI(db_path=ctx.db_path)
    report_ids: list[int] = []
    rendered = enqueued = 0
    for schedule in schedules:
        conn = db.connect(ctx.db_path)
        try:
            report = db.find_report(conn, schedule_id=schedule.id, report_date=day)
        finally:
            conn.close()
        if report is None:
            document = api.render(
                name=schedule.name,
                report_date=day,
                idempotency_key=_RENDER_KEY.format(schedule_id=schedule.id, report_date=day),
            )
            with db.transaction(ctx.db_path) as conn:
                report = db.record_report(
                    conn,
                    schedule_id=schedule.id,
                    report_date=day,
                    document_id=document.document_id,
                    checksum=document.checksum,
                    generated_at=db.iso(ctx.now()),
                )
            rendered += 1
        report_ids.append(report.id)
        if ctx.enqueue_report_mail is not None:
            for recipient in schedule.recipients:
                ctx.enqueue_report_mail(report.id, recipient)
                enqueued += 1
    return {
        "report_date": day,
        "report_ids": report_ids,
        "rendered": rendered,
        "mails_enqueued": enqueued,
    }


def send_generated_report_on_mail(
    ctx: TaskContext, *, report_id: int, recipient: str
) -> dict[str, Any]:
    """Mail rendered report ``report_id`` to ``recipient``, once per pair.

    Args:
        ctx: the app's context.
        report_id: the rendered report.
        recipient: the address.

    Returns:
        ``{"report_id", "recipient", "message_id", "sent"}``.

    Raises:
        NotFoundError: no such report (permanent).
        ServiceError: the mail API failed or rejected the address.
    """
    conn = db.connect(ctx.db_path)
    try:
        report = db.get_report(conn, report_id)
    finally:
        conn.close()
    message_id, sent = _send_once(
        ctx,
        key=_REPORT_MAIL_KEY.format(report_id=report_id, recipient=recipient),
        kind="report",
        to=recipient,
        subject=f"Report #{report_id} for {report.report_date}",
        body=f"Attached: report {report.document_id} (sha256 {report.checksum[:12]}).",
        attachments=(report.document_id,),
    )
    return {"report_id": report_id, "recipient": recipient, "message_id": message_id, "sent": sent}


def context_of(app: Any) -> TaskContext:
    """The :class:`TaskContext` of Celery ``app`` (set up by ``make_app``).

    Fanned-out mails are published as ``send_generated_report_on_mail`` tasks of
    the same app. Side effects are reported to the app's ``taskchaos_effect``
    setting when it holds a callable (a scenario run sets it; see
    ``pytest_taskchaos.runner``).

    Args:
        app: a Celery app whose ``conf`` holds ``taskapp_db_path``.

    Returns:
        The context.

    Raises:
        ConfigurationError: the app has no ``taskapp_db_path``.
    """
    db_path = app.conf.get("taskapp_db_path")
    if not db_path:
        raise ConfigurationError(
            "the Celery app has no taskapp_db_path setting; build it with make_app()",
            key="taskapp_db_path",
            value=db_path,
        )
    clock = app.conf.get("taskapp_clock") or system_clock

    def enqueue(report_id: int, recipient: str) -> object:
        return app.tasks[SEND_GENERATED_REPORT_ON_MAIL].apply_async(args=(report_id, recipient))

    return TaskContext(
        db_path=str(db_path),
        clock=clock,
        enqueue_report_mail=enqueue,
        effect=app.conf.get("taskchaos_effect"),
    )


# Celery entry points: bound tasks that build the context from their app.


def _autoclose_job(self: Any, job_id: int) -> dict[str, Any]:
    """Close a job whose work is completed."""
    return autoclose_job(context_of(self.app), job_id=job_id)


def _ticket_escalation(self: Any, ticket_id: int) -> dict[str, Any]:
    """Escalate an overdue ticket and notify its assignee."""
    return ticket_escalation(context_of(self.app), ticket_id=ticket_id)


def _create_ppm_job(self: Any, schedule_id: int, due_date: str) -> dict[str, Any]:
    """Create the maintenance job for a PPM schedule occurrence."""
    return create_ppm_job(context_of(self.app), schedule_id=schedule_id, due_date=due_date)


def _send_reminder_email(self: Any, ticket_id: int, due_date: str) -> dict[str, Any]:
    """Send a ticket's due-date reminder."""
    return send_reminder_email(context_of(self.app), ticket_id=ticket_id, due_date=due_date)


def _create_scheduled_reports(self: Any, report_date: str) -> dict[str, Any]:
    """Render the day's scheduled reports and fan out their mails."""
    return create_scheduled_reports(context_of(self.app), report_date=report_date)


def _send_generated_report_on_mail(self: Any, report_id: int, recipient: str) -> dict[str, Any]:
    """Mail a rendered report to one recipient."""
    return send_generated_report_on_mail(
        context_of(self.app), report_id=report_id, recipient=recipient
    )


_BODIES: Final[Mapping[str, Callable[..., dict[str, Any]]]] = MappingProxyType(
    {
        AUTOCLOSE_JOB: _autoclose_job,
        TICKET_ESCALATION: _ticket_escalation,
        CREATE_PPM_JOB: _create_ppm_job,
        SEND_REMINDER_EMAIL: _send_reminder_email,
        CREATE_SCHEDULED_REPORTS: _create_scheduled_reports,
        SEND_GENERATED_REPORT_ON_MAIL: _send_generated_report_on_mail,
    }
)


def register_tasks(app: Any, *, base: Any) -> dict[str, Any]:
    """Register the six tasks on ``app`` with ``base`` as task class and :data:`TASK_OPTIONS`.

    Args:
        app: the Celery app.
        base: the task base class (``resilience.celery.ResilientTask``).

    Returns:
        The registered tasks by name (also reachable as ``app.tasks[name]``).
    """
    return {
        name: app.task(base=base, bind=True, name=name, **TASK_OPTIONS[name])(body)
        for name, body in _BODIES.items()
    }

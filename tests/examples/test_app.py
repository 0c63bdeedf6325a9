"""The example app on Celery: the six tasks as ResilientTasks, run through Celery's tracer."""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Any

import pytest

from examples.taskapp import db, external, tasks
from examples.taskapp.__main__ import main as cli_main
from examples.taskapp.app import make_app
from examples.taskapp.external import FailureMode, MailAPI, Service
from resilience import FailureType
from resilience.celery import ResilientTask, runtime_for
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from examples.taskapp.demo import SeedSummary
    from resilience.clock import FakeClock


def _count(db_path: str, sql: str) -> int:
    with closing(db.connect(db_path)) as conn:
        return int(conn.execute(sql).fetchone()[0])


@pytest.fixture
def app(db_path: str, demo: SeedSummary, clock: FakeClock) -> Any:
    """The app on an in-memory broker and store, over the seeded database."""
    del demo
    return make_app(broker_url="memory://", store_url="memory://", db_path=db_path, clock=clock)


@pytest.fixture
def published(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The report-mail messages the app published, instead of sending them to the broker."""
    sent: list[tuple[Any, ...]] = []

    def record(args: tuple[Any, ...] = (), **options: object) -> None:
        del options
        sent.append(tuple(args))

    monkeypatch.setattr(app.tasks[tasks.SEND_GENERATED_REPORT_ON_MAIL], "apply_async", record)
    return sent


def test_make_app_registers_the_six_tasks_as_resilient_tasks(app: Any) -> None:
    """Every task is a ResilientTask carrying its breaker, key and delivery options."""
    for name in tasks.TASK_NAMES:
        task = app.tasks[name]
        options = tasks.TASK_OPTIONS[name]
        assert isinstance(task, ResilientTask), name
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert task.breaker == options.get("breaker")
        assert task.idempotency_key == options.get("idempotency_key")
    assert app.conf.task_serializer == "json"


def test_make_app_reads_its_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without arguments the broker, backend and database come from TASKAPP_* variables."""
    monkeypatch.setenv("TASKAPP_BROKER_URL", "memory://")
    monkeypatch.setenv("TASKAPP_DB_PATH", str(tmp_path / "env.sqlite3"))
    monkeypatch.setenv("RESILIENCE_STORE_URL", "memory://")
    built = make_app()
    assert built.conf.broker_url == "memory://"
    assert built.conf.result_backend == "cache+memory://"
    assert built.conf.taskapp_db_path == str(tmp_path / "env.sqlite3")
    assert tasks.context_of(built).db_path == str(tmp_path / "env.sqlite3")


def test_a_redis_broker_is_also_the_result_backend(tmp_path: Path) -> None:
    """With a Redis broker and no backend given, results go to the same Redis."""
    built = make_app(
        broker_url="redis://localhost:6399/0", store_url="memory://", db_path=tmp_path / "x"
    )
    assert built.conf.result_backend == "redis://localhost:6399/0"


def test_the_worker_module_builds_its_app_on_first_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`celery -A examples.taskapp.app` finds `app`, built once from the environment."""
    from celery.app.utils import find_app

    from examples.taskapp import app as module

    monkeypatch.setenv("TASKAPP_BROKER_URL", "memory://")
    monkeypatch.setenv("TASKAPP_DB_PATH", str(tmp_path / "worker.sqlite3"))
    monkeypatch.setenv("RESILIENCE_STORE_URL", "memory://")
    monkeypatch.delitem(module.__dict__, "_app", raising=False)
    assert "_app" not in module.__dict__  # importing the module built nothing
    found = find_app("examples.taskapp.app")
    assert found is module.app
    assert set(tasks.TASK_NAMES) <= set(found.tasks.keys())
    assert found.conf.taskapp_db_path == str(tmp_path / "worker.sqlite3")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = module.nothing


def test_context_needs_the_database_setting() -> None:
    """An app not built by make_app is refused with the missing setting named."""
    from celery import Celery

    with pytest.raises(ConfigurationError) as caught:
        tasks.context_of(Celery("bare", broker="memory://", set_as_current=False))
    assert caught.value.key == "taskapp_db_path"


def _report_for_mail(db_path: str, demo: SeedSummary) -> tuple[Any, ...]:
    del demo
    result = tasks.create_scheduled_reports(
        tasks.TaskContext(db_path=db_path), report_date="2025-10-01"
    )
    return (result["report_ids"][0], "manager@example.com")


CASES: list[tuple[str, Callable[[str, SeedSummary], tuple[Any, ...]], str, int]] = [
    (
        tasks.AUTOCLOSE_JOB,
        lambda _, d: (d.completed_job_ids[0],),
        "SELECT COUNT(*) FROM jobs WHERE status = 'closed'",
        1,
    ),
    (
        tasks.TICKET_ESCALATION,
        lambda _, d: (d.overdue_ticket_ids[0],),
        "SELECT COUNT(*) FROM escalations",
        1,
    ),
    (
        tasks.CREATE_PPM_JOB,
        lambda _, d: (d.ppm_schedule_ids[0], "2025-11-01"),
        "SELECT COUNT(*) FROM jobs WHERE kind = 'ppm'",
        1,
    ),
    (
        tasks.SEND_REMINDER_EMAIL,
        lambda _, d: (d.overdue_ticket_ids[0], "2025-10-01"),
        "SELECT COUNT(*) FROM emails_sent",
        1,
    ),
    (
        tasks.CREATE_SCHEDULED_REPORTS,
        lambda _, d: ("2025-10-01",),
        "SELECT COUNT(*) FROM reports",
        2,
    ),
    (
        tasks.SEND_GENERATED_REPORT_ON_MAIL,
        _report_for_mail,
        "SELECT COUNT(*) FROM emails_sent",
        1,
    ),
]


@pytest.mark.parametrize(
    ("name", "arguments", "effect_sql", "effects"), CASES, ids=[case[0] for case in CASES]
)
def test_a_duplicate_delivery_leaves_one_side_effect(
    app: Any,
    db_path: str,
    demo: SeedSummary,
    published: list[tuple[Any, ...]],
    name: str,
    arguments: Callable[[str, SeedSummary], tuple[Any, ...]],
    effect_sql: str,
    effects: int,
) -> None:
    """Running a task twice with the same arguments succeeds twice with one side effect."""
    del published
    args = arguments(db_path, demo)
    first = app.tasks[name].apply(args=args)
    again = app.tasks[name].apply(args=args)
    assert first.successful(), first.traceback
    assert again.successful(), again.traceback
    assert _count(db_path, effect_sql) == effects
    assert all(m.requests == 1 for m in MailAPI(db_path=db_path).outbox())
    if "idempotency_key" in tasks.TASK_OPTIONS[name]:
        # The key answered the duplicate: the body's own second answer would differ.
        assert again.result == first.result


def test_duplicate_reminder_is_answered_by_the_key_without_running_the_body(
    app: Any, db_path: str, demo: SeedSummary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second delivery returns the stored result; the body never runs again."""
    runs: list[int] = []
    original = tasks.send_reminder_email

    def counting(ctx: tasks.TaskContext, **kwargs: Any) -> dict[str, Any]:
        runs.append(1)
        return original(ctx, **kwargs)

    monkeypatch.setattr(tasks, "send_reminder_email", counting)
    reminder = app.tasks[tasks.SEND_REMINDER_EMAIL]
    args = (demo.overdue_ticket_ids[0], "2025-10-01")
    first = reminder.apply(args=args)
    again = reminder.apply(args=args)
    assert runs == [1]
    assert first.result["sent"] is True
    assert again.result == first.result
    assert len(MailAPI(db_path=db_path).outbox()) == 1


def test_escalation_runs_again_for_the_next_level(
    app: Any, db_path: str, demo: SeedSummary, clock: FakeClock
) -> None:
    """Without a task key, a later run of the same ticket escalates it further."""
    escalate = app.tasks[tasks.TICKET_ESCALATION]
    ticket_id = demo.overdue_ticket_ids[0]
    assert escalate.apply(args=(ticket_id,)).result["level"] == 1
    clock.advance(3 * 3600)
    assert escalate.apply(args=(ticket_id,)).result["level"] == 2
    assert _count(db_path, "SELECT COUNT(*) FROM escalations") == 2
    assert _count(db_path, "SELECT COUNT(*) FROM emails_sent") == 2


def test_a_transient_mail_failure_is_retried_and_mails_once(
    app: Any, db_path: str, demo: SeedSummary
) -> None:
    """A 503 from the mail API is retried by the engine and the reminder goes out once."""
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.UNAVAILABLE, times=1)
    result = app.tasks[tasks.SEND_REMINDER_EMAIL].apply(
        args=(demo.overdue_ticket_ids[0], "2025-10-01")
    )
    assert result.successful(), result.traceback
    assert result.result["sent"] is True
    assert [m.requests for m in MailAPI(db_path=db_path).outbox()] == [1]
    assert len(runtime_for(app).dead_letters.list().records) == 0


def test_a_rejected_address_is_dead_lettered_with_its_classification(
    app: Any, db_path: str, demo: SeedSummary
) -> None:
    """A 422 is not retried: the run fails and its record holds type, args and traceback."""
    ticket_id = demo.bad_address_ticket_ids[0]
    result = app.tasks[tasks.TICKET_ESCALATION].apply(args=(ticket_id,))
    assert result.failed()
    assert isinstance(result.result, external.ServiceError)
    assert result.result.status_code == 422
    (record,) = runtime_for(app).dead_letters.list().records
    assert record.task_name == tasks.TICKET_ESCALATION
    assert record.failure_type is FailureType.PERMANENT_VALIDATION
    assert record.args == [ticket_id]
    assert record.retry_count == 0
    assert "ServiceError" in record.traceback
    assert _count(db_path, "SELECT COUNT(*) FROM emails_sent") == 0


def test_scheduled_reports_publish_one_mail_task_per_recipient(
    app: Any, published: list[tuple[Any, ...]]
) -> None:
    """The fan-out goes through Celery as send_generated_report_on_mail messages."""
    result = app.tasks[tasks.CREATE_SCHEDULED_REPORTS].apply(args=("2025-10-01",))
    assert result.successful(), result.traceback
    daily, jobs = result.result["report_ids"]
    assert published == [
        (daily, "manager@example.com"),
        (daily, "ops@example.com"),
        (jobs, "manager@example.com"),
    ]


def test_seed_command_creates_a_fresh_database_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m examples.taskapp seed` seeds a new file and refuses an existing one."""
    path = tmp_path / "cli.sqlite3"
    assert cli_main(["seed", "--db", str(path)]) == 0
    assert "seeded" in capsys.readouterr().out
    assert _count(str(path), "SELECT COUNT(*) FROM tickets") == 4
    with pytest.raises(SystemExit) as caught:
        cli_main(["seed", "--db", str(path)])
    assert caught.value.code == 2
    assert _count(str(path), "SELECT COUNT(*) FROM tickets") == 4

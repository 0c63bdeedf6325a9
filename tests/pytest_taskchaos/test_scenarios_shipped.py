"""The shipped fault scenarios pass, and fail when the resilience behaviour they guard regresses.

Every scenario under ``scenarios/`` runs with its own seed and must pass. Then a
weakened variant of each (a policy override, a missing breaker, an engine that
ignores Retry-After, no jitter) must fail the very expectation that names the
behaviour: a scenario that cannot fail proves nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import types
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from examples.taskapp import db as taskapp_db
from examples.taskapp import external
from examples.taskapp import tasks as taskapp_tasks
from examples.taskapp.scenario_app import make_scenario_app
from pytest_taskchaos.runner import ScenarioResult, run_scenario
from pytest_taskchaos.scenario import (
    RetryBudgetSettings,
    Scenario,
    ScenarioError,
    load_scenarios,
    load_scenarios_text,
)
from pytest_taskchaos.simulation import EventKind
from resilience.backoff import Jitter
from resilience.celery import ResilientTask
from resilience.engine import RetryEngine
from resilience.policy import RetryPolicy, default_policy
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    import sqlite3

SCENARIOS = Path(__file__).parents[2] / "scenarios"
NEW = (
    "deadlock-storm",
    "db-failover",
    "network-partition",
    "rate-limited-email",
    "thundering-herd",
)


def _shipped(name: str) -> Scenario:
    [scenario] = load_scenarios(SCENARIOS / f"{name}.yaml")
    return scenario


def _failed(result: ScenarioResult) -> dict[str, str]:
    return {failure.name: failure.measured for failure in result.failures}


def _with_policy(scenario: Scenario, kind: FailureType, policy: RetryPolicy) -> Scenario:
    return dataclasses.replace(scenario, policies={**scenario.policies, kind: policy})


@pytest.fixture(scope="module")
def results() -> dict[str, ScenarioResult]:
    """Each new shipped scenario, run once with its own seed."""
    return {name: run_scenario(_shipped(name)) for name in NEW}


@pytest.mark.parametrize("name", NEW)
def test_shipped_scenario_passes(name: str, results: dict[str, ScenarioResult]) -> None:
    """Each new scenario passes with its own seed, and its faults really fired."""
    result = results[name]
    assert result.passed, [failure.describe() for failure in result.failures]
    assert result.measures["faults_fired"] > 0
    assert result.measures["completion_ratio"] == 1.0


def test_shipped_scenarios_are_all_valid_and_uniquely_named() -> None:
    """The scenarios directory loads as a whole: eight scenarios, names unique across files."""
    names = sorted(scenario.name for scenario in load_scenarios(SCENARIOS))
    assert names == sorted([*NEW, "mail-outage", "missing-config", "oom-redelivery"])


# --------------------------------------------------------------------------- deadlocks


def test_deadlock_storm_retries_every_deadlock(results: dict[str, ScenarioResult]) -> None:
    """Every deadlock is retried (one retry per firing), and no message is dead-lettered."""
    measures = results["deadlock-storm"].measures
    assert measures["retries"] == measures["faults_fired"] >= 20
    assert measures["dlq_total"] == 0


def test_deadlock_storm_without_retries_fails() -> None:
    """With TRANSIENT_DATABASE not retried, deadlocked escalations are dead-lettered."""
    weakened = _with_policy(
        _shipped("deadlock-storm"), FailureType.TRANSIENT_DATABASE, RetryPolicy(max_retries=0)
    )
    failed = _failed(run_scenario(weakened))
    assert failed.keys() >= {"completion_ratio", "max_dlq"}
    assert failed["max_dlq"].endswith("(TRANSIENT_DATABASE=30)")


def test_deadlock_storm_reports_each_escalation_once(results: dict[str, ScenarioResult]) -> None:
    """Each ticket's escalation is reported as a side effect once, duplicates and retries too."""
    result = results["deadlock-storm"]
    keys = [
        event.details["key"]
        for event in result.history
        if event.kind is EventKind.SIDE_EFFECT and event.details["name"] == "escalation"
    ]
    assert len(keys) == len(set(keys)) == result.measures["tasks"] == 200
    assert result.measures["duplicate_side_effects"] == 0


_UNGUARDED_ESCALATIONS = (
    "CREATE TABLE escalations (id INTEGER PRIMARY KEY, ticket_id INTEGER NOT NULL,"
    " level INTEGER NOT NULL, escalated_at TEXT NOT NULL)"
)


def _add_escalation_unguarded(
    conn: sqlite3.Connection, *, ticket_id: int, level: int, escalated_at: str
) -> bool:
    """``db.add_escalation`` without its ``(ticket_id, level)`` guard: every run inserts."""
    cursor = conn.execute(
        "INSERT INTO escalations (ticket_id, level, escalated_at) VALUES (?, ?, ?)",
        (ticket_id, level, escalated_at),
    )
    conn.execute(
        "UPDATE tickets SET escalation_level = MAX(escalation_level, ?) WHERE id = ?",
        (level, ticket_id),
    )
    return cursor.rowcount == 1


def test_deadlock_storm_without_escalation_guard_escalates_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the (ticket_id, level) guard, duplicates and retries escalate again.

    The guard is the escalation's only duplicate protection (the task has no
    idempotency key): with the unique constraint and ON CONFLICT gone, each of
    the 20 duplicated messages, and each retry of a run deadlocked after its
    escalation committed, writes the level again, and duplicate_side_effects
    counts exactly the rows written twice.
    """
    built: list[Any] = []

    def make_app() -> Any:
        app = make_scenario_app()
        with taskapp_db.transaction(app.conf.taskapp_db_path) as conn:
            conn.execute("DROP TABLE escalations")
            conn.execute(_UNGUARDED_ESCALATIONS)
        built.append(app)
        return app

    monkeypatch.setattr(taskapp_db, "add_escalation", _add_escalation_unguarded)
    module = types.ModuleType("taskchaos_weakened_apps")
    module.make_app = make_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    weakened = dataclasses.replace(
        _shipped("deadlock-storm"), app="taskchaos_weakened_apps:make_app"
    )
    result = run_scenario(weakened)
    failed = _failed(result)
    duplicates = result.measures["duplicate_side_effects"]
    assert failed.keys() == {"duplicate_side_effects"}
    assert failed["duplicate_side_effects"].startswith(f"{duplicates} (escalation:")
    assert duplicates >= 20  # at least one per duplicated message
    [app] = built
    conn = taskapp_db.connect(app.conf.taskapp_db_path)
    try:
        rows, levels = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT ticket_id || ':' || level) FROM escalations"
        ).fetchone()
    finally:
        conn.close()
    assert (rows, levels) == (200 + duplicates, 200)


# --------------------------------------------------------------------------- oom redelivery

_OOM_TASKS = (taskapp_tasks.SEND_REMINDER_EMAIL, taskapp_tasks.CREATE_PPM_JOB)


def _side_effects(result: ScenarioResult) -> list[tuple[str, str]]:
    return [
        (event.details["name"], event.details["key"])
        for event in result.history
        if event.kind is EventKind.SIDE_EFFECT
    ]


def test_oom_redelivery_reports_each_effect_once() -> None:
    """Every reminder mail and PPM job is reported once, by the run that did it.

    A run killed after its effect reports it; its redelivery finds the effect in
    place (the sent mail, the occurrence's job) and reports nothing.
    """
    result = run_scenario(_shipped("oom-redelivery"))
    history = result.history
    effects = _side_effects(result)
    published = {
        name: len(
            {e.task_id for e in history if e.kind is EventKind.PUBLISHED and e.task_name == name}
        )
        for name in _OOM_TASKS
    }
    assert len(effects) == len(set(effects)) == result.measures["tasks"] == 200
    assert Counter(name for name, _ in effects) == {
        "email": published[taskapp_tasks.SEND_REMINDER_EMAIL],
        "ppm_job": published[taskapp_tasks.CREATE_PPM_JOB],
    }
    killed = [i for i, e in enumerate(history) if e.kind is EventKind.WORKER_LOST]
    assert len(killed) == result.measures["faults_fired"] > 0
    for index in killed:
        task_id = history[index].task_id
        reported = [
            i
            for i, e in enumerate(history)
            if e.kind is EventKind.SIDE_EFFECT and e.task_id == task_id
        ]
        assert len(reported) == 1
        assert reported[0] < index  # by the killed run, not by its redelivery
    assert result.measures["duplicate_side_effects"] == 0


_UNGUARDED_JOBS = (
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL,"
    " status TEXT NOT NULL, ppm_schedule_id INTEGER, due_date TEXT, created_at TEXT NOT NULL,"
    " closed_at TEXT)"
)


def _insert_ppm_job_unguarded(
    conn: sqlite3.Connection,
    *,
    schedule: taskapp_db.PpmSchedule,
    due_date: str,
    created_at: str,
) -> tuple[int, bool]:
    """``db.insert_ppm_job`` without its ``(schedule, due_date)`` guard: every run inserts."""
    cursor = conn.execute(
        "INSERT INTO jobs (kind, title, status, ppm_schedule_id, due_date, created_at)"
        " VALUES ('ppm', ?, 'open', ?, ?, ?)",
        (schedule.title, schedule.id, due_date, created_at),
    )
    return int(cursor.lastrowid or 0), True


def _oom_app_without_guards(monkeypatch: pytest.MonkeyPatch, *, keys: bool) -> list[Any]:
    """Make ``taskchaos_weakened_apps:make_app`` the oom-redelivery app without its body guards.

    The bodies lose their business-key idempotency: ``_send_once`` no longer finds
    the mail it sent before, the mail API gets a new request key on every call (so
    it cannot deduplicate), and PPM jobs lose their ``(schedule, due_date)``
    constraint. Without ``keys`` the two tasks also lose their idempotency keys.

    Returns:
        The list the built app is appended to.
    """
    built: list[Any] = []
    send = external.MailAPI.send
    requests = itertools.count()

    def send_without_key(self: external.MailAPI, *, idempotency_key: str, **kwargs: Any) -> str:
        return send(self, idempotency_key=f"{idempotency_key}#{next(requests)}", **kwargs)

    def make_app() -> Any:
        app = make_scenario_app()
        with taskapp_db.transaction(app.conf.taskapp_db_path) as conn:
            conn.execute("ALTER TABLE jobs RENAME TO guarded_jobs")
            conn.execute(_UNGUARDED_JOBS)
            conn.execute("INSERT INTO jobs SELECT * FROM guarded_jobs")
            conn.execute("DROP TABLE guarded_jobs")
        if not keys:
            for name in _OOM_TASKS:
                body = app.tasks[name].__wrapped__
                options = {
                    option: value
                    for option, value in taskapp_tasks.TASK_OPTIONS[name].items()
                    if not option.startswith("idempotency_")
                }
                app.tasks.unregister(name)
                app.task(base=ResilientTask, bind=True, name=name, shared=False, **options)(body)
        built.append(app)
        return app

    monkeypatch.setattr(taskapp_db, "email_sent", lambda conn, key: None)
    monkeypatch.setattr(external.MailAPI, "send", send_without_key)
    monkeypatch.setattr(taskapp_db, "insert_ppm_job", _insert_ppm_job_unguarded)
    module = types.ModuleType("taskchaos_weakened_apps")
    module.make_app = make_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return built


def _done_effects(app: Any) -> int:
    """Mails in the provider's outbox plus PPM jobs: the effects the run really did."""
    conn = taskapp_db.connect(app.conf.taskapp_db_path)
    try:
        [(mails,)] = conn.execute("SELECT COUNT(*) FROM provider_mail_outbox").fetchall()
        [(jobs,)] = conn.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'ppm'").fetchall()
    finally:
        conn.close()
    return int(mails) + int(jobs)


def test_oom_redelivery_without_idempotency_repeats_side_effects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without any idempotency every run beyond a task's first mails or inserts again.

    Keys and body guards both gone: each duplicated message and each redelivery
    after an OOM kill (the kill comes after the effect) repeats its task's effect,
    and duplicate_side_effects counts exactly the mails and jobs done twice.
    """
    built = _oom_app_without_guards(monkeypatch, keys=False)
    weakened = dataclasses.replace(
        _shipped("oom-redelivery"), app="taskchaos_weakened_apps:make_app"
    )
    result = run_scenario(weakened)
    failed = _failed(result)
    measures = result.measures
    duplicates = measures["duplicate_side_effects"]
    assert failed.keys() == {"duplicate_side_effects"}
    assert failed["duplicate_side_effects"].startswith(f"{duplicates} (")
    assert duplicates == measures["attempts"] - measures["tasks"] > measures["faults_fired"] > 0
    assert not any(e.kind is EventKind.IDEMPOTENCY for e in result.history)
    [app] = built
    assert _done_effects(app) == 200 + duplicates


def test_oom_redelivery_without_body_guards_repeats_each_killed_effect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the task keys but not the body guards, each OOM kill's effect happens twice.

    A killed run never completes its idempotency key, so the redelivery runs the
    body again: only the body's business-key guards keep the effect single. The
    duplicated messages still get the stored result from the key.
    """
    built = _oom_app_without_guards(monkeypatch, keys=True)
    weakened = dataclasses.replace(
        _shipped("oom-redelivery"), app="taskchaos_weakened_apps:make_app"
    )
    result = run_scenario(weakened)
    failed = _failed(result)
    duplicates = result.measures["duplicate_side_effects"]
    assert failed.keys() == {"duplicate_side_effects"}
    assert failed["duplicate_side_effects"].startswith(f"{duplicates} (")
    assert duplicates == result.measures["faults_fired"] > 0
    [app] = built
    assert _done_effects(app) == 200 + duplicates


# --------------------------------------------------------------------------- failover


def test_db_failover_completes_after_the_window(results: dict[str, ScenarioResult]) -> None:
    """Runs inside the failover window fail, and all of them succeed on a later retry."""
    result = results["db-failover"]
    assert result.measures["retries"] >= 100
    assert 2 <= result.measures["max_attempts_per_task"] <= 6


def test_db_failover_with_one_retry_fails() -> None:
    """One retry 30 s later is not enough for a 3-minute failover: messages are dead-lettered."""
    weakened = _with_policy(
        _shipped("db-failover"),
        FailureType.TRANSIENT_DATABASE,
        RetryPolicy(max_retries=1, initial_delay=30),
    )
    failed = _failed(run_scenario(weakened))
    assert failed.keys() >= {"completion_ratio", "max_dlq"}
    assert "TRANSIENT_DATABASE=" in failed["max_dlq"]


# --------------------------------------------------------------------------- partition


def test_network_partition_breaker_defers_instead_of_retrying(
    results: dict[str, ScenarioResult],
) -> None:
    """The breaker opens early; held-back runs are deferrals, not spent retries."""
    measures = results["network-partition"].measures
    breaker = measures["breakers"]["mail-api"]
    assert breaker["trips"] == 1
    assert breaker["final"] == "closed"
    assert measures["deferred"] > 10 * measures["retries"]


def _app_without_breaker() -> Any:
    """The scenario app with ticket_escalation registered again without its breaker."""
    app = make_scenario_app()
    name = taskapp_tasks.TICKET_ESCALATION
    body = app.tasks[name].__wrapped__
    options = dict(taskapp_tasks.TASK_OPTIONS[name])
    del options["breaker"]
    app.tasks.unregister(name)
    app.task(base=ResilientTask, bind=True, name=name, shared=False, **options)(body)
    return app


def test_network_partition_without_breaker_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the mail-api breaker, escalations spend their retries inside the partition."""
    module = types.ModuleType("taskchaos_weakened_apps")
    module.make_app = _app_without_breaker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    weakened = dataclasses.replace(
        _shipped("network-partition"), app="taskchaos_weakened_apps:make_app"
    )
    failed = _failed(run_scenario(weakened))
    assert failed.keys() >= {
        "completion_ratio",
        "max_dlq",
        "breaker[mail-api].opens_within_calls",
    }
    assert "TRANSIENT_NETWORK=" in failed["max_dlq"]
    assert failed["breaker[mail-api].opens_within_calls"].startswith("never opened")


# --------------------------------------------------------------------------- rate limits


def test_rate_limited_email_waits_retry_after(results: dict[str, ScenarioResult]) -> None:
    """Every retry after a 429 waits the server's 120 s, not the policy's 5 s."""
    assert results["rate-limited-email"].measures["min_retry_delay"] >= 120


def test_rate_limited_email_fails_when_retry_after_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An engine that honours at most 1 s of Retry-After fails min_retry_delay."""
    original = RetryEngine.__init__

    def capped(self: RetryEngine, **kwargs: Any) -> None:
        original(self, **kwargs)
        self.max_retry_after = 1.0

    monkeypatch.setattr(RetryEngine, "__init__", capped)
    failed = _failed(run_scenario(_shipped("rate-limited-email")))
    assert failed == {"min_retry_delay": "1s"}


# --------------------------------------------------------------------------- herd


def test_thundering_herd_jitter_spreads_retries(results: dict[str, ScenarioResult]) -> None:
    """1,000 retries due together are spread by jitter over many seconds, within the budget."""
    measures = results["thundering-herd"].measures
    assert measures["retries"] == 1000
    assert measures["max_retries_per_second"] <= 150
    assert measures["budget_refusals"] == 0


def test_thundering_herd_without_jitter_fails() -> None:
    """Without jitter every retry is due in the same second."""
    scenario = _shipped("thundering-herd")
    network = default_policy(FailureType.TRANSIENT_NETWORK)
    weakened = _with_policy(
        scenario, FailureType.TRANSIENT_NETWORK, dataclasses.replace(network, jitter=Jitter.NONE)
    )
    failed = _failed(run_scenario(weakened))
    assert failed == {"max_retries_per_second": "1000 (in second 60)"}


def test_thundering_herd_with_eager_retries_exceeds_the_budget() -> None:
    """Retrying every 10 s while the outage lasts 30 s asks for more retries than the budget."""
    eager = RetryPolicy(
        max_retries=5, initial_delay=10, strategy="constant", max_delay=10, jitter="none"
    )
    weakened = _with_policy(_shipped("thundering-herd"), FailureType.TRANSIENT_NETWORK, eager)
    failed = _failed(run_scenario(weakened))
    assert "retries_within_budget" in failed
    assert int(failed["retries_within_budget"].split()[0]) > 0


# --------------------------------------------------------------------------- new keys

BASE = """
name: s
app: examples.taskapp.scenario_app:make_scenario_app
tasks: [{name: taskapp.autoclose_job, kwargs: {job_id: "{n}"}}]
workload: {count: 3}
"""


def test_new_keys_load() -> None:
    """retry_budget, min_retry_delay and max_retries_per_second load with their defaults."""
    text = BASE + (
        "retry_budget: {ratio: 0.5, window: 2m}\n"
        "expect: {min_retry_delay: 90s, max_retries_per_second: 20}\n"
    )
    [scenario] = load_scenarios_text(text)
    assert scenario.retry_budget == RetryBudgetSettings(ratio=0.5, window=120, min_retries=10)
    expect = scenario.expect
    assert expect.min_retry_delay is not None
    assert expect.min_retry_delay.describe() == ">= 90"
    assert expect.max_retries_per_second is not None
    assert expect.max_retries_per_second.describe() == "<= 20"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "retry_budget: {ratio: -1}\n",
            "<string>:6:16: retry_budget.ratio: expected a number >= 0, got -1",
        ),
        (
            "retry_budget: {windw: 1m}\n",
            (
                "<string>:6:16: retry_budget.windw: unknown key 'windw'; did you mean 'window'? "
                "(valid keys: ratio, window, min_retries)"
            ),
        ),
        (
            "expect: {max_retries_per_second: 0}\n",
            "<string>:6:10: expect.max_retries_per_second: expected an integer >= 1, got 0",
        ),
        (
            "expect: {min_retry_delay: soon}\n",
            (
                "<string>:6:10: expect.min_retry_delay: expected a comparison like '<= 600' "
                "(one of <, <=, ==, !=, >=, > and a duration), got 'soon'"
            ),
        ),
    ],
)
def test_new_keys_report_mistakes(extra: str, message: str) -> None:
    """Mistakes in the new keys are located and say what was expected."""
    with pytest.raises(ScenarioError) as caught:
        load_scenarios_text(BASE + extra)
    assert str(caught.value) == message


def test_min_retry_delay_without_retries_fails() -> None:
    """min_retry_delay cannot hold vacuously: a run without retries fails it."""
    [scenario] = load_scenarios_text(BASE + "expect: {min_retry_delay: 1s}\n")
    result = run_scenario(scenario)
    assert _failed(result) == {"min_retry_delay": "no retries"}

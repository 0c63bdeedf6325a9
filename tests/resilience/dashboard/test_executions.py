"""Task executions and success rate on the overview, /api/stats/, /metrics and alerts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilience._operations import EXECUTIONS_KEY, NOT_TRACKED

from .conftest import OPERATOR, T0, Populated, login

if TYPE_CHECKING:
    from starlette.testclient import TestClient


def track(populated: Populated, task: str, ok: int, bad: int) -> None:
    """Record executions as workers with track_executions do."""
    for success, count in ((True, ok), (False, bad)):
        for _ in range(count):
            populated.store.outcomes.add(task, EXECUTIONS_KEY, success=success, now=T0 - 60)


def test_stats_say_executions_are_not_tracked_instead_of_zeros(api: TestClient) -> None:
    """Without tracked executions, counts are null and a note says how to enable them."""
    answer = api.get("/api/stats/").json()
    assert answer["executions"] == {
        "tracked": False,
        "executions": None,
        "successes": None,
        "failures": None,
        "success_rate": None,
        "note": "executions not tracked: enable track_executions",
    }
    email = next(t for t in answer["tasks"] if t["task"] == "send_email")
    assert (email["executions"], email["success_rate"]) == (None, None)


def test_stats_give_executions_per_task_and_overall(api: TestClient, populated: Populated) -> None:
    """Tracked executions: totals, overall rate, per-task rate; retries are unchanged."""
    track(populated, "send_email", 18, 2)
    track(populated, "charge", 6, 4)
    answer = api.get("/api/stats/").json()
    assert answer["executions"] == {
        "tracked": True,
        "executions": 30,
        "successes": 24,
        "failures": 6,
        "success_rate": 0.8,
        "note": None,
    }
    tasks = {t["task"]: t for t in answer["tasks"]}
    assert (tasks["send_email"]["executions"], tasks["send_email"]["success_rate"]) == (20, 0.9)
    assert (tasks["charge"]["executions"], tasks["charge"]["successes"]) == (10, 6)
    assert tasks["resize"]["executions"] == 0  # tracked elsewhere, none of this task
    assert tasks["resize"]["success_rate"] is None
    assert (tasks["send_email"]["retries"], tasks["send_email"]["retry_successes"]) == (3, 1)
    # The executions row is no failure type: trends do not show it as failed retries.
    trends = api.get("/api/failure-trends/").json()
    assert set(trends["failed_retries"]) == {"TRANSIENT_NETWORK"}


def test_the_success_rate_alert_uses_executions_when_tracked(
    api: TestClient, populated: Populated
) -> None:
    """80 % of executions warns about executions; 97 % silences the 33 % retry rate."""
    track(populated, "charge", 24, 6)
    alerts = api.get("/api/alerts/").json()["alerts"]
    (rate,) = [a for a in alerts if a["rule"] == "success_rate"]
    assert rate["subject"] == "executions"
    assert rate["message"] == "task success rate 80.0% over 30 executions is below 90%"
    assert rate["value"] == 0.8
    track(populated, "charge", 170, 0)
    alerts = api.get("/api/alerts/").json()["alerts"]
    assert [a for a in alerts if a["rule"] == "success_rate"] == []


def test_overview_shows_executions_or_says_they_are_not_tracked(
    app_factory: Any, populated: Populated
) -> None:
    """The overview's executions section: the note, then the counts once tracked."""
    client = login(app_factory(), OPERATOR)
    html = client.get("/").text
    assert NOT_TRACKED in html
    assert 'data-stat="executions"' not in html
    track(populated, "send_email", 18, 2)
    track(populated, "charge", 6, 4)
    html = client.get("/").text
    assert NOT_TRACKED not in html
    assert 'data-stat="executions"><span>executions</span><b>30</b>' in html
    assert 'data-stat="success_rate"><span>success rate</span><b>80.0%</b>' in html
    assert "<tr><td>charge</td><td>10</td><td>60.0%</td></tr>" in html
    assert "task success rate 80.0% over 30 executions is below 90%" in html


def test_metrics_count_executions_by_task_and_outcome(
    api: TestClient, populated: Populated
) -> None:
    """/metrics has resilience_task_executions per task and outcome once tracked."""
    assert 'resilience_task_executions{task="' not in api.get("/metrics").text
    track(populated, "charge", 6, 4)
    text = api.get("/metrics").text
    assert 'resilience_task_executions{task="charge",outcome="success"} 6' in text
    assert 'resilience_task_executions{task="charge",outcome="failure"} 4' in text
    assert "# TYPE resilience_task_executions gauge" in text


def test_openapi_describes_the_executions_of_stats(api: TestClient) -> None:
    """The stats response schema names the executions fields and says how to enable them."""
    stats = api.get("/api/openapi.json").json()["paths"]["/api/stats/"]["get"]
    schema = stats["responses"]["200"]["content"]["application/json"]["schema"]
    executions = schema["properties"]["executions"]
    assert executions["required"] == [
        "tracked",
        "executions",
        "successes",
        "failures",
        "success_rate",
        "note",
    ]
    assert "track_executions" in stats["summary"] + stats.get("description", "")

"""The dashboard's JSON API: every endpoint, its errors, and no 500 on garbage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from starlette.routing import Route

from resilience import DeadLetterStatus

from .conftest import OPERATOR, T0, XSS, Populated

if TYPE_CHECKING:
    from starlette.testclient import TestClient


def ids(answer: Any) -> list[str]:
    """The record ids of a listing, in order."""
    return [r["id"] for r in answer.json()["records"]]


def test_list_is_newest_first_and_filters_combine(api: TestClient, populated: Populated) -> None:
    """GET /api/dlq/ lists newest first; status, type, task, text and time filters AND together."""
    r = populated.records
    assert ids(api.get("/api/dlq/")) == [r["oom"].id, r["xss"].id, r["net2"].id, r["net1"].id]
    assert ids(api.get("/api/dlq/?type=transient_network")) == [r["net2"].id, r["net1"].id]
    assert ids(api.get("/api/dlq/?task=charge&status=pending")) == [r["xss"].id]
    assert ids(api.get("/api/dlq/?text=AMOUNT")) == [r["xss"].id]
    assert ids(api.get(f"/api/dlq/?since={T0 - 3600}&until={T0 - 60}")) == [r["net2"].id]
    both = api.get("/api/dlq/?type=TRANSIENT_NETWORK,SYSTEM_OUT_OF_MEMORY")
    assert ids(both) == [r["oom"].id, r["net2"].id, r["net1"].id]


def test_list_pages_with_a_cursor(api: TestClient, populated: Populated) -> None:
    """limit and after page through every record exactly once."""
    first = api.get("/api/dlq/?limit=3").json()
    assert len(first["records"]) == 3
    second = api.get("/api/dlq/", params={"limit": 3, "after": first["next_cursor"]}).json()
    assert [x["id"] for x in second["records"]] == [populated.records["net1"].id]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "parameter", "fragment"),
    [
        ("status=PENDNG", "status", "did you mean 'PENDING'"),
        ("type=NETWORK", "type", "valid: TRANSIENT_DATABASE"),
        ("since=yesterday", "since", "is not a date"),
        ("limit=0", "limit", "must be 1..1000"),
        ("limit=ten", "limit", "expected an integer"),
        ("after=garbage", "after", "invalid dead-letter cursor"),
        ("task=a&task=b", "task", "give it once"),
    ],
)
def test_list_rejects_bad_parameters_with_400(
    api: TestClient, query: str, parameter: str, fragment: str
) -> None:
    """A bad parameter is a 400 naming it, with a message saying what is wrong."""
    answer = api.get(f"/api/dlq/?{query}")
    assert answer.status_code == 400
    assert answer.json()["parameter"] == parameter
    assert fragment in answer.json()["error"]


def test_detail_and_unknown_id(api: TestClient, populated: Populated) -> None:
    """GET /api/dlq/<id>/ returns the record's dict; an unknown id is a JSON 404."""
    record = populated.records["net1"]
    answer = api.get(f"/api/dlq/{record.id}/")
    assert answer.status_code == 200
    assert answer.json() == json.loads(json.dumps(record.to_dict()))
    assert answer.json()["kwargs"]["password"] == "[REDACTED]"  # noqa: S105 - the marker
    missing = api.get("/api/dlq/nope/")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no dead letter with id 'nope'"}


def test_retry_replays_then_conflicts(api: TestClient, populated: Populated) -> None:
    """POST retry re-enqueues once (RETRYING, new task id); a second retry is a 409."""
    record = populated.records["net1"]
    answer = api.post(f"/api/dlq/{record.id}/retry/", json={"note": "broker back"})
    assert answer.status_code == 200
    assert answer.json() == {"id": record.id, "status": "RETRYING", "task_id": "task-1"}
    assert populated.replayed == [record.id]
    stored = populated.get(record.id)
    assert stored.history[-1].actor == "api"
    again = api.post(f"/api/dlq/{record.id}/retry/")
    assert again.status_code == 409
    assert "RETRYING" in again.json()["error"]
    assert populated.replayed == [record.id]


def test_retry_without_replay_is_409_and_changes_nothing(
    app_factory: Any, populated: Populated
) -> None:
    """Without a Celery app or replay, retry answers 409 saying so; the record stays PENDING."""
    client: TestClient = app_factory(with_replay=False)
    client.headers["Authorization"] = f"Bearer {OPERATOR}"
    record = populated.records["net1"]
    answer = client.post(f"/api/dlq/{record.id}/retry/")
    assert answer.status_code == 409
    assert "retrying needs a replay" in answer.json()["error"]
    assert populated.get(record.id).status is DeadLetterStatus.PENDING
    bulk = client.post("/api/dlq/bulk-retry/", json={"filter": {}})
    assert bulk.status_code == 409


def test_retry_when_the_replay_fails_is_502_and_back_to_pending(
    app_factory: Any, populated: Populated
) -> None:
    """A broker error is a 502; the record goes back to PENDING (nothing lost)."""

    def broken(record: object) -> str:
        raise ConnectionRefusedError(111, "broker down")

    client: TestClient = app_factory(replay=broken)
    client.headers["Authorization"] = f"Bearer {OPERATOR}"
    record = populated.records["net1"]
    answer = client.post(f"/api/dlq/{record.id}/retry/")
    assert answer.status_code == 502
    assert "back to PENDING" in answer.json()["error"]
    assert populated.get(record.id).status is DeadLetterStatus.PENDING


def test_abandon_needs_a_reason_and_resolve_takes_a_note(
    api: TestClient, populated: Populated
) -> None:
    """abandon without reason is 400 (parameter reason); with one it is ABANDONED; resolve works."""
    record = populated.records["xss"]
    missing = api.post(f"/api/dlq/{record.id}/abandon/", json={})
    assert missing.status_code == 400
    assert missing.json()["parameter"] == "reason"
    done = api.post(f"/api/dlq/{record.id}/abandon/", json={"reason": "customer left"})
    assert done.json() == {"id": record.id, "status": "ABANDONED"}
    assert populated.get(record.id).history[-1].note == "customer left"
    assert api.post(f"/api/dlq/{record.id}/resolve/").status_code == 409
    other = populated.records["oom"]
    resolved = api.post(f"/api/dlq/{other.id}/resolve/", json={"note": "more RAM"})
    assert resolved.json() == {"id": other.id, "status": "RESOLVED"}
    assert api.post("/api/dlq/nope/resolve/").status_code == 404


def test_bulk_retry_by_filter_and_by_ids(api: TestClient, populated: Populated) -> None:
    """bulk-retry takes a filter (PENDING only) or ids; unknown ids are skipped with a reason."""
    r = populated.records
    answer = api.post("/api/dlq/bulk-retry/", json={"filter": {"type": "transient_network"}})
    assert answer.status_code == 200
    assert sorted(answer.json()["retried"]) == sorted([r["net1"].id, r["net2"].id])
    by_ids = api.post("/api/dlq/bulk-retry/", json={"ids": [r["xss"].id, "nope", r["net1"].id]})
    body = by_ids.json()
    assert body["retried"] == [r["xss"].id]
    assert body["skipped"] == {"nope": "not found", r["net1"].id: "status is RETRYING"}


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({}, "ids"),
        ({"ids": "abc"}, "ids"),
        ({"filter": []}, "filter"),
        ({"filter": {"state": "PENDING"}}, "filter.state"),
        ({"filter": {"status": "RESOLVED"}}, "filter.status"),
        ({"filter": {"type": 3}}, "filter.type"),
        ({"filter": {"since": "soon"}}, "filter.since"),
    ],
)
def test_bulk_retry_rejects_bad_bodies(api: TestClient, body: object, parameter: str) -> None:
    """A bulk retry with no selection or a malformed one is a 400 naming the field."""
    answer = api.post("/api/dlq/bulk-retry/", json=body)
    assert answer.status_code == 400
    assert answer.json()["parameter"] == parameter


def test_breakers_list_and_reset(api: TestClient) -> None:
    """GET lists state and counts; POST reset closes it; an unknown name is 404 with suggestions."""
    rows = {b["name"]: b for b in api.get("/api/circuit-breakers/").json()["breakers"]}
    assert rows["payments"]["state"] == "open"
    assert rows["payments"]["trips"] == 1
    assert rows["payments"]["seconds_until_probe"] == 60.0
    assert (rows["search"]["state"], rows["search"]["consecutive_failures"]) == ("closed", 1)
    reset = api.post("/api/circuit-breakers/payments/reset/")
    assert reset.json() == {"name": "payments", "from": "open", "state": "closed"}
    missing = api.post("/api/circuit-breakers/payment/reset/")
    assert missing.status_code == 404
    assert "did you mean 'payments'" in missing.json()["error"]


def test_failure_trends_per_hour_and_type(api: TestClient) -> None:
    """Dead letters and failed retries are counted in the hour they happened, oldest first."""
    answer = api.get("/api/failure-trends/?hours=3").json()
    assert answer["hours"] == 3
    assert answer["hour_starts"][-1] <= T0 < answer["hour_starts"][-1] + 3600
    network = answer["dead_letters"]["TRANSIENT_NETWORK"]
    assert sum(network) == 2
    assert answer["dead_letters"]["PERMANENT_VALIDATION"][-1] == 1
    assert sum(answer["failed_retries"]["TRANSIENT_NETWORK"]) == 2
    assert answer["failed_retries"]["TRANSIENT_NETWORK"][-1] == 1
    for bad in ("0", "169", "x", "1.5"):
        wrong = api.get(f"/api/failure-trends/?hours={bad}")
        assert (wrong.status_code, wrong.json()["parameter"]) == (400, "hours")


def test_stats(api: TestClient) -> None:
    """GET /api/stats/ gives retries per task, success rate and DLQ depth by status."""
    answer = api.get("/api/stats/").json()
    email = next(t for t in answer["tasks"] if t["task"] == "send_email")
    assert (email["retries"], email["retry_successes"]) == (3, 1)
    assert email["dead_letters_by_type"] == {"TRANSIENT_NETWORK": 2}
    assert answer["dead_letters_by_status"]["PENDING"] == 4
    assert answer["dead_letters"]["total"] == 4
    assert api.get("/api/stats/?window=0s").json()["parameter"] == "window"
    assert api.get("/api/stats/?window=forever").status_code == 400


def test_alerts_endpoint_lists_the_rules_in_force(api: TestClient) -> None:
    """The open breaker and the out-of-memory dead letter are critical; retries below 90% warn."""
    alerts = api.get("/api/alerts/").json()["alerts"]
    found = {(a["rule"], a["subject"], a["level"]) for a in alerts}
    assert ("open_breaker", "payments", "critical") in found
    assert ("system_failure", "SYSTEM_OUT_OF_MEMORY", "critical") in found
    assert ("success_rate", "retries", "warning") in found


def test_openapi_describes_every_route(api: TestClient) -> None:
    """Every /api/ route and method is in the OpenAPI document, and nothing else is."""
    document = api.get("/api/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    described = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    served = {
        (route.path.replace("{name:path}", "{name}"), method)
        for route in api.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and route.path.startswith("/api/")
        for method in (route.methods or ()) - {"HEAD"}
    }
    assert described == served


def test_unknown_api_paths_and_methods_answer_json(api: TestClient) -> None:
    """404 and 405 under /api/ are JSON too."""
    missing = api.get("/api/nothing/")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found"}
    wrong = api.delete("/api/dlq/")
    assert wrong.status_code == 405
    assert "error" in wrong.json()


GARBAGE = ["", "%00", "\x7f", "'; DROP TABLE dead_letters;--", "9" * 400, "NaN", "-1", XSS, "[]"]


def test_no_endpoint_answers_500_to_garbage(api: TestClient, populated: Populated) -> None:
    """Garbage in every parameter, path segment and body gets a 4xx JSON answer, never a 500."""
    record_id = populated.records["net2"].id
    for junk in GARBAGE:
        for name in ("status", "type", "task", "since", "until", "text", "limit", "after"):
            answer = api.get("/api/dlq/", params={name: junk})
            assert answer.status_code in (200, 400), (name, junk, answer.text)
            answer.json()
        for path in ("/api/failure-trends/", "/api/stats/"):
            for name in ("hours", "window"):
                answer = api.get(path, params={name: junk})
                assert answer.status_code in (200, 400), (path, junk)
        for body in (junk.encode(), json.dumps({"reason": junk, "note": junk}).encode()):
            for action in ("retry", "abandon", "resolve"):
                for target in (record_id, quote(junk, safe="") or "x"):
                    answer = api.post(f"/api/dlq/{target}/{action}/", content=body)
                    assert answer.status_code < 500 or answer.status_code == 502, (action, junk)
                    answer.json()
            answer = api.post("/api/dlq/bulk-retry/", content=body)
            assert answer.status_code in (200, 400), (junk, answer.text)
        for body_json in ({"ids": [junk]}, {"filter": {"text": junk}}, {"ids": [], "note": 5}):
            answer = api.post("/api/dlq/bulk-retry/", json=body_json)
            assert answer.status_code in (200, 400)
        answer = api.post(f"/api/circuit-breakers/{quote(junk, safe='') or 'x'}/reset/")
        assert answer.status_code in (200, 404)
        answer.json()


def test_metrics_in_prometheus_text_format(api: TestClient) -> None:
    """/metrics: DLQ depth by status and type, breaker states, retries by type (Bearer only)."""
    answer = api.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    assert 'resilience_dead_letters{status="PENDING",failure_type="TRANSIENT_NETWORK"} 2' in text
    assert 'resilience_dead_letters_by_status{status="PENDING"} 4' in text
    assert 'resilience_circuit_breaker_state{breaker="payments",state="open"} 1' in text
    assert 'resilience_circuit_breaker_state{breaker="payments",state="closed"} 0' in text
    assert 'resilience_retries{failure_type="TRANSIENT_NETWORK",outcome="failure"} 2' in text
    assert 'resilience_alerts{level="critical"} 2' in text
    assert "# TYPE resilience_dead_letters gauge" in text
    assert api.get("/metrics", headers={"Authorization": ""}).status_code == 401


def test_alert_rules_are_configurable_and_sinks_hear_each_alert_once(
    app_factory: Any,
) -> None:
    """Custom thresholds change the alerts; a webhook receives each new alert once, as JSON."""
    import http.server
    import threading

    from resilience.dashboard import AlertRules, WebhookSink

    received: list[dict[str, Any]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            """Keep the posted JSON."""
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Stay quiet."""

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rules = AlertRules(
            dlq_warning=3, dlq_critical=10, success_rate_warning=None, open_breaker_level=None
        )
        client: TestClient = app_factory(
            alert_rules=rules, alert_sinks=[WebhookSink(f"http://127.0.0.1:{server.server_port}/")]
        )
        client.headers["Authorization"] = f"Bearer {OPERATOR}"
        first = client.get("/api/alerts/").json()["alerts"]
        client.get("/api/alerts/")
    finally:
        server.shutdown()
        server.server_close()
    assert {(a["rule"], a["level"]) for a in first} == {
        ("dlq_depth", "warning"),
        ("system_failure", "critical"),
    }
    assert sorted(r["rule"] for r in received) == ["dlq_depth", "system_failure"]
    assert received[0]["message"]


def test_alert_rules_validate_their_thresholds() -> None:
    """A warning above the critical threshold, or a rate above 1, is a ConfigurationError."""
    from resilience import ConfigurationError
    from resilience.dashboard import AlertRules, WebhookSink

    with pytest.raises(ConfigurationError, match="must not exceed dlq_critical"):
        AlertRules(dlq_warning=60, dlq_critical=50)
    with pytest.raises(ConfigurationError, match="between 0 and 1"):
        AlertRules(success_rate_warning=90)
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        WebhookSink("file:///etc/passwd")

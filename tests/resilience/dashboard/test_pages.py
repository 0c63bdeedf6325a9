"""The dashboard's pages: what an operator sees and the actions the forms perform."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from resilience import DeadLetterStatus, FailureType, default_policy
from resilience.dashboard import create_app

from .conftest import OPERATOR, Populated, csrf_of, login

if TYPE_CHECKING:
    from pathlib import Path


def test_overview_shows_depth_alerts_and_open_breakers(app_factory: Any) -> None:
    """The overview lists DLQ depth by status, the alerts in force and the open breaker."""
    client = login(app_factory(), OPERATOR)
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'data-status="PENDING"><span>PENDING</span><b>4</b>' in html
    assert 'data-rule="open_breaker"' in html
    assert "circuit breaker &#39;payments&#39; is open" in html
    assert 'data-rule="system_failure"' in html
    assert "SYSTEM_OUT_OF_MEMORY" in html
    assert "success rate\n33.3%" in html or "33.3%" in html


def test_dlq_list_filters_and_paginates(app_factory: Any, populated: Populated) -> None:
    """Filters narrow the table; with more than a page, a next link keeps the filters."""
    client = login(app_factory(), OPERATOR)
    page = client.get("/dlq/?type=TRANSIENT_NETWORK")
    assert page.text.count('<tr data-id="') == 2
    assert populated.records["xss"].id not in page.text
    bad = client.get("/dlq/?status=LOST")
    assert bad.status_code == 400
    assert "status: unknown value &#39;LOST&#39;" in bad.text
    for n in range(30):
        populated.store.dead_letters  # noqa: B018 - the role exists
        from resilience import DeadLetterQueue

        DeadLetterQueue(populated.store).add(task_name="bulk", exc=TimeoutError(f"t{n}"), now=n)
    first = client.get("/dlq/?task=bulk")
    assert first.text.count('<tr data-id="') == 25
    next_link = first.text.split('<a href="')[-1].split('" rel="next"')[0].replace("&amp;", "&")
    assert "task=bulk" in next_link
    second = client.get(next_link)
    assert second.text.count('<tr data-id="') == 5


def test_detail_shows_redactions_traceback_evidence_and_history(
    app_factory: Any, populated: Populated
) -> None:
    """Redacted arguments are marked as such; traceback, evidence and history are shown."""
    client = login(app_factory(), OPERATOR)
    record = populated.records["net1"]
    html = client.get(f"/dlq/{record.id}/").text
    assert '<mark class="redacted" title="redacted">[REDACTED]</mark>' in html
    assert "hunter2" not in html
    assert "ConnectionRefusedError" in html
    assert "Traceback" in html or record.traceback.splitlines()[0] in html
    assert "Classification evidence" in html
    assert "AUTO_RETRY" in html
    assert '<td id="status" class="status">PENDING</td>' in html or 'id="status">PENDING' in html


def test_retry_abandon_resolve_forms(app_factory: Any, populated: Populated) -> None:
    """The detail page's forms retry, abandon (reason required) and resolve records."""
    client = login(app_factory(), OPERATOR)
    net1, xss, oom = (populated.records[k] for k in ("net1", "xss", "oom"))
    csrf = csrf_of(client.get(f"/dlq/{net1.id}/").text)
    done = client.post(f"/dlq/{net1.id}/retry/", data={"csrf": csrf, "note": "go"})
    assert done.status_code == 200
    assert "Done: retry" in done.text
    assert 'id="status">RETRYING' in done.text
    assert populated.replayed == [net1.id]
    assert client.post(f"/dlq/{xss.id}/abandon/", data={"csrf": csrf}).status_code == 400
    client.post(f"/dlq/{xss.id}/abandon/", data={"csrf": csrf, "note": "bad data"})
    assert populated.get(xss.id).status is DeadLetterStatus.ABANDONED
    client.post(f"/dlq/{oom.id}/resolve/", data={"csrf": csrf})
    assert populated.get(oom.id).status is DeadLetterStatus.RESOLVED
    conflict = client.post(f"/dlq/{oom.id}/resolve/", data={"csrf": csrf})
    assert conflict.status_code == 409
    assert client.get("/dlq/nope/").status_code == 404


def test_bulk_actions_ask_for_confirmation(app_factory: Any, populated: Populated) -> None:
    """A bulk retry shows what it will do and acts only once confirmed."""
    client = login(app_factory(), OPERATOR)
    csrf = csrf_of(client.get("/dlq/").text)
    form = {"csrf": csrf, "action": "retry", "scope": "filter", "type": "TRANSIENT_NETWORK"}
    review = client.post("/dlq/bulk/", data=form)
    assert review.status_code == 200
    assert "This will retry <b>2</b> record(s)" in review.text
    assert populated.replayed == []
    client.post("/dlq/bulk/", data={**form, "confirmed": "yes"})
    assert sorted(populated.replayed) == sorted(
        [populated.records["net1"].id, populated.records["net2"].id]
    )
    selected = {"csrf": csrf, "action": "abandon", "scope": "selected", "reason": "old"}
    picked = [("ids", populated.records["xss"].id)]
    review = client.post("/dlq/bulk/", data={**selected, "confirmed": "no"}, files=None)
    assert review.status_code == 400  # nothing selected
    answer = client.post(
        "/dlq/bulk/",
        content="&".join(f"{k}={v}" for k, v in [*selected.items(), *picked, ("confirmed", "yes")]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "bulk abandon: 1 done" in answer.text
    assert populated.get(populated.records["xss"].id).status is DeadLetterStatus.ABANDONED


def test_breakers_page_and_confirmed_reset(app_factory: Any, populated: Populated) -> None:
    """The breakers page shows state and next probe; reset asks first, then closes it."""
    client = login(app_factory(), OPERATOR)
    html = client.get("/breakers/").text
    assert "payments" in html
    assert "60 s" in html
    confirm = client.get("/breakers/payments/reset/")
    assert "Reset breaker “payments”?" in confirm.text
    done = client.post("/breakers/payments/reset/", data={"csrf": csrf_of(confirm.text)})
    assert "breaker payments: open -&gt; closed" in done.text
    record = populated.store.breakers.load("payments")
    assert record is not None
    assert record.state.value == "closed"


def test_taxonomy_policies_and_trends_pages(app_factory: Any) -> None:
    """Taxonomy lists remediation per type and top tasks; policies and trends draw SVG charts."""
    client = login(app_factory(), OPERATOR)
    taxonomy = client.get("/taxonomy/").text
    assert "TRANSIENT_NETWORK" in taxonomy
    assert "Retry with backoff" in taxonomy
    assert '<a href="/dlq/?task=send_email">send_email</a></td><td>2</td>' in taxonomy
    policies = client.get("/policies/").text
    retried = [t for t in FailureType if default_policy(t).max_retries]
    assert policies.count("<svg") == len(retried)
    assert "delay before each retry of TRANSIENT_DATABASE" in policies
    trends = client.get("/trends/?hours=6")
    assert trends.text.count("<svg") == 2
    assert "<title>TRANSIENT_NETWORK</title>" in trends.text
    assert client.get("/trends/?hours=0").status_code == 400


def test_mounted_under_a_prefix(populated: Populated, tmp_path: Path) -> None:
    """Mounted at /ops, links, redirects and cookies use the prefix."""
    dashboard = create_app(populated.store, token=OPERATOR, clock=populated.clock)
    client = TestClient(Starlette(routes=[Mount("/ops", app=dashboard)]))
    assert client.get("/ops/", follow_redirects=False).headers["location"] == "/ops/login"
    form = client.get("/ops/login").text
    assert 'action="/ops/login"' in form
    nonce = form.split('name="nonce" value="')[1].split('"')[0]
    answer = client.post(
        "/ops/login", data={"token": OPERATOR, "nonce": nonce}, follow_redirects=False
    )
    assert answer.headers["location"] == "/ops/"
    assert "Path=/ops" in answer.headers["set-cookie"]
    assert 'href="/ops/dlq/"' in client.get("/ops/").text
    api = client.get("/ops/api/dlq/", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert len(api.json()["records"]) == 4

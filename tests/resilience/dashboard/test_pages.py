"""The dashboard's pages: what an operator sees and the actions the forms perform."""

from __future__ import annotations

from typing import Any

from resilience import DeadLetterStatus, FailureType, default_policy

from .conftest import OPERATOR, XSS, Populated, csrf_of, login


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
    """Confirmed, the detail page's actions retry, abandon (reason required) and resolve."""
    client = login(app_factory(), OPERATOR)
    net1, xss, oom = (populated.records[k] for k in ("net1", "xss", "oom"))
    csrf = csrf_of(client.get(f"/dlq/{net1.id}/").text)
    yes = {"csrf": csrf, "confirmed": "yes"}
    done = client.post(f"/dlq/{net1.id}/retry/", data={**yes, "note": "go"})
    assert done.status_code == 200
    assert "Done: retry" in done.text
    assert 'id="status">RETRYING' in done.text
    assert populated.replayed == [net1.id]
    assert "go" in [h.note for h in populated.get(net1.id).history]
    no_reason = client.post(f"/dlq/{xss.id}/abandon/", data=yes)
    assert no_reason.status_code == 400
    assert "abandon: a reason is required" in no_reason.text
    client.post(f"/dlq/{xss.id}/abandon/", data={**yes, "note": "bad data"})
    assert populated.get(xss.id).status is DeadLetterStatus.ABANDONED
    assert populated.get(xss.id).history[-1].note == "bad data"
    client.post(f"/dlq/{oom.id}/resolve/", data=yes)
    assert populated.get(oom.id).status is DeadLetterStatus.RESOLVED
    conflict = client.post(f"/dlq/{oom.id}/resolve/", data=yes)
    assert conflict.status_code == 409
    assert "is RESOLVED; cannot resolve it (expects PENDING or RETRYING)" in conflict.text
    assert client.get("/dlq/nope/").status_code == 404
    assert client.post("/dlq/nope/resolve/", data=yes).status_code == 404


def test_detail_actions_ask_for_confirmation_first(app_factory: Any, populated: Populated) -> None:
    """Retry, abandon and resolve first show what they will do; nothing changes until confirmed."""
    client = login(app_factory(), OPERATOR)
    net2 = populated.records["net2"]
    detail = client.get(f"/dlq/{net2.id}/").text
    assert "Each asks for confirmation first." in detail
    csrf = csrf_of(detail)
    review = client.post(f"/dlq/{net2.id}/retry/", data={"csrf": csrf, "note": "after fix"})
    assert review.status_code == 200
    html = review.text
    assert f"Confirm retry of dead letter <code>{net2.id}</code>" in html
    assert "<tr><th>Task</th><td>send_email (task id" in html
    assert "<tr><th>Failure type</th><td>TRANSIENT_NETWORK</td></tr>" in html
    assert "re-enqueue <b>send_email</b> with its stored arguments" in html
    assert "from PENDING to RETRYING" in html
    assert "Note for the history: “after fix”" in html
    assert f'<a href="/dlq/{net2.id}/">Cancel</a>' in html
    assert f'action="/dlq/{net2.id}/retry/"' in html
    assert '<input type="hidden" name="confirmed" value="yes">' in html
    assert '<input type="hidden" name="note" value="after fix">' in html
    assert "refuses to send them" not in html
    assert populated.replayed == []
    assert populated.get(net2.id).status is DeadLetterStatus.PENDING
    assert [h.action for h in populated.get(net2.id).history] == ["add"]

    abandon = client.post(f"/dlq/{net2.id}/abandon/", data={"csrf": csrf, "note": "customer gone"})
    assert "Confirm abandon" in abandon.text
    assert "mark the record ABANDONED with the reason “customer gone”" in abandon.text
    resolve = client.post(f"/dlq/{net2.id}/resolve/", data={"csrf": csrf})
    assert "Confirm resolve" in resolve.text
    assert "mark the record RESOLVED" in resolve.text
    assert populated.get(net2.id).status is DeadLetterStatus.PENDING

    confirmed = client.post(
        f"/dlq/{net2.id}/retry/", data={"csrf": csrf_of(html), "confirmed": "yes", "note": "x"}
    )
    assert 'id="status">RETRYING' in confirmed.text
    assert populated.replayed == [net2.id]


def test_confirmation_refuses_what_cannot_be_done(app_factory: Any, populated: Populated) -> None:
    """The review step already refuses (409/400) what the record or the app does not allow."""
    client = login(app_factory(), OPERATOR)
    net1, oom = populated.records["net1"], populated.records["oom"]
    csrf = csrf_of(client.get("/dlq/").text)
    client.post(f"/dlq/{oom.id}/resolve/", data={"csrf": csrf, "confirmed": "yes"})
    review = client.post(f"/dlq/{oom.id}/abandon/", data={"csrf": csrf, "note": "late"})
    assert review.status_code == 409
    assert f"dead letter &#39;{oom.id}&#39; is RESOLVED; cannot abandon it" in review.text
    assert "Confirm" not in review.text
    no_reason = client.post(f"/dlq/{net1.id}/abandon/", data={"csrf": csrf, "note": "  "})
    assert no_reason.status_code == 400
    assert "abandon: a reason is required" in no_reason.text
    # net1's kwargs hold a redacted password: the review warns that a replay refuses it.
    warned = client.post(f"/dlq/{net1.id}/retry/", data={"csrf": csrf})
    assert "Its stored arguments are redacted: a replay" in warned.text
    without_replay = login(app_factory(with_replay=False), OPERATOR)
    csrf = csrf_of(without_replay.get("/dlq/").text)
    refused = without_replay.post(f"/dlq/{net1.id}/retry/", data={"csrf": csrf})
    assert refused.status_code == 409
    assert "retrying needs a replay" in refused.text
    assert "nothing was changed" in refused.text
    assert populated.get(net1.id).status is DeadLetterStatus.PENDING


def test_confirmation_page_escapes_the_note_and_message(
    app_factory: Any, populated: Populated
) -> None:
    """A reason or a record message holding <script> shows as text on the confirmation page."""
    client = login(app_factory(), OPERATOR)
    xss = populated.records["xss"]
    csrf = csrf_of(client.get("/dlq/").text)
    review = client.post(f"/dlq/{xss.id}/abandon/", data={"csrf": csrf, "note": XSS})
    assert review.status_code == 200
    assert XSS not in review.text
    assert "bad amount &lt;script&gt;alert(1)&lt;/script&gt;" in review.text
    assert 'name="note" value="&lt;script&gt;alert(1)&lt;/script&gt;"' in review.text


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

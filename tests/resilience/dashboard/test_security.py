"""Dashboard security: tokens, roles, sessions, CSRF, escaping, no default credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from starlette.routing import Route

from resilience import ConfigurationError, DeadLetterStatus
from resilience.dashboard import create_app

from .conftest import OPERATOR, READER, XSS, Populated, csrf_of, login

if TYPE_CHECKING:
    from starlette.testclient import TestClient


def test_no_token_configured_refuses_to_start(
    populated: Populated, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without any token the app is not built: there are no default credentials."""
    monkeypatch.delenv("RESILIENCE_DASHBOARD_TOKEN", raising=False)
    monkeypatch.delenv("RESILIENCE_DASHBOARD_READ_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="RESILIENCE_DASHBOARD_TOKEN") as caught:
        create_app(populated.store)
    assert "no default credentials" in str(caught.value)
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        create_app(populated.store, token="short")  # noqa: S106 - a deliberately bad token
    with pytest.raises(ConfigurationError, match="must differ"):
        create_app(populated.store, token=OPERATOR, read_token=OPERATOR)


def test_tokens_come_from_the_environment(
    populated: Populated, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RESILIENCE_DASHBOARD_READ_TOKEN alone gives a read-only dashboard."""
    from starlette.testclient import TestClient

    monkeypatch.delenv("RESILIENCE_DASHBOARD_TOKEN", raising=False)
    monkeypatch.setenv("RESILIENCE_DASHBOARD_READ_TOKEN", READER)
    client = TestClient(create_app(populated.store))
    client.headers["Authorization"] = f"Bearer {READER}"
    assert client.get("/api/dlq/").status_code == 200
    record = populated.records["net1"]
    assert client.post(f"/api/dlq/{record.id}/resolve/").status_code == 403


def every_route(client: TestClient) -> list[tuple[str, str]]:
    """(method, concrete path) for every route of the app."""
    found = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        assert isinstance(route, Route)
        path = (
            route.path.replace("{record_id}", "x")
            .replace("{name:path}", "x")
            .replace("{action:str}", "retry")
        )
        found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def test_every_route_needs_authentication(app_factory: Any) -> None:
    """Without credentials: 401 JSON on /api/ and /metrics, a redirect to login for pages."""
    client: TestClient = app_factory()
    for method, path in every_route(client):
        if path == "/login":
            continue
        answer = client.request(method, path, follow_redirects=False)
        if path.startswith(("/api/", "/metrics")):
            assert answer.status_code == 401, (method, path)
            assert "Bearer" in answer.json()["error"]
            assert answer.headers["www-authenticate"].startswith("Bearer")
        else:
            assert answer.status_code == 303, (method, path)
            assert answer.headers["location"] == "/login"


def test_wrong_tokens_are_rejected(app_factory: Any) -> None:
    """A wrong or non-bearer token is a 401; a session cookie does not open the API."""
    client: TestClient = app_factory()
    for header in (f"Bearer {OPERATOR}x", f"Basic {OPERATOR}", "Bearer", OPERATOR):
        answer = client.get("/api/dlq/", headers={"Authorization": header})
        assert answer.status_code == 401, header
    login(client, OPERATOR)
    assert client.get("/api/dlq/").status_code == 401


def test_read_only_token_cannot_change_anything(app_factory: Any, populated: Populated) -> None:
    """Every POST with the read-only token is a 403 JSON and changes nothing."""
    client: TestClient = app_factory()
    client.headers["Authorization"] = f"Bearer {READER}"
    assert client.get("/api/dlq/").status_code == 200
    for method, path in every_route(client):
        if method == "POST" and path.startswith("/api/"):
            answer = client.post(path.replace("/x/", f"/{populated.records['net1'].id}/"))
            assert answer.status_code == 403, path
            assert answer.json() == {
                "error": "this token is read-only: changes need the operator token"
            }
    assert populated.get(populated.records["net1"].id).status is DeadLetterStatus.PENDING
    assert populated.replayed == []


def test_login_sets_a_strict_httponly_session_cookie(app_factory: Any) -> None:
    """The login form checks the token and sets a signed HttpOnly SameSite=Strict cookie."""
    client: TestClient = app_factory()
    form = client.get("/login")
    nonce = form.text.split('name="nonce" value="')[1].split('"')[0]
    wrong = client.post("/login", data={"token": "nope", "nonce": nonce})
    assert wrong.status_code == 401
    assert "Invalid token." in wrong.text
    answer = client.post("/login", data={"token": OPERATOR, "nonce": nonce}, follow_redirects=False)
    assert answer.status_code == 303
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("resilience_session=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert client.get("/").status_code == 200


def test_login_form_is_csrf_protected(app_factory: Any) -> None:
    """A login post without the nonce cookie it was served with is refused."""
    client: TestClient = app_factory()
    answer = client.post("/login", data={"token": OPERATOR, "nonce": "forged"})
    assert answer.status_code == 403
    assert "resilience_session" not in answer.headers.get("set-cookie", "")


def test_forged_or_tampered_session_cookies_are_refused(app_factory: Any) -> None:
    """A cookie signed by another app, or edited, does not log in."""
    other: TestClient = app_factory()
    login(other, READER)
    stolen = other.cookies["resilience_session"]
    client: TestClient = app_factory()
    client.cookies.set("resilience_session", stolen)
    assert client.get("/", follow_redirects=False).status_code == 303
    same_app = other
    body, _, signature = stolen.rpartition(".")
    same_app.cookies.set("resilience_session", f"{body}x.{signature}")
    assert same_app.get("/", follow_redirects=False).status_code == 303


def test_page_posts_need_the_csrf_token(app_factory: Any, populated: Populated) -> None:
    """Every state-changing form post without the session's CSRF token is a 403."""
    client = login(app_factory(), OPERATOR)
    record = populated.records["net1"]
    # Single-record actions: both the review post and the confirming post.
    posts = [
        (f"/dlq/{record.id}/{action}/", {"note": "x", **confirmed})
        for action in ("resolve", "abandon", "retry")
        for confirmed in ({}, {"confirmed": "yes"})
    ]
    posts += [
        ("/dlq/bulk/", {"action": "retry", "scope": "filter", "confirmed": "yes"}),
        ("/breakers/payments/reset/", {}),
        ("/logout", {}),
    ]
    for path, data in posts:
        for token in (None, "wrong"):
            form = dict(data) if token is None else {**data, "csrf": token}
            answer = client.post(path, data=form)
            assert answer.status_code == 403, path
            assert "CSRF token missing or wrong" in answer.text
    assert populated.get(record.id).status is DeadLetterStatus.PENDING
    assert populated.replayed == []


def test_read_only_session_sees_no_action_forms_and_cannot_post(
    app_factory: Any, populated: Populated
) -> None:
    """A read-only login shows no retry form, and a post with its CSRF token is still a 403."""
    client = login(app_factory(), READER)
    record = populated.records["net1"]
    page = client.get(f"/dlq/{record.id}/")
    assert 'id="retry"' not in page.text
    answer = client.post(f"/dlq/{record.id}/resolve/", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 403
    assert populated.get(record.id).status is DeadLetterStatus.PENDING


def test_script_in_a_message_renders_as_text(app_factory: Any, populated: Populated) -> None:
    """A message holding <script>alert(1)</script> is escaped on the list and detail pages."""
    client = login(app_factory(), OPERATOR)
    record = populated.records["xss"]
    for page in (client.get("/dlq/"), client.get(f"/dlq/{record.id}/")):
        assert page.status_code == 200
        assert XSS not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "script-src" in page.headers["content-security-policy"]


def test_the_cli_binds_to_localhost_by_default() -> None:
    """`resilience dashboard` listens on 127.0.0.1 unless told otherwise."""
    from resilience.cli import _parser

    args = _parser().parse_args(["dashboard"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)

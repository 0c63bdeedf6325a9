"""The dashboard mounted under ``/ops`` in Starlette, FastAPI, Django (ASGI) and Flask (WSGI).

Each host app keeps its own routes; through it an operator logs in with the
form, reads the overview, and calls the API (a GET and a POST). Django's
settings are process-global, so the Django host runs in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from resilience import DeadLetterStatus
from resilience.dashboard import create_app

from .conftest import OPERATOR, READER, Populated

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from starlette.requests import Request

ROOT = Path(__file__).resolve().parents[3]


def _nonce(html: str) -> str:
    return html.split('name="nonce" value="')[1].split('"', maxsplit=1)[0]


def test_starlette_mount(populated: Populated) -> None:
    """Under Starlette's Mount: links, redirects and cookies carry /ops; the host keeps /."""

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host home")

    dashboard = create_app(populated.store, token=OPERATOR, clock=populated.clock)
    site = Starlette(routes=[Route("/", home), Mount("/ops", app=dashboard)])
    client = TestClient(site)
    assert client.get("/").text == "host home"
    assert client.get("/ops/", follow_redirects=False).headers["location"] == "/ops/login"
    form = client.get("/ops/login").text
    assert 'action="/ops/login"' in form
    answer = client.post(
        "/ops/login", data={"token": OPERATOR, "nonce": _nonce(form)}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ops/"
    assert "Path=/ops" in answer.headers["set-cookie"]
    overview = client.get("/ops/")
    assert overview.status_code == 200
    assert 'href="/ops/dlq/"' in overview.text
    assert 'data-status="PENDING"><span>PENDING</span><b>4</b>' in overview.text
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    assert len(client.get("/ops/api/dlq/", headers=bearer).json()["records"]) == 4
    record = populated.records["oom"]
    resolved = client.post(f"/ops/api/dlq/{record.id}/resolve/", headers=bearer)
    assert resolved.status_code == 200, resolved.text
    assert populated.get(record.id).status is DeadLetterStatus.RESOLVED


def test_fastapi_mount(populated: Populated) -> None:
    """FastAPI's ``app.mount``: login, overview and API under /ops; the host forwards lifespan."""
    from fastapi import FastAPI

    dashboard = create_app(
        populated.store, token=OPERATOR, read_token=READER, clock=populated.clock
    )
    entered: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Mounted apps get no lifespan of their own: the host runs the dashboard's
        # (its alert timer) inside its own.
        async with dashboard.router.lifespan_context(dashboard):
            entered.append("dashboard")
            yield

    site = FastAPI(lifespan=lifespan)

    @site.get("/")
    def home() -> dict[str, str]:
        return {"host": "fastapi"}

    site.mount("/ops", dashboard)
    with TestClient(site) as client:
        assert entered == ["dashboard"]
        assert client.get("/").json() == {"host": "fastapi"}
        assert client.get("/ops/", follow_redirects=False).headers["location"] == "/ops/login"
        form = client.get("/ops/login").text
        assert 'action="/ops/login"' in form
        answer = client.post(
            "/ops/login", data={"token": OPERATOR, "nonce": _nonce(form)}, follow_redirects=False
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ops/"
        assert "Path=/ops" in answer.headers["set-cookie"]
        overview = client.get("/ops/")
        assert overview.status_code == 200
        assert 'href="/ops/dlq/"' in overview.text
        assert 'data-status="PENDING"><span>PENDING</span><b>4</b>' in overview.text
        reader = {"Authorization": f"Bearer {READER}"}
        assert len(client.get("/ops/api/dlq/", headers=reader).json()["records"]) == 4
        record = populated.records["oom"]
        refused = client.post(f"/ops/api/dlq/{record.id}/resolve/", headers=reader)
        assert refused.status_code == 403
        operator = {"Authorization": f"Bearer {OPERATOR}"}
        resolved = client.post(f"/ops/api/dlq/{record.id}/resolve/", headers=operator)
        assert resolved.status_code == 200, resolved.text
        assert client.get("/openapi.json").json()["paths"].keys() == {"/"}
    assert populated.get(record.id).status is DeadLetterStatus.RESOLVED


# The Django host, run as a script: settings.configure() may happen once per process.
DJANGO_HOST = textwrap.dedent(
    """
    import json
    import sys

    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-test-secret-key-not-for-production-0123456789",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
    )
    django.setup()

    from django.core.asgi import get_asgi_application
    from django.http import HttpResponse
    from django.urls import path
    from starlette.testclient import TestClient

    from resilience import DeadLetterQueue, MemoryStore
    from resilience.dashboard import create_app

    urlpatterns = [path("", lambda request: HttpResponse("django home"))]


    def dispatcher(prefix, dashboard, django_app):
        async def app(scope, receive, send):
            path = scope.get("path", "")
            if scope["type"] == "lifespan":
                await dashboard(scope, receive, send)  # Django's handler serves HTTP only
            elif path == prefix or path.startswith(prefix + "/"):
                root = scope.get("root_path", "") + prefix
                await dashboard({**scope, "root_path": root}, receive, send)
            else:
                await django_app(scope, receive, send)

        return app


    store = MemoryStore()
    record = DeadLetterQueue(store).add(task_name="send_email", exc=ConnectionResetError("reset"))
    token = sys.argv[1]
    site = dispatcher("/ops", create_app(store, token=token), get_asgi_application())
    out = {}
    with TestClient(site) as client:
        out["home"] = client.get("/").text
        out["unauthenticated"] = client.get("/ops/", follow_redirects=False).headers["location"]
        form = client.get("/ops/login").text
        out["form_action"] = 'action="/ops/login"' in form
        nonce = form.split('name="nonce" value="')[1].split('"')[0]
        answer = client.post(
            "/ops/login", data={"token": token, "nonce": nonce}, follow_redirects=False
        )
        out["login"] = [answer.status_code, answer.headers["location"]]
        out["cookie"] = answer.headers["set-cookie"]
        overview = client.get("/ops/")
        out["overview"] = [overview.status_code, 'href="/ops/dlq/"' in overview.text]
        bearer = {"Authorization": f"Bearer {token}"}
        page = client.get("/ops/api/dlq/", headers=bearer).json()
        out["api"] = [r["task_name"] for r in page["records"]]
        resolved = client.post(f"/ops/api/dlq/{record.id}/resolve/", headers=bearer)
        out["resolve"] = [resolved.status_code, resolved.json().get("status")]
        out["django_404"] = client.get("/nowhere/").status_code
    out["status_after"] = DeadLetterQueue(store).get(record.id).status.value
    print(json.dumps(out))
    """
)


def test_django_asgi_dispatcher() -> None:
    """An ASGI dispatcher sends /ops to the dashboard and everything else to Django."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", DJANGO_HOST, OPERATOR],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["home"] == "django home"
    assert out["unauthenticated"] == "/ops/login"
    assert out["form_action"] is True
    assert out["login"] == [303, "/ops/"]
    assert "Path=/ops" in out["cookie"]
    assert out["overview"] == [200, True]
    assert out["api"] == ["send_email"]
    assert out["resolve"] == [200, "RESOLVED"]
    assert out["django_404"] == 404
    assert out["status_after"] == "RESOLVED"


@pytest.fixture
def wsgi_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop on its own thread for a2wsgi, stopped and closed afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="a2wsgi-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_flask_dispatcher_middleware(
    populated: Populated, wsgi_loop: asyncio.AbstractEventLoop
) -> None:
    """Flask with werkzeug's DispatcherMiddleware and a2wsgi: /ops is the dashboard."""
    from a2wsgi import ASGIMiddleware
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    flask_app = Flask("host")
    flask_app.add_url_rule("/", "home", lambda: "flask home")
    dashboard = create_app(
        populated.store, token=OPERATOR, read_token=READER, clock=populated.clock
    )
    mounted: Any = ASGIMiddleware(dashboard, loop=wsgi_loop)  # type: ignore[arg-type]
    flask_app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        flask_app.wsgi_app, {"/ops": mounted}
    )
    client = flask_app.test_client()
    assert client.get("/").get_data(as_text=True) == "flask home"
    assert client.get("/ops/").headers["Location"] == "/ops/login"
    form = client.get("/ops/login").get_data(as_text=True)
    assert 'action="/ops/login"' in form
    answer = client.post("/ops/login", data={"token": OPERATOR, "nonce": _nonce(form)})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    assert answer.headers["Location"] == "/ops/"
    assert any("Path=/ops" in c for c in answer.headers.getlist("Set-Cookie"))
    overview = client.get("/ops/")
    assert overview.status_code == 200
    html = overview.get_data(as_text=True)
    assert 'href="/ops/dlq/"' in html
    assert 'data-status="PENDING"><span>PENDING</span><b>4</b>' in html
    reader = {"Authorization": f"Bearer {READER}"}
    page = client.get("/ops/api/dlq/", headers=reader).get_json()
    assert len(page["records"]) == 4
    record = populated.records["oom"]
    refused = client.post(f"/ops/api/dlq/{record.id}/resolve/", headers=reader)
    assert refused.status_code == 403
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    resolved = client.post(f"/ops/api/dlq/{record.id}/resolve/", headers=operator)
    assert resolved.status_code == 200, resolved.get_data(as_text=True)
    assert populated.get(record.id).status is DeadLetterStatus.RESOLVED

"""The dashboard in a real browser: headless Chromium driven by Playwright.

The real ASGI app runs under uvicorn on 127.0.0.1 in a background thread, over
the SQLite store of ``conftest.populated``, with a Celery app on the memory
broker (``resilience.celery.install``) as its replay. Playwright cannot download
browsers here, so it launches Debian's ``chromium``. Without chromium or
playwright the tests skip locally and fail in CI (``CI`` or
``RESILIENCE_REQUIRE_SERVERS=1`` set): the browser test must run there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from resilience import DeadLetterStatus

from .conftest import OPERATOR, XSS, Populated

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, Dialog, Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 5_000


def _must_run() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1"


def _unavailable(reason: str) -> None:
    if _must_run():
        pytest.fail(
            f"{reason}; CI must run the browser test (.ci/run installs Debian's chromium "
            "and the test extra installs playwright)",
            pytrace=False,
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium through Playwright; skipped locally when either is missing."""
    executable = os.environ.get("RESILIENCE_CHROMIUM") or shutil.which("chromium")
    if executable is None:
        _unavailable("no chromium executable on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    assert executable is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 and a free port; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            pytest.fail("uvicorn did not start the dashboard within 10 s")
        time.sleep(0.01)  # polls a real server thread; no virtual time here
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def celery_app(populated: Populated) -> Iterator[Any]:
    """A Celery app on the memory broker, installed on the populated store."""
    from celery import Celery

    from resilience.celery import install

    app = Celery("dashboard_browser", broker="memory://", set_as_current=False)
    app.conf.task_default_queue = "dashboard-browser"
    install(app, store=populated.store, clock=populated.clock)
    yield app
    app.close()


@pytest.fixture
def base_url(populated: Populated, celery_app: Any) -> Iterator[str]:
    """The dashboard over the populated store, served by uvicorn."""
    from resilience.dashboard import create_app

    app = create_app(populated.store, token=OPERATOR, celery_app=celery_app, clock=populated.clock)
    with serving(app) as url:
        yield url


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A fresh browser context's page; any JavaScript dialog is recorded and fails the test."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    dialogs: list[str] = []

    def dialog(shown: Dialog) -> None:
        dialogs.append(shown.message)
        shown.dismiss()

    opened.on("dialog", dialog)
    yield opened
    context.close()
    assert dialogs == [], f"a page opened a JavaScript dialog (injected script ran?): {dialogs}"


def _log_in(page: Page, shots: Path) -> None:
    page.goto("/")
    assert page.url.endswith("/login")
    page.screenshot(path=shots / "login.png")
    page.get_by_label("Token").fill(OPERATOR)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def _queued(app: Any, queue: str) -> list[str]:
    """Task names of the messages waiting on ``queue`` of the memory broker."""
    names = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    names.append(simple.get(block=False).headers["task"])
                except simple.Empty:
                    return names
        finally:
            simple.close()


def test_operator_filters_the_queue_and_retries_a_record(
    page: Page, populated: Populated, celery_app: Any, tmp_path: Path
) -> None:
    """Log in, read the overview, filter by task and type, retry: RETRYING on detail and list."""
    from playwright.sync_api import expect

    started = time.monotonic()
    _log_in(page, tmp_path)

    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator('[data-status="PENDING"] b')).to_have_text("4")
    expect(page.locator('[data-rule="open_breaker"]')).to_contain_text("'payments' is open")
    expect(page.locator('[data-rule="system_failure"]')).to_contain_text("SYSTEM_OUT_OF_MEMORY")
    page.screenshot(path=tmp_path / "overview.png")

    page.get_by_role("link", name="Dead letters").click()
    rows = page.locator("#records tr[data-id]")
    expect(rows).to_have_count(4)
    page.get_by_label("Task").fill("send_email")
    page.get_by_label("Type").select_option("TRANSIENT_NETWORK")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/dlq/?*task=send_email*")
    expect(rows).to_have_count(2)
    net1, net2 = populated.records["net1"], populated.records["net2"]
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted(
        [net1.id, net2.id]
    )
    for index in range(2):
        expect(rows.nth(index).locator("td").nth(3)).to_have_text("send_email")
        expect(rows.nth(index).locator("td").nth(4)).to_have_text("TRANSIENT_NETWORK")
    page.screenshot(path=tmp_path / "dlq_filtered.png")

    # net1's arguments hold a redacted password, which a real replay refuses to send.
    page.locator(f'tr[data-id="{net2.id}"] a').click()
    page.wait_for_url(f"**/dlq/{net2.id}/")
    expect(page.locator("#status")).to_have_text("PENDING")
    page.screenshot(path=tmp_path / "detail_before.png")

    page.get_by_role("button", name="Retry…").click()
    page.wait_for_url(f"**/dlq/{net2.id}/retry/")
    heading = page.get_by_role("heading", name=f"Confirm retry of dead letter {net2.id}")
    expect(heading).to_be_visible()
    expect(page.locator("#summary")).to_contain_text("send_email")
    expect(page.locator("#summary")).to_contain_text("TRANSIENT_NETWORK")
    expect(page.locator("#effect")).to_contain_text("from PENDING to RETRYING")
    page.screenshot(path=tmp_path / "confirm_retry.png")
    assert populated.get(net2.id).status is DeadLetterStatus.PENDING
    assert _queued(celery_app, "dashboard-browser") == []

    page.get_by_role("button", name="Yes, retry").click()
    expect(page.get_by_role("status")).to_have_text("Done: retry")
    expect(page.locator("#status")).to_have_text("RETRYING")
    expect(page.locator("#history")).to_contain_text("dashboard")
    page.screenshot(path=tmp_path / "detail_after.png")
    assert populated.get(net2.id).status is DeadLetterStatus.RETRYING
    assert _queued(celery_app, "dashboard-browser") == ["send_email"]

    page.get_by_role("link", name="Dead letters").click()
    expect(page.locator(f'tr[data-id="{net2.id}"] .status')).to_have_text("RETRYING")
    expect(page.locator(f'tr[data-id="{net1.id}"] .status')).to_have_text("PENDING")
    page.screenshot(path=tmp_path / "dlq_after.png")

    shots = ("login", "overview", "dlq_filtered", "detail_before", "confirm_retry", "detail_after")
    for name in (*shots, "dlq_after"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    assert time.monotonic() - started < 20


def test_bulk_retry_of_a_selection_asks_for_confirmation(
    page: Page, populated: Populated, tmp_path: Path
) -> None:
    """Tick a record, review, confirm: only then is it retried, and the list says so."""
    from playwright.sync_api import expect

    _log_in(page, tmp_path)
    net2 = populated.records["net2"]
    page.goto("/dlq/")
    page.get_by_label(f"select {net2.id}").check()
    page.get_by_role("button", name="Review…").click()
    expect(page.get_by_role("heading", name="Confirm bulk retry")).to_be_visible()
    expect(page.locator("main")).to_contain_text("This will retry 1 record(s)")
    page.screenshot(path=tmp_path / "confirm.png")
    assert populated.get(net2.id).status is DeadLetterStatus.PENDING

    page.get_by_role("button", name="Yes, retry 1 record(s)").click()
    expect(page.get_by_role("status")).to_have_text("Done: bulk retry: 1 done, 0 skipped")
    expect(page.locator(f'tr[data-id="{net2.id}"] .status')).to_have_text("RETRYING")
    assert populated.get(net2.id).status is DeadLetterStatus.RETRYING


def test_a_script_in_a_message_renders_as_text(
    page: Page, populated: Populated, tmp_path: Path
) -> None:
    """A dead letter whose message holds <script> shows it as text and never runs it."""
    from playwright.sync_api import expect

    _log_in(page, tmp_path)
    xss = populated.records["xss"]
    page.goto("/dlq/?task=charge")
    link = page.locator(f'tr[data-id="{xss.id}"] a')
    expect(link).to_have_text(f"ValueError: bad amount {XSS}")
    page.screenshot(path=tmp_path / "xss_list.png")
    link.click()
    expect(page.locator("#message")).to_have_text(f"bad amount {XSS}")
    assert page.locator("main script").count() == 0
    page.screenshot(path=tmp_path / "xss_detail.png")
    # The page fixture asserts no dialog (alert(1)) was ever shown.


def test_cancelling_a_confirmation_changes_nothing(
    page: Page, populated: Populated, tmp_path: Path
) -> None:
    """Abandon with a reason, then Cancel on the confirmation page: back to detail, PENDING."""
    from playwright.sync_api import expect

    _log_in(page, tmp_path)
    oom = populated.records["oom"]
    page.goto(f"/dlq/{oom.id}/")
    page.get_by_label("Reason").fill("host retired")
    page.get_by_role("button", name="Abandon…").click()
    expect(page.locator("#effect")).to_contain_text("ABANDONED with the reason “host retired”")
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(f"**/dlq/{oom.id}/")
    expect(page.locator("#status")).to_have_text("PENDING")
    assert populated.get(oom.id).status is DeadLetterStatus.PENDING

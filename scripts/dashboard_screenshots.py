"""Regenerate the dashboard screenshots in docs/images/ from a seeded demo store.

Usage (needs the ``dashboard`` and ``celery`` extras, playwright and Debian's chromium)::

    python scripts/dashboard_screenshots.py            # writes docs/images/dashboard-*.png
    python scripts/dashboard_screenshots.py --out /tmp/shots

The store is a fresh SQLite file filled through the public API at a fixed time,
so the pages (and the images) come out the same on every run.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from celery import Celery  # type: ignore[import-untyped]
from playwright.sync_api import sync_playwright

from resilience import (
    CircuitBreaker,
    DeadLetterQueue,
    FakeClock,
    OutcomeHistory,
    RetryBudget,
    RetryEngine,
    RetryPolicy,
    Store,
    open_store,
)
from resilience.celery import install
from resilience.dashboard import create_app
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Iterator

NOW = 1_714_564_800.0  # 2024-05-01 12:00 UTC
TOKEN = "demo-operator-token-0123456789"  # noqa: S105 - a throwaway demo server's token
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = {
    "overview": "/",
    "dlq": "/dlq/",
    "detail": None,  # the first record of the list
    "breakers": "/breakers/",
    "policies": "/policies/",
    "trends": "/trends/?hours=12",
}


def seed(store: Store, clock: FakeClock) -> None:
    """Fill ``store`` with dead letters, breakers and retry outcomes of a small shop."""
    dlq = DeadLetterQueue(store, clock=clock)
    failures: list[tuple[str, BaseException, float]] = [
        ("send_email", ConnectionRefusedError(111, "Connection refused"), 0.2),
        ("send_email", ConnectionRefusedError(111, "Connection refused"), 1.5),
        ("send_email", TimeoutError("timed out reading from smtp.example.com"), 3.0),
        ("charge_card", ValueError("amount must be positive, got -5"), 0.5),
        ("charge_card", PermissionError(13, "Permission denied: '/var/run/payments.sock'"), 6.0),
        ("resize_image", MemoryError("out of memory resizing 12000x9000 image"), 2.2),
        ("export_report", OSError(28, "No space left on device"), 4.0),
        ("sync_inventory", TimeoutError("read timeout after 30 s"), 8.5),
        ("sync_inventory", ConnectionResetError(104, "Connection reset by peer"), 9.0),
        ("sync_inventory", ConnectionResetError(104, "Connection reset by peer"), 10.5),
    ]
    for number, (task, exc, hours_ago) in enumerate(failures):
        dlq.add(
            task_name=task,
            exc=exc,
            args=[number],
            kwargs={"order_id": 1000 + number, "api_key": "sk_live_demo"},
            now=NOW - hours_ago * 3600,
        )
    payments = CircuitBreaker("payments-api", store=store.breakers, clock=clock)
    for _ in range(5):
        payments.record_failure(ConnectionError("payments-api unreachable"))
    CircuitBreaker("smtp", store=store.breakers, clock=clock).record_success()
    history = OutcomeHistory(store.outcomes, clock=clock)
    outcomes = [
        ("send_email", FailureType.TRANSIENT_NETWORK, 14, 1),
        ("sync_inventory", FailureType.TRANSIENT_NETWORK, 2, 10),
        ("charge_card", FailureType.EXTERNAL_TIMEOUT, 3, 2),
    ]
    for task, kind, successes, failures_ in outcomes:
        for n in range(successes + failures_):
            history.record(task, kind, success=n < successes, now=NOW - (n % 10) * 3600)


def demo_app(store: Store, clock: FakeClock) -> Any:
    """The dashboard over ``store`` with a Celery app that configures its own policies."""
    celery = Celery("shop", broker="memory://", set_as_current=False)
    budget = RetryBudget(ratio=0.2, window=60, min_retries=10, clock=clock)
    engine = RetryEngine(
        store=store,
        budget=budget,
        clock=clock,
        policies={
            FailureType.TRANSIENT_NETWORK: RetryPolicy(
                max_retries=6, initial_delay=2, max_delay=120, jitter="proportional"
            )
        },
    )
    install(celery, engine=engine, store=store, clock=clock)
    for _ in range(30):
        budget.record_first_attempt("send_email")
    for _ in range(4):
        budget.try_acquire("send_email")
    return create_app(store, token=TOKEN, celery_app=celery, clock=clock)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def capture(base_url: str, out: Path, chromium: str) -> list[Path]:
    """Log in and save a 1200x800 screenshot of each page; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=base_url, viewport={"width": 1200, "height": 800})
        page.goto("/login")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/")
        for name, path in PAGES.items():
            if path is None:
                page.goto("/dlq/")
                page.locator("#records tr[data-id] a").first.click()
                page.wait_for_load_state()
            else:
                page.goto(path)
            target = out / f"dashboard-{name}.png"
            page.screenshot(path=target)
            written.append(target)
        browser.close()
    return written


def main() -> None:
    """Seed a demo store, serve the dashboard, write the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "images")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store = open_store(f"sqlite:///{Path(scratch) / 'demo.sqlite3'}")
        clock = FakeClock(start=NOW)
        try:
            seed(store, clock)
            with serving(demo_app(store, clock)) as url:
                for path in capture(url, options.out, options.chromium):
                    print(f"{path}  {path.stat().st_size // 1024} KB")
        finally:
            store.close()


if __name__ == "__main__":
    main()

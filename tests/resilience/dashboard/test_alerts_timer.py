"""The alert timer: sinks hear about alerts while nobody reads a page.

No test sleeps: the timer's ``sleep`` is replaced by one the test controls, and
the test thread waits on events the fake sets.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import uvicorn
from starlette.testclient import TestClient

from resilience.cli import main
from resilience.dashboard import Alert, _alerts, create_app
from resilience.errors import ConfigurationError

from .conftest import OPERATOR, Populated

if TYPE_CHECKING:
    from pathlib import Path


class Stop(Exception):
    """Raised by a fake sleep to end a timer loop in a test."""


class Sleeps:
    """A fake ``sleep``: returns at once ``free`` times, then waits until cancelled."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls: list[float] = []
        self.parked = threading.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if len(self.calls) > self.free:
            self.parked.set()
            await anyio.sleep_forever()


def test_timer_tells_sinks_and_stops_with_the_app(
    populated: Populated, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the lifespan running, a check fires after one interval and the task ends on exit."""
    sleeps = Sleeps(free=1)
    monkeypatch.setattr(_alerts, "sleep", sleeps)
    heard: list[Alert] = []
    app = create_app(
        populated.store,
        token=OPERATOR,
        clock=populated.clock,
        alert_sinks=[heard.append],
        alert_interval=timedelta(seconds=30),
    )
    with TestClient(app):
        assert sleeps.parked.wait(10), "the timer never reached its second sleep"
        assert sorted((a.rule, a.subject) for a in heard) == [
            ("open_breaker", "payments"),
            ("success_rate", "retries"),
            ("system_failure", "SYSTEM_OUT_OF_MEMORY"),
        ]
    assert sleeps.calls == [30.0, 30.0]
    # Cancelled, not still running: nothing more happens after the app stopped.
    assert len(heard) == 3


@pytest.mark.parametrize("off", [None, 0, 0.0])
def test_no_timer_when_disabled(
    populated: Populated, monkeypatch: pytest.MonkeyPatch, off: float | None
) -> None:
    """``alert_interval=None`` or ``0``: no task, sinks hear only when a page is read."""
    sleeps = Sleeps(free=0)
    monkeypatch.setattr(_alerts, "sleep", sleeps)
    heard: list[Alert] = []
    app = create_app(
        populated.store, token=OPERATOR, alert_sinks=[heard.append], alert_interval=off
    )
    with TestClient(app) as client:
        assert client.get("/api/alerts/", headers={"Authorization": "Bearer x"}).status_code == 401
    assert sleeps.calls == []
    assert heard == []


def test_default_interval_is_a_minute(populated: Populated) -> None:
    """Without ``alert_interval`` the timer checks every 60 seconds."""
    assert create_app(populated.store, token=OPERATOR).state.alert_interval == 60.0


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "60", True])
def test_bad_interval_is_refused(populated: Populated, bad: Any) -> None:
    """A negative, non-finite or non-numeric interval names the argument."""
    with pytest.raises(ConfigurationError, match="alert_interval must be") as caught:
        create_app(populated.store, token=OPERATOR, alert_interval=bad)
    assert caught.value.key == "alert_interval"


def test_a_failing_check_is_logged_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store error is logged with its traceback; the next interval checks again."""
    calls: list[int] = []

    def check() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("store down")

    async def sleep(seconds: float) -> None:
        if len(calls) == 2:
            raise Stop

    monkeypatch.setattr(_alerts, "sleep", sleep)
    with (
        caplog.at_level(logging.ERROR, logger="resilience.dashboard.alerts"),
        pytest.raises(Stop),
    ):
        anyio.run(lambda: _alerts.watch(check, interval=5.0))
    assert calls == [0, 1]
    [record] = caplog.records
    assert record.getMessage() == "periodic alert check failed; the next one runs as scheduled"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)


def test_check_once_reports_success() -> None:
    """``check_once`` runs the check (in a worker thread) and says whether it completed."""
    threads: list[str] = []

    def check() -> None:
        threads.append(threading.current_thread().name)

    assert anyio.run(_alerts.check_once, check) is True
    assert threads
    assert threads[0] != threading.current_thread().name


def test_a_failing_sink_does_not_stop_the_timer(
    populated: Populated, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink that raises is logged; the other sinks still hear and the timer keeps going."""
    sleeps = Sleeps(free=1)
    monkeypatch.setattr(_alerts, "sleep", sleeps)

    def broken(alert: Alert) -> None:
        raise OSError("webhook down")

    heard: list[Alert] = []
    app = create_app(
        populated.store,
        token=OPERATOR,
        clock=populated.clock,
        alert_sinks=[broken, heard.append],
        alert_interval=1,
    )
    with caplog.at_level(logging.ERROR, logger="resilience.dashboard.alerts"), TestClient(app):
        assert sleeps.parked.wait(10)
    assert len(heard) == 3
    assert sleeps.calls == [1.0, 1.0]
    assert any("alert sink" in r.getMessage() for r in caplog.records)


def test_cli_passes_alert_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``resilience dashboard --alert-interval 15`` serves an app that checks every 15 s."""
    served: list[Any] = []
    monkeypatch.setenv("RESILIENCE_DASHBOARD_TOKEN", OPERATOR)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(app))
    store = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["dashboard", "--store", store, "--alert-interval", "15"]) == 0
    assert served[0].state.alert_interval == 15.0


def test_cli_refuses_a_negative_alert_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A negative ``--alert-interval`` is a usage error naming the option."""
    monkeypatch.setenv("RESILIENCE_DASHBOARD_TOKEN", OPERATOR)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: pytest.fail("served"))
    store = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["dashboard", "--store", store, "--alert-interval", "-5"]) == 2
    err = capsys.readouterr().err
    assert "alert_interval must be a finite number of seconds >= 0" in err
    assert "-5.0" in err

"""The engine install() builds: its breakers follow the policies, its peak hours the app's zone."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience import (
    BreakerSettings,
    ConfigurationError,
    FailureType,
    FakeClock,
    RetryEngine,
    RetryPolicy,
)
from resilience.celery import ResilientTask, install, installed, runtime_for
from resilience.celery._config import ResilienceSettings, resolve_settings
from resilience.policy import default_policy
from resilience.storage import MemoryStore

if TYPE_CHECKING:
    from celery import Celery

    from .conftest import InProcessWorker

API_DOWN = FailureType.EXTERNAL_API_DOWN
NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
# Monday 1 June 2026, 10:00 in New York: inside the default peak hours (09:00-18:00) there,
# but 14:00 UTC, so a UTC engine would defer to 18:00 UTC (14:00 New York) instead.
TEN_NY = datetime(2026, 6, 1, 10, 0, tzinfo=NEW_YORK).timestamp()
SIX_PM_NY = datetime(2026, 6, 1, 18, 0, tzinfo=NEW_YORK).timestamp()
SPREAD_CAP = 300.0  # the most RetryEngine.spread adds to a shared wait


def tuned_api_down() -> RetryPolicy:
    """The EXTERNAL_API_DOWN policy with a breaker of 10 failures and a 60 s reset."""
    return RetryPolicy.from_dict(
        {
            **default_policy(API_DOWN).to_dict(),
            "breaker": {"failure_threshold": 10, "reset_timeout": 60},
        }
    )


# --------------------------------------------------------------------------- breakers


def test_the_runtimes_breaker_takes_the_configured_policy(app: Celery, store: MemoryStore) -> None:
    """install(policies={EXTERNAL_API_DOWN: ...breaker...}) sets every task breaker's settings."""
    install(app, store=store, policies={API_DOWN: tuned_api_down()})
    breaker = runtime_for(app).breaker("payments-api")
    assert (breaker.failure_threshold, breaker.reset_timeout) == (10, 60.0)


def test_breaker_settings_from_app_conf_reach_the_runtimes_breaker(
    app: Celery, store: MemoryStore
) -> None:
    """resilience_policies as plain dicts configure the breakers the same way."""
    app.conf.resilience_policies = {
        "EXTERNAL_API_DOWN": {"breaker": {"failure_threshold": 4, "reset_timeout": 120}}
    }
    breaker = install(app, store=store).breaker("mail-api")
    assert (breaker.failure_threshold, breaker.reset_timeout) == (4, 120.0)


def test_a_task_breaker_opens_at_the_configured_threshold(
    app: Celery, store: MemoryStore, clock: FakeClock, worker: InProcessWorker
) -> None:
    """A task's failures open its breaker after the configured 10, not the default 3."""
    quick = RetryPolicy(max_retries=20, initial_delay=1.0, factor=1.0, jitter="none")
    runtime = install(
        app,
        store=store,
        clock=clock,
        policies={API_DOWN: tuned_api_down(), FailureType.TRANSIENT_NETWORK: quick},
    )

    @app.task(shared=False, base=ResilientTask, bind=True, name="api.call", breaker="payments-api")
    def call(self: Any, n: int) -> None:
        raise ConnectionError("payments API refused the connection")

    for n in range(9):
        call.delay(n)
        worker.run_next()
    breaker = runtime.breaker("payments-api")
    assert breaker.state.value == "closed"
    call.delay(9)
    delivery = worker.run_next()
    assert breaker.state.value == "open"
    # The retry waits for the probe, 60 s away (spread over up to 30 s more), not 30 min
    # (the default policy's breaker) nor the 1 s backoff.
    assert 60.0 <= delivery.result.when <= 90.0


def test_installed_keeps_the_configured_breaker_settings(app: Celery, store: MemoryStore) -> None:
    """installed() rebuilds the engine from the same policies: the same breaker settings."""
    install(app, store=store, policies={API_DOWN: tuned_api_down()})
    with installed(app, store=MemoryStore(), clock=FakeClock()) as inside:
        breaker = inside.breaker("payments-api")
        assert (breaker.failure_threshold, breaker.reset_timeout) == (10, 60.0)


# --------------------------------------------------------------------------- time zone


def test_the_engine_uses_celerys_timezone(
    app: Celery, store: MemoryStore, worker: InProcessWorker
) -> None:
    """app.conf.timezone='America/New_York': a low-priority failure at 10:00 waits for 18:00 NY."""
    app.conf.timezone = "America/New_York"
    clock = FakeClock(start=TEN_NY)
    runtime = install(app, store=store, clock=clock)
    assert runtime.settings.timezone == NEW_YORK
    assert runtime.engine.timezone == NEW_YORK
    assert runtime.engine.peak_hours == (9, 18)

    @app.task(
        shared=False,
        base=ResilientTask,
        bind=True,
        name="reports.render",
        resilience={"priority": "low"},
    )
    def render(self: Any, report_id: int) -> None:
        raise ConnectionError("report database refused the connection")

    render.delay(1)
    delivery = worker.run_next()
    eta = TEN_NY + delivery.result.when
    assert SIX_PM_NY <= eta <= SIX_PM_NY + SPREAD_CAP


def test_many_deferred_failures_come_back_spread_after_18_new_york(
    app: Celery, store: MemoryStore
) -> None:
    """100 low-priority failures from 10:00 to 11:40 NY return within 18:00-18:05 NY, apart."""
    app.conf.timezone = "America/New_York"
    clock = FakeClock(start=TEN_NY)
    engine = install(app, store=store, clock=clock).engine
    etas = []
    for n in range(100):
        decision = engine.decide(f"report-{n}", TimeoutError("timed out"), 0, priority="low")
        assert decision.eta is not None
        etas.append(decision.eta)
        clock.advance(60)
    assert all(SIX_PM_NY <= eta <= SIX_PM_NY + SPREAD_CAP for eta in etas)
    assert len(set(etas)) == 100


def test_without_any_timezone_the_engine_runs_on_utc(app: Celery, store: MemoryStore) -> None:
    """No setting and no Celery timezone: UTC, as before."""
    runtime = install(app, store=store)
    assert runtime.settings.timezone == ZoneInfo("UTC")
    assert runtime.engine.timezone == ZoneInfo("UTC")


def test_the_resilience_setting_beats_celerys_timezone(app: Celery, store: MemoryStore) -> None:
    """install(timezone=) > resilience_timezone > RESILIENCE_TIMEZONE > Celery's timezone."""
    app.conf.timezone = "America/New_York"
    app.conf.resilience_timezone = "Europe/Paris"
    assert install(app, store=store).engine.timezone == PARIS
    assert install(app, store=store, timezone="Asia/Tokyo").engine.timezone == ZoneInfo(
        "Asia/Tokyo"
    )
    conf: dict[str, Any] = {"timezone": "America/New_York"}
    env = {"RESILIENCE_TIMEZONE": "Europe/Paris"}
    assert resolve_settings({}, conf, env).timezone == PARIS
    assert resolve_settings({}, conf, {}).timezone == NEW_YORK
    assert resolve_settings({}, {"resilience_timezone": "Asia/Tokyo", **conf}, env).timezone == (
        ZoneInfo("Asia/Tokyo")
    )
    assert resolve_settings({"timezone": NEW_YORK}, {}, env).timezone is NEW_YORK


def test_celerys_timezone_may_be_a_tzinfo() -> None:
    """Celery accepts a tzinfo as its timezone; so does the fallback."""
    assert resolve_settings({}, {"timezone": PARIS}, {}).timezone is PARIS


# --------------------------------------------------------------------------- peak hours


def test_peak_hours_from_every_source(app: Celery, store: MemoryStore) -> None:
    """peak_hours: a tuple, a list, or 'start-end' text; the usual precedence."""
    app.conf.resilience_peak_hours = "22-6"
    assert install(app, store=store).engine.peak_hours == (22, 6)
    assert install(app, store=store, peak_hours=(8, 20)).engine.peak_hours == (8, 20)
    env = {"RESILIENCE_PEAK_HOURS": " 7 - 19 "}
    assert resolve_settings({}, {}, env).peak_hours == (7, 19)
    assert resolve_settings({}, {"resilience_peak_hours": [1, 5]}, env).peak_hours == (1, 5)
    assert resolve_settings({}, {}, {}).peak_hours == (9, 18)


def test_peak_hours_none_disables_deferral(
    app: Celery, store: MemoryStore, worker: InProcessWorker
) -> None:
    """'none' (any case): a low-priority failure at 10:00 keeps its policy delay."""
    app.conf.timezone = "America/New_York"
    runtime = install(app, store=store, clock=FakeClock(start=TEN_NY), peak_hours="None")
    assert runtime.settings.peak_hours is None
    assert runtime.engine.peak_hours is None
    decision = runtime.engine.decide("reports.render", TimeoutError("slow"), 0, priority="low")
    assert decision.delay is not None
    assert decision.delay < 3600
    assert "off-peak" not in decision.reason
    assert resolve_settings({}, {}, {"RESILIENCE_PEAK_HOURS": "none"}).peak_hours is None
    assert resolve_settings({}, {"resilience_peak_hours": "NONE"}, {}).peak_hours is None


def test_installed_passes_the_new_settings_to_the_engine_it_builds(
    app: Celery, store: MemoryStore
) -> None:
    """installed() resolves install()'s arguments again: same zone, same peak hours."""
    app.conf.timezone = "America/New_York"
    install(app, store=store, peak_hours=(1, 5))
    with installed(app, store=MemoryStore(), clock=FakeClock()) as inside:
        assert inside.engine.timezone == NEW_YORK
        assert inside.engine.peak_hours == (1, 5)
    install(app, store=store, timezone="Asia/Tokyo", peak_hours="none")
    with installed(app, store=MemoryStore(), clock=FakeClock()) as inside:
        assert inside.engine.timezone == ZoneInfo("Asia/Tokyo")
        assert inside.engine.peak_hours is None


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("given", "conf", "env", "key"),
    [
        ({"timezone": "Mars/Olympus"}, {}, {}, "timezone"),
        ({"timezone": 5}, {}, {}, "timezone"),
        ({}, {"resilience_timezone": "Europe/Pariss"}, {}, "resilience_timezone"),
        ({}, {}, {"RESILIENCE_TIMEZONE": "../etc/passwd"}, "RESILIENCE_TIMEZONE"),
        ({}, {"timezone": "Mars/Olympus"}, {}, "timezone"),
        ({"peak_hours": (9, 9)}, {}, {}, "peak_hours"),
        ({"peak_hours": (9, 24)}, {}, {}, "peak_hours"),
        ({"peak_hours": (9,)}, {}, {}, "peak_hours"),
        ({"peak_hours": (True, 18)}, {}, {}, "peak_hours"),
        ({"peak_hours": "9"}, {}, {}, "peak_hours"),
        ({}, {"resilience_peak_hours": "nine-six"}, {}, "resilience_peak_hours"),
        ({}, {"resilience_peak_hours": 9}, {}, "resilience_peak_hours"),
        ({}, {}, {"RESILIENCE_PEAK_HOURS": "18-18"}, "RESILIENCE_PEAK_HOURS"),
        ({}, {}, {"RESILIENCE_PEAK_HOURS": "off"}, "RESILIENCE_PEAK_HOURS"),
    ],
)
def test_a_bad_timezone_or_peak_window_names_its_key(
    given: dict[str, Any], conf: dict[str, Any], env: dict[str, str], key: str
) -> None:
    """Every bad value raises ConfigurationError with the key of the source it came from."""
    with pytest.raises(ConfigurationError) as caught:
        resolve_settings(given, conf, env)
    assert caught.value.key == key
    assert key in str(caught.value)


@given(st.integers(-3, 30), st.integers(-3, 30))
def test_peak_hours_text_parses_or_is_refused(start: int, end: int) -> None:
    """'start-end' is accepted exactly when both are distinct hours in 0..23."""
    env = {"RESILIENCE_PEAK_HOURS": f"{start}-{end}"}
    if 0 <= start <= 23 and 0 <= end <= 23 and start != end:
        assert resolve_settings({}, {}, env).peak_hours == (start, end)
    else:
        with pytest.raises(ConfigurationError) as caught:
            resolve_settings({}, {}, env)
        assert caught.value.key == "RESILIENCE_PEAK_HOURS"


def test_settings_refuse_unparsed_values() -> None:
    """ResilienceSettings holds parsed values only: a tzinfo and a tuple."""
    with pytest.raises(ConfigurationError) as caught:
        ResilienceSettings(timezone="UTC")  # type: ignore[arg-type]
    assert caught.value.key == "timezone"
    with pytest.raises(ConfigurationError) as caught:
        ResilienceSettings(peak_hours=[9, 18])  # type: ignore[arg-type]
    assert caught.value.key == "peak_hours"


@pytest.mark.parametrize(
    ("arguments", "conf", "key"),
    [
        ({"timezone": "Europe/Paris"}, {}, "timezone"),
        ({"peak_hours": "none"}, {}, "peak_hours"),
        ({}, {"resilience_peak_hours": "22-6"}, "resilience_peak_hours"),
    ],
)
def test_install_refuses_engine_settings_next_to_an_engine(
    app: Celery,
    store: MemoryStore,
    arguments: dict[str, Any],
    conf: dict[str, Any],
    key: str,
) -> None:
    """timezone/peak_hours with engine= are ambiguous and refused, naming the source."""
    app.conf.update(conf)
    with pytest.raises(ConfigurationError) as caught:
        install(app, store=store, engine=RetryEngine(store=store), **arguments)
    assert caught.value.key == key


def test_a_given_engine_keeps_its_zone_despite_celerys(app: Celery, store: MemoryStore) -> None:
    """Celery's own timezone is only a fallback: an engine passed to install() keeps its own."""
    app.conf.timezone = "America/New_York"
    engine = RetryEngine(store=store, timezone="Europe/Paris", peak_hours=(1, 5))
    runtime = install(app, store=store, engine=engine)
    assert runtime.engine is engine
    assert (engine.timezone, engine.peak_hours) == (PARIS, (1, 5))


def test_breaker_settings_type_is_the_policy_field() -> None:
    """The helper policy really carries the breaker settings the tests rely on."""
    assert tuned_api_down().breaker == BreakerSettings(failure_threshold=10, reset_timeout=60)

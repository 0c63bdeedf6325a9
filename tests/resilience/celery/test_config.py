"""Settings precedence (install() > app.conf > env) and validation of every option."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience import ConfigurationError, FailureType, Priority, RetryPolicy
from resilience.celery import ResilientTask, install
from resilience.celery._config import parse_task_options, resolve_settings
from resilience.idempotency import OnStoreError
from resilience.storage import MemoryStore

if TYPE_CHECKING:
    from celery import Celery


def test_install_arguments_beat_app_conf_which_beats_the_environment() -> None:
    """The same setting from three sources: the argument wins, then conf, then env."""
    conf = {"resilience_idempotency_lease": 60, "resilience_priority": "high"}
    env = {
        "RESILIENCE_IDEMPOTENCY_LEASE": "30",
        "RESILIENCE_PRIORITY": "low",
        "RESILIENCE_MIN_DEFERRAL": "2.5",
    }
    settings = resolve_settings({"idempotency_lease": 90}, conf, env)
    assert settings.idempotency_lease == 90.0
    assert settings.priority is Priority.HIGH
    assert settings.min_deferral == 2.5
    assert resolve_settings({}, conf, env).idempotency_lease == 60.0
    assert resolve_settings({}, {}, env).idempotency_lease == 30.0
    assert resolve_settings({}, {}, {}).idempotency_lease == 300.0


def test_the_store_url_comes_from_conf_then_resilience_store_url() -> None:
    """resilience_store, then RESILIENCE_STORE_URL; durations accept timedelta."""
    env = {"RESILIENCE_STORE_URL": "sqlite:///env.db"}
    assert resolve_settings({}, {"resilience_store": "memory://"}, env).store_url == "memory://"
    assert resolve_settings({}, {}, env).store_url == "sqlite:///env.db"
    lease = resolve_settings({"idempotency_lease": timedelta(minutes=2)}, {}, {})
    assert lease.idempotency_lease == 120.0


@pytest.mark.parametrize(
    ("given", "conf", "env", "key"),
    [
        ({"idempotency_lease": -1}, {}, {}, "idempotency_lease"),
        ({}, {"resilience_idempotency_lease": "soon"}, {}, "resilience_idempotency_lease"),
        ({}, {}, {"RESILIENCE_MIN_DEFERRAL": "0"}, "RESILIENCE_MIN_DEFERRAL"),
        ({}, {}, {"RESILIENCE_ON_STORE_ERROR": "ignore"}, "RESILIENCE_ON_STORE_ERROR"),
        ({"priority": "urgent"}, {}, {}, "priority"),
        ({}, {"resilience_stor": "memory://"}, {}, "resilience_stor"),
        ({}, {"resilience_policies": {"NOT_A_TYPE": {}}}, {}, "resilience_policies['NOT_A_TYPE']"),
        ({}, {"resilience_store": 42}, {}, "resilience_store"),
    ],
)
def test_a_bad_setting_names_its_key_and_value(
    given: dict[str, Any], conf: dict[str, Any], env: dict[str, str], key: str
) -> None:
    """Every bad value raises ConfigurationError with the key of the source it came from."""
    with pytest.raises(ConfigurationError) as caught:
        resolve_settings(given, conf, env)
    assert caught.value.key == key


@given(st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
def test_durations_are_finite_and_positive_or_refused(raw: float | str) -> None:
    """Any duration from the environment is either a finite positive float or refused."""
    text = str(raw)
    try:
        expected: float | None = float(text)
    except ValueError:
        expected = None
    env = {"RESILIENCE_IN_PROGRESS_DELAY": text}
    if text == "":  # an empty variable counts as unset
        assert resolve_settings({}, {}, env).in_progress_delay == 5.0
    elif expected is not None and 0 < expected < float("inf"):
        assert resolve_settings({}, {}, env).in_progress_delay == expected
    else:
        with pytest.raises(ConfigurationError) as caught:
            resolve_settings({}, {}, env)
        assert caught.value.key == "RESILIENCE_IN_PROGRESS_DELAY"


def test_policies_from_conf_reach_the_engine(app: Celery) -> None:
    """resilience_policies (dicts or RetryPolicy) configure the app's engine."""
    app.conf.resilience_policies = {"TRANSIENT_NETWORK": {"max_retries": 7}}
    runtime = install(app, store=MemoryStore())
    assert runtime.engine.policy_for(FailureType.TRANSIENT_NETWORK).max_retries == 7


def test_install_settings_from_app_conf(app: Celery) -> None:
    """install() with no arguments reads app.conf (the Django CELERY_ namespace lands here)."""
    app.conf.resilience_store = "memory://"
    app.conf.resilience_on_store_error = "fail_open"
    runtime = install(app)
    assert runtime.store.url.startswith("memory://")
    assert runtime.settings.on_store_error is OnStoreError.FAIL_OPEN


def test_django_namespaced_settings_are_read_and_named_as_written() -> None:
    """CELERY_RESILIENCE_* under config_from_object(namespace="CELERY") configure install()."""
    from types import SimpleNamespace

    from celery import Celery

    def app_with(**settings: object) -> Celery:
        made = Celery("django-like", broker="memory://", set_as_current=False)
        made.config_from_object(SimpleNamespace(**settings), namespace="CELERY")
        return made

    runtime = install(
        app_with(
            CELERY_RESILIENCE_STORE="memory://",
            CELERY_RESILIENCE_PRIORITY="low",
            CELERY_RESILIENCE_IDEMPOTENCY_LEASE=30,
        )
    )
    assert runtime.store.url.startswith("memory://")
    assert runtime.settings.priority is Priority.LOW
    assert runtime.settings.idempotency_lease == 30.0
    with pytest.raises(ConfigurationError, match="CELERY_RESILIENCE_PRIORITY") as caught:
        install(app_with(CELERY_RESILIENCE_STORE="memory://", CELERY_RESILIENCE_PRIORITY="urgent"))
    assert caught.value.key == "CELERY_RESILIENCE_PRIORITY"
    with pytest.raises(ConfigurationError, match=r"known: .*CELERY_RESILIENCE_STORE") as caught:
        install(app_with(CELERY_RESILIENCE_PRIORTY="low"))
    assert caught.value.key == "CELERY_RESILIENCE_PRIORTY"


def test_install_refuses_policies_next_to_an_engine(app: Celery) -> None:
    """policies= with engine= is ambiguous and refused."""
    from resilience import RetryEngine

    with pytest.raises(ConfigurationError) as caught:
        install(
            app,
            store=MemoryStore(),
            engine=RetryEngine(),
            policies={FailureType.TRANSIENT_NETWORK: RetryPolicy()},
        )
    assert caught.value.key == "policies"


def test_install_refuses_a_store_that_is_not_one(app: Celery) -> None:
    """store= must be a URL or a Store."""
    with pytest.raises(ConfigurationError) as caught:
        install(app, store=object())  # type: ignore[arg-type]
    assert caught.value.key == "store"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"breaker": ""}, "breaker"),
        ({"breaker": 3}, "breaker"),
        ({"idempotency_key": 5}, "idempotency_key"),
        ({"idempotency_key": False}, "idempotency_key"),
        ({"idempotency_category": "forever"}, "idempotency_category"),
        ({"resilience": ["low"]}, "resilience"),
        ({"resilience": {"retry_policy": {}}}, "resilience.retry_policy"),
        ({"resilience": {"priority": "asap"}}, "resilience.priority"),
        ({"resilience": {"max_retries": -1}}, "resilience.max_retries"),
        ({"resilience": {"idempotency_ttl": 0}}, "resilience.idempotency_ttl"),
        (
            {"resilience": {"policies": {"TRANSIENT_NETWORK": 3}}},
            "resilience.policies.TRANSIENT_NETWORK",
        ),
    ],
)
def test_bad_task_options_are_refused_naming_the_option_and_task(
    options: dict[str, Any], key: str
) -> None:
    """A bad per-task option raises ConfigurationError with the option's key and the task."""
    namespace = {"breaker": None, "idempotency_key": None, "resilience": None, **options}
    with pytest.raises(ConfigurationError) as caught:
        parse_task_options("billing.charge", namespace)
    assert caught.value.key == key
    assert "'billing.charge'" in str(caught.value)


def test_task_options_parse_overrides() -> None:
    """resilience={...} overrides parse into typed values."""
    options = parse_task_options(
        "t",
        {
            "breaker": "mail-api",
            "idempotency_key": "mail:{to}",
            "idempotency_category": "email",
            "resilience": {"priority": "low", "max_retries": 2, "idempotency_ttl": 60},
        },
    )
    assert options.guarded
    assert options.priority is Priority.LOW
    assert options.max_retries == 2
    assert options.idempotency_ttl == 60.0


def test_bad_options_fail_when_celery_builds_the_task(app: Celery) -> None:
    """app.task(base=ResilientTask, idempotency_category=...) fails at build, not at run."""
    app.finalize()
    with pytest.raises(ConfigurationError, match="idempotency_category"):

        @app.task(shared=False, base=ResilientTask, idempotency_category="nope", name="bad")
        def bad() -> None: ...


def test_on_store_error_enum_is_accepted() -> None:
    """on_store_error accepts the enum and its value."""
    settings = resolve_settings({"on_store_error": OnStoreError.FAIL_OPEN}, {}, {})
    assert settings.on_store_error is OnStoreError.FAIL_OPEN

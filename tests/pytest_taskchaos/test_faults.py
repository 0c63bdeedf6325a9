"""Tests for the fault catalog: real exceptions, stand-ins, configuration."""

from __future__ import annotations

import errno
import sys
from datetime import timedelta

import pytest

from pytest_taskchaos.faults import CATALOG, Fault, InjectionPoint, custom, fault
from resilience import FailureType, classify
from resilience.errors import ConfigurationError

_ISSUE_FAULTS = {
    "deadlock",
    "serialization_failure",
    "lock_timeout",
    "db_connection_lost",
    "pool_exhausted",
    "connect_timeout",
    "read_timeout",
    "connection_refused",
    "connection_reset",
    "dns_failure",
    "rate_limit",
    "api_down",
    "api_error",
    "gateway_timeout",
    "oom",
    "worker_lost",
    "soft_time_limit",
    "disk_full",
    "missing_setting",
    "broker_down",
    "result_backend_down",
    "latency",
    "duplicate_delivery",
}
_OPTIONAL = ("psycopg", "sqlalchemy", "requests", "celery", "billiard", "kombu", "redis")
_RAISING = sorted(n for n, f in CATALOG.items() if f.raises is not None)


def test_catalog_holds_every_fault_of_the_issue() -> None:
    """The catalog has exactly the faults the spec lists."""
    assert set(CATALOG) == _ISSUE_FAULTS


def test_catalog_is_read_only() -> None:
    """CATALOG cannot be modified by a test that imports it."""
    with pytest.raises(TypeError):
        CATALOG["deadlock"] = CATALOG["oom"]  # type: ignore[index]


@pytest.mark.parametrize("name", _RAISING)
def test_real_exception_classifies_as_declared(name: str) -> None:
    """With the libraries installed, each fault's exception is filed under its declared type."""
    entry = CATALOG[name]
    exc = entry.exception()
    assert isinstance(exc, BaseException)
    assert classify(exc).failure_type is entry.failure_type


@pytest.mark.parametrize("name", _RAISING)
def test_stand_in_classifies_as_declared(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the libraries hidden, the fallback stand-in is filed under the same type."""
    for module in _OPTIONAL:
        monkeypatch.setitem(sys.modules, module, None)
    entry = CATALOG[name]
    exc = entry.exception()
    assert isinstance(exc, BaseException)
    assert classify(exc).failure_type is entry.failure_type
    if entry.stand_in is not None:
        assert type(exc).__module__.split(".")[0] in _OPTIONAL
        assert classify(entry.stand_in()).failure_type is entry.failure_type


def test_real_library_classes_are_used() -> None:
    """Installed libraries supply the classes user code would really catch."""
    import billiard.exceptions  # type: ignore[import-untyped]
    import celery.exceptions  # type: ignore[import-untyped]
    import kombu.exceptions
    import psycopg.errors
    import requests
    import sqlalchemy.exc

    deadlock = CATALOG["deadlock"].exception()
    assert isinstance(deadlock, psycopg.errors.DeadlockDetected)
    assert deadlock.sqlstate == "40P01"
    assert isinstance(CATALOG["pool_exhausted"].exception(), sqlalchemy.exc.TimeoutError)
    assert isinstance(CATALOG["connect_timeout"].exception(), requests.ConnectTimeout)
    assert isinstance(CATALOG["read_timeout"].exception(), requests.ReadTimeout)
    soft = CATALOG["soft_time_limit"].exception()
    assert isinstance(soft, celery.exceptions.SoftTimeLimitExceeded)
    assert isinstance(CATALOG["worker_lost"].exception(), billiard.exceptions.WorkerLostError)
    assert isinstance(CATALOG["broker_down"].exception(), kombu.exceptions.OperationalError)


@pytest.mark.parametrize(
    ("name", "sqlstate"),
    [
        ("deadlock", "40P01"),
        ("serialization_failure", "40001"),
        ("lock_timeout", "55P03"),
        ("db_connection_lost", "08006"),
    ],
)
def test_database_faults_carry_their_sqlstate(name: str, sqlstate: str) -> None:
    """Real and stand-in PostgreSQL errors expose the SQLSTATE the code checks."""
    entry = CATALOG[name]
    assert entry.stand_in is not None
    assert getattr(entry.exception(), "sqlstate", None) == sqlstate
    assert getattr(entry.stand_in(), "sqlstate", None) == sqlstate


def test_rate_limit_carries_status_and_retry_after() -> None:
    """rate_limit raises an HTTPError whose real Response has 429 and Retry-After."""
    import requests

    exc = fault("rate_limit", retry_after=timedelta(seconds=12)).exception()
    assert isinstance(exc, requests.HTTPError)
    assert isinstance(exc.response, requests.Response)
    assert exc.response.status_code == 429
    assert exc.response.headers["Retry-After"] == "12"
    assert classify(exc).retry_after == 12.0


def test_rate_limit_stand_in_carries_retry_after() -> None:
    """The stand-in response also carries Retry-After, so the classifier reads it."""
    stand_in = fault("rate_limit", retry_after=45).stand_in
    assert stand_in is not None
    exc = stand_in()
    assert classify(exc).retry_after == 45.0


@pytest.mark.parametrize("status", [502, 503])
def test_api_down_status_is_configurable(status: int) -> None:
    """api_down takes status 502 or 503 and the response reports it."""
    exc = fault("api_down", status=status).exception()
    assert exc is not None
    assert exc.response.status_code == status  # type: ignore[attr-defined]
    assert classify(exc).failure_type is FailureType.EXTERNAL_API_DOWN


def test_network_faults_wrap_the_socket_error() -> None:
    """Refused, reset and DNS faults chain the OS-level cause user code can inspect."""
    refused = CATALOG["connection_refused"].exception()
    reset = CATALOG["connection_reset"].exception()
    assert refused is not None
    assert reset is not None
    assert isinstance(refused.__cause__, ConnectionRefusedError)
    assert refused.__cause__.errno == errno.ECONNREFUSED
    assert isinstance(reset.__cause__, ConnectionResetError)


def test_disk_full_is_enospc() -> None:
    """disk_full raises OSError with errno ENOSPC."""
    exc = CATALOG["disk_full"].exception()
    assert isinstance(exc, OSError)
    assert exc.errno == errno.ENOSPC


def test_missing_setting_is_an_environ_key_error() -> None:
    """missing_setting raises the KeyError an environ lookup raises, naming the setting."""
    exc = fault("missing_setting", setting="lowercase_thing").exception()
    assert isinstance(exc, KeyError)
    assert exc.args == ("lowercase_thing",)
    # Not shaped like a setting name: only the environ traceback can make it a setting.
    assert classify(exc).failure_type is FailureType.CONFIG_MISSING_SETTING


def test_each_firing_gets_a_fresh_exception() -> None:
    """Two firings never share an exception object (tracebacks would pile up)."""
    for name in _RAISING:
        first, second = CATALOG[name].exception(), CATALOG[name].exception()
        assert first is not second, name


def test_behaviour_flags() -> None:
    """Worker loss, duplicates, latency and outages are data the simulation reads."""
    assert CATALOG["worker_lost"].worker_lost
    assert CATALOG["worker_lost"].point is InjectionPoint.EXIT
    assert CATALOG["duplicate_delivery"].duplicate_delivery
    assert CATALOG["duplicate_delivery"].exception() is None
    assert CATALOG["broker_down"].broker_down
    assert CATALOG["result_backend_down"].result_backend_down
    slow = fault("latency", seconds=timedelta(minutes=2))
    assert slow.latency == 120.0
    assert slow.exception() is None
    assert slow.options == {"seconds": 120.0}
    assert not CATALOG["deadlock"].worker_lost
    assert not CATALOG["deadlock"].broker_down


def test_default_points() -> None:
    """Faults fire at task entry unless their nature puts them elsewhere."""
    assert CATALOG["deadlock"].point is InjectionPoint.ENTRY
    assert CATALOG["duplicate_delivery"].point is InjectionPoint.EXIT
    assert CATALOG["broker_down"].point is InjectionPoint.PUBLISH
    assert CATALOG["result_backend_down"].point is InjectionPoint.RESULT
    with pytest.raises(ConfigurationError, match="it takes: no parameters"):
        fault("deadlock", point="exit")


def test_unknown_fault_lists_valid_names_and_suggests() -> None:
    """A typo names the closest fault and lists every valid one."""
    with pytest.raises(ConfigurationError, match="did you mean 'deadlock'") as info:
        fault("deadlok")
    assert info.value.key == "fault"
    assert info.value.value == "deadlok"
    for name in CATALOG:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("deadlock", {"retry_after": 3}, "retry_after"),
        ("rate_limit", {"retry_after": -1}, "retry_after"),
        ("rate_limit", {"retry_after": "soon"}, "retry_after"),
        ("api_down", {"status": 500}, "status"),
        ("latency", {"seconds": 0}, "seconds"),
        ("latency", {"seconds": float("inf")}, "seconds"),
        ("missing_setting", {"setting": ""}, "setting"),
        ("oom", {"point": "middle"}, "point"),
    ],
)
def test_bad_parameters_name_the_parameter(name: str, params: dict[str, object], key: str) -> None:
    """An unknown or invalid parameter raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=key) as info:
        fault(name, **params)
    assert info.value.key == key


def test_custom_from_instance_copies_per_firing() -> None:
    """An exception instance is copied for each firing and classified automatically."""
    original = ValueError("bad card")
    made = custom(original, name="bad_card")
    first = made.exception()
    assert isinstance(first, ValueError)
    assert first is not original
    assert first.args == ("bad card",)
    assert made.failure_type is FailureType.PERMANENT_VALIDATION
    assert made.name == "bad_card"


def test_custom_from_class_and_factory() -> None:
    """An exception class or zero-argument factory makes a fault; its type may be set."""
    from_class = custom(TimeoutError)
    assert isinstance(from_class.exception(), TimeoutError)
    assert from_class.point is InjectionPoint.ENTRY
    from_factory = custom(
        lambda: RuntimeError("boom"), name="boom", failure_type=FailureType.UNKNOWN
    )
    assert from_factory.failure_type is FailureType.UNKNOWN
    assert str(from_factory.exception()) == "boom"


@pytest.mark.parametrize("bad", [42, "ValueError", lambda: "not an exception"])
def test_custom_rejects_non_exceptions(bad: object) -> None:
    """custom() refuses anything that does not make an exception."""
    with pytest.raises(ConfigurationError) as info:
        custom(bad)  # type: ignore[arg-type]
    assert info.value.key == "exception"


def test_fault_validates_fields() -> None:
    """A Fault that does nothing, or has a negative latency, is refused."""
    with pytest.raises(ConfigurationError) as nothing:
        Fault(name="noop", failure_type=None)
    assert nothing.value.key == "raises"
    with pytest.raises(ConfigurationError) as negative:
        Fault(name="slow", failure_type=None, latency=-1.0)
    assert negative.value.key == "latency"
    with pytest.raises(ConfigurationError) as unnamed:
        Fault(name="", failure_type=None, latency=1.0)
    assert unnamed.value.key == "name"


def test_importing_the_catalog_imports_no_optional_library() -> None:
    """Importing faults.py loads none of the optional libraries it can raise from."""
    import subprocess

    code = (
        "import sys, pytest_taskchaos.faults; "
        f"print(sorted(m for m in {_OPTIONAL!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

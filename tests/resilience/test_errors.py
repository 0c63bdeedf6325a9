"""Tests for the error tree."""

from __future__ import annotations

from resilience.errors import CircuitOpenError, ConfigurationError, ResilienceError


def test_configuration_error_is_a_value_error_with_fields() -> None:
    """ConfigurationError is caught by `except ValueError` and carries its key and value."""
    error = ConfigurationError("bad", key="initial_delay", value=-1, path="a.yaml", line=3)
    assert isinstance(error, ValueError)
    assert isinstance(error, ResilienceError)
    assert (error.key, error.value, error.path, error.line) == ("initial_delay", -1, "a.yaml", 3)


def test_circuit_open_error_names_breaker_and_probe() -> None:
    """CircuitOpenError says which breaker refused and when it probes next."""
    error = CircuitOpenError("payments-api", 12.5)
    assert (error.breaker, error.retry_after) == ("payments-api", 12.5)
    assert str(error) == "circuit breaker 'payments-api' is open (next probe in 12.500s)"
    forced = CircuitOpenError("payments-api", None)
    assert "forced open" in str(forced)


def test_every_error_survives_pickling_with_its_fields() -> None:
    """Errors cross process boundaries (Celery's prefork pool pickles them) intact."""
    import pickle

    from resilience.errors import (
        DeadLetterConflict,
        IdempotencyError,
        IdempotencyInProgress,
        IdempotencyKeyMismatch,
        StorageUnavailable,
    )

    errors: list[BaseException] = [
        ConfigurationError("bad", key="initial_delay", value=-1, path="a.yaml", line=3),
        CircuitOpenError("payments-api", 12.5),
        CircuitOpenError("payments-api", None),
        StorageUnavailable("refused", store="redis://:***@cache:6379/0", role="idempotency"),
        IdempotencyError("nope", key="charge:1"),
        IdempotencyInProgress("charge:1", 4.5),
        IdempotencyKeyMismatch("charge:1"),
        DeadLetterConflict("already resolved", record_id="r1", status="RESOLVED"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        public = {k: v for k, v in vars(error).items() if not k.startswith("_")}
        assert {k: v for k, v in vars(copy).items() if not k.startswith("_")} == public

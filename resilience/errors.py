"""Every error `resilience` raises, under one root.

The tree::

    ResilienceError                        root: catch this to catch anything of ours
    ├── ConfigurationError(ValueError)     bad setting, policy field, rule or URL (.key, .value)
    ├── CircuitOpenError                   a breaker refused the call (.breaker, .retry_after)
    ├── StorageUnavailable(ConnectionError) a store's server cannot be reached (.store, .role)
    ├── IdempotencyError                   an idempotency key cannot be claimed (.key)
    │   ├── IdempotencyInProgress          another run holds the key (.retry_after)
    │   └── IdempotencyKeyMismatch(ValueError)  same key, different payload (.key)
    └── DeadLetterConflict                 a dead letter's status changed under us (.record_id)

Errors mix in the matching builtin so code that already catches ``ValueError``
keeps working. When retries run out, the last original exception propagates
(with a note of the attempts); it is never wrapped in an error from this tree.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "ConfigurationError",
    "DeadLetterConflict",
    "IdempotencyError",
    "IdempotencyInProgress",
    "IdempotencyKeyMismatch",
    "ResilienceError",
    "StorageUnavailable",
]


class ResilienceError(Exception):
    """Root of every error raised by `resilience`."""


class ConfigurationError(ResilienceError, ValueError):
    """A setting, policy field, rule or URL is invalid.

    Attributes:
        key: the name of the offending field or setting (``"initial_delay"``).
        value: the value that was rejected (credentials are never stored here).
        path: the file the setting came from, when it came from a file.
        line: the 1-based line in ``path``, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: object = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.value = value
        self.path = path
        self.line = line

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields: the default reduce would call cls(message) and lose them.
        # Errors cross process boundaries (Celery's prefork pool pickles them).
        fields = {"key": self.key, "value": self.value, "path": self.path, "line": self.line}
        return (_rebuild, (type(self), self.args, fields))


class CircuitOpenError(ResilienceError):
    """A circuit breaker is open (or forced open) and refused the call.

    Attributes:
        breaker: the breaker's name (usually the dependency, ``"payments-api"``).
        retry_after: seconds until the breaker admits its next probe call
            (``None`` while forced open by an operator: no probe is scheduled).
    """

    def __init__(self, breaker: str, retry_after: float | None) -> None:
        if retry_after is None:
            detail = "forced open by an operator"
        else:
            detail = f"next probe in {retry_after:.3f}s"
        super().__init__(f"circuit breaker {breaker!r} is open ({detail})")
        self.breaker = breaker
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.breaker, self.retry_after))


class StorageUnavailable(ResilienceError, ConnectionError):
    """A store's server (Redis, PostgreSQL) or file cannot be reached.

    Attributes:
        store: the store's URL with any password masked.
        role: which role failed (``"idempotency"``, ``"dead_letters"``, ...), when known.
    """

    def __init__(self, message: str, *, store: str, role: str | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.role = role

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, {"store": self.store, "role": self.role}))


class IdempotencyError(ResilienceError):
    """An idempotency key could not be claimed.

    Attributes:
        key: the idempotency key.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, {"key": self.key}))


class IdempotencyInProgress(IdempotencyError):
    """Another run holds the key's lease; try again after ``retry_after`` seconds.

    Attributes:
        retry_after: seconds left on the holder's lease.
    """

    def __init__(self, key: str, retry_after: float) -> None:
        super().__init__(
            f"idempotency key {key!r} is in progress in another run "
            f"(lease ends in {retry_after:.3f}s)",
            key=key,
        )
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key, self.retry_after))


class IdempotencyKeyMismatch(IdempotencyError, ValueError):
    """The key was claimed with a different payload: a key reused for another request."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used with different arguments; "
            "use a new key for a different request",
            key=key,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key,))


class DeadLetterConflict(ResilienceError):
    """A dead letter's status is not what the action expects (someone acted on it first).

    Attributes:
        record_id: the dead letter's id.
        status: its current status (``None`` if it no longer exists).
    """

    def __init__(self, message: str, *, record_id: str, status: str | None) -> None:
        super().__init__(message)
        self.record_id = record_id
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:
        fields = {"record_id": self.record_id, "status": self.status}
        return (_rebuild, (type(self), self.args, fields))


def _rebuild(
    cls: type[BaseException], args: tuple[object, ...], fields: dict[str, object]
) -> object:
    """Unpickle an error whose constructor takes keyword-only fields."""
    return cls(*args, **fields)

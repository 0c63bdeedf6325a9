"""What the Redis backend's role classes share: the client protocol, key names, error mapping.

Kept apart from ``redis.py`` so the dead-letter role can live in its own module
without an import cycle. redis-py itself is never imported here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from resilience.errors import StorageUnavailable

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "Lifecycle",
    "RedisClient",
    "ScriptRunner",
    "Shared",
    "glob_escape",
    "number",
    "text",
]


class RedisClient(Protocol):
    """The few client methods the Redis backend calls.

    ``redis.Redis`` and ``fakeredis.FakeRedis`` both fit, with or without
    ``decode_responses``. Every multi-step update goes through
    :meth:`register_script` (one atomic ``EVALSHA``); the other methods are
    single-command reads, plus a non-transactional pipeline for batching.
    """

    def register_script(self, script: str, /) -> Any:
        """Wrap a Lua script; calling the result with ``keys=`` and ``args=`` runs it."""
        ...

    def get(self, name: str, /) -> Any:
        """``GET``."""
        ...

    def mget(self, keys: Any, /, *args: Any) -> Any:
        """``MGET``."""
        ...

    def hgetall(self, name: str, /) -> Any:
        """``HGETALL``."""
        ...

    def zrangebylex(
        self, name: str, low: Any, high: Any, /, start: int | None = None, num: int | None = None
    ) -> Any:
        """``ZRANGEBYLEX``."""
        ...

    def zrevrangebylex(
        self, name: str, high: Any, low: Any, /, start: int | None = None, num: int | None = None
    ) -> Any:
        """``ZREVRANGEBYLEX``."""
        ...

    def zrangebyscore(self, name: str, low: Any, high: Any, /) -> Any:
        """``ZRANGEBYSCORE``."""
        ...

    def zcard(self, name: str) -> Any:
        """``ZCARD``."""
        ...

    def zlexcount(self, name: str, low: Any, high: Any, /) -> Any:
        """``ZLEXCOUNT``."""
        ...

    def zcount(self, name: str, low: Any, high: Any, /) -> Any:
        """``ZCOUNT``."""
        ...

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Any:
        """``SCAN`` with ``MATCH`` (operator listings only, never on a hot path)."""
        ...

    def pipeline(self, transaction: bool = True) -> Any:
        """A pipeline (the backend only uses ``transaction=False``, for batching reads)."""
        ...

    def close(self) -> None:
        """Release the client's connections."""
        ...


def text(value: bytes | str) -> str:
    """A reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def number(value: float) -> str:
    """``value`` as the decimal text Lua parses back to the same double."""
    as_float = float(value)
    if math.isnan(as_float):
        raise ValueError("NaN is not a time or a duration")
    return repr(as_float)


class ScriptRunner:
    """Runs one Lua script with ``EVALSHA`` straight on the client, on hot paths.

    redis-py's ``Script.__call__`` costs about as much Python as the rest of a
    command (it re-imports ``Pipeline`` and rebuilds the arguments on every call),
    so when the client has ``evalsha`` and the registered script has a ``sha`` the
    runner calls ``evalsha`` itself. If the server lost its script cache (a restart,
    ``SCRIPT FLUSH``) the script object is called instead, which loads it again.
    Clients without ``evalsha`` (test stubs) always go through the script object.

    Args:
        client: the client.
        source: the Lua source.
        numkeys: how many of the call's leading arguments are keys.
    """

    __slots__ = ("_evalsha", "_numkeys", "_script")

    def __init__(self, client: RedisClient, source: str, *, numkeys: int) -> None:
        self._script = client.register_script(source)
        self._numkeys = numkeys
        evalsha = getattr(client, "evalsha", None)
        usable = callable(evalsha) and isinstance(getattr(self._script, "sha", None), str)
        self._evalsha = evalsha if usable else None

    def __call__(self, *keys_and_args: str) -> Any:
        """Run the script on ``numkeys`` keys then the arguments; its reply."""
        evalsha = self._evalsha
        if evalsha is not None:
            try:
                return evalsha(self._script.sha, self._numkeys, *keys_and_args)
            except Exception as exc:
                if not _no_script(exc):
                    raise
        split = self._numkeys
        return self._script(keys=keys_and_args[:split], args=keys_and_args[split:])


def _no_script(exc: BaseException) -> bool:
    # redis-py's NoScriptError, recognised without importing redis-py.
    return any(kind.__name__ == "NoScriptError" for kind in type(exc).__mro__) or str(
        exc
    ).startswith("NOSCRIPT")


class Lifecycle:
    """Whether the store that owns a set of roles has been closed (shared by the roles)."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False


class Shared:
    """The client, key prefix, masked URL and error mapping that every role uses.

    Also a re-usable context manager: ``with shared:`` refuses to start once the
    store is closed, and turns the client's connection and timeout errors into
    :class:`StorageUnavailable`, with the original exception chained and no
    password in the message. Hot paths do the same inline with :meth:`refuse` and
    :meth:`failure` (a ``try`` costs nothing; a context manager is two calls).
    """

    __slots__ = ("client", "lifecycle", "prefix", "role", "unavailable", "url")

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        url: str,
        role: str,
        unavailable: tuple[type[BaseException], ...],
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.url = url
        self.role = role
        self.unavailable = unavailable
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle()

    def for_role(self, role: str) -> Shared:
        """The same connection and lifecycle, reporting failures as ``role``."""
        return Shared(
            self.client,
            prefix=self.prefix,
            url=self.url,
            role=role,
            unavailable=self.unavailable,
            lifecycle=self.lifecycle,
        )

    def refuse(self) -> NoReturn:
        """Raise the error of a closed store.

        Raises:
            StorageUnavailable: always.
        """
        raise StorageUnavailable(
            f"Redis store {self.url} is closed", store=self.url, role=self.role
        )

    def failure(self, exc: BaseException) -> StorageUnavailable:
        """The ``StorageUnavailable`` that reports ``exc`` (one of ``unavailable``)."""
        detail = _scrub(f"{type(exc).__name__}: {exc}", self.client)
        return StorageUnavailable(
            f"Redis store {self.url} is unavailable ({self.role}): {detail}",
            store=self.url,
            role=self.role,
        )

    def __enter__(self) -> None:
        if self.lifecycle.closed:
            self.refuse()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, self.unavailable):
            raise self.failure(exc) from exc


def _scrub(message: str, client: object) -> str:
    # redis-py does not put passwords in its errors today; this keeps it that way.
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    password = kwargs.get("password") if isinstance(kwargs, dict) else None
    if isinstance(password, str) and password:
        return message.replace(password, "***")
    return message


def glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, for a literal ``SCAN MATCH`` prefix."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)

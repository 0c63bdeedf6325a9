"""PostgreSQL backend (``postgresql://...``): state shared by workers on many machines.

Uses psycopg 3 (``pip install 'pytest-taskchaos[postgres]'``), imported only here.
Connections come from a small pool of autocommit connections, so each single
statement is its own transaction and the common paths (an idempotency acquire, a
dead-letter insert, a counter increment) cost one round trip. Tables live in
``schema`` when given (created if missing), else wherever the search path puts them.

A connection that the server closed while it sat idle (a restart, a failover,
``pg_terminate_backend``) is noticed before it is used and replaced, so a server
that comes back is used again without errors. A connection lost in the middle of
a statement raises :class:`~resilience.errors.StorageUnavailable`: the outcome of
that write is unknown, and the caller decides (fail closed, spool, retry later).
Read-only work is retried once on a fresh connection.
"""

from __future__ import annotations

import math
import re
import select
import zlib
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from resilience.clock import seconds_of
from resilience.errors import ConfigurationError, StorageUnavailable
from resilience.storage._open import mask_url
from resilience.storage._sql import (
    SCHEMA_VERSION,
    ConnectionPool,
    Dialect,
    check_version,
    migrate,
    postgres_dialect,
    schema_version,
)
from resilience.storage._sql_roles import (
    SQLBreakerStore,
    SQLDeadLetterStore,
    SQLIdempotencyStore,
    SQLOutcomeStore,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import timedelta

    from resilience.storage._sql import Session

__all__ = ["PostgresStore"]

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
# pg_advisory_xact_lock(int, int): a fixed class id and the schema's CRC-32, the same
# in every process (Python's hash() is randomised per process, so it would not be).
_LOCK_CLASS = 0x7E51_1E7C & 0x7FFF_FFFF
_POOL_WAIT = 30.0


class _PgSession:
    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def change(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(sql, params).rowcount


class PostgresStore:
    """All four roles in PostgreSQL tables, safe across threads, processes and hosts.

    Args:
        conninfo: a ``postgresql://`` URL or a libpq ``key=value`` string.
        schema: put the tables in this schema (created if missing); ``None`` uses
            the connection's search path.
        max_connections: the most connections this store opens at once; more
            concurrent callers wait for one to be free.
        connect_timeout: how long opening a connection may take.

    Raises:
        ConfigurationError: an invalid schema name, or a database whose schema
            version is newer than this release understands.
        StorageUnavailable: the server cannot be reached (the message names the URL
            with its password masked).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        max_connections: int = 10,
        connect_timeout: float | timedelta = 10.0,
    ) -> None:
        self._url = _mask(conninfo)
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(
                f"schema {schema!r} is not a plain SQL identifier (letters, digits, _)",
                key="schema",
                value=schema,
            )
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or (max_connections < 1)
        ):
            raise ConfigurationError(
                f"max_connections must be an int >= 1, got {max_connections!r}",
                key="max_connections",
                value=max_connections,
            )
        timeout = seconds_of(connect_timeout, name="connect_timeout")
        if timeout <= 0:
            raise ConfigurationError(
                f"connect_timeout must be > 0, got {timeout!r}",
                key="connect_timeout",
                value=connect_timeout,
            )
        self._conninfo = conninfo
        self._secret = _password(conninfo)
        self._schema = schema
        self._connect_timeout = max(1, math.ceil(timeout))
        self._dialect = postgres_dialect(schema)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            connect=self._connect,
            close=lambda conn: conn.close(),
            max_size=max_connections,
            timeout=_POOL_WAIT,
            stale=_stale,
        )
        try:
            self._prepare()
        except BaseException:
            self._pool.close()
            raise
        self._breakers = SQLBreakerStore(self)
        self._idempotency = SQLIdempotencyStore(self)
        self._dead_letters = SQLDeadLetterStore(self)
        self._outcomes = SQLOutcomeStore(self)

    # ------------------------------------------------------------------ Store protocol

    @property
    def url(self) -> str:
        """The connection string with its password replaced by ``***``."""
        return self._url

    @property
    def schema(self) -> str | None:
        """The schema holding the tables (``None``: the search path)."""
        return self._schema

    @property
    def breakers(self) -> SQLBreakerStore:
        """Breaker state."""
        return self._breakers

    @property
    def idempotency(self) -> SQLIdempotencyStore:
        """Idempotency records."""
        return self._idempotency

    @property
    def dead_letters(self) -> SQLDeadLetterStore:
        """Dead letters."""
        return self._dead_letters

    @property
    def outcomes(self) -> SQLOutcomeStore:
        """Outcome counters."""
        return self._outcomes

    def close(self) -> None:
        """Close every connection (busy ones as they come back); the store is unusable after."""
        self._pool.close()

    def __repr__(self) -> str:
        schema = "" if self._schema is None else f", schema={self._schema!r}"
        return f"PostgresStore({self._url!r}{schema})"

    # ------------------------------------------------------------------ Connector protocol

    @property
    def dialect(self) -> Dialect:
        """The PostgreSQL dialect for this store's schema."""
        return self._dialect

    def run(
        self,
        role: str,
        work: Callable[[Session], T],
        *,
        atomic: bool = False,
        write: bool = True,
    ) -> T:
        """Run ``work`` on a pooled connection (a low-level hook for the role classes).

        Args:
            role: the role name put in errors.
            work: the statements to run.
            atomic: run them in one transaction.
            write: whether they write; read-only work is retried once on a fresh
                connection when its connection breaks.

        Returns:
            What ``work`` returned.

        Raises:
            StorageUnavailable: the server cannot be reached, the connection broke
                mid-statement, or no pooled connection came free in time.
            ValueError: a value PostgreSQL cannot store (text containing NUL).
        """
        attempts = 1 if write else 2
        for attempt in range(attempts):
            conn = self._borrow(role)
            broken = False
            try:
                session = _PgSession(conn)
                if atomic:
                    with conn.transaction():
                        return work(session)
                return work(session)
            except psycopg.OperationalError as exc:
                broken = True
                # The server went away: the other idle connections are dead too.
                self._pool.discard_idle()
                if attempt + 1 < attempts:
                    continue
                raise self._unavailable(exc, role) from _cause(exc, self._secret)
            except psycopg.DataError as exc:
                raise ValueError(f"{role}: PostgreSQL refused a value: {exc}") from exc
            finally:
                self._pool.release(conn, discard=broken or conn.broken or conn.closed)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ internals

    def _borrow(self, role: str) -> psycopg.Connection[Any]:
        try:
            return self._pool.acquire()
        except RuntimeError:
            raise StorageUnavailable(
                f"store {self._url} is closed", store=self._url, role=role
            ) from None
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"store {self._url} ({role}): {exc}", store=self._url, role=role
            ) from None
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc, role) from _cause(exc, self._secret)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
        )

    def _unavailable(self, exc: psycopg.Error, role: str) -> StorageUnavailable:
        text = str(exc).strip()
        if self._secret:
            text = text.replace(self._secret, "***")
        return StorageUnavailable(
            f"store {self._url} ({role}) is unavailable: {text}", store=self._url, role=role
        )

    def _prepare(self) -> None:
        dialect = self._dialect
        current = self.run("schema", lambda s: schema_version(s, dialect), write=False)
        check_version(current, self._url)
        if current == SCHEMA_VERSION:
            return
        lock_key = zlib.crc32((self._schema or "").encode())
        lock_key -= (lock_key >= 2**31) * 2**32

        def create(session: Session) -> None:
            # Serialise first use across processes: concurrent CREATE ... IF NOT
            # EXISTS statements can still collide in the catalogs.
            session.rows(
                "SELECT pg_advisory_xact_lock(%s::integer, %s::integer)", (_LOCK_CLASS, lock_key)
            )
            if self._schema is not None:
                session.change(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            migrate(session, dialect, self._url)

        self.run("schema", create, atomic=True)


def _stale(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection is unusable, without a round trip.

    An idle connection has nothing to read; if its socket is readable, the server
    sent a termination notice or closed it (restart, failover, terminate_backend).
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _mask(conninfo: str) -> str:
    """``conninfo`` with its password masked, URL or ``key=value`` form."""
    return _PASSWORD_PARAM.sub(r"\1***", mask_url(conninfo))


def _password(conninfo: str) -> str | None:
    try:
        value = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        return None
    return str(value) if value else None


def _cause(exc: BaseException, secret: str | None) -> BaseException | None:
    """``exc`` to chain as the cause, unless its text would show the password."""
    if secret and secret in str(exc):
        return None
    return exc

"""The SQL layer SQLite and PostgreSQL share: dialects, schema migrations, pool and roles.

Every statement is written once, with ``?`` placeholders and ``{p}`` for the
table prefix (empty on SQLite, ``"schema".`` on PostgreSQL), and adapted to a
dialect by :meth:`Dialect.sql`. Only what truly differs (column types, list
membership, substring search) lives in the dialect.

A backend module supplies a :class:`Connector`: something that runs a unit of
work on a pooled connection, in one transaction when asked, and turns its
driver's connection errors into :class:`~resilience.errors.StorageUnavailable`.
The four role classes (in ``_sql_roles``) are the whole behaviour; they match
the memory reference implementation rule for rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "MIGRATIONS",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "ConnectionPool",
    "Connector",
    "Dialect",
    "Session",
    "check_version",
    "migrate",
    "postgres_dialect",
    "schema_version",
    "sqlite_dialect",
]

T = TypeVar("T")
C = TypeVar("C")

SCHEMA_VERSION = 1
"""The schema version this code reads and writes."""

SCHEMA_TABLE = "resilience_schema"
"""The table recording which migrations a database has had (one row per version)."""

# (version, description, statements). Append only: a database at version N gets
# every later migration, in order, in one transaction.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "breakers, idempotency, dead letters and outcome counters",
        (
            (
                "CREATE TABLE {p}resilience_breakers (name {key} PRIMARY KEY,"
                " version {int} NOT NULL, data TEXT NOT NULL){compact}"
            ),
            (
                "CREATE TABLE {p}resilience_idempotency (idem_key {key} PRIMARY KEY,"
                " state TEXT NOT NULL, fingerprint TEXT NOT NULL, token {int} NOT NULL,"
                " lease_until {real}, expires_at {real} NOT NULL, result TEXT,"
                " created_at {real} NOT NULL, updated_at {real} NOT NULL){compact}"
            ),
            "CREATE INDEX resilience_idempotency_expires ON {p}resilience_idempotency (expires_at)",
            (
                "CREATE TABLE {p}resilience_dead_letters (id {key} PRIMARY KEY,"
                " status TEXT NOT NULL, task_name TEXT NOT NULL, failure_type TEXT NOT NULL,"
                " first_failed_at {real} NOT NULL, last_failed_at {real} NOT NULL,"
                " next_retry_at {real}, priority {int} NOT NULL, search TEXT NOT NULL,"
                " version {int} NOT NULL, data TEXT NOT NULL)"
            ),
            (
                "CREATE INDEX resilience_dead_letters_newest"
                " ON {p}resilience_dead_letters (last_failed_at, id)"
            ),
            (
                "CREATE INDEX resilience_dead_letters_replay"
                " ON {p}resilience_dead_letters (priority, first_failed_at, id)"
            ),
            (
                "CREATE INDEX resilience_dead_letters_status"
                " ON {p}resilience_dead_letters (status, last_failed_at)"
            ),
            (
                "CREATE INDEX resilience_dead_letters_task"
                " ON {p}resilience_dead_letters (task_name, last_failed_at)"
            ),
            (
                "CREATE INDEX resilience_dead_letters_type"
                " ON {p}resilience_dead_letters (failure_type, last_failed_at)"
            ),
            (
                "CREATE INDEX resilience_dead_letters_first"
                " ON {p}resilience_dead_letters (first_failed_at)"
            ),
            (
                "CREATE INDEX resilience_dead_letters_due"
                " ON {p}resilience_dead_letters (next_retry_at) WHERE next_retry_at IS NOT NULL"
            ),
            (
                "CREATE TABLE {p}resilience_outcomes (task_name TEXT NOT NULL,"
                " failure_type TEXT NOT NULL, bucket {int} NOT NULL,"
                " successes {int} NOT NULL, failures {int} NOT NULL,"
                " PRIMARY KEY (task_name, bucket, failure_type)){compact}"
            ),
        ),
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What differs between SQL databases, and the adaptation of shared statements.

    Attributes:
        name: ``"sqlite"`` or ``"postgresql"``.
        placeholder: the driver's parameter marker (``?`` or ``%s``).
        prefix: prepended to every table name (``'"schema".'`` or ``""``).
        types: ``key`` (text whose order is code point order), ``real``, ``int``,
            and ``compact`` (a table suffix for small, key-addressed tables).
        member: ``column`` is one of a list parameter (bound by :meth:`list_param`).
        contains: ``column`` contains a parameter as a substring.
        json_lists: whether list parameters are bound as JSON text.
        transactions_are_cheap: whether a multi-statement transaction costs no
            extra round trip (SQLite in-process), so atomic work never runs optimistically.
        skip_locked: appended to a ``SELECT`` that picks rows for a housekeeping
            ``DELETE``: lock them, skipping rows a writer holds (PostgreSQL), so a
            sweep never waits on a claim nor deadlocks with another sweep. Empty
            on SQLite, whose single writer locks the whole file.
    """

    name: str
    placeholder: str
    prefix: str
    types: Mapping[str, str]
    member: str
    contains: str
    json_lists: bool
    transactions_are_cheap: bool
    skip_locked: str

    def sql(self, template: str, **extra: str) -> str:
        """Adapt a shared statement: table prefix, column types and placeholders."""
        text = template.format(p=self.prefix, **self.types, **extra)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def list_param(self, values: Sequence[str]) -> object:
        """Bind a list of strings for :attr:`member`."""
        return json.dumps(list(values)) if self.json_lists else list(values)

    def fold(self, text: str) -> str:
        """The case-folded form text search compares (exactly Python's ``casefold``)."""
        folded = text.casefold()
        # PostgreSQL text cannot hold NUL; the stand-in can only make a NUL in the
        # search text match a U+FFFD in the message, never hide a real match.
        return folded if self.json_lists else folded.replace("\x00", "\ufffd")


def sqlite_dialect() -> Dialect:
    """The SQLite dialect (3.35+: upsert with ``RETURNING``)."""
    return Dialect(
        name="sqlite",
        placeholder="?",
        prefix="",
        types={"key": "TEXT", "real": "REAL", "int": "INTEGER", "compact": " WITHOUT ROWID"},
        member="{column} IN (SELECT value FROM json_each(?))",
        contains="instr({column}, ?) > 0",
        json_lists=True,
        transactions_are_cheap=True,
        skip_locked="",
    )


def postgres_dialect(schema: str | None) -> Dialect:
    """The PostgreSQL dialect, tables inside ``schema`` (``None``: the search path)."""
    return Dialect(
        name="postgresql",
        placeholder="%s",
        prefix="" if schema is None else f'"{schema}".',
        # COLLATE "C" compares code points, so ids sort exactly like Python strings.
        types={
            "key": 'TEXT COLLATE "C"',
            "real": "DOUBLE PRECISION",
            "int": "BIGINT",
            "compact": "",
        },
        member="{column} = ANY(?::text[])",
        contains="strpos({column}, ?) > 0",
        json_lists=False,
        transactions_are_cheap=False,
        skip_locked=" FOR UPDATE SKIP LOCKED",
    )


class Session(Protocol):
    """Statements on one connection (inside a transaction when the work asked for one)."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` and return every row it produced."""
        ...

    def change(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run ``sql`` and return how many rows it changed."""
        ...


class Connector(Protocol):
    """How a backend runs work: pooled connection, transactions, error translation."""

    @property
    def dialect(self) -> Dialect:
        """The backend's dialect."""
        ...

    def run(
        self,
        role: str,
        work: Callable[[Session], T],
        *,
        atomic: bool = False,
        write: bool = True,
    ) -> T:
        """Run ``work`` on a connection.

        Args:
            role: the role name for errors (``"idempotency"``...).
            work: the unit of work.
            atomic: run it in one transaction holding the write lock (SQLite
                ``BEGIN IMMEDIATE``), so a read after a write sees nothing else.
            write: whether ``work`` writes; read-only work may be retried on a fresh
                connection after a connection error, writes never are.

        Raises:
            StorageUnavailable: the database cannot be reached.
        """
        ...


class ConnectionPool(Generic[C]):
    """A small LIFO pool of connections, safe across threads and after ``fork``.

    Connections are created on demand up to ``max_size`` (``None``: no limit) and
    kept when returned. A child process never reuses (or closes) its parent's
    connections: it starts an empty pool of its own.
    """

    def __init__(
        self,
        *,
        connect: Callable[[], C],
        close: Callable[[C], None],
        max_size: int | None = None,
        timeout: float = 30.0,
        stale: Callable[[C], bool] | None = None,
    ) -> None:
        self._connect = connect
        self._close = close
        self._max_size = max_size
        self._timeout = timeout
        self._stale = stale
        self._idle: list[C] = []
        self._open = 0
        self._closed = False
        self._pid = os.getpid()
        self._cond = threading.Condition()

    def acquire(self) -> C:
        """A connection for the caller's exclusive use (give it back with :meth:`release`).

        Raises:
            RuntimeError: the pool is closed.
            TimeoutError: all ``max_size`` connections stayed busy for ``timeout`` seconds.
        """
        with self._cond:
            self._check_pid()
            while True:
                if self._closed:
                    raise RuntimeError("the store is closed")
                while self._idle:
                    conn = self._idle.pop()
                    if self._stale is None or not self._stale(conn):
                        return conn
                    self._open -= 1
                    self._close_quietly(conn)
                if self._max_size is None or self._open < self._max_size:
                    break
                if not self._cond.wait_for(
                    lambda: bool(self._idle) or self._open < (self._max_size or 0) or self._closed,
                    timeout=self._timeout,
                ):
                    raise TimeoutError(
                        f"no database connection free within {self._timeout}s "
                        f"({self._max_size} in use)"
                    )
            self._open += 1
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def release(self, conn: C, *, discard: bool = False) -> None:
        """Give ``conn`` back; ``discard`` closes it (it is broken or mid-transaction)."""
        with self._cond:
            if os.getpid() != self._pid:
                return
            if discard or self._closed:
                self._open -= 1
                self._close_quietly(conn)
            else:
                self._idle.append(conn)
            self._cond.notify()

    def discard_idle(self) -> None:
        """Close every idle connection (after a connection error they are suspect)."""
        with self._cond:
            doomed, self._idle = self._idle, []
            self._open -= len(doomed)
            for conn in doomed:
                self._close_quietly(conn)
            self._cond.notify_all()

    def close(self) -> None:
        """Close idle connections now and busy ones when they come back."""
        self.discard_idle()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            # After fork the parent's connections belong to the parent: forget them.
            self._pid, self._idle, self._open = os.getpid(), [], 0

    def _close_quietly(self, conn: C) -> None:
        # A connection that fails to close is gone anyway.
        with contextlib.suppress(Exception):
            self._close(conn)


def schema_version(session: Session, dialect: Dialect) -> int | None:
    """The database's schema version, or ``None`` when it has no version table yet."""
    if dialect.name == "sqlite":
        exists = session.rows(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SCHEMA_TABLE,)
        )
    else:
        exists = session.rows(
            dialect.sql("SELECT to_regclass(?) IS NOT NULL"), (f"{dialect.prefix}{SCHEMA_TABLE}",)
        )
        exists = [row for row in exists if row[0]]
    if not exists:
        return None
    rows = session.rows(dialect.sql("SELECT MAX(version) FROM {p}resilience_schema"))
    return int(rows[0][0] or 0)


def check_version(version: int | None, where: str) -> None:
    """Refuse a database written by a newer release (its schema is unknown to us).

    Raises:
        ConfigurationError: ``version`` is newer than :data:`SCHEMA_VERSION`.
    """
    if version is not None and version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"store {where} has schema version {version}, newer than the version this "
            f"release of resilience understands ({SCHEMA_VERSION}); upgrade resilience",
            key="schema_version",
            value=version,
        )


def migrate(session: Session, dialect: Dialect, where: str) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION` (call it holding the schema lock).

    Returns:
        The version the database had before (0 for a new database).

    Raises:
        ConfigurationError: the database is at a newer, unknown version.
    """
    session.change(
        dialect.sql(
            "CREATE TABLE IF NOT EXISTS {p}resilience_schema"
            " (version INTEGER PRIMARY KEY, description TEXT NOT NULL)"
        )
    )
    current = schema_version(session, dialect) or 0
    check_version(current, where)
    for version, description, statements in MIGRATIONS:
        if version > current:
            for statement in statements:
                session.change(dialect.sql(statement))
            session.change(
                dialect.sql(
                    "INSERT INTO {p}resilience_schema (version, description) VALUES (?, ?)"
                ),
                (version, description),
            )
    return current

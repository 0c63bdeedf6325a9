"""SQLite backend (``sqlite:///path.db``): the embedded default, shared by the processes of a host.

Standard library only. The database runs in WAL mode, so readers never block the
writer, with ``synchronous=NORMAL``: a write that returned survives the crash
(even ``SIGKILL``) of the process that made it, though not a power cut of the
host. Each thread borrows a connection from a small pool; writes in one process
queue on a lock instead of spinning in SQLite's busy handler, and writes from
other processes wait up to ``busy_timeout``. Multi-statement writes run in
``BEGIN IMMEDIATE`` transactions, which take the write lock up front and so can
never deadlock upgrading a read lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from resilience.clock import seconds_of
from resilience.errors import ConfigurationError, StorageUnavailable
from resilience.storage._open import mask_url
from resilience.storage._sql import (
    SCHEMA_VERSION,
    ConnectionPool,
    Dialect,
    check_version,
    migrate,
    schema_version,
    sqlite_dialect,
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

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_MIN_SQLITE = (3, 35, 0)  # upsert with RETURNING
_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "read-only")


class _SQLiteSession:
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def change(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(sql, params).rowcount


class SQLiteStore:
    """All four roles in one SQLite file, safe across threads and processes.

    Args:
        path: the database file (created, with its tables, on first use).
        busy_timeout: how long a write waits for another process's write lock
            before :class:`~resilience.errors.StorageUnavailable` is raised.

    Raises:
        ConfigurationError: ``path`` is empty or ``:memory:`` (use ``memory://``),
            the file is not a SQLite database, its schema version is newer than this
            release understands, or SQLite is older than 3.35.
        StorageUnavailable: the file cannot be opened (the message names it).

    Example:
        >>> import tempfile, pathlib
        >>> from resilience.storage.records import IdempotencyState
        >>> folder = tempfile.mkdtemp()
        >>> store = SQLiteStore(pathlib.Path(folder) / "state.db")
        >>> claim = store.idempotency.acquire("k", fingerprint="f", lease=30, ttl=60, now=0.0)
        >>> claim.acquired, claim.record.state is IdempotencyState.IN_PROGRESS
        (True, True)
        >>> store.close()
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float | timedelta = 5.0
    ) -> None:
        self._path = os.fspath(path)
        if self._path in ("", ":memory:") or self._path.startswith("file::memory:"):
            raise ConfigurationError(
                f"SQLite path {self._path!r} is not a file; use memory:// for an in-process store",
                key="path",
                value=self._path,
            )
        self._busy_timeout = seconds_of(busy_timeout, name="busy_timeout")
        if self._busy_timeout < 0:
            raise ConfigurationError(
                f"busy_timeout must be >= 0, got {self._busy_timeout!r}",
                key="busy_timeout",
                value=busy_timeout,
            )
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise ConfigurationError(
                f"SQLite {sqlite3.sqlite_version} is too old: the SQLite store needs 3.35+",
                key="sqlite_version",
                value=sqlite3.sqlite_version,
            )
        self._url = mask_url("sqlite:///" + self._path)
        self._dialect = sqlite_dialect()
        self._write_lock = threading.Lock()
        self._pool: ConnectionPool[_SQLiteSession] = ConnectionPool(
            connect=self._connect, close=lambda session: session.conn.close()
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
        """``sqlite:///`` and the path as given (an absolute path gives four slashes)."""
        return self._url

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

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
        return f"SQLiteStore({self._url!r})"

    # ------------------------------------------------------------------ Connector protocol

    @property
    def dialect(self) -> Dialect:
        """The SQLite dialect."""
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
            atomic: run them in one ``BEGIN IMMEDIATE`` transaction.
            write: take this process's write lock first.

        Returns:
            What ``work`` returned.

        Raises:
            StorageUnavailable: the store is closed, or the database stayed locked
                for ``busy_timeout`` or cannot be read or written.
        """
        try:
            session = self._pool.acquire()
        except RuntimeError:
            raise StorageUnavailable(
                f"store {self._url} is closed", store=self._url, role=role
            ) from None
        except sqlite3.Error as exc:
            if not _unavailable(exc):
                raise
            raise self._translate(exc, role) from exc
        broken = False
        try:
            if write and not self._write_lock.acquire(timeout=self._busy_timeout):
                raise StorageUnavailable(
                    f"store {self._url}: {role} write waited over {self._busy_timeout}s "
                    "for other threads of this process",
                    store=self._url,
                    role=role,
                )
            try:
                return self._transact(session, work) if atomic else work(session)
            finally:
                if write:
                    self._write_lock.release()
        except sqlite3.Error as exc:
            broken = session.conn.in_transaction
            if not _unavailable(exc):
                raise
            raise self._translate(exc, role) from exc
        finally:
            self._pool.release(session, discard=broken)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _transact(session: _SQLiteSession, work: Callable[[Session], T]) -> T:
        conn = session.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(session)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _connect(self) -> _SQLiteSession:
        # isolation_level=None: no implicit BEGIN from the driver; we issue our own.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return _SQLiteSession(conn)

    def _prepare(self) -> None:
        def setup(session: Session) -> str:
            mode = str(session.rows("PRAGMA journal_mode = WAL")[0][0])
            if schema_version(session, self._dialect) != SCHEMA_VERSION:
                self._transact(_as_sqlite(session), lambda s: migrate(s, self._dialect, self._url))
            return mode

        try:
            self._journal_mode = self.run("schema", setup)
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"{self._path!r} is not a usable SQLite database: {exc}",
                key="path",
                value=self._path,
            ) from exc
        # Checked again after migrating: a newer writer may have raced us.
        check_version(
            self.run("schema", lambda s: schema_version(s, self._dialect), write=False), self._url
        )

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reported when the store opened (``"wal"``)."""
        return self._journal_mode

    def _translate(self, exc: sqlite3.Error, role: str) -> StorageUnavailable:
        return StorageUnavailable(f"store {self._url} ({role}): {exc}", store=self._url, role=role)


def _unavailable(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means the file cannot be used now (locked, unopenable, I/O)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(m in text for m in _UNAVAILABLE)


def _as_sqlite(session: Session) -> _SQLiteSession:
    assert isinstance(session, _SQLiteSession)  # noqa: S101 - only SQLiteStore passes sessions here
    return session

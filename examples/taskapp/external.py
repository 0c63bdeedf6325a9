"""Fake external services: a transactional mail API and a report-rendering API.

They behave like the real thing where it matters to resilience, deterministically
and without a network:

- both accept an **idempotency key** and deduplicate on it, like payment and mail
  providers that support one: a request repeated after a timeout does not send a
  second email or render a second document;
- both fail on demand, in ways the failure taxonomy recognises: ``TimeoutError``,
  ``ConnectionRefusedError``, or :class:`ServiceError` carrying an HTTP
  ``status_code`` (503, 500, 429 with ``retry_after``, 422);
- their state (outbox, documents, planned failures) lives in provider tables of the
  app's SQLite file, so it is shared by every worker process and survives a killed
  worker, which is what a chaos scenario checks afterwards.

Chaos tests can also patch the methods directly, e.g.
``examples.taskapp.external.MailAPI.send``; tasks look the classes up on this module
at call time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from examples.taskapp.db import connect, transaction

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable
    from pathlib import Path

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "FailureMode",
    "MailAPI",
    "RenderedDocument",
    "ReportAPI",
    "SentMessage",
    "Service",
    "ServiceError",
    "clear_failures",
    "set_failure",
]

DEFAULT_RETRY_AFTER: Final = 30.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS provider_faults (
    service TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    remaining INTEGER,
    retry_after REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_mail_outbox (
    idempotency_key TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    attachments TEXT NOT NULL,
    requests INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_documents (
    idempotency_key TEXT PRIMARY KEY,
    document_id TEXT NOT NULL,
    name TEXT NOT NULL,
    report_date TEXT NOT NULL,
    checksum TEXT NOT NULL,
    requests INTEGER NOT NULL
);
"""


class Service(StrEnum):
    """The fake services, as named in planned failures."""

    MAIL = "mail"
    REPORTS = "reports"


class FailureMode(StrEnum):
    """How a planned failure fails a call."""

    TIMEOUT = "timeout"
    """``TimeoutError`` before the request reaches the provider."""
    TIMEOUT_AFTER_DELIVERY = "timeout_after_delivery"
    """The provider does the work, then the answer is lost: ``TimeoutError``."""
    CONNECTION_REFUSED = "connection_refused"
    """``ConnectionRefusedError`` (errno 111)."""
    UNAVAILABLE = "unavailable"
    """``ServiceError`` with status 503."""
    SERVER_ERROR = "server_error"
    """``ServiceError`` with status 500."""
    RATE_LIMITED = "rate_limited"
    """``ServiceError`` with status 429 and a ``retry_after``."""
    REJECTED = "rejected"
    """``ServiceError`` with status 422: the request itself is wrong."""


class ServiceError(Exception):
    """An HTTP error answer from a fake service.

    The arguments are positional, unlike the rest of the app: Celery rebuilds a
    failed task's exception from its ``args`` when it reads the result back, so
    ``ServiceError(*exc.args)`` must work.

    Args:
        message: what the service said.
        service: which service answered.
        status_code: the HTTP status.
        retry_after: seconds the service asked the caller to wait, or ``None``.

    Attributes:
        message: what the service said (also ``str(exc)``).
        service: which service answered.
        status_code: the HTTP status.
        retry_after: seconds the service asked the caller to wait, or ``None``.
    """

    def __init__(
        self,
        message: str,
        service: Service | str,
        status_code: int,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, str(service), status_code, retry_after)
        self.message = message
        self.service = Service(service)
        self.status_code = status_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class SentMessage:
    """A message in the mail provider's outbox.

    Attributes:
        requests: how many send requests carried this idempotency key (1 when the
            caller never repeated itself).
    """

    idempotency_key: str
    message_id: str
    recipient: str
    subject: str
    body: str
    attachments: tuple[str, ...]
    requests: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedDocument:
    """A document the report API rendered.

    Attributes:
        requests: how many render requests carried this idempotency key.
    """

    idempotency_key: str
    document_id: str
    name: str
    report_date: str
    checksum: str
    requests: int


def _ensure_schema(db_path: str | Path) -> None:
    # Not cached per path: a test or scenario may recreate the file at the same path.
    conn = connect(db_path)
    try:
        conn.executescript(_SCHEMA)
    finally:
        conn.close()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def set_failure(
    db_path: str | Path,
    *,
    service: Service,
    mode: FailureMode,
    times: int | None = 1,
    retry_after: float = DEFAULT_RETRY_AFTER,
) -> None:
    """Make the next ``times`` calls to ``service`` fail with ``mode``.

    Shared by every process using ``db_path``; replaces any earlier plan for the
    service.

    Args:
        db_path: the app's SQLite file.
        service: which service fails.
        mode: how it fails.
        times: how many calls fail; ``None`` fails every call until
            :func:`clear_failures`.
        retry_after: the wait a ``RATE_LIMITED`` answer asks for.

    Raises:
        ValueError: ``times`` is below 1.
    """
    if times is not None and times < 1:
        raise ValueError(f"times must be at least 1 or None, got {times!r}")
    _ensure_schema(db_path)
    with transaction(db_path) as conn:
        conn.execute(
            "INSERT INTO provider_faults (service, mode, remaining, retry_after)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (service) DO UPDATE SET"
            " mode = excluded.mode, remaining = excluded.remaining,"
            " retry_after = excluded.retry_after",
            (service, mode, times, retry_after),
        )


def clear_failures(db_path: str | Path, *, service: Service | None = None) -> None:
    """Remove planned failures (for ``service``, or for every service).

    Args:
        db_path: the app's SQLite file.
        service: the service to heal; ``None`` heals all.
    """
    _ensure_schema(db_path)
    with transaction(db_path) as conn:
        if service is None:
            conn.execute("DELETE FROM provider_faults")
        else:
            conn.execute("DELETE FROM provider_faults WHERE service = ?", (service,))


def _take_failure(conn: sqlite3.Connection, service: Service) -> tuple[FailureMode, float] | None:
    row = conn.execute(
        "SELECT mode, remaining, retry_after FROM provider_faults WHERE service = ?", (service,)
    ).fetchone()
    if row is None:
        return None
    if row["remaining"] is not None:
        if row["remaining"] <= 1:
            conn.execute("DELETE FROM provider_faults WHERE service = ?", (service,))
        else:
            conn.execute(
                "UPDATE provider_faults SET remaining = remaining - 1 WHERE service = ?",
                (service,),
            )
    return FailureMode(row["mode"]), float(row["retry_after"])


def _raise_for(service: Service, mode: FailureMode, retry_after: float) -> None:
    label = f"{service} API"
    if mode in {FailureMode.TIMEOUT, FailureMode.TIMEOUT_AFTER_DELIVERY}:
        raise TimeoutError(f"{label} request timed out")
    if mode is FailureMode.CONNECTION_REFUSED:
        raise ConnectionRefusedError(111, f"Connection refused ({label})")
    if mode is FailureMode.UNAVAILABLE:
        raise ServiceError(f"{label}: 503 Service Unavailable", service=service, status_code=503)
    if mode is FailureMode.SERVER_ERROR:
        raise ServiceError(f"{label}: 500 Internal Server Error", service=service, status_code=500)
    if mode is FailureMode.RATE_LIMITED:
        raise ServiceError(
            f"{label}: 429 Too Many Requests",
            service=service,
            status_code=429,
            retry_after=retry_after,
        )
    raise ServiceError(f"{label}: 422 request rejected", service=service, status_code=422)


def _planned_failure(db_path: str | Path, service: Service) -> tuple[FailureMode, float] | None:
    """Consume one planned failure; raise it now unless it strikes after delivery."""
    with transaction(db_path) as conn:
        planned = _take_failure(conn, service)
    if planned is not None and planned[0] is not FailureMode.TIMEOUT_AFTER_DELIVERY:
        _raise_for(service, *planned)
    return planned


class MailAPI:
    """A transactional mail provider.

    Args:
        db_path: the app's SQLite file, where the provider keeps its outbox.
        on_delivered: called with the message id each time :meth:`send` puts a new
            message in the outbox (like a provider's delivery webhook); not called
            when a repeated idempotency key gets the first message's id back, nor
            when the request fails before delivery. ``None``: no callback.
    """

    def __init__(
        self, *, db_path: str | Path, on_delivered: Callable[[str], object] | None = None
    ) -> None:
        _ensure_schema(db_path)
        self._db_path = db_path
        self._on_delivered = on_delivered

    def send(
        self,
        *,
        to: str,
        subject: str,
        body: str,
        idempotency_key: str,
        attachments: tuple[str, ...] = (),
    ) -> str:
        """Send one email; a repeated idempotency key returns the first message's id.

        A new message is delivered (and ``on_delivered`` called) before a planned
        ``TIMEOUT_AFTER_DELIVERY`` loses the answer.

        Args:
            to: the recipient's address.
            subject: the subject line.
            body: the plain-text body.
            idempotency_key: the caller's name for this request.
            attachments: document ids to attach.

        Returns:
            The provider's message id (the same for every request with this key).

        Raises:
            ServiceError: a planned failure, or status 422 for an address without ``@``.
            TimeoutError: a planned timeout (possibly after the message went out).
            ConnectionRefusedError: a planned refusal.
        """
        planned = _planned_failure(self._db_path, Service.MAIL)
        if "@" not in to:
            raise ServiceError(
                f"mail API: 422 invalid recipient address {to!r}",
                service=Service.MAIL,
                status_code=422,
            )
        message_id = "msg-" + _digest(idempotency_key)[:16]
        with transaction(self._db_path) as conn:
            (requests,) = conn.execute(
                "INSERT INTO provider_mail_outbox (idempotency_key, message_id, recipient,"
                " subject, body, attachments, requests) VALUES (?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (idempotency_key) DO UPDATE SET requests = requests + 1"
                " RETURNING requests",
                (idempotency_key, message_id, to, subject, body, ",".join(attachments)),
            ).fetchone()
        # Committed: the first request with this key delivered the message.
        if requests == 1 and self._on_delivered is not None:
            self._on_delivered(message_id)
        if planned is not None:
            _raise_for(Service.MAIL, FailureMode.TIMEOUT, planned[1])
        return message_id

    def outbox(self) -> list[SentMessage]:
        """Every message delivered, in delivery order."""
        conn = connect(self._db_path)
        try:
            rows = conn.execute("SELECT * FROM provider_mail_outbox ORDER BY rowid").fetchall()
        finally:
            conn.close()
        return [
            SentMessage(
                idempotency_key=row["idempotency_key"],
                message_id=row["message_id"],
                recipient=row["recipient"],
                subject=row["subject"],
                body=row["body"],
                attachments=tuple(filter(None, row["attachments"].split(","))),
                requests=row["requests"],
            )
            for row in rows
        ]


class ReportAPI:
    """A report-rendering service.

    Args:
        db_path: the app's SQLite file, where the service keeps its documents.
    """

    def __init__(self, *, db_path: str | Path) -> None:
        _ensure_schema(db_path)
        self._db_path = db_path

    def render(self, *, name: str, report_date: str, idempotency_key: str) -> RenderedDocument:
        """Render report ``name`` for ``report_date``; a repeated key returns the same document.

        Args:
            name: the report's name.
            report_date: ``YYYY-MM-DD``.
            idempotency_key: the caller's name for this request.

        Returns:
            The rendered document.

        Raises:
            ServiceError: a planned failure.
            TimeoutError: a planned timeout (possibly after the document was rendered).
            ConnectionRefusedError: a planned refusal.
        """
        planned = _planned_failure(self._db_path, Service.REPORTS)
        digest = _digest(idempotency_key)
        with transaction(self._db_path) as conn:
            conn.execute(
                "INSERT INTO provider_documents (idempotency_key, document_id, name,"
                " report_date, checksum, requests) VALUES (?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (idempotency_key) DO UPDATE SET requests = requests + 1",
                (
                    idempotency_key,
                    "doc-" + digest[:16],
                    name,
                    report_date,
                    _digest(name, report_date),
                ),
            )
            row = conn.execute(
                "SELECT * FROM provider_documents WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
        if planned is not None:
            _raise_for(Service.REPORTS, FailureMode.TIMEOUT, planned[1])
        return _document(row)

    def documents(self) -> list[RenderedDocument]:
        """Every document rendered, in rendering order."""
        conn = connect(self._db_path)
        try:
            rows = conn.execute("SELECT * FROM provider_documents ORDER BY rowid").fetchall()
        finally:
            conn.close()
        return [_document(row) for row in rows]


def _document(row: sqlite3.Row) -> RenderedDocument:
    return RenderedDocument(
        idempotency_key=row["idempotency_key"],
        document_id=row["document_id"],
        name=row["name"],
        report_date=row["report_date"],
        checksum=row["checksum"],
        requests=row["requests"],
    )

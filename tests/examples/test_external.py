"""The fake mail and report services: deduplication by key, and failures on demand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from examples.taskapp import external
from examples.taskapp.external import FailureMode, MailAPI, ReportAPI, Service, ServiceError
from resilience import FailureType, classify


def _send(api: MailAPI, key: str = "k1", to: str = "a@example.com") -> str:
    return api.send(to=to, subject="s", body="b", idempotency_key=key)


def test_mail_deduplicates_on_the_idempotency_key(db_path: str) -> None:
    """Two sends with one key deliver one message and return the same id."""
    api = MailAPI(db_path=db_path)
    first = _send(api)
    assert _send(api) == first
    other = _send(api, key="k2")
    assert other != first
    outbox = api.outbox()
    assert [(m.idempotency_key, m.requests) for m in outbox] == [("k1", 2), ("k2", 1)]
    assert outbox[0].message_id == first


def test_message_ids_are_deterministic(tmp_path: object) -> None:
    """The same key gets the same message id in another database."""
    first = _send(MailAPI(db_path=f"{tmp_path}/a.sqlite3"))
    second = _send(MailAPI(db_path=f"{tmp_path}/b.sqlite3"))
    assert first == second
    assert first.startswith("msg-")


def test_mail_rejects_an_address_without_at_permanently(db_path: str) -> None:
    """A 422 answer for a bad address is a validation failure, never retried."""
    with pytest.raises(ServiceError) as caught:
        _send(MailAPI(db_path=db_path), to="nobody")
    assert caught.value.status_code == 422
    classification = classify(caught.value)
    assert classification.failure_type is FailureType.PERMANENT_VALIDATION
    assert classification.retry_recommended is False
    assert MailAPI(db_path=db_path).outbox() == []


@pytest.mark.parametrize(
    ("mode", "exc_type", "failure_type", "retry"),
    [
        (FailureMode.TIMEOUT, TimeoutError, FailureType.EXTERNAL_TIMEOUT, True),
        (
            FailureMode.CONNECTION_REFUSED,
            ConnectionRefusedError,
            FailureType.TRANSIENT_NETWORK,
            True,
        ),
        (FailureMode.UNAVAILABLE, ServiceError, FailureType.EXTERNAL_API_DOWN, True),
        (FailureMode.SERVER_ERROR, ServiceError, FailureType.EXTERNAL_API_ERROR, False),
        (FailureMode.RATE_LIMITED, ServiceError, FailureType.TRANSIENT_RATE_LIMIT, True),
        (FailureMode.REJECTED, ServiceError, FailureType.PERMANENT_VALIDATION, False),
    ],
)
def test_each_failure_mode_is_classified_as_intended(
    db_path: str,
    mode: FailureMode,
    exc_type: type[Exception],
    failure_type: FailureType,
    retry: bool,
) -> None:
    """A planned failure raises the exception the taxonomy reads as the intended type."""
    external.set_failure(db_path, service=Service.MAIL, mode=mode, retry_after=12.0)
    with pytest.raises(exc_type) as caught:
        _send(MailAPI(db_path=db_path))
    classification = classify(caught.value)
    assert classification.failure_type is failure_type
    assert classification.retry_recommended is retry
    if mode is FailureMode.RATE_LIMITED:
        assert classification.retry_after == 12.0
    assert MailAPI(db_path=db_path).outbox() == []


def test_planned_failures_run_out_after_times_calls(db_path: str) -> None:
    """times=2 fails exactly two calls, whichever instance makes them, then heals."""
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.UNAVAILABLE, times=2)
    for _ in range(2):
        with pytest.raises(ServiceError):
            _send(MailAPI(db_path=db_path))
    assert _send(MailAPI(db_path=db_path)).startswith("msg-")


def test_unbounded_failures_last_until_cleared(db_path: str) -> None:
    """times=None fails every call until clear_failures heals the service."""
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.TIMEOUT, times=None)
    api = MailAPI(db_path=db_path)
    for _ in range(5):
        with pytest.raises(TimeoutError):
            _send(api)
    external.clear_failures(db_path, service=Service.MAIL)
    assert _send(api)


def test_failures_are_planned_per_service(db_path: str) -> None:
    """A failing mail API leaves the report API working, and clearing all heals both."""
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.TIMEOUT, times=None)
    external.set_failure(db_path, service=Service.REPORTS, mode=FailureMode.TIMEOUT, times=None)
    external.clear_failures(db_path, service=Service.REPORTS)
    document = ReportAPI(db_path=db_path).render(
        name="r", report_date="2025-10-01", idempotency_key="k"
    )
    assert document.requests == 1
    with pytest.raises(TimeoutError):
        _send(MailAPI(db_path=db_path))
    external.clear_failures(db_path)
    assert _send(MailAPI(db_path=db_path))


def test_set_failure_refuses_zero_times(db_path: str) -> None:
    """A plan that fails no call is a mistake and is refused."""
    with pytest.raises(ValueError, match="times must be at least 1"):
        external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.TIMEOUT, times=0)


def test_timeout_after_delivery_sends_then_raises(db_path: str) -> None:
    """The lost-answer case: the message went out, and a retry with its key adds none."""
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.TIMEOUT_AFTER_DELIVERY)
    api = MailAPI(db_path=db_path)
    with pytest.raises(TimeoutError):
        _send(api)
    assert [m.requests for m in api.outbox()] == [1]
    _send(api)
    assert [m.requests for m in api.outbox()] == [2]


def test_on_delivered_hears_each_new_message_once(db_path: str) -> None:
    """The delivery callback fires for a new message, also when the answer is lost, never
    for a repeated key or a request refused before delivery."""
    delivered: list[str] = []
    api = MailAPI(db_path=db_path, on_delivered=delivered.append)
    first = _send(api, key="k1")
    assert delivered == [first]
    assert _send(api, key="k1") == first
    assert delivered == [first]
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.UNAVAILABLE)
    with pytest.raises(ServiceError):
        _send(api, key="k2")
    assert delivered == [first]
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.TIMEOUT_AFTER_DELIVERY)
    with pytest.raises(TimeoutError):
        _send(api, key="k3")
    (third,) = (m.message_id for m in api.outbox() if m.idempotency_key == "k3")
    assert delivered == [first, third]


def test_report_rendering_deduplicates_on_the_key(db_path: str) -> None:
    """The same key returns the same document; another key renders another one."""
    api = ReportAPI(db_path=db_path)
    first = api.render(
        name="Daily", report_date="2025-10-01", idempotency_key="report:1:2025-10-01"
    )
    again = api.render(
        name="Daily", report_date="2025-10-01", idempotency_key="report:1:2025-10-01"
    )
    other = api.render(
        name="Daily", report_date="2025-10-02", idempotency_key="report:1:2025-10-02"
    )
    assert (again.document_id, again.checksum) == (first.document_id, first.checksum)
    assert again.requests == 2
    assert other.document_id != first.document_id
    assert other.checksum != first.checksum
    assert [d.idempotency_key for d in api.documents()] == [
        "report:1:2025-10-01",
        "report:1:2025-10-02",
    ]


_CHILD = """
import sys
from examples.taskapp.external import MailAPI, ServiceError
try:
    MailAPI(db_path=sys.argv[1]).send(to="a@b.c", subject="s", body="b", idempotency_key="k")
except ServiceError as exc:
    print(exc.status_code)
"""


def test_planned_failures_are_shared_between_processes(db_path: str) -> None:
    """A failure planned here is consumed by a call in another process (a worker child)."""
    external.set_failure(db_path, service=Service.MAIL, mode=FailureMode.UNAVAILABLE, times=1)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            db_path,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert child.stdout.strip() == "503"
    assert _send(MailAPI(db_path=db_path))

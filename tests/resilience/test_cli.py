"""The ``resilience`` command run as ``main([...])`` against a SQLite store in ``tmp_path``."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from resilience import (
    CircuitBreaker,
    DeadLetterQueue,
    FakeClock,
    OutcomeHistory,
    open_store,
)
from resilience._operations import EXECUTIONS_KEY
from resilience.cli import main
from resilience.storage import DeadLetterStatus
from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from pathlib import Path

    from resilience.storage import DeadLetterRecord

T0 = 1_700_000_000.0


class Populated:
    """A store URL with three dead letters, and their records."""

    def __init__(self, url: str, records: dict[str, DeadLetterRecord]) -> None:
        self.url = url
        self.records = records

    def get(self, record_id: str) -> DeadLetterRecord:
        """The record as stored now."""
        store = open_store(self.url)
        try:
            found = DeadLetterQueue(store).get(record_id)
        finally:
            store.close()
        assert found is not None
        return found


@pytest.fixture
def dlq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Populated:
    """Two network failures of send_email and one validation failure of charge."""
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    monkeypatch.setenv("RESILIENCE_STORE_URL", url)
    store = open_store(url)
    queue = DeadLetterQueue(store, clock=FakeClock(start=T0))
    records = {
        "net1": queue.add(
            task_name="send_email",
            exc=ConnectionRefusedError(111, "Connection refused"),
            args=[1],
            now=T0,
        ),
        "net2": queue.add(
            task_name="send_email",
            exc=ConnectionRefusedError(111, "Connection refused"),
            args=[2],
            now=T0 + 3600,
        ),
        "bad": queue.add(
            task_name="charge",
            exc=ValueError("amount must be positive"),
            kwargs={"amount": -5},
            now=T0 + 7200,
        ),
    }
    store.close()
    return Populated(url, records)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command; returns (status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


class FakeTerminal(io.StringIO):
    """Stdin that claims to be a terminal, answering with its text."""

    def isatty(self) -> bool:
        """Pretend to be interactive."""
        return True


# --------------------------------------------------------------------------- dlq list / show


def test_list_prints_an_aligned_table_newest_first(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq list` shows every record, newest first, with columns aligned under the header."""
    status, out, err = run(capsys, "dlq", "list")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATUS",
        "TASK",
        "TYPE",
        "RETRIES",
        "LAST",
        "FAILED",
        "ERROR",
    ]
    ids = [line.split()[0] for line in lines[1:]]
    assert ids == [dlq.records[k].id for k in ("bad", "net2", "net1")]
    column = lines[0].index("TASK")
    assert all(line[column:].startswith(("charge", "send_email")) for line in lines[1:])
    assert "ValueError: amount must be positive" in lines[1]
    assert "2023-11-14T22:13:20Z" in lines[3]


def test_list_filters_combine(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """--status, --task, --type, --text, --since and --until all narrow the listing."""

    def ids(*options: str) -> list[str]:
        status, out, _ = run(capsys, "dlq", "list", "--json", *options)
        assert status == 0
        return [r["id"] for r in json.loads(out)["records"]]

    net1, net2, bad = (dlq.records[k].id for k in ("net1", "net2", "bad"))
    assert ids("--task", "send_email") == [net2, net1]
    assert ids("--type", "permanent_validation") == [bad]
    assert ids("--text", "POSITIVE") == [bad]
    assert ids("--status", "pending", "--task", "charge") == [bad]
    assert ids("--status", "RESOLVED") == []
    assert ids("--since", "2023-11-14T23:13:20+00:00") == [bad, net2]
    assert ids("--until", "2023-11-14T23:13:20") == [net1]
    assert ids("--since", str(T0 + 7200)) == [bad]


def test_list_json_shape_and_pagination(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives records as dicts plus next_cursor; --after continues the listing."""
    status, out, _ = run(capsys, "dlq", "list", "--json", "--limit", "2")
    first = json.loads(out)
    assert status == 0
    assert set(first) == {"records", "next_cursor"}
    assert first["records"][0]["status"] == "PENDING"
    assert first["records"][0]["kwargs"] == {"amount": -5}
    assert first["next_cursor"] is not None
    _, out, _ = run(capsys, "dlq", "list", "--json", "--after", first["next_cursor"])
    second = json.loads(out)
    assert [r["id"] for r in second["records"]] == [dlq.records["net1"].id]
    assert second["next_cursor"] is None
    _, out, _ = run(capsys, "dlq", "list", "--limit", "2")
    assert f"more: --after {first['next_cursor']}" in out


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--status", "pendng"],
            (
                "--status: unknown value 'pendng'; did you mean 'PENDING'? "
                "(valid: PENDING, RETRYING, RESOLVED, ABANDONED)"
            ),
        ),
        (["--type", "TRANSIENT_NETWROK"], "did you mean 'TRANSIENT_NETWORK'?"),
        (["--since", "yesterday"], "--since: 'yesterday' is not a date; expected ISO 8601"),
        (["--limit", "0"], "--limit:"),
        (["--after", "garbage"], "--after:"),
    ],
)
def test_list_rejects_bad_input_with_status_2(
    dlq: Populated, capsys: pytest.CaptureFixture[str], options: list[str], expected: str
) -> None:
    """Bad filters exit 2 with a message on stderr naming the option."""
    status, out, err = run(capsys, "dlq", "list", *options)
    assert (status, out) == (2, "")
    assert err.startswith("resilience dlq list: ")
    assert expected in err


def test_list_with_no_match_is_not_an_error(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty listing exits 0 and says so."""
    assert run(capsys, "dlq", "list", "--task", "nothing") == (0, "no dead letters match\n", "")


def test_show_prints_everything_and_json(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq show` prints fields, history and traceback; --json is the record's dict."""
    record = dlq.records["bad"]
    status, out, _ = run(capsys, "dlq", "show", record.id)
    assert status == 0
    assert "failure type: PERMANENT_VALIDATION" in out
    lines = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in out.splitlines()
        if ":" in line
    }
    # One line of compact JSON each, as stored (no indentation left inside).
    assert json.loads(lines["args"]) == record.args
    assert json.loads(lines["kwargs"]) == record.kwargs
    assert '"amount": -5' in out
    assert "history:" in out
    assert "worker  add" in out
    assert "ValueError: amount must be positive" in out.split("traceback:")[1]
    _, out, _ = run(capsys, "dlq", "show", record.id, "--json")
    assert json.loads(out) == record.to_dict()


def test_show_unknown_id_exits_1(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown id exits 1 naming the id and the store."""
    status, out, err = run(capsys, "dlq", "show", "nope")
    assert (status, out) == (1, "")
    assert err == f"resilience dlq show: no dead letter with id 'nope' in {dlq.url}\n"


def test_bad_store_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --store exits 2 naming --store."""
    status, _, err = run(capsys, "dlq", "list", "--store", "nonsense")
    assert status == 2
    assert "--store: store URL 'nonsense' is not a URL" in err


# --------------------------------------------------------------------------- actions


def test_abandon_then_conflict(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """Abandon keeps the reason in the history; a second abandon is a conflict (exit 1)."""
    record_id = dlq.records["bad"].id
    assert run(capsys, "dlq", "abandon", record_id, "--reason", "bad data") == (
        0,
        f"{record_id}: ABANDONED\n",
        "",
    )
    stored = dlq.get(record_id)
    assert stored.status is DeadLetterStatus.ABANDONED
    assert stored.history[-1].note == "bad data"
    assert stored.history[-1].actor.startswith("cli")
    status, _, err = run(capsys, "dlq", "abandon", record_id, "--reason", "again")
    assert status == 1
    assert "is ABANDONED; cannot abandon it" in err


def test_abandon_requires_a_reason(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --reason argparse exits 2 and nothing changes."""
    record_id = dlq.records["bad"].id
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "abandon", record_id])
    assert exit_info.value.code == 2
    assert "--reason" in capsys.readouterr().err
    assert dlq.get(record_id).status is DeadLetterStatus.PENDING


def test_resolve_with_note_and_json(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """Resolve records the note; --json prints id and status; unknown ids exit 1."""
    record_id = dlq.records["net1"].id
    status, out, _ = run(capsys, "dlq", "resolve", record_id, "--note", "fixed DNS", "--json")
    assert status == 0
    assert json.loads(out) == {"id": record_id, "status": "RESOLVED"}
    assert dlq.get(record_id).history[-1].note == "fixed DNS"
    assert run(capsys, "dlq", "resolve", "missing")[0] == 1


def test_retry_without_app_refuses_and_changes_nothing(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq retry` without --app exits 2 and never marks the record retried."""
    record = dlq.records["net1"]
    status, out, err = run(capsys, "dlq", "retry", record.id)
    assert (status, out) == (2, "")
    assert "pass --app MODULE:ATTR" in err
    assert "nothing was changed" in err
    assert dlq.get(record.id) == record


def test_retry_with_a_bad_app_spec_exits_2(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """--app must be MODULE:ATTR naming an importable Celery app."""
    record_id = dlq.records["net1"].id
    _, _, err = run(capsys, "dlq", "retry", record_id, "--app", "nocolon")
    assert "expected MODULE:ATTR" in err
    status, _, err = run(capsys, "dlq", "retry", record_id, "--app", "no_such_module_x:app")
    assert status == 2
    assert "cannot import 'no_such_module_x'" in err
    status, _, err = run(capsys, "dlq", "retry", record_id, "--app", "json:dumps")
    assert status == 2
    assert "is not a Celery app" in err


# --------------------------------------------------------------------------- retry via Celery


@pytest.fixture
def celery_app(dlq: Populated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A module in tmp_path holding a Celery app on the memory broker, installed on the store."""
    pytest.importorskip("celery")
    module = f"cli_app_{uuid.uuid4().hex[:8]}"
    queue = f"q-{module}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from celery import Celery
            from resilience.celery import install

            app = Celery("{module}", broker="memory://", set_as_current=False)
            app.conf.task_default_queue = "{queue}"
            install(app, store="{dlq.url}")

            @app.task(name="send_email", shared=False)
            def send_email(n):
                return n
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    yield module, queue
    loaded = sys.modules.pop(module, None)
    if loaded is not None:
        from resilience.celery import runtime_for

        runtime_for(loaded.app).store.close()
        loaded.app.close()


def _messages(module: str, queue: str) -> list[Any]:
    app = sys.modules[module].app
    found = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    found.append(simple.get(block=False))
                except simple.Empty:
                    return found
        finally:
            simple.close()


def test_retry_re_enqueues_through_the_app_and_marks_the_record(
    dlq: Populated, celery_app: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq retry --app` puts the task on the app's broker and moves the record to RETRYING."""
    module, queue = celery_app
    record = dlq.records["net1"]
    status, out, err = run(capsys, "dlq", "retry", record.id, "--app", f"{module}:app", "--json")
    assert (status, err) == (0, "")
    answer = json.loads(out)
    stored = dlq.get(record.id)
    assert stored.status is DeadLetterStatus.RETRYING
    assert answer == {"id": record.id, "status": "RETRYING", "task_id": stored.history[-1].task_id}
    [message] = _messages(module, queue)
    assert message.headers["task"] == "send_email"
    assert message.headers["id"] == answer["task_id"]
    assert message.headers["resilience_dead_letter"] == record.id
    assert message.decode()[0] == [1]
    status, _, err = run(capsys, "dlq", "retry", record.id, "--app", f"{module}:app")
    assert status == 1
    assert "is RETRYING; cannot retry it" in err
    assert _messages(module, queue) == []


def test_bulk_retry_needs_yes_without_a_terminal(
    dlq: Populated,
    celery_app: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bulk-retry refuses (exit 2) when stdin is not a TTY and --yes is missing."""
    module, queue = celery_app
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    status, _, err = run(
        capsys, "dlq", "bulk-retry", "--task", "send_email", "--app", f"{module}:app"
    )
    assert status == 2
    assert "stdin is not a terminal: pass --yes" in err
    assert _messages(module, queue) == []
    assert dlq.get(dlq.records["net1"].id).status is DeadLetterStatus.PENDING


def test_bulk_retry_with_yes_retries_the_matching_records(
    dlq: Populated, celery_app: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """bulk-retry --yes re-enqueues every matching PENDING record; none left exits 1."""
    module, queue = celery_app
    app = f"{module}:app"
    status, out, _ = run(
        capsys, "dlq", "bulk-retry", "--task", "send_email", "--app", app, "--yes", "--json"
    )
    assert status == 0
    result = json.loads(out)
    assert sorted(result["retried"]) == sorted(dlq.records[k].id for k in ("net1", "net2"))
    assert result["skipped"] == {}
    assert sorted(m.decode()[0][0] for m in _messages(module, queue)) == [1, 2]
    assert dlq.get(dlq.records["bad"].id).status is DeadLetterStatus.PENDING
    status, _, err = run(capsys, "dlq", "bulk-retry", "--task", "send_email", "--app", app, "--yes")
    assert status == 1
    assert "no PENDING dead letter matches; nothing retried" in err


def test_bulk_retry_asks_on_a_terminal(
    dlq: Populated,
    celery_app: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal, anything but yes aborts with exit 1 and enqueues nothing."""
    module, queue = celery_app
    monkeypatch.setattr(sys, "stdin", FakeTerminal("n\n"))
    status, _, err = run(capsys, "dlq", "bulk-retry", "--app", f"{module}:app")
    assert status == 1
    assert "Re-enqueue 3 PENDING dead letter(s)" in err
    assert "not confirmed; nothing done" in err
    assert _messages(module, queue) == []


# --------------------------------------------------------------------------- purge


def test_purge_refuses_without_yes_then_deletes_finished_records(
    dlq: Populated, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """purge needs --yes off a terminal, deletes only RESOLVED/ABANDONED, exits 1 when idle."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run(capsys, "dlq", "purge")[0] == 1  # nothing finished yet
    main(["dlq", "resolve", dlq.records["net1"].id])
    capsys.readouterr()
    status, _, err = run(capsys, "dlq", "purge")
    assert status == 2
    assert "pass --yes" in err
    status, out, _ = run(capsys, "dlq", "purge", "--older-than", "30d", "--yes")
    assert status == 1  # resolved just now: not idle for 30 days
    assert run(capsys, "dlq", "purge", "--yes") == (0, "purged 1 dead letter(s)\n", "")
    _, out, _ = run(capsys, "dlq", "list", "--json")
    assert len(json.loads(out)["records"]) == 2


def test_purge_on_a_terminal_with_yes_answer_and_explicit_status(
    dlq: Populated, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 'y' on a terminal confirms; --status PENDING purges pending records too."""
    monkeypatch.setattr(sys, "stdin", FakeTerminal("y\n"))
    status, out, err = run(capsys, "dlq", "purge", "--status", "pending", "--json")
    assert status == 0
    assert json.loads(out) == {"purged": 3}
    assert "Delete up to 3 PENDING dead letter(s)" in err


def test_purge_rejects_a_bad_duration(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """--older-than must be a number with an optional unit."""
    status, _, err = run(capsys, "dlq", "purge", "--older-than", "a month", "--yes")
    assert status == 2
    assert "--older-than: 'a month' is not a duration" in err


# --------------------------------------------------------------------------- breakers


def test_breakers_lists_state_counts_and_next_probe(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """`breakers` shows each stored breaker; an open one shows its time to the next probe."""
    store = open_store(dlq.url)
    clock = FakeClock(start=time.time())
    payments = CircuitBreaker(
        "payments", failure_threshold=2, reset_timeout=600, store=store.breakers, clock=clock
    )
    for _ in range(2):
        payments.record_failure(ConnectionRefusedError(111, "refused"))
    mail = CircuitBreaker("mail", failure_threshold=5, store=store.breakers, clock=clock)
    mail.record_failure(ConnectionRefusedError(111, "refused"))
    store.close()

    status, out, _ = run(capsys, "breakers", "--json")
    assert status == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["payments"]["state"] == "open"
    assert rows["payments"]["trips"] == 1
    assert 590 < rows["payments"]["seconds_until_probe"] <= 600
    assert rows["mail"]["state"] == "closed"
    assert rows["mail"]["consecutive_failures"] == 1
    assert rows["mail"]["seconds_until_probe"] == 0.0
    _, out, _ = run(capsys, "breakers")
    header, first, second = out.splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "FAILURES"]
    assert first.split()[:3] == ["mail", "closed", "1"]
    assert second.split()[:2] == ["payments", "open"]


def test_breakers_reset_confirms_and_closes(
    dlq: Populated, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """reset refuses without --yes off a terminal, closes with --yes, and names unknown ones."""
    store = open_store(dlq.url)
    breaker = CircuitBreaker("payments", failure_threshold=1, store=store.breakers)
    breaker.force_open()
    store.close()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status, _, err = run(capsys, "breakers", "reset", "payments")
    assert status == 2
    assert "pass --yes" in err
    _, out, _ = run(capsys, "breakers", "--json")
    assert json.loads(out)[0]["state"] == "forced_open"
    assert json.loads(out)[0]["seconds_until_probe"] is None
    assert run(capsys, "breakers", "reset", "payments", "--yes") == (
        0,
        "breaker 'payments': forced_open -> closed\n",
        "",
    )
    status, _, err = run(capsys, "breakers", "reset", "paymnts", "--yes")
    assert status == 1
    assert "no breaker named 'paymnts'" in err
    assert "did you mean 'payments'?" in err


def test_breakers_on_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No breaker yet is not an error."""
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    assert run(capsys, "breakers", "--store", url) == (0, "no breakers in the store yet\n", "")


# --------------------------------------------------------------------------- stats


def test_stats_reports_retries_per_task_and_dlq_depth(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """stats combines retry outcomes in the window with dead letters per task and status."""
    store = open_store(dlq.url)
    history = OutcomeHistory(store.outcomes)
    now = time.time()
    for success in (True, True, True, False):
        history.record("send_email", FailureType.TRANSIENT_NETWORK, success=success, now=now)
    history.record("report", FailureType.EXTERNAL_TIMEOUT, success=False, now=now - 3 * 86400)
    store.close()
    main(["dlq", "abandon", dlq.records["bad"].id, "--reason", "bad data"])
    capsys.readouterr()

    status, out, _ = run(capsys, "stats", "--json")
    assert status == 0
    report = json.loads(out)
    assert report["dead_letters_by_status"] == {
        "PENDING": 2,
        "RETRYING": 0,
        "RESOLVED": 0,
        "ABANDONED": 1,
    }
    tasks = {row["task"]: row for row in report["tasks"]}
    assert set(tasks) == {"charge", "send_email"}  # report's outcome is outside 24h
    assert tasks["send_email"]["retries"] == 4
    assert tasks["send_email"]["retry_success_rate"] == 0.75
    assert tasks["send_email"]["failed_retries_by_type"] == {"TRANSIENT_NETWORK": 1}
    assert tasks["send_email"]["dead_letters_by_type"] == {"TRANSIENT_NETWORK": 2}
    assert tasks["charge"]["retries"] == 0
    assert tasks["charge"]["retry_success_rate"] is None
    _, out, _ = run(capsys, "stats", "--window", "7d", "--json")
    assert "report" in {row["task"] for row in json.loads(out)["tasks"]}
    _, out, _ = run(capsys, "stats")
    assert "75.0%" in out
    assert "ABANDONED  1" in out


def test_stats_show_executions_when_tracked_and_say_so_when_not(
    dlq: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    """Executions and their success rate come from track_executions; else a note, not zeros."""
    _, out, _ = run(capsys, "stats")
    assert out.startswith("executions not tracked: enable track_executions\n")
    assert "EXECUTIONS" not in out
    _, out, _ = run(capsys, "stats", "--json")
    note = json.loads(out)["executions"]["note"]
    assert note == "executions not tracked: enable track_executions"
    store = open_store(dlq.url)
    now = time.time()
    for success in (True, True, True, False):
        store.outcomes.add("send_email", EXECUTIONS_KEY, success=success, now=now)
    store.close()

    status, out, _ = run(capsys, "stats", "--json")
    assert status == 0
    report = json.loads(out)
    assert report["executions"]["executions"] == 4
    assert report["executions"]["success_rate"] == 0.75
    tasks = {row["task"]: row for row in report["tasks"]}
    assert (tasks["send_email"]["executions"], tasks["send_email"]["successes"]) == (4, 3)
    assert tasks["charge"]["executions"] == 0
    assert tasks["send_email"]["retries"] == 0  # executions are not retries
    _, out, _ = run(capsys, "stats")
    assert out.startswith("executions in the last 24h: 4, success rate 75.0%")
    header = next(line for line in out.splitlines() if line.startswith("TASK"))
    assert header.split()[:4] == ["TASK", "EXECUTIONS", "SUCCESS", "RETRIES"]


def test_stats_rejects_a_bad_window(dlq: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    """--window must be a positive duration."""
    status, _, err = run(capsys, "stats", "--window", "0")
    assert status == 2
    assert "--window: must be positive" in err


# --------------------------------------------------------------------------- classify


def test_classify_reads_a_pasted_traceback_on_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole traceback on stdin is classified by its exception line, with evidence."""
    traceback = textwrap.dedent(
        """\
        Traceback (most recent call last):
          File "tasks.py", line 12, in send
            client.ping()
        redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379.

        """
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(traceback))
    status, out, _ = run(capsys, "classify", "--json")
    assert status == 0
    verdict = json.loads(out)
    assert verdict["failure_type"] == "TRANSIENT_NETWORK"
    assert verdict["remediation"] == "AUTO_RETRY"
    assert "redis.exceptions.ConnectionError" in verdict["evidence"]
    assert verdict["confidence"] > 0.5


def test_classify_skips_the_detail_lines_after_a_psycopg2_exception(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DETAIL / HINT / CONTEXT lines after the exception line do not hide the exception."""
    traceback = textwrap.dedent(
        """\
        Traceback (most recent call last):
          File "tickets.py", line 40, in escalate
            cursor.execute(UPDATE_TICKET, (ticket_id,))
        psycopg2.errors.DeadlockDetected: deadlock detected
        DETAIL:  Process 4711 waits for ShareLock on transaction 9; blocked by process 4712.
        HINT:  See server log for query details.
        CONTEXT:  while updating tuple (0,3) in relation "tickets"
        """
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(traceback))
    status, out, _ = run(capsys, "classify", "--json")
    assert status == 0
    verdict = json.loads(out)
    assert verdict["failure_type"] == "TRANSIENT_DATABASE"
    assert "DeadlockDetected" in verdict["evidence"]


def test_classify_reads_a_celery_log_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's 'raised unexpected: Class(args)' log line is understood."""
    line = (
        "[2024-05-01 12:00:00,000: ERROR/ForkPoolWorker-1] Task proj.charge[abc] "
        "raised unexpected: TimeoutError('timed out')\n"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(line))
    status, out, _ = run(capsys, "classify", "-")
    assert status == 0
    assert "failure_type: EXTERNAL_TIMEOUT" in out or "failure_type: TRANSIENT" in out
    assert "evidence: " in out


def test_classify_rejects_text_without_a_class(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty stdin exits 2 with the expected format."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    status, _, err = run(capsys, "classify")
    assert status == 2
    assert "expected 'ClassName: message'" in err

"""The dead-letter queue service on the in-memory reference store, driven by a fake clock."""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience.clock import FakeClock
from resilience.dead_letter import (
    REPLAY_FAILURE_DELAY,
    REPLAY_LEASE,
    DeadLetterQueue,
    Redaction,
)
from resilience.errors import ConfigurationError, DeadLetterConflict
from resilience.policy import RetryPolicy, default_policy
from resilience.storage import (
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
    MemoryStore,
)
from resilience.storage.memory import MemoryDeadLetterStore
from resilience.taxonomy import FailureType, classify

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

START = 1_700_000_000.0
PENDING = DeadLetterStatus.PENDING
RETRYING = DeadLetterStatus.RETRYING


class Replayer:
    """A fake replay callable that records every call and returns task ids."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, record: DeadLetterRecord) -> str:
        with self._lock:
            self.calls.append(record.id)
            number = len(self.calls)
        if self.fail:
            raise ConnectionRefusedError(111, "broker refused the connection")
        return f"task-{number}"


def make_queue(
    *, replay: Callable[[DeadLetterRecord], str | None] | None = None, **options: object
) -> tuple[DeadLetterQueue, FakeClock]:
    """A queue on a fresh memory store with a fake clock at START."""
    clock = FakeClock(start=START)
    return DeadLetterQueue(MemoryStore(), clock=clock, replay=replay, **options), clock  # type: ignore[arg-type]


def raised(exc: BaseException) -> BaseException:
    """``exc`` after being raised and caught, so it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def add_network_failure(dlq: DeadLetterQueue, **fields: object) -> DeadLetterRecord:
    """Dead-letter a transient network failure with ``fields`` overriding the defaults."""
    options: dict[str, object] = {
        "task_name": "sync_orders",
        "exc": raised(ConnectionRefusedError(111, "Connection refused")),
    }
    options.update(fields)
    return dlq.add(**options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- add


def test_add_stores_every_field_and_an_add_history_entry() -> None:
    """add() fills identity, classification, payload, times and the first history entry."""
    dlq, _ = make_queue()
    exc = raised(ConnectionRefusedError(111, "Connection refused"))
    record = dlq.add(
        task_name="sync_orders",
        exc=exc,
        args=[1, "two"],
        kwargs={"order_id": 7},
        task_id="celery-1",
        retry_count=3,
        priority=5,
        queue="orders",
        correlation_id="req-9",
    )
    assert record.task_name == "sync_orders"
    assert record.task_id == "celery-1"
    assert record.args == [1, "two"]
    assert record.kwargs == {"order_id": 7}
    assert record.failure_type is FailureType.TRANSIENT_NETWORK
    assert record.confidence == classify(exc).confidence
    assert record.exception_class == "ConnectionRefusedError"
    assert record.message == "[Errno 111] Connection refused"
    assert record.retry_count == 3
    assert record.first_failed_at == record.last_failed_at == START
    assert record.status is PENDING
    assert (record.priority, record.queue, record.correlation_id) == (5, "orders", "req-9")
    assert record.flags == ()
    assert [(h.action, h.actor, h.to_status) for h in record.history] == [
        ("add", "worker", PENDING)
    ]
    assert dlq.get(record.id) == record


def test_add_qualifies_non_builtin_exception_classes() -> None:
    """exception_class names the module of a non-builtin exception."""
    dlq, _ = make_queue()
    record = dlq.add(task_name="t", exc=json.JSONDecodeError("bad", "{", 0))
    assert record.exception_class == "json.decoder.JSONDecodeError"


def test_transient_failure_gets_an_automatic_retry_time() -> None:
    """A classification that recommends a retry sets next_retry_at = now + its delay."""
    dlq, _ = make_queue()
    record = add_network_failure(dlq)
    assert record.next_retry_at == START + 60.0


def test_permanent_failure_gets_no_automatic_retry() -> None:
    """A permanent failure is left for an operator: next_retry_at is None."""
    dlq, _ = make_queue()
    record = dlq.add(task_name="t", exc=ValueError("bad amount"))
    assert record.failure_type is FailureType.PERMANENT_VALIDATION
    assert record.next_retry_at is None


def test_lesson_17_integrity_errors_are_not_auto_retried() -> None:
    """Lesson 17: a unique-constraint violation is not treated as transient and retried."""
    dlq, _ = make_queue()
    record = dlq.add(task_name="t", exc=sqlite3.IntegrityError("UNIQUE constraint failed: t.id"))
    assert record.next_retry_at is None
    assert not record.failure_type.startswith("TRANSIENT")


def test_lesson_17_long_failure_type_names_round_trip() -> None:
    """Lesson 17: the taxonomy's 22-character types are stored whole, not a coarse subset."""
    dlq, _ = make_queue()
    verdict = classify(ValueError("x"))
    record = dlq.add(
        task_name="t",
        exc=ValueError("x"),
        classification=dataclasses.replace(
            verdict, failure_type=FailureType.CONFIG_MISSING_SETTING
        ),
    )
    stored = dlq.get(record.id)
    assert stored is not None
    assert stored.failure_type is FailureType.CONFIG_MISSING_SETTING
    assert DeadLetterRecord.from_json(stored.to_json()).failure_type == "CONFIG_MISSING_SETTING"


def test_given_classification_is_used_instead_of_classifying() -> None:
    """A caller's classification wins over classify(exc)."""
    dlq, _ = make_queue()
    verdict = classify(raised(ConnectionRefusedError(111, "Connection refused")))
    record = dlq.add(task_name="t", exc=ValueError("looks permanent"), classification=verdict)
    assert record.failure_type is FailureType.TRANSIENT_NETWORK
    assert record.next_retry_at == START + verdict.retry_delay_seconds


NEVER = RetryPolicy(max_retries=0)
SEVEN = RetryPolicy(max_retries=3, initial_delay=7.0, factor=3.0, jitter="none")


def test_a_policy_without_retries_gets_no_automatic_retry() -> None:
    """policy_for's max_retries=0 for the type: next_retry_at None, process_due leaves it."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay, policy_for=lambda failure_type: NEVER)
    record = add_network_failure(dlq)
    assert record.failure_type is FailureType.TRANSIENT_NETWORK
    assert record.next_retry_at is None
    clock.advance(timedelta(days=30))
    assert dlq.process_due() == []
    assert replay.calls == []


def test_the_first_automatic_retry_waits_the_policys_initial_delay() -> None:
    """next_retry_at = now + the configured policy's initial_delay, per failure type."""
    policies = {FailureType.TRANSIENT_NETWORK: SEVEN}

    def policy_for(failure_type: FailureType) -> RetryPolicy:
        return policies.get(failure_type) or default_policy(failure_type)

    dlq, _ = make_queue(policy_for=policy_for)
    assert add_network_failure(dlq).next_retry_at == START + 7.0
    database = dlq.add(task_name="t", exc=raised(TimeoutError("database query timed out")))
    assert database.next_retry_at == START + default_policy(database.failure_type).initial_delay


def test_a_servers_retry_after_wins_over_the_initial_delay() -> None:
    """A failure that carries Retry-After is retried when the server asked."""

    class Throttled(Exception):
        retry_after = 120.0

    dlq, _ = make_queue(policy_for=lambda failure_type: SEVEN)
    record = dlq.add(task_name="t", exc=Throttled("slow down"))
    assert record.next_retry_at == START + 120.0


def test_a_retry_after_past_the_policys_longest_delay_is_capped() -> None:
    """A bogus Retry-After (three thousand years) schedules the retry at the policy's cap."""

    class Throttled(Exception):
        retry_after = 99_999_999_999.0

    dlq, _ = make_queue(policy_for=lambda failure_type: SEVEN)
    record = dlq.add(task_name="t", exc=Throttled("slow down"))
    assert record.next_retry_at == START + SEVEN.max_delay


def test_a_policy_given_to_add_wins_over_policy_for() -> None:
    """add(policy=...) is the caller's more specific policy (a task's own)."""
    dlq, _ = make_queue(policy_for=lambda failure_type: SEVEN)
    assert add_network_failure(dlq, policy=NEVER).next_retry_at is None
    with pytest.raises(ConfigurationError) as info:
        add_network_failure(dlq, policy={"max_retries": 0})
    assert info.value.key == "policy"


def test_a_broken_policy_lookup_still_stores_the_record(caplog: pytest.LogCaptureFixture) -> None:
    """A lookup that raises or returns garbage: stored all the same, no automatic retry."""

    def broken(failure_type: FailureType) -> RetryPolicy:
        raise KeyError(failure_type)

    dlq, _ = make_queue(policy_for=broken)
    record = add_network_failure(dlq)
    assert dlq.get(record.id) == record
    assert record.next_retry_at is None
    assert "policy_for(TRANSIENT_NETWORK) raised" in caplog.text
    odd, _ = make_queue(policy_for=lambda failure_type: {"max_retries": 3})
    assert add_network_failure(odd).next_retry_at is None


def test_ids_are_unique_and_time_ordered() -> None:
    """Ids start with the millisecond time, so later records sort later; all are distinct."""
    dlq, clock = make_queue()
    ids = []
    for _ in range(200):
        ids.append(dlq.add(task_name="t", exc=ValueError("x")).id)
        clock.advance(0.002)
    assert len(set(ids)) == 200
    assert ids == sorted(ids)
    assert ids[0].startswith(f"{int(START * 1000):013d}-")


def test_traceback_includes_the_cause_chain() -> None:
    """The stored traceback shows every exception of the __cause__/__context__ chain."""

    def load() -> None:
        try:
            orders: dict[str, int] = {}
            orders["missing"] += 1
        except KeyError as exc:
            raise RuntimeError("loading the order failed") from exc

    dlq, _ = make_queue()
    try:
        load()
    except RuntimeError as exc:
        failure = exc
    record = dlq.add(task_name="t", exc=failure)
    assert "KeyError: 'missing'" in record.traceback
    assert "The above exception was the direct cause" in record.traceback
    assert "RuntimeError: loading the order failed" in record.traceback
    assert "in load" in record.traceback


def test_lesson_20_traceback_recorded_outside_an_except_block() -> None:
    """Lesson 20: add() after the except block still stores the real traceback, not NoneType."""
    dlq, _ = make_queue()
    failure = raised(ConnectionResetError(104, "Connection reset by peer"))
    record = dlq.add(task_name="t", exc=failure)  # no exception is being handled here
    assert "NoneType: None" not in record.traceback
    assert "Traceback (most recent call last)" in record.traceback
    assert "ConnectionResetError: [Errno 104] Connection reset by peer" in record.traceback


def test_preformatted_traceback_is_stored_and_scrubbed() -> None:
    """traceback_text (an exception from another process) is stored instead, redacted."""
    dlq, _ = make_queue()
    record = dlq.add(
        task_name="t",
        exc=ValueError("x"),
        traceback_text="Traceback...\nValueError: password=hunter22\n",
    )
    assert record.traceback == "Traceback...\nValueError: password=[REDACTED]\n"
    assert "redacted" in record.flags


def test_unprintable_exception_is_still_stored() -> None:
    """An exception whose __str__ raises is stored with a placeholder message."""

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    dlq, _ = make_queue()
    record = dlq.add(task_name="t", exc=Broken())
    assert record.message.startswith("<unprintable Broken")


def test_non_json_arguments_are_tagged_and_flagged() -> None:
    """Values JSON cannot hold are stored as tagged reprs and the record says so."""
    dlq, _ = make_queue()
    when = datetime(2024, 1, 2, tzinfo=UTC)
    record = dlq.add(task_name="t", exc=ValueError("x"), args=[when], kwargs={"n": {1, 2}})
    assert record.flags == ("non_json",)
    assert record.args[0]["__repr__"] == repr(when)
    assert record.kwargs["n"]["__type__"] == "builtins.set"
    assert DeadLetterRecord.from_json(record.to_json()) == record


def test_json_arguments_are_not_flagged() -> None:
    """Plain JSON arguments round-trip exactly and carry no flag."""
    dlq, _ = make_queue()
    record = dlq.add(task_name="t", exc=ValueError("x"), args=[1, 2.5, None, [True]])
    assert record.args == [1, 2.5, None, [True]]
    assert record.flags == ()


def test_oversized_message_and_traceback_are_truncated_with_a_marker() -> None:
    """A huge message is cut to the cap with an explicit marker, head and tail kept."""
    dlq, _ = make_queue(max_payload_bytes=4096)
    record = dlq.add(task_name="t", exc=raised(ValueError("A" * 50_000 + "END")))
    assert len(record.message.encode()) <= 4096
    assert "[truncated " in record.message
    assert record.message.startswith("AAAA")
    assert record.message.endswith("END")
    assert len(record.traceback.encode()) <= 4096
    assert record.traceback.rstrip().endswith("END")
    assert record.flags == ("truncated",)


def test_oversized_kwargs_keep_their_shape() -> None:
    """A huge string argument is shortened in place; the other arguments are intact."""
    dlq, _ = make_queue(max_payload_bytes=2048)
    record = dlq.add(
        task_name="t", exc=ValueError("x"), kwargs={"body": "x" * 100_000, "to": "ann@example.org"}
    )
    assert record.kwargs["to"] == "ann@example.org"
    assert "[truncated " in record.kwargs["body"]
    assert len(json.dumps(record.kwargs, separators=(",", ":"))) <= 2048
    assert "truncated" in record.flags


def test_args_too_many_to_shorten_become_a_marker_with_a_preview() -> None:
    """Thousands of small items cannot be shortened in place: a marker object replaces them."""
    dlq, _ = make_queue(max_payload_bytes=1024)
    record = dlq.add(task_name="t", exc=ValueError("x"), args=[list(range(5000))])
    assert len(record.args) == 1
    marker = record.args[0]
    assert "exceeded the 1024-byte limit" in marker["__truncated__"]
    assert marker["preview"].startswith("[[0,1,2,3")
    assert len(json.dumps(record.args, separators=(",", ":"), ensure_ascii=False)) <= 1024
    assert record.flags == ("truncated",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_name", ""),
        ("priority", 10),
        ("priority", True),
        ("retry_count", -1),
        ("args", "abc"),
        ("kwargs", [1]),
        ("task_id", 5),
        ("actor", " "),
        ("now", float("nan")),
        ("first_failed_at", "yesterday"),
    ],
)
def test_add_rejects_bad_arguments_naming_them(field: str, value: object) -> None:
    """A bad argument to add() raises ConfigurationError with key= naming it."""
    dlq, _ = make_queue()
    with pytest.raises(ConfigurationError) as info:
        dlq.add(**{"task_name": "t", "exc": ValueError("x"), field: value})  # type: ignore[arg-type]
    assert info.value.key == field


def test_add_rejects_a_non_exception() -> None:
    """exc must be an exception."""
    dlq, _ = make_queue()
    with pytest.raises(ConfigurationError) as info:
        dlq.add(task_name="t", exc="boom")  # type: ignore[arg-type]
    assert info.value.key == "exc"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_payload_bytes", 100),
        ("max_payload_bytes", 2.5),
        ("redaction", {}),
        ("replay", 3),
        ("policy_for", {"TRANSIENT_NETWORK": 0}),
        ("replay_lease", 0),
        ("replay_lease", -1.0),
        ("replay_lease", float("inf")),
        ("replay_lease", "1h"),
    ],
)
def test_constructor_rejects_bad_options(option: str, value: object) -> None:
    """Bad constructor options raise ConfigurationError naming them."""
    with pytest.raises(ConfigurationError) as info:
        DeadLetterQueue(MemoryStore(), **{option: value})  # type: ignore[arg-type]
    assert info.value.key == option


def test_constructor_accepts_a_store_bundle_or_a_role_but_nothing_else() -> None:
    """Both a Store and a bare DeadLetterStore work; another object is rejected."""
    role = MemoryDeadLetterStore()
    dlq = DeadLetterQueue(role)
    record = dlq.add(task_name="t", exc=ValueError("x"), now=START)
    assert role.get(record.id) == record
    bundle = MemoryStore()
    DeadLetterQueue(bundle).add(task_name="t", exc=ValueError("x"), now=START)
    assert bundle.dead_letters.count(DeadLetterFilter()) == 1
    with pytest.raises(ConfigurationError) as info:
        DeadLetterQueue(object())  # type: ignore[arg-type]
    assert info.value.key == "store"


def test_lesson_16_records_are_read_where_they_are_written_and_never_expire() -> None:
    """Lesson 16: another queue on the same store sees every record, months later."""
    store = MemoryStore()
    clock = FakeClock(start=START)
    writer = DeadLetterQueue(store, clock=clock)
    record = writer.add(task_name="t", exc=ValueError("x"))
    clock.advance(timedelta(days=90))
    reader = DeadLetterQueue(store, clock=clock)
    assert reader.get(record.id) == record
    assert [r.id for r in reader.list().records] == [record.id]


# --------------------------------------------------------------------------- list


def test_list_filters_by_each_criterion() -> None:
    """status, task_name, failure_type, since/until and text each narrow the page."""
    dlq, clock = make_queue(replay=Replayer())
    network = add_network_failure(dlq, task_name="sync")
    clock.advance(100)
    invalid = dlq.add(task_name="charge", exc=ValueError("Card DECLINED by bank"))
    clock.advance(100)
    other = dlq.add(task_name="charge", exc=ValueError("amount too large"))
    dlq.retry(other.id, actor="ann")

    def ids(**filters: object) -> list[str]:
        return [r.id for r in dlq.list(**filters).records]  # type: ignore[arg-type]

    assert ids(status="PENDING") == [invalid.id, network.id]
    assert ids(status=[PENDING, RETRYING]) == [other.id, invalid.id, network.id]
    assert ids(task_name="charge") == [other.id, invalid.id]
    assert ids(failure_type=FailureType.TRANSIENT_NETWORK) == [network.id]
    assert ids(since=START + 100) == [other.id, invalid.id]
    assert ids(until=START + 100) == [network.id]
    assert ids(since=datetime.fromtimestamp(START + 150, tz=UTC)) == [other.id]
    assert ids(text="declined") == [invalid.id]
    assert ids(order="replay") == [network.id, invalid.id, other.id]


@pytest.mark.parametrize(
    ("filters", "key"),
    [
        ({"status": "LOST"}, "status"),
        ({"failure_type": "OOPS"}, "failure_type"),
        ({"order": "oldest"}, "order"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"since": datetime(2024, 1, 1)}, "since"),  # noqa: DTZ001 - a naive datetime on purpose
        ({"after": "garbage"}, "after"),
        ({"status": 3}, "status"),
    ],
)
def test_list_rejects_bad_filters(filters: dict[str, object], key: str) -> None:
    """Unknown statuses/types/orders, bad limits, naive datetimes and bad cursors are errors."""
    dlq, _ = make_queue()
    dlq.add(task_name="t", exc=ValueError("x"))
    with pytest.raises(ConfigurationError) as info:
        dlq.list(**filters)  # type: ignore[arg-type]
    assert info.value.key == key


def test_pagination_is_stable_while_records_are_added() -> None:
    """Paging NEWEST while new failures arrive never repeats or skips an existing record."""
    dlq, clock = make_queue()
    existing = []
    for _ in range(57):
        existing.append(dlq.add(task_name="t", exc=ValueError("x")).id)
        clock.advance(1)
    seen: list[str] = []
    after = None
    while True:
        page = dlq.list(limit=10, after=after)
        seen.extend(r.id for r in page.records)
        for _ in range(3):  # newer records arrive between pages
            dlq.add(task_name="t", exc=ValueError("late"))
            clock.advance(1)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert seen == list(reversed(existing))


@settings(max_examples=30, deadline=None)
@given(
    priorities=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=40),
    page_size=st.integers(min_value=1, max_value=7),
)
def test_replay_pages_visit_pending_records_once_in_priority_then_age(
    priorities: list[int], page_size: int
) -> None:
    """REPLAY pages cover every record once: higher priority first, then oldest first."""
    dlq, clock = make_queue()
    records = []
    for priority in priorities:
        records.append(dlq.add(task_name="t", exc=ValueError("x"), priority=priority))
        clock.advance(0.5)
    seen: list[str] = []
    after = None
    while True:
        page = dlq.list(order=DeadLetterOrder.REPLAY, limit=page_size, after=after)
        seen.extend(r.id for r in page.records)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    expected = sorted(records, key=lambda r: (-r.priority, r.first_failed_at, r.id))
    assert seen == [r.id for r in expected]


def test_replay_order_lists_pending_records_by_priority_then_age() -> None:
    """replay_order() is the seed's priority re-queuing: priority desc, then oldest first."""
    dlq, clock = make_queue(replay=Replayer())
    low_old = dlq.add(task_name="t", exc=ValueError("x"), priority=1)
    clock.advance(10)
    high_new = dlq.add(task_name="t", exc=ValueError("x"), priority=9)
    clock.advance(10)
    low_new = dlq.add(task_name="t", exc=ValueError("x"), priority=1)
    taken = dlq.add(task_name="t", exc=ValueError("x"), priority=9)
    dlq.retry(taken.id, actor="ann")
    assert [r.id for r in dlq.replay_order(limit=10)] == [high_new.id, low_old.id, low_new.id]
    assert [r.id for r in dlq.replay_order(limit=1)] == [high_new.id]


# --------------------------------------------------------------------------- retry


def test_retry_claims_then_replays_and_records_the_task_id() -> None:
    """retry() moves PENDING -> RETRYING, calls replay once and notes the new task id."""
    replay = Replayer()
    dlq, _ = make_queue(replay=replay)
    record = add_network_failure(dlq)
    retried = dlq.retry(record.id, actor="ann", note="fixed the VPN")
    assert replay.calls == [record.id]
    assert retried.status is RETRYING
    assert [
        (h.action, h.actor, h.from_status, h.to_status, h.task_id, h.note)
        for h in retried.history[1:]
    ] == [
        ("retry", "ann", PENDING, RETRYING, None, "fixed the VPN"),
        ("enqueued", "ann", RETRYING, RETRYING, "task-1", None),
    ]
    assert dlq.get(record.id) == retried


def test_replay_sees_the_claimed_record() -> None:
    """The replay callable receives the record already in RETRYING."""
    statuses: list[DeadLetterStatus] = []

    def replay(record: DeadLetterRecord) -> None:
        statuses.append(record.status)

    dlq, _ = make_queue(replay=replay)
    record = add_network_failure(dlq)
    assert dlq.retry(record.id, actor="ann").history[-1].task_id is None
    assert statuses == [RETRYING]


def test_second_retry_is_a_conflict_naming_the_status() -> None:
    """Retrying a record that is already RETRYING raises DeadLetterConflict; no second replay."""
    replay = Replayer()
    dlq, _ = make_queue(replay=replay)
    record = add_network_failure(dlq)
    dlq.retry(record.id, actor="ann")
    with pytest.raises(DeadLetterConflict) as info:
        dlq.retry(record.id, actor="bob")
    assert info.value.status == "RETRYING"
    assert info.value.record_id == record.id
    assert "RETRYING" in str(info.value)
    assert replay.calls == [record.id]


def test_retry_of_a_missing_record_is_a_conflict_without_status() -> None:
    """A record that does not exist raises DeadLetterConflict with status None."""
    dlq, _ = make_queue(replay=Replayer())
    with pytest.raises(DeadLetterConflict) as info:
        dlq.retry("nope", actor="ann")
    assert info.value.status is None


def test_retry_without_a_replay_callable_is_a_configuration_error() -> None:
    """retry/bulk_retry/process_due need replay=; the record is left untouched."""
    dlq, _ = make_queue()
    record = add_network_failure(dlq)
    for action in (
        lambda: dlq.retry(record.id, actor="ann"),
        lambda: dlq.bulk_retry(ids=[record.id], actor="ann"),
        dlq.process_due,
    ):
        with pytest.raises(ConfigurationError) as info:
            action()
        assert info.value.key == "replay"
    assert dlq.get(record.id) == record


def test_lesson_18_failed_replay_puts_the_record_back() -> None:
    """Lesson 18: when replay raises, the record returns to PENDING and the error propagates."""
    replay = Replayer(fail=True)
    dlq, _ = make_queue(replay=replay)
    record = add_network_failure(dlq)
    with pytest.raises(ConnectionRefusedError):
        dlq.retry(record.id, actor="ann")
    after = dlq.get(record.id)
    assert after is not None
    assert after.status is PENDING
    assert after.history[-1].action == "replay_failed"
    assert after.history[-1].to_status is PENDING
    assert "ConnectionRefusedError" in (after.history[-1].note or "")
    assert after.next_retry_at == START + REPLAY_FAILURE_DELAY
    replay.fail = False
    assert dlq.retry(record.id, actor="ann").status is RETRYING


def test_two_threads_racing_retry_enqueue_each_record_once() -> None:
    """Concurrent retries of one record: exactly one replay call, the others conflict."""
    replay = Replayer()
    dlq, _ = make_queue(replay=replay)
    records = [add_network_failure(dlq) for _ in range(40)]
    conflicts: list[str] = []
    for record in records:
        barrier = threading.Barrier(4)

        def race(record_id: str = record.id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                dlq.retry(record_id, actor=threading.current_thread().name)
            except DeadLetterConflict:
                conflicts.append(record_id)

        threads = [threading.Thread(target=race) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(replay.calls) == sorted(r.id for r in records)
    assert len(conflicts) == 3 * len(records)


# --------------------------------------------------------------------------- bulk retry


def test_bulk_retry_of_ten_thousand_records_replays_each_once() -> None:
    """A 10,000-record bulk retry completes, in replay order, each replayed exactly once."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    for number in range(10_000):
        dlq.add(task_name="t", exc=ValueError("x"), priority=number % 3)
        clock.advance(0.001)
    result = dlq.bulk_retry(where=DeadLetterFilter(), actor="ops")
    assert len(result.retried) == 10_000
    assert len(set(replay.calls)) == 10_000
    assert replay.calls == list(result.retried)
    assert dict(result.skipped) == {}
    assert dlq.store.count(DeadLetterFilter(statuses=frozenset({RETRYING}))) == 10_000
    first = dlq.get(result.retried[0])
    assert first is not None
    assert first.priority == 2


def test_bulk_retry_by_ids_reports_what_it_skipped() -> None:
    """Unknown ids, non-PENDING records and failed replays are skipped with reasons."""
    replay = Replayer()
    dlq, _ = make_queue(replay=replay)
    ok = add_network_failure(dlq)
    done = add_network_failure(dlq)
    dlq.resolve(done.id, actor="ann")
    result = dlq.bulk_retry(ids=[ok.id, done.id, "ghost", ok.id], actor="ops", note="batch")
    assert result.retried == (ok.id,)
    assert dict(result.skipped) == {done.id: "status is RESOLVED", "ghost": "not found"}
    retried = dlq.get(ok.id)
    assert retried is not None
    assert retried.history[1].note == "batch"


def test_bulk_retry_with_ids_and_a_filter_needs_both() -> None:
    """With ids and where, only ids matching the filter are retried."""
    dlq, _ = make_queue(replay=Replayer())
    sync = add_network_failure(dlq, task_name="sync")
    charge = add_network_failure(dlq, task_name="charge")
    result = dlq.bulk_retry(
        ids=[sync.id, charge.id], where=DeadLetterFilter(task_name="sync"), actor="ops"
    )
    assert result.retried == (sync.id,)
    assert dict(result.skipped) == {charge.id: "does not match the filter"}


def test_bulk_retry_filter_without_statuses_selects_pending_only() -> None:
    """A filter with no statuses never touches resolved or abandoned records."""
    dlq, _ = make_queue(replay=Replayer())
    pending = add_network_failure(dlq)
    abandoned = add_network_failure(dlq)
    dlq.abandon(abandoned.id, actor="ann", reason="obsolete")
    result = dlq.bulk_retry(where=DeadLetterFilter(), actor="ops")
    assert result.retried == (pending.id,)
    assert dict(result.skipped) == {}


def test_bulk_retry_continues_past_failed_replays() -> None:
    """A replay that raises skips that record (back to PENDING) and the bulk goes on."""
    outcomes = iter([RuntimeError("boom"), None])

    def replay(record: DeadLetterRecord) -> str:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        return "task-ok"

    dlq, clock = make_queue(replay=replay)
    first = add_network_failure(dlq)
    clock.advance(1)
    second = add_network_failure(dlq)
    result = dlq.bulk_retry(ids=[first.id, second.id], actor="ops")
    assert result.retried == (second.id,)
    assert dict(result.skipped) == {first.id: "replay failed: RuntimeError"}
    back = dlq.get(first.id)
    assert back is not None
    assert back.status is PENDING


def test_bulk_retry_needs_ids_or_a_filter() -> None:
    """bulk_retry() with neither ids nor where refuses instead of retrying everything."""
    dlq, _ = make_queue(replay=Replayer())
    add_network_failure(dlq)
    with pytest.raises(ConfigurationError) as info:
        dlq.bulk_retry(actor="ops")
    assert info.value.key == "ids"


# --------------------------------------------------------------------------- resolve / abandon


def test_resolve_and_abandon_are_terminal() -> None:
    """RESOLVED and ABANDONED records cannot be resolved, abandoned or retried again."""
    dlq, _ = make_queue(replay=Replayer())
    resolved = dlq.resolve(add_network_failure(dlq).id, actor="ann", note="fixed by hand")
    abandoned = dlq.abandon(add_network_failure(dlq).id, actor="bob", reason="customer left")
    assert resolved.status is DeadLetterStatus.RESOLVED
    assert resolved.next_retry_at is None
    assert resolved.history[-1].note == "fixed by hand"
    assert abandoned.status is DeadLetterStatus.ABANDONED
    assert abandoned.history[-1].note == "customer left"
    assert abandoned.next_retry_at is None
    for record in (resolved, abandoned):
        actions: list[Callable[[], object]] = [
            functools.partial(dlq.resolve, record.id, actor="x"),
            functools.partial(dlq.abandon, record.id, actor="x", reason="y"),
            functools.partial(dlq.retry, record.id, actor="x"),
        ]
        for action in actions:
            with pytest.raises(DeadLetterConflict) as info:
                action()
            assert info.value.status == record.status.value
            assert record.status.value in str(info.value)


def test_resolve_after_a_successful_replay() -> None:
    """A RETRYING record can be resolved (its replayed run succeeded)."""
    dlq, _ = make_queue(replay=Replayer())
    record = add_network_failure(dlq)
    dlq.retry(record.id, actor="ann")
    resolved = dlq.resolve(record.id, actor="celery", note="replayed run succeeded")
    assert resolved.history[-1].from_status is RETRYING
    assert resolved.status is DeadLetterStatus.RESOLVED


def test_abandon_needs_a_reason() -> None:
    """abandon() with an empty reason is a ConfigurationError."""
    dlq, _ = make_queue()
    record = add_network_failure(dlq)
    with pytest.raises(ConfigurationError) as info:
        dlq.abandon(record.id, actor="ann", reason="")
    assert info.value.key == "reason"


def test_concurrent_operators_one_wins() -> None:
    """An abandon and a resolve racing on one record: exactly one succeeds."""
    dlq, _ = make_queue()
    for _ in range(30):
        record = add_network_failure(dlq)
        barrier = threading.Barrier(2)
        wins: list[str] = []

        def act(
            kind: str,
            record_id: str = record.id,
            barrier: threading.Barrier = barrier,
            wins: list[str] = wins,
        ) -> None:
            barrier.wait()
            try:
                if kind == "resolve":
                    dlq.resolve(record_id, actor="ann")
                else:
                    dlq.abandon(record_id, actor="bob", reason="no")
                wins.append(kind)
            except DeadLetterConflict:
                pass

        threads = [threading.Thread(target=act, args=(k,)) for k in ("resolve", "abandon")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(wins) == 1
        final = dlq.get(record.id)
        assert final is not None
        assert len(final.history) == 2


# --------------------------------------------------------------------------- retry failed


def test_record_retry_failed_reschedules_by_the_type_policy() -> None:
    """A failed replay goes back to PENDING, retry_count + 1, next retry from the policy."""
    dlq, clock = make_queue(replay=Replayer())
    record = add_network_failure(dlq, retry_count=1)
    dlq.retry(record.id, actor="ann")
    clock.advance(30)
    failed = dlq.record_retry_failed(
        record.id, exc=raised(ConnectionRefusedError(111, "still refused"))
    )
    low, high = default_policy(FailureType.TRANSIENT_NETWORK).envelope(2)
    assert failed.status is PENDING
    assert failed.retry_count == 2
    assert failed.last_failed_at == START + 30
    assert failed.first_failed_at == START
    assert failed.next_retry_at is not None
    assert START + 30 + low <= failed.next_retry_at <= START + 30 + high
    assert failed.message == "[Errno 111] still refused"
    assert failed.history[-1].action == "retry_failed"
    assert "still refused" in (failed.history[-1].note or "")


def test_record_retry_failed_stops_automatic_retries_when_exhausted() -> None:
    """Once the type's max_retries is spent, next_retry_at becomes None."""
    dlq, _ = make_queue(replay=Replayer())
    retries = default_policy(FailureType.TRANSIENT_NETWORK).max_retries
    record = add_network_failure(dlq, retry_count=retries)
    dlq.retry(record.id, actor="ann")
    failed = dlq.record_retry_failed(record.id, exc=ConnectionRefusedError(111, "no"))
    assert failed.retry_count == retries + 1
    assert failed.next_retry_at is None


def test_record_retry_failed_waits_the_configured_policys_delay() -> None:
    """The next automatic retry comes from policy_for(type), not the default policy."""
    dlq, clock = make_queue(replay=Replayer(), policy_for=lambda failure_type: SEVEN)
    record = add_network_failure(dlq, retry_count=1)
    dlq.retry(record.id, actor="ann")
    clock.advance(30)
    failed = dlq.record_retry_failed(record.id, exc=ConnectionRefusedError(111, "no"))
    assert failed.retry_count == 2
    assert failed.next_retry_at == START + 30 + SEVEN.delay(2) == START + 30 + 21.0


def test_record_retry_failed_with_a_policy_without_retries_stops() -> None:
    """A type whose configured policy never retries gets no automatic retry after a replay."""
    dlq, _ = make_queue(replay=Replayer(), policy_for=lambda failure_type: NEVER)
    record = add_network_failure(dlq, policy=SEVEN)
    dlq.retry(record.id, actor="ann")
    failed = dlq.record_retry_failed(record.id, exc=ConnectionRefusedError(111, "no"))
    assert failed.next_retry_at is None


def test_record_retry_failed_uses_a_given_classification_and_policy() -> None:
    """The caller's verdict and policy (a worker's) win over classify() and policy_for."""
    dlq, clock = make_queue(replay=Replayer(), policy_for=lambda failure_type: NEVER)
    record = add_network_failure(dlq, policy=SEVEN)
    dlq.retry(record.id, actor="ann")
    verdict = classify(raised(ConnectionRefusedError(111, "Connection refused")))
    failed = dlq.record_retry_failed(
        record.id, exc=ValueError("looks permanent"), classification=verdict, policy=SEVEN
    )
    assert failed.failure_type is FailureType.TRANSIENT_NETWORK
    assert failed.next_retry_at == clock.time() + SEVEN.delay(1)
    exhausted = classify(
        raised(ConnectionRefusedError(111, "Connection refused")),
        {"retry_count": 3, "max_retries": 3},
    )
    dlq.retry(record.id, actor="ann")
    again = dlq.record_retry_failed(
        record.id, exc=ValueError("x"), classification=exhausted, policy=SEVEN
    )
    assert again.next_retry_at is None  # the verdict says retries are exhausted


def test_record_retry_failed_updates_type_and_scrubs_the_new_failure() -> None:
    """The new failure's type is stored and its message is scrubbed of secret shapes."""
    dlq, _ = make_queue(replay=Replayer())
    record = add_network_failure(dlq)
    dlq.retry(record.id, actor="ann")
    failed = dlq.record_retry_failed(record.id, exc=ValueError("rejected token=abcdef123"))
    assert failed.failure_type is FailureType.PERMANENT_VALIDATION
    assert failed.next_retry_at is None
    assert failed.message == "rejected token=[REDACTED]"
    assert "redacted" in failed.flags


def test_record_retry_failed_needs_a_retrying_record() -> None:
    """Reporting a failed replay of a PENDING record is a conflict."""
    dlq, _ = make_queue()
    record = add_network_failure(dlq)
    with pytest.raises(DeadLetterConflict) as info:
        dlq.record_retry_failed(record.id, exc=ValueError("x"))
    assert info.value.status == "PENDING"


# --------------------------------------------------------------------------- process_due


def test_process_due_retries_only_due_pending_records_in_replay_order() -> None:
    """process_due(now) replays PENDING records whose next_retry_at passed, priority first."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    low = add_network_failure(dlq, priority=1)  # due at START + 60
    high = add_network_failure(dlq, priority=8)
    permanent = dlq.add(task_name="t", exc=ValueError("x"))
    clock.advance(30)
    late = add_network_failure(dlq)  # due at START + 90
    assert dlq.process_due(START + 59) == []
    assert dlq.process_due(START + 60) == [high.id, low.id]
    assert replay.calls == [high.id, low.id]
    retried = dlq.get(high.id)
    assert retried is not None
    assert retried.history[-1].actor == "process_due"
    assert dlq.process_due(START + 60) == []  # already RETRYING: never twice
    clock.advance(1000)
    assert dlq.process_due() == [late.id]
    untouched = dlq.get(permanent.id)
    assert untouched is not None
    assert untouched.status is PENDING


def test_process_due_respects_its_limit() -> None:
    """limit caps how many records one call attempts."""
    dlq, _ = make_queue(replay=Replayer())
    for _ in range(5):
        add_network_failure(dlq)
    assert len(dlq.process_due(START + 100, limit=2)) == 2
    assert len(dlq.process_due(START + 100, limit=10)) == 3


def test_process_due_defers_a_record_whose_replay_fails() -> None:
    """A failing replay is put back PENDING and deferred, and the others still run."""

    def replay(record: DeadLetterRecord) -> str:
        if record.task_name == "poison":
            raise RuntimeError("task not registered")
        return "task"

    dlq, _ = make_queue(replay=replay)
    poison = add_network_failure(dlq, task_name="poison", priority=9)
    fine = add_network_failure(dlq)
    assert dlq.process_due(START + 60) == [fine.id]
    deferred = dlq.get(poison.id)
    assert deferred is not None
    assert deferred.status is PENDING
    assert deferred.next_retry_at == START + 60 + REPLAY_FAILURE_DELAY
    assert dlq.process_due(START + 61) == []


# --------------------------------------------------------------------------- stale RETRYING


def lost_replay(dlq: DeadLetterQueue, **fields: object) -> DeadLetterRecord:
    """A record retried by ann whose replay never reports back (its message was lost)."""
    record = add_network_failure(dlq, **fields)
    return dlq.retry(record.id, actor="ann")


def test_a_retrying_record_within_its_lease_is_refused() -> None:
    """Its replay may still run: retry() refuses, naming the lease and the replay's age."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    record = lost_replay(dlq)
    clock.advance(REPLAY_LEASE - 1)
    with pytest.raises(DeadLetterConflict) as info:
        dlq.retry(record.id, actor="bob")
    assert info.value.status == "RETRYING"
    assert "is RETRYING; cannot retry it (expects PENDING, or RETRYING" in str(info.value)
    assert "3600s replay lease; this replay started 3599s ago" in str(info.value)
    assert replay.calls == [record.id]
    assert dlq.process_due() == []


def test_a_stale_retrying_record_is_taken_over_by_retry() -> None:
    """Past the lease, retry() takes the record over and replays it again; the history says so."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    record = lost_replay(dlq)
    clock.advance(REPLAY_LEASE)
    retried = dlq.retry(record.id, actor="bob", note="message lost in the broker failover")
    assert retried.status is RETRYING
    assert replay.calls == [record.id, record.id]
    take_over, enqueued = retried.history[-2:]
    assert (take_over.action, take_over.actor, take_over.from_status, take_over.to_status) == (
        "take_over",
        "bob",
        RETRYING,
        RETRYING,
    )
    assert take_over.at == START + REPLAY_LEASE
    assert take_over.note == (
        "took over: its replay (task task-1) started 3600s ago and has not reported within "
        "the 3600s replay lease; message lost in the broker failover"
    )
    assert (enqueued.action, enqueued.task_id) == ("enqueued", "task-2")
    # The takeover's replay holds a fresh lease.
    with pytest.raises(DeadLetterConflict):
        dlq.retry(record.id, actor="carol")


def test_process_due_takes_over_stale_retrying_records_in_replay_order() -> None:
    """Stale RETRYING records are due: picked up with the due PENDING ones, priority first."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    stale_low = lost_replay(dlq, priority=1)
    permanent = dlq.add(task_name="t", exc=ValueError("bad row"), priority=9)
    stale_permanent = dlq.retry(permanent.id, actor="ann")  # by hand; its replay was lost too
    clock.advance(REPLAY_LEASE - 60)
    due = add_network_failure(dlq, priority=5)  # due at the lease's end too
    fresh = lost_replay(dlq, priority=7)
    assert dlq.process_due(START + REPLAY_LEASE - 1) == []
    assert dlq.process_due(START + REPLAY_LEASE) == [stale_permanent.id, due.id, stale_low.id]
    taken = dlq.get(stale_low.id)
    assert taken is not None
    assert taken.history[-2].action == "take_over"
    assert taken.history[-2].actor == "process_due"
    assert "has not reported within the 3600s replay lease" in (taken.history[-2].note or "")
    pending_claim = dlq.get(due.id)
    assert pending_claim is not None
    assert pending_claim.history[-2].action == "retry"
    still = dlq.get(fresh.id)
    assert still is not None
    assert still.history[-1].action == "enqueued"  # within its lease: untouched
    assert dlq.process_due(START + REPLAY_LEASE) == []


def test_a_takeover_whose_replay_raises_goes_back_to_pending() -> None:
    """Taking over follows the usual rule: a replay that raises puts the record back."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    record = lost_replay(dlq)
    clock.advance(REPLAY_LEASE)
    replay.fail = True
    with pytest.raises(ConnectionRefusedError):
        dlq.retry(record.id, actor="bob")
    back = dlq.get(record.id)
    assert back is not None
    assert back.status is PENDING
    assert [h.action for h in back.history[-2:]] == ["take_over", "replay_failed"]


def test_a_replay_that_reports_within_the_lease_is_never_taken_over() -> None:
    """A reported failure brings the record back to PENDING: an ordinary retry, no takeover."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    record = lost_replay(dlq)
    clock.advance(10)
    dlq.record_retry_failed(record.id, exc=raised(ConnectionRefusedError(111, "refused")))
    clock.advance(REPLAY_LEASE)
    assert dlq.retry(record.id, actor="bob").history[-2].action == "retry"


def test_the_replay_lease_is_a_queue_setting() -> None:
    """replay_lease (seconds or a timedelta) sets when a RETRYING record becomes stale."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay, replay_lease=timedelta(minutes=5))
    assert dlq.replay_lease == 300.0
    record = lost_replay(dlq)
    clock.advance(299)
    assert dlq.process_due() == []
    clock.advance(1)
    assert dlq.process_due() == [record.id]


def test_bulk_retry_takes_over_stale_records_and_skips_fresh_ones() -> None:
    """bulk_retry(ids=...) applies the same rule as retry()."""
    replay = Replayer()
    dlq, clock = make_queue(replay=replay)
    stale = lost_replay(dlq)
    clock.advance(REPLAY_LEASE)
    fresh = lost_replay(dlq)
    result = dlq.bulk_retry(ids=[stale.id, fresh.id], actor="ops")
    assert result.retried == (stale.id,)
    assert dict(result.skipped) == {fresh.id: "status is RETRYING"}


def dlq_history(dlq: DeadLetterQueue, record_id: str) -> list[str]:
    """The actions in a record's history, oldest first."""
    record = dlq.get(record_id)
    assert record is not None
    return [entry.action for entry in record.history]


# --------------------------------------------------------------------------- purge


def test_purge_deletes_old_terminal_records_only() -> None:
    """purge() removes RESOLVED/ABANDONED records whose last activity is old enough."""
    dlq, clock = make_queue()
    old_resolved = add_network_failure(dlq)
    old_abandoned = add_network_failure(dlq)
    old_pending = add_network_failure(dlq)
    late_resolved = add_network_failure(dlq)
    dlq.resolve(old_resolved.id, actor="ann")
    dlq.abandon(old_abandoned.id, actor="ann", reason="x")
    clock.advance(timedelta(days=20))
    dlq.resolve(late_resolved.id, actor="ann")  # failed long ago, resolved only now
    clock.advance(timedelta(days=15))
    assert dlq.purge(older_than=timedelta(days=30)) == 2
    assert dlq.get(old_resolved.id) is None
    assert dlq.get(old_abandoned.id) is None
    assert dlq.get(old_pending.id) is not None
    assert dlq.get(late_resolved.id) is not None
    assert dlq.purge(older_than=timedelta(days=30), statuses=["PENDING"]) == 1
    assert dlq.purge(older_than=0) == 1


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"older_than": -1}, "older_than"),
        ({"older_than": "30d"}, "older_than"),
        ({"older_than": float("inf")}, "older_than"),
        ({"older_than": 1, "statuses": ["GONE"]}, "statuses"),
        ({"older_than": 1, "statuses": []}, "statuses"),
    ],
)
def test_purge_rejects_bad_retention(options: dict[str, object], key: str) -> None:
    """A negative or non-finite period or an unknown status is a ConfigurationError."""
    dlq, _ = make_queue()
    with pytest.raises(ConfigurationError) as info:
        dlq.purge(**options)  # type: ignore[arg-type]
    assert info.value.key == key


# --------------------------------------------------------------------------- summary


def test_summary_is_exact_on_a_known_data_set() -> None:
    """Counts by status and type, top tasks, mean retries and hourly failures are exact."""
    dlq, _ = make_queue(replay=Replayer())
    hour = 3600.0
    base = (START // hour) * hour  # START is 1_700_000_000 = 22:13:20 UTC
    now = base + 0.5 * hour
    specs = [
        ("sync", ConnectionRefusedError(111, "refused"), 2, base - 2.5 * hour),
        ("sync", ConnectionRefusedError(111, "refused"), 4, base - 0.5 * hour),
        ("sync", ValueError("bad"), 0, base + 0.1 * hour),
        ("charge", ValueError("bad"), 1, base + 0.2 * hour),
        ("email", ValueError("bad"), 0, base - 10 * hour),  # outside a 3-hour window
    ]
    records = [
        dlq.add(task_name=name, exc=exc, retry_count=count, now=at)
        for name, exc, count, at in specs
    ]
    dlq.resolve(records[0].id, actor="ann", now=now)
    dlq.abandon(records[3].id, actor="ann", reason="x", now=now)
    dlq.retry(records[4].id, actor="ann", now=now)
    summary = dlq.summary(hours=3, top=2, now=now)
    assert summary.total == 5
    assert dict(summary.by_status) == {
        PENDING: 2,
        RETRYING: 1,
        DeadLetterStatus.RESOLVED: 1,
        DeadLetterStatus.ABANDONED: 1,
    }
    assert list(summary.by_failure_type.items()) == [
        (FailureType.PERMANENT_VALIDATION, 3),
        (FailureType.TRANSIENT_NETWORK, 2),
    ]
    assert summary.top_tasks == (("sync", 3), ("charge", 1))
    assert dict(summary.average_retries) == {
        FailureType.PERMANENT_VALIDATION: pytest.approx(1 / 3),
        FailureType.TRANSIENT_NETWORK: 3.0,
    }
    assert summary.failures_per_hour == (
        (base - 2 * hour, 0),
        (base - hour, 1),
        (base, 2),
    )
    assert summary.hours == 3
    assert summary.generated_at == now


def test_summary_of_an_empty_queue_has_zeros_everywhere() -> None:
    """An empty store gives zero counts and a full window of zero hours."""
    dlq, _ = make_queue()
    summary = dlq.summary(hours=24)
    assert summary.total == 0
    assert set(summary.by_status.values()) == {0}
    assert len(summary.failures_per_hour) == 24
    assert {count for _, count in summary.failures_per_hour} == {0}
    assert summary.top_tasks == ()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"hours": 0}, "hours"),
        ({"hours": "24"}, "hours"),
        ({"hours": 1.5}, "hours"),
        ({"hours": 10**9}, "hours"),
        ({"top": -1}, "top"),
    ],
)
def test_lesson_21_summary_validates_its_window(options: dict[str, object], key: str) -> None:
    """Lesson 21: bad hours/top input is a ConfigurationError naming it, not a crash."""
    dlq, _ = make_queue()
    with pytest.raises(ConfigurationError) as info:
        dlq.summary(**options)  # type: ignore[arg-type]
    assert info.value.key == key


def test_queue_uses_the_injected_redaction() -> None:
    """A custom Redaction replaces the default one."""
    dlq, _ = make_queue(redaction=Redaction(keys=("pin",), patterns=(), replacement="***"))
    record = dlq.add(task_name="t", exc=ValueError("x"), kwargs={"pin": "1234", "password": "p"})
    assert record.kwargs == {"pin": "***", "password": "p"}


# --------------------------------------------------------------------------- traceback text


def _chained() -> BaseException:
    """A failure with a cause whose own handling raised (cause and context both set)."""

    def parse(text: str) -> int:
        return int(
            text,
        )  # a call spanning lines: its frame points at several lines

    try:
        try:
            parse("x")
        except ValueError:
            {}["missing"]  # a KeyError while handling the ValueError
    except KeyError as exc:
        try:
            raise RuntimeError("loading failed") from exc
        except RuntimeError as wrapped:
            return wrapped
    raise AssertionError


def _suppressed() -> BaseException:
    """A failure raised `from None` while handling another (its context is hidden)."""
    try:
        try:
            raise ValueError("inner")
        except ValueError:
            raise LookupError("outer") from None
    except LookupError as exc:
        return exc


def _grouped() -> BaseException:
    """An exception group of two raised failures, one with a cause."""
    try:
        raise ExceptionGroup("batch", [raised(ValueError("a")), _chained()])
    except ExceptionGroup as exc:
        return exc


def _recursive() -> BaseException:
    """A RecursionError: hundreds of identical frames the formatter collapses."""

    def down(n: int) -> int:
        return down(n + 1) + 1

    try:
        down(0)
    except RecursionError as exc:
        return exc
    raise AssertionError


def _noted() -> BaseException:
    """A failure carrying notes."""
    exc = raised(ValueError("with notes"))
    exc.add_note("first note")
    exc.add_note("second note")
    return exc


def _syntax() -> BaseException:
    """A SyntaxError raised by compile(), pointing into source text."""
    try:
        compile("x = (1 +\n", "<task>", "exec")
    except SyntaxError as exc:
        return exc
    raise AssertionError


@pytest.mark.parametrize(
    "make",
    [_chained, _suppressed, _grouped, _recursive, _noted, _syntax, lambda: ValueError("bare")],
)
def test_stored_traceback_is_exactly_the_standard_format(
    make: Callable[[], BaseException],
) -> None:
    """The traceback is traceback.format_exception's text (before redaction), every time."""
    import traceback

    from resilience._dead_letter_payload import _format_traceback

    exc = make()
    expected = "".join(traceback.format_exception(exc))
    assert _format_traceback(exc) == expected
    assert _format_traceback(exc) == expected  # the second time from the frame memo
    dlq, _ = make_queue(redaction=Redaction(keys=(), patterns=(), card_numbers=False))
    assert dlq.add(task_name="t", exc=exc).traceback == expected


def test_frame_memo_follows_the_source_line_it_shows(tmp_path: Path) -> None:
    """A frame whose source line changed is formatted afresh, never from the old text."""
    import linecache
    import traceback

    from resilience._dead_letter_payload import _format_traceback

    source = tmp_path / "job.py"
    source.write_text("def run():\n    raise ValueError('v1')\n")
    namespace: dict[str, Callable[[], None]] = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)  # noqa: S102 - our own file
    try:
        namespace["run"]()
    except ValueError as exc:
        failure: BaseException = exc
    first = _format_traceback(failure)
    assert "raise ValueError('v1')" in first
    source.write_text("def run():\n      raise ValueError('v2')   # edited\n")
    linecache.checkcache(str(source))
    second = _format_traceback(failure)
    assert second == "".join(traceback.format_exception(failure))
    assert "raise ValueError('v2')" in second

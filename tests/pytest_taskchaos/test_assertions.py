"""Tests for the chaos assertions: what passes, what fails, and what a failure says."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pytest_taskchaos import assertions
from pytest_taskchaos._history import Event, EventKind
from pytest_taskchaos.assertions import (
    ChaosAssertionError,
    assert_breaker,
    assert_breaker_never_opened,
    assert_budget_held,
    assert_dead_lettered,
    assert_effect_once,
    assert_faults_fired,
    assert_idempotent,
    assert_not_dead_lettered,
    assert_not_retried,
    assert_retried,
    assert_retries_spread,
    assert_retry_delays_within,
    assert_succeeded,
    history_slice,
)
from resilience import FailureType, RetryPolicy
from resilience.errors import ConfigurationError

CHARGE = "billing.charge"
REFUND = "billing.refund"
EMAIL = "mail.send"


def ev(
    kind: str, at: float, task: str = CHARGE, task_id: str = "a", attempt: int = 1, **details: Any
) -> Event:
    """One hand-built history event."""
    return Event(
        kind=EventKind(kind),
        at=at,
        task_name=task,
        task_id=task_id,
        attempt=attempt,
        details=details,
    )


def retried_twice(task_id: str = "a", task: str = CHARGE, start: float = 0.0) -> list[Event]:
    """A task id that fails twice, retrying after 1 s and 2 s, then succeeds."""
    t = start
    return [
        ev("published", t, task, task_id, 1, eta=t),
        ev("started", t, task, task_id, 1),
        ev("raised", t, task, task_id, 1, exception="OperationalError", message="deadlock"),
        ev("retried", t, task, task_id, 1, countdown=1.0, exception="OperationalError"),
        ev("published", t, task, task_id, 2, eta=t + 1),
        ev("started", t + 1, task, task_id, 2),
        ev("raised", t + 1, task, task_id, 2, exception="OperationalError", message="deadlock"),
        ev("retried", t + 1, task, task_id, 2, countdown=2.0, exception="OperationalError"),
        ev("published", t + 1, task, task_id, 3, eta=t + 3),
        ev("started", t + 3, task, task_id, 3),
        ev("succeeded", t + 3.5, task, task_id, 3),
    ]


def succeeded_at_once(task_id: str, task: str = EMAIL, start: float = 0.0) -> list[Event]:
    """A task id that succeeds on its first attempt, half a second after publishing."""
    return [
        ev("published", start, task, task_id, 1, eta=start),
        ev("started", start, task, task_id, 1),
        ev("succeeded", start + 0.5, task, task_id, 1),
    ]


def failure(call: Any) -> ChaosAssertionError:
    """The ChaosAssertionError a call raises."""
    with pytest.raises(ChaosAssertionError) as info:
        call()
    return info.value


# --- the error and the slice -------------------------------------------------


def test_chaos_assertion_error_is_an_assertion_error_carrying_its_events() -> None:
    """pytest reports it as an assertion failure; `.events` holds the slice shown."""
    history = retried_twice()
    error = failure(lambda: assert_not_retried(history, CHARGE))
    assert isinstance(error, AssertionError)
    assert error.events == tuple(history)


def test_every_failure_message_prints_the_slice_one_event_per_line() -> None:
    """The message ends with the describe() line of every event of the task, in order."""
    history = retried_twice() + succeeded_at_once("m1")
    message = str(failure(lambda: assert_not_retried(history, CHARGE)))
    lines = message.splitlines()
    start = lines.index("history of task 'billing.charge' (11 events):")
    assert lines[start + 1 :] == [f"  {event.describe()}" for event in retried_twice()]
    assert "mail.send" not in message


def test_history_slice_filters_by_task_pattern_and_task_id() -> None:
    """task takes an fnmatch pattern; task_id narrows it to one id."""
    history = retried_twice("a") + retried_twice("b", task=REFUND) + succeeded_at_once("m1")
    by_pattern = history_slice(history, task="billing.*").splitlines()
    assert len(by_pattern) == 22
    assert all("mail.send" not in line for line in by_pattern)
    by_id = history_slice(history, task="billing.*", task_id="b")
    assert by_id.splitlines() == [event.describe() for event in history if event.task_id == "b"]


def test_history_slice_by_key_shows_the_whole_runs_that_carry_the_key() -> None:
    """key selects every event of the runs (task id + attempt) with that key."""
    history = [
        ev("started", 0, task_id="a"),
        ev("side_effect", 0.1, task_id="a", name="charge", key="order-1"),
        ev("succeeded", 0.2, task_id="a"),
        ev("started", 1, task_id="b"),
        ev("side_effect", 1.1, task_id="b", name="charge", key="order-2"),
    ]
    assert history_slice(history, key="order-1").splitlines() == [
        event.describe() for event in history[:3]
    ]


def test_history_slice_by_breaker_adds_the_failures_of_admitted_runs() -> None:
    """breaker selects its own events plus the RAISED events of the runs it admitted."""
    history = [
        ev("started", 0, task_id="a"),
        ev("call_admitted", 0, task_id="a", breaker="payments"),
        ev("raised", 0.1, task_id="a", exception="ConnectError", message="refused"),
        ev("started", 1, task_id="b"),
        ev("raised", 1.1, task_id="b", exception="ValueError", message="bad"),
        ev("call_admitted", 2, task_id="c", breaker="other"),
    ]
    assert history_slice(history, breaker="payments").splitlines() == [
        history[1].describe(),
        history[2].describe(),
    ]


def test_history_slice_keeps_the_first_and_last_events_of_a_long_history() -> None:
    """50 events at limit 40: 20 first, a '... 10 more events ...' line, 20 last."""
    history = [ev("started", float(i), task_id=f"id{i}") for i in range(50)]
    lines = history_slice(history).splitlines()
    assert len(lines) == 41
    assert lines[:20] == [event.describe() for event in history[:20]]
    assert lines[20] == "... 10 more events ..."
    assert lines[21:] == [event.describe() for event in history[30:]]
    assert len(history_slice(history, limit=5).splitlines()) == 6


def test_history_slice_of_nothing_says_so() -> None:
    """An empty selection prints '(no events)' rather than nothing."""
    assert history_slice(retried_twice(), task="nope") == "(no events)"


@pytest.mark.parametrize(("kwargs", "key"), [({"limit": 1}, "limit"), ({"task": 3}, "task")])
def test_history_slice_rejects_bad_arguments(kwargs: dict[str, Any], key: str) -> None:
    """A limit below 2 or a non-string filter is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=key) as info:
        history_slice(retried_twice(), **kwargs)
    assert info.value.key == key


def test_unknown_task_fails_listing_the_tasks_that_appear() -> None:
    """A misspelt task is a failure, not a pass, and the names seen are suggested."""
    history = retried_twice() + succeeded_at_once("m1")
    message = str(failure(lambda: assert_not_retried(history, "billing.charg")))
    assert "no events for task 'billing.charg'" in message
    assert "tasks in the history: billing.charge, mail.send" in message
    assert "did you mean 'billing.charge'?" in message


def test_unknown_task_in_an_empty_history_says_the_history_is_empty() -> None:
    """An empty history is named as such."""
    message = str(failure(lambda: assert_retried([], CHARGE)))
    assert "the history is empty" in message


def test_public_names_are_exported() -> None:
    """__all__ is sorted and lists exactly the public names of the module."""
    public = {
        name
        for name, value in vars(assertions).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == assertions.__name__
    }
    assert sorted(assertions.__all__) == assertions.__all__
    assert set(assertions.__all__) == public


# --- assert_retried / assert_not_retried --------------------------------------


def test_assert_retried_counts_non_deferred_retries_of_matching_tasks() -> None:
    """Deferred retries are not failures; patterns match several task names."""
    history = [
        *retried_twice("a"),
        *retried_twice("b", task=REFUND),
        ev("retried", 9, task_id="a", attempt=3, countdown=5.0, deferred=True),
    ]
    assert len(assert_retried(history, CHARGE, times=2)) == 2
    assert len(assert_retried(history, "billing.*", times=4)) == 4
    assert len(assert_retried(history, "billing.*", at_least=3, at_most=4)) == 4
    assert_retried(history, CHARGE)


def test_assert_retried_failure_says_expected_measured_and_shows_the_task() -> None:
    """The message gives the bound, the count and the task's history."""
    history = retried_twice()
    message = str(failure(lambda: assert_retried(history, CHARGE, times=3)))
    assert message.startswith(
        "expected task 'billing.charge' to be retried exactly 3 times\n"
        "measured 2 retries (non-deferred retried events)\n"
    )
    assert history[3].describe() in message


@pytest.mark.parametrize(
    ("kwargs", "wanted"),
    [
        ({"at_least": 3}, "at least 3 times"),
        ({"at_most": 1}, "at most 1 time"),
        ({"at_least": 3, "at_most": 5}, "between 3 and 5 times"),
    ],
)
def test_assert_retried_bounds_are_named_in_the_message(
    kwargs: dict[str, Any], wanted: str
) -> None:
    """Each kind of bound reads naturally in the failure."""
    message = str(failure(lambda: assert_retried(retried_twice(), CHARGE, **kwargs)))
    assert f"to be retried {wanted}\n" in message


def test_assert_retried_without_bounds_requires_at_least_one_retry() -> None:
    """With no count, a task that never retried fails."""
    message = str(failure(lambda: assert_retried(succeeded_at_once("m1"), EMAIL)))
    assert "to be retried at least 1 time\nmeasured 0 retries" in message


def test_assert_retried_per_task_id_checks_every_id() -> None:
    """per_task_id: every task id must satisfy the count; offenders are listed."""
    history = retried_twice("a") + succeeded_at_once("b", task=CHARGE, start=10)
    assert len(assert_retried(history, CHARGE, times=2)) == 2
    message = str(failure(lambda: assert_retried(history, CHARGE, times=2, per_task_id=True)))
    assert "expected every task id of task 'billing.charge' to be retried exactly 2 times" in (
        message
    )
    assert "  b: retried 0 times" in message
    assert "  a: retried" not in message
    assert "history of those task ids (3 events):" in message
    assert_retried(retried_twice("a") + retried_twice("b"), CHARGE, times=2, per_task_id=True)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"times": -1}, "times"),
        ({"at_least": True}, "at_least"),
        ({"at_most": 1.5}, "at_most"),
        ({"times": 1, "at_least": 1}, "times"),
        ({"at_least": 3, "at_most": 2}, "at_most"),
        ({"per_task_id": "yes"}, "per_task_id"),
    ],
)
def test_assert_retried_rejects_bad_counts(kwargs: dict[str, Any], key: str) -> None:
    """Negative, non-int or contradictory counts are ConfigurationErrors naming the key."""
    with pytest.raises(ConfigurationError, match=key) as info:
        assert_retried(retried_twice(), CHARGE, **kwargs)
    assert info.value.key == key


def test_assert_not_retried_passes_for_a_task_that_only_deferred() -> None:
    """A deferral (open breaker, busy key) is not a retry."""
    history = [
        ev("published", 0),
        ev("started", 0),
        ev("retried", 0, countdown=30.0, exception=None, deferred=True),
    ]
    assert assert_not_retried(history, CHARGE) == history


def test_assert_not_retried_lists_the_retries() -> None:
    """The failure lists each retry event under the count."""
    history = retried_twice()
    message = str(failure(lambda: assert_not_retried(history, "billing.*")))
    assert message.startswith(
        "expected task 'billing.*' not to be retried\n"
        f"measured 2 retries:\n  {history[3].describe()}\n  {history[7].describe()}\n"
    )


# --- assert_retry_delays_within ----------------------------------------------

POLICY = RetryPolicy(max_retries=2, initial_delay=1, factor=2, jitter="none")


def test_retry_delays_within_the_envelope_pass() -> None:
    """Countdowns of 1 s then 2 s fit a 1 s, factor-2 policy without jitter."""
    assert len(assert_retry_delays_within(retried_twice(), CHARGE, POLICY)) == 2


def test_retry_delays_allow_a_microsecond_of_rounding() -> None:
    """Countdowns computed by subtraction may be off by far less than 1e-6 s."""
    history = [ev("retried", 0, countdown=1.0 + 5e-7), ev("retried", 1, attempt=2, countdown=2.0)]
    assert_retry_delays_within(history, CHARGE, POLICY)


def test_retry_delay_outside_the_envelope_names_the_retry() -> None:
    """The failure names task id, retry number, countdown and envelope."""
    history = [
        *retried_twice("a"),
        ev("retried", 20, task_id="b", countdown=1.0),
        ev("retried", 21, task_id="b", attempt=2, countdown=7.5),
    ]
    message = str(failure(lambda: assert_retry_delays_within(history, CHARGE, POLICY)))
    assert message.startswith(
        "expected every retry of task 'billing.charge' to wait within the policy's envelope"
        " and at most max_retries=2 retries per task id\n"
        "measured 1 offending:\n"
        "  task id b retry 2: countdown 7.5s outside envelope [2, 2]\n"
        "history of those task ids (2 events):\n"
    )


def test_retry_delays_check_max_retries_per_task_id() -> None:
    """A third retry under max_retries=2 is an offence even inside its envelope."""
    history = [*retried_twice(), ev("retried", 4, attempt=3, countdown=4.0)]
    message = str(failure(lambda: assert_retry_delays_within(history, CHARGE, POLICY)))
    assert "  task id a: 3 retries, above max_retries=2" in message
    assert "outside envelope" not in message


def test_retry_delays_without_countdown_are_offences() -> None:
    """A retry that recorded no countdown cannot be checked, so it fails."""
    history = [ev("retried", 0, countdown=None)]
    message = str(failure(lambda: assert_retry_delays_within(history, CHARGE, POLICY)))
    assert "task id a retry 1: no countdown recorded (envelope [1, 1])" in message


def test_retry_delays_need_a_policy() -> None:
    """Passing something other than a RetryPolicy is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="policy must be a RetryPolicy") as info:
        assert_retry_delays_within(retried_twice(), CHARGE, {"max_retries": 2})  # type: ignore[arg-type]
    assert info.value.key == "policy"


# --- dead letters --------------------------------------------------------------


def dead_lettered(task_id: str, failure_type: str, task: str = CHARGE) -> list[Event]:
    """A task id that fails once and goes to the dead-letter queue."""
    return [
        ev("published", 0, task, task_id),
        ev("started", 0, task, task_id),
        ev("raised", 0.1, task, task_id, exception="ValueError", message="bad amount"),
        ev("dead_lettered", 0.1, task, task_id, exception="ValueError",
           failure_type=failure_type, record_id=f"dl-{task_id}"),
        ev("failed", 0.1, task, task_id, exception="ValueError"),
    ]  # fmt: skip


def test_assert_dead_lettered_filters_by_type_and_count() -> None:
    """failure_type takes the enum or its value (any case); count is exact."""
    history = dead_lettered("a", "PERMANENT_VALIDATION") + dead_lettered("b", "UNKNOWN")
    assert len(assert_dead_lettered(history, CHARGE)) == 2
    assert len(assert_dead_lettered(history, CHARGE, count=2)) == 2
    found = assert_dead_lettered(history, CHARGE, failure_type=FailureType.PERMANENT_VALIDATION)
    assert [event.task_id for event in found] == ["a"]
    assert assert_dead_lettered(history, CHARGE, failure_type="unknown", count=1)[0].task_id == "b"
    assert_dead_lettered(history, CHARGE, failure_type="SYSTEM_DISK_FULL", count=0)


def test_assert_dead_lettered_failure_names_other_types() -> None:
    """When the type differs, the message says which types were dead-lettered instead."""
    history = dead_lettered("a", "UNKNOWN")
    message = str(
        failure(lambda: assert_dead_lettered(history, CHARGE, failure_type="TRANSIENT_DATABASE"))
    )
    assert message.startswith(
        "expected task 'billing.charge' to be dead-lettered with failure type "
        "TRANSIENT_DATABASE at least once\n"
        "measured 0 matching dead letters (dead letters of other types: UNKNOWN x1)\n"
    )
    assert history[3].describe() in message


def test_assert_dead_lettered_fails_when_nothing_was_dead_lettered() -> None:
    """A task that succeeded was not dead-lettered."""
    message = str(failure(lambda: assert_dead_lettered(retried_twice(), CHARGE, count=1)))
    assert "to be dead-lettered exactly 1 time\nmeasured 0 matching dead letters\n" in message


def test_unknown_failure_type_lists_the_valid_ones() -> None:
    """A misspelt failure type is a ConfigurationError with a suggestion and the list."""
    with pytest.raises(ConfigurationError) as info:
        assert_dead_lettered(dead_lettered("a", "UNKNOWN"), CHARGE, failure_type="TRANSIENT_DB")
    message = str(info.value)
    assert info.value.key == "failure_type"
    assert "unknown failure_type 'TRANSIENT_DB'; did you mean 'TRANSIENT_DATABASE'?" in message
    assert "valid: TRANSIENT_DATABASE, TRANSIENT_NETWORK" in message


def test_negative_dead_letter_count_is_rejected() -> None:
    """count must be an int >= 0."""
    with pytest.raises(ConfigurationError, match="count must be an int >= 0") as info:
        assert_dead_lettered(dead_lettered("a", "UNKNOWN"), CHARGE, count=-1)
    assert info.value.key == "count"


def test_assert_not_dead_lettered() -> None:
    """Passes for a task that recovered; fails listing the dead letters otherwise."""
    assert assert_not_dead_lettered(retried_twice(), CHARGE) == retried_twice()
    history = dead_lettered("a", "UNKNOWN")
    message = str(failure(lambda: assert_not_dead_lettered(history, CHARGE)))
    assert message.startswith(
        "expected task 'billing.charge' not to be dead-lettered\n"
        f"measured 1 dead letter:\n  {history[3].describe()}\n"
    )


# --- assert_succeeded ------------------------------------------------------------


def test_assert_succeeded_returns_each_ids_first_success() -> None:
    """Every published id succeeded; within bounds publish-to-success time."""
    history = retried_twice("a") + retried_twice("b", start=10)
    found = assert_succeeded(history, CHARGE, within=3.5)
    assert [(event.task_id, event.at) for event in found] == [("a", 3.5), ("b", 13.5)]
    assert_succeeded(history, CHARGE, within=timedelta(seconds=4))


def test_assert_succeeded_names_ids_that_did_not_succeed_with_their_last_event() -> None:
    """An id that ended dead-lettered is named with its last event."""
    history = retried_twice("a") + dead_lettered("b", "UNKNOWN")
    message = str(failure(lambda: assert_succeeded(history, CHARGE)))
    assert message.startswith(
        "expected every task id of task 'billing.charge' to succeed\n"
        "measured 1 of 2 task ids failing that:\n"
        f"  b did not succeed; last event: {history[-1].describe()}\n"
        "history of those task ids (5 events):\n"
    )


def test_assert_succeeded_within_names_slow_ids_with_durations() -> None:
    """within: an id slower than the limit is named with its duration."""
    history = retried_twice("a") + succeeded_at_once("b", task=CHARGE, start=20)
    message = str(failure(lambda: assert_succeeded(history, CHARGE, within=timedelta(seconds=2))))
    assert "expected every task id of task 'billing.charge' to succeed within 2s" in message
    assert "  a succeeded after 3.5s (limit 2s)" in message
    assert "  b " not in message


@pytest.mark.parametrize("within", [-1.0, float("nan"), "5s"])
def test_assert_succeeded_rejects_bad_durations(within: Any) -> None:
    """within must be a finite, non-negative number of seconds or a timedelta."""
    with pytest.raises(ConfigurationError, match="within") as info:
        assert_succeeded(retried_twice(), CHARGE, within=within)
    assert info.value.key == "within"


# --- breakers ----------------------------------------------------------------------


def breaker_story() -> list[Event]:
    """Three failed calls open 'payments'; two are rejected; a probe succeeds and closes it.

    The third run's RAISED event comes after the transition, as when the breaker
    records the failure before the exception leaves the task.
    """
    history: list[Event] = []
    for i, task_id in enumerate(["a", "b", "c"]):
        history += [
            ev("started", i, task_id=task_id),
            ev("call_admitted", i, task_id=task_id, breaker="payments"),
        ]
        if task_id == "c":
            history.append(
                ev("breaker_changed", i, task_id=task_id, breaker="payments",
                   old="closed", new="open")
            )  # fmt: skip
        history.append(ev("raised", i + 0.1, task_id=task_id, exception="ConnectError"))
    history += [
        ev("call_rejected", 3, task_id="d", breaker="payments", retry_after=27.0),
        ev("call_rejected", 4, task_id="e", breaker="payments", retry_after=26.0),
        ev("breaker_changed", 30, task_id="f", breaker="payments", old="open", new="half_open"),
        ev("call_admitted", 30, task_id="f", breaker="payments"),
        ev("breaker_changed", 30.2, task_id="f", breaker="payments", old="half_open",
           new="closed"),
        ev("succeeded", 30.2, task_id="f"),
        ev("call_admitted", 31, task_id="g", breaker="search"),
    ]  # fmt: skip
    return history


def test_assert_breaker_checks_every_expectation() -> None:
    """opened_after counts failed admitted runs, even when RAISED follows the opening."""
    history = breaker_story()
    found = assert_breaker(history, "payments", opened_after=3, rejected=2, probes=1, closed=True)
    assert all(event.details["breaker"] == "payments" for event in found)
    assert len(found) == 9
    assert_breaker(history, "search", closed=True)


def test_assert_breaker_failure_lists_every_mismatch() -> None:
    """Each wrong expectation gets its own line with expected and measured values."""
    history = breaker_story()
    message = str(
        failure(
            lambda: assert_breaker(
                history, "payments", opened_after=5, rejected=0, probes=2, closed=False
            )
        )
    )
    assert message.startswith(
        "breaker 'payments' did not behave as expected:\n"
        "  opened after: expected 5 failed calls, measured 3\n"
        "  rejected: expected 0 calls, measured 2\n"
        "  probes: expected 2 transitions to half_open, measured 1\n"
        "  final state: expected not closed, measured closed\n"
        "history of breaker 'payments' (12 events):\n"
    )
    assert history[7].describe() in message  # the third failure, recorded after opening
    assert "search" not in message


def test_assert_breaker_that_never_opened_reports_the_failures_it_saw() -> None:
    """opened_after on a breaker that stayed closed says so, with its failure count."""
    history = [
        ev("call_admitted", 0, breaker="payments"),
        ev("raised", 0.1, exception="ConnectError"),
    ]
    message = str(failure(lambda: assert_breaker(history, "payments", opened_after=1)))
    assert "opened after: expected 1 failed calls, but it never opened (1 failed admitted" in (
        message
    )


def test_unknown_breaker_lists_the_breakers_seen() -> None:
    """A misspelt breaker fails with the names that do appear."""
    message = str(failure(lambda: assert_breaker_never_opened(breaker_story(), "paymnets")))
    assert "no events for breaker 'paymnets'" in message
    assert "breakers in the history: payments, search; did you mean 'payments'?" in message


def test_assert_breaker_never_opened() -> None:
    """Passes for a breaker that stayed closed; names the first opening otherwise."""
    history = breaker_story()
    assert_breaker_never_opened(history, "search")
    message = str(failure(lambda: assert_breaker_never_opened(history, "payments")))
    assert message.startswith(
        "expected breaker 'payments' never to open\nmeasured 1 opening, first at 2s\n"
    )


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"opened_after": -1}, "opened_after"),
        ({"rejected": "2"}, "rejected"),
        ({"probes": -3}, "probes"),
        ({"closed": "yes"}, "closed"),
    ],
)
def test_assert_breaker_rejects_bad_arguments(kwargs: dict[str, Any], key: str) -> None:
    """Bad counts and a non-bool closed are ConfigurationErrors naming the key."""
    with pytest.raises(ConfigurationError, match=key) as info:
        assert_breaker(breaker_story(), "payments", **kwargs)
    assert info.value.key == key


# --- side effects and idempotency --------------------------------------------------


def test_assert_effect_once_per_key_passes_for_distinct_keys() -> None:
    """Each key executed once: pass, returning the effect's events."""
    history = [
        ev("side_effect", 0, task_id="a", name="charge", key="order-1"),
        ev("side_effect", 1, task_id="b", name="charge", key="order-2"),
        ev("side_effect", 1, task_id="b", name="email", key="order-2"),
    ]
    assert assert_effect_once(history, "charge") == history[:2]


def test_duplicate_side_effect_names_effect_key_and_count() -> None:
    """A key executed twice is a duplicate side effect, with the runs in the slice."""
    history = [
        ev("delivered", 0, task_id="a", redelivered=False, duplicate=False),
        ev("side_effect", 0.1, task_id="a", name="charge", key="order-1"),
        ev("delivered", 5, task_id="a", redelivered=True, duplicate=True),
        ev("side_effect", 5.1, task_id="a", name="charge", key="order-1"),
        ev("side_effect", 6, task_id="b", name="charge", key="order-2"),
    ]
    message = str(failure(lambda: assert_effect_once(history, "charge")))
    assert message.startswith(
        "expected side effect 'charge' to execute exactly once per key\n"
        "duplicate side effect 'charge' for key 'order-1': executed 2 times\n"
    )
    assert history[2].describe() in message
    assert "order-2" not in message


def test_effect_once_in_total() -> None:
    """per_key=False: two keys are still two executions."""
    history = [
        ev("side_effect", 0, task_id="a", name="charge", key="order-1"),
        ev("side_effect", 1, task_id="b", name="charge", key="order-2"),
    ]
    assert_effect_once(history[:1], "charge", per_key=False)
    message = str(failure(lambda: assert_effect_once(history, "charge", per_key=False)))
    assert "duplicate side effect 'charge': executed 2 times" in message


def test_effect_that_never_executed_fails() -> None:
    """No event of that name is a failure listing the effects seen."""
    history = [ev("side_effect", 0, name="charge", key="order-1")]
    message = str(failure(lambda: assert_effect_once(history, "charges")))
    assert "never executed; side effects in the history: charge; did you mean 'charge'?" in (
        message
    )


def idempotent_run(task_id: str, attempt: int, at: float, outcome: str, end: str) -> list[Event]:
    """One run of an idempotent task with key 'k1'."""
    return [
        ev("started", at, task_id=task_id, attempt=attempt),
        ev("idempotency", at, task_id=task_id, attempt=attempt, key="k1", outcome=outcome),
        ev(end, at + 0.1, task_id=task_id, attempt=attempt),
    ]


def test_assert_idempotent_ignores_stored_hits_and_failed_claims() -> None:
    """A failed miss then a successful miss, then hits: one body success for the key."""
    history = [
        *idempotent_run("a", 1, 0, "miss", "raised"),
        *idempotent_run("a", 1, 0.5, "hit", "succeeded"),
        *idempotent_run("a", 2, 1, "miss", "succeeded"),
        *idempotent_run("a", 2, 5, "hit", "succeeded"),
        *idempotent_run("b", 1, 6, "hit", "succeeded"),
    ]
    found = assert_idempotent(history, CHARGE)
    assert [(event.task_id, event.attempt) for event in found] == [("a", 2)]


def test_assert_idempotent_fails_when_the_body_succeeded_twice_for_a_key() -> None:
    """Two successful claims of one key name the key and both runs."""
    history = [
        *idempotent_run("a", 1, 0, "miss", "succeeded"),
        *idempotent_run("b", 1, 3, "miss", "succeeded"),
    ]
    message = str(failure(lambda: assert_idempotent(history, CHARGE)))
    assert message.startswith(
        "expected task 'billing.charge' to run its body to success at most once per "
        "idempotency key\n"
        "measured 1 keys that succeeded more than once:\n"
        "  key 'k1': body succeeded 2 times (a#1 at 0.1s, b#1 at 3.1s)\n"
    )


def test_assert_idempotent_fails_for_an_unguarded_task() -> None:
    """A task with no idempotency events is not guarded: fail rather than pass vacuously."""
    message = str(failure(lambda: assert_idempotent(retried_twice(), CHARGE)))
    assert "measured no idempotency events: is it decorated with @idempotent?" in message


# --- budget, herds, faults -----------------------------------------------------------


def test_budget_held_when_retries_stay_under_the_ratio() -> None:
    """Ten first attempts earn five retries at ratio 0.5 within the window."""
    history = [ev("started", i, task_id=f"t{i}") for i in range(10)]
    history += [ev("retried", 10 + i, task_id=f"t{i}", countdown=1.0) for i in range(5)]
    assert len(assert_budget_held(history, CHARGE, ratio=0.5)) == 5


def test_budget_exceeded_names_the_worst_window() -> None:
    """Six retries for ten first attempts at ratio 0.5 fail with the window's counts."""
    history = [ev("started", i, task_id=f"t{i}") for i in range(10)]
    history += [ev("retried", 10 + i, task_id=f"t{i}", countdown=1.0) for i in range(6)]
    message = str(failure(lambda: assert_budget_held(history, ratio=0.5, window=60)))
    assert message.startswith(
        "expected retries of task 'billing.charge' <= min_retries (0) + ratio (0.5)"
        " x first attempts in every 60s window\n"
        "measured in the worst window (-45s, 15s]: 6 retries, 10 first attempts, 5 allowed\n"
        "history of task 'billing.charge' in that window (16 events):\n"
    )
    assert assert_budget_held(history, ratio=0.5, min_retries=1) == history[10:]


def test_budget_window_looks_back_from_each_retry() -> None:
    """First attempts older than the window, or later than the retry, earn nothing."""
    history = [
        ev("started", 0, task_id="early"),
        ev("retried", 15, task_id="early", countdown=1.0),
        *(ev("started", 16, task_id=f"late{i}") for i in range(10)),
    ]
    assert_budget_held(history, ratio=1.0, window=timedelta(seconds=20))
    message = str(failure(lambda: assert_budget_held(history, ratio=1.0, window=10)))
    assert "worst window (5s, 15s]: 1 retry, 0 first attempts, 0 allowed" in message
    assert message.endswith(f"in that window (1 event):\n  {history[1].describe()}")


def test_budget_is_kept_per_task_name() -> None:
    """Another task's first attempts do not pay for this task's retries."""
    history = [ev("started", i, task=EMAIL, task_id=f"m{i}") for i in range(10)]
    history.append(ev("retried", 1, countdown=1.0))
    message = str(failure(lambda: assert_budget_held(history, ratio=0.5)))
    assert "task 'billing.charge'" in message
    assert_budget_held(history, EMAIL, ratio=0.5)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("inf")}, "ratio"),
        ({"ratio": 0.2, "min_retries": -1}, "min_retries"),
        ({"ratio": 0.2, "window": 0}, "window"),
        ({"ratio": 0.2, "window": timedelta(seconds=-1)}, "window"),
    ],
)
def test_budget_rejects_bad_arguments(kwargs: dict[str, Any], key: str) -> None:
    """A bad ratio, min_retries or window is a ConfigurationError naming the key."""
    with pytest.raises(ConfigurationError, match=key) as info:
        assert_budget_held(retried_twice(), **kwargs)
    assert info.value.key == key


def test_retries_due_together_are_a_thundering_herd() -> None:
    """Five retries due within one second fail, naming the bucket and suggesting jitter."""
    history = [ev("retried", 0.1 * i, task_id=f"t{i}", countdown=30.0) for i in range(5)]
    message = str(failure(lambda: assert_retries_spread(history, CHARGE, max_simultaneous=3)))
    assert message.startswith(
        "thundering herd: expected at most 3 retries of task 'billing.charge' due in any 1s "
        "interval\n"
        "  5 retries due in [30s, 31s)\n"
        "add jitter to the retry policy"
    )
    assert history[4].describe() in message


def test_spread_retries_pass() -> None:
    """Retries due in different buckets pass and are returned."""
    history = [ev("retried", i, task_id=f"t{i}", countdown=2.0 * i) for i in range(5)]
    assert len(assert_retries_spread(history, max_simultaneous=1)) == 5
    assert len(assert_retries_spread(history, max_simultaneous=1, resolution=2.0)) == 5


def test_deferred_retries_count_towards_a_herd() -> None:
    """Messages an open breaker sends back all at once are a herd too."""
    history = [ev("retried", 0, task_id=f"t{i}", countdown=30.0, deferred=True) for i in range(3)]
    message = str(
        failure(lambda: assert_retries_spread(history, max_simultaneous=2, resolution=10))
    )
    assert "3 retries due in [30s, 40s)" in message


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_simultaneous": 0}, "max_simultaneous"),
        ({"max_simultaneous": None}, "max_simultaneous"),
        ({"max_simultaneous": 2, "resolution": 0}, "resolution"),
    ],
)
def test_retries_spread_rejects_bad_arguments(kwargs: dict[str, Any], key: str) -> None:
    """max_simultaneous must be >= 1 and resolution above 0."""
    with pytest.raises(ConfigurationError, match=key) as info:
        assert_retries_spread(retried_twice(), **kwargs)
    assert info.value.key == key


def faults_history() -> list[Event]:
    """Two deadlocks and one rate limit fired."""
    return [
        ev("fault_injected", 0, fault="deadlock", where="db", exception="OperationalError",
           failure_type="TRANSIENT_DATABASE"),
        ev("fault_injected", 1, attempt=2, fault="deadlock", where="db",
           exception="OperationalError", failure_type="TRANSIENT_DATABASE"),
        ev("fault_injected", 2, task_id="b", fault="rate_limit", where="http",
           exception="HTTPError", failure_type="TRANSIENT_RATE_LIMIT"),
    ]  # fmt: skip


def test_assert_faults_fired_passes_when_every_named_fault_fired() -> None:
    """Returns the fault events; None only needs some fault to have fired."""
    history = faults_history()
    assert assert_faults_fired(history, ["deadlock", "rate_limit"]) == history
    assert assert_faults_fired(history) == history


def test_unfired_faults_are_listed_with_the_counts_of_the_rest() -> None:
    """The message lists faults that never fired, with a suggestion, and the fired counts."""
    message = str(
        failure(lambda: assert_faults_fired(faults_history(), ["deadlocks", "oom", "deadlock"]))
    )
    assert message.startswith(
        "expected every named fault to fire at least once\n"
        "never fired: 'deadlocks' (did you mean 'deadlock'?), 'oom'\n"
        "fired: 'deadlock' x2, 'rate_limit' x1\n"
    )


def test_no_fault_fired_at_all_fails() -> None:
    """faults=None in a history without faults fails."""
    message = str(failure(lambda: assert_faults_fired(retried_twice())))
    assert message.startswith("expected at least one fault to fire\nmeasured none fired\n")


@pytest.mark.parametrize("faults", ["deadlock", [], [3]])
def test_assert_faults_fired_rejects_bad_fault_lists(faults: Any) -> None:
    """A bare string, an empty list or a non-string name is a ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        assert_faults_fired(faults_history(), faults)
    assert info.value.key == "faults"

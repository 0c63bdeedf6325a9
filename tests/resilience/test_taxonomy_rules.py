"""User rules, Retry-After extraction and robustness against hostile exceptions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from resilience.clock import FakeClock
from resilience.errors import ConfigurationError
from resilience.taxonomy import (
    Classifier,
    FailureType,
    Rule,
    RuleHandle,
    classify,
    register_rule,
)

T = FailureType
NOW = 1_700_000_000.0


class Flaky(Exception):
    """A user exception for rule tests."""


Flaky.__module__ = "myapp.errors"


class _Response:
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


def _with_headers(status: int, headers: dict[str, str]) -> Exception:
    error = type("VendorError", (Exception,), {"__module__": "vendor"})("failed")
    error.response = _Response(status, headers)
    return error


# --------------------------------------------------------------------------- rules


def test_rule_by_qualified_name_with_task_scope() -> None:
    """A name rule scoped to billing.* applies to billing tasks only."""
    classifier = Classifier()
    classifier.register_rule(
        match="myapp.errors.Flaky",
        failure_type=T.TRANSIENT_NETWORK,
        priority=10,
        tasks=["billing.*"],
    )
    inside = classifier.classify(Flaky("x"), {"task_name": "billing.charge"})
    outside = classifier.classify(Flaky("x"), {"task_name": "reports.build"})
    unnamed = classifier.classify(Flaky("x"), {"task_name": None})
    assert inside.failure_type is T.TRANSIENT_NETWORK
    assert inside.confidence == pytest.approx(0.95)
    assert "user rule" in inside.evidence
    assert outside.failure_type is T.UNKNOWN
    assert unnamed.failure_type is T.UNKNOWN


def test_rule_by_class_matches_subclasses_and_wins_over_builtins() -> None:
    """A class rule matches subclasses and beats the built-in table (errno included)."""
    classifier = Classifier()
    classifier.register_rule(match=ConnectionError, failure_type="CONFIG_INVALID_SETTING")
    result = classifier.classify(ConnectionRefusedError(111, "Connection refused"))
    assert result.failure_type is T.CONFIG_INVALID_SETTING
    assert classify(ConnectionRefusedError(111, "x")).failure_type is T.TRANSIENT_NETWORK


def test_rule_by_glob_predicate_and_message() -> None:
    """Globs over qualified names, predicates and message regexes all match."""
    classifier = Classifier()
    classifier.register_rule(match="myapp.*", message=r"quota", failure_type=T.TRANSIENT_RATE_LIMIT)
    classifier.register_rule(
        match=lambda exc: getattr(exc, "code", None) == "E42", failure_type=T.PERMANENT_LOGIC
    )
    classifier.register_rule(
        message=re.compile("maintenance window"), failure_type="EXTERNAL_API_DOWN"
    )
    coded = RuntimeError("x")
    coded.code = "E42"  # type: ignore[attr-defined]
    assert classifier.classify(Flaky("Quota hit")).failure_type is T.TRANSIENT_RATE_LIMIT
    assert classifier.classify(Flaky("other")).failure_type is T.UNKNOWN
    assert classifier.classify(coded).failure_type is T.PERMANENT_LOGIC
    assert (
        classifier.classify(OSError("in a maintenance window")).failure_type is T.EXTERNAL_API_DOWN
    )


def test_priority_then_registration_order() -> None:
    """Higher priority wins; equal priorities go to the earlier rule."""
    classifier = Classifier()
    classifier.register_rule(match=Flaky, failure_type=T.PERMANENT_LOGIC, priority=1)
    classifier.register_rule(match=Flaky, failure_type=T.TRANSIENT_NETWORK, priority=5)
    classifier.register_rule(match=Flaky, failure_type=T.EXTERNAL_TIMEOUT, priority=5)
    assert classifier.classify(Flaky()).failure_type is T.TRANSIENT_NETWORK
    assert [rule.priority for rule in classifier.rules] == [5, 5, 1]


def test_unregister_and_context_manager() -> None:
    """Handles unregister once; as context managers they unregister on exit."""
    classifier = Classifier()
    assert classifier.classify(Flaky()).failure_type is T.UNKNOWN
    handle = classifier.register_rule(match=Flaky, failure_type=T.PERMANENT_NOT_FOUND)
    assert isinstance(handle, RuleHandle)
    assert isinstance(handle.rule, Rule)
    assert classifier.classify(Flaky()).failure_type is T.PERMANENT_NOT_FOUND
    assert handle.unregister() is True
    assert handle.unregister() is False
    assert classifier.classify(Flaky()).failure_type is T.UNKNOWN
    with classifier.register_rule(match=Flaky, failure_type=T.PERMANENT_LOGIC):
        assert classifier.classify(Flaky()).failure_type is T.PERMANENT_LOGIC
    assert classifier.classify(Flaky()).failure_type is T.UNKNOWN


def test_classifiers_are_isolated_and_module_rules_use_the_default() -> None:
    """Rules on one Classifier do not leak; register_rule() targets the module default."""
    mine = Classifier()
    mine.register_rule(match=Flaky, failure_type=T.PERMANENT_LOGIC)
    assert Classifier().classify(Flaky()).failure_type is T.UNKNOWN
    with register_rule(match=Flaky, failure_type=T.EXTERNAL_TIMEOUT, name="flaky"):
        result = classify(Flaky())
        assert result.failure_type is T.EXTERNAL_TIMEOUT
        assert "'flaky'" in result.evidence
    assert classify(Flaky()).failure_type is T.UNKNOWN


def test_raising_predicate_is_ignored_and_noted() -> None:
    """A predicate that raises is skipped; the evidence records it."""
    classifier = Classifier()

    def broken(exc: BaseException) -> bool:
        raise ZeroDivisionError

    classifier.register_rule(match=broken, failure_type=T.PERMANENT_LOGIC, priority=9)
    result = classifier.classify(ValueError("bad input"))
    assert result.failure_type is T.PERMANENT_VALIDATION
    assert "raised ZeroDivisionError; ignored" in result.evidence


def test_rule_confidence_is_reported() -> None:
    """A rule's explicit confidence is the classification's confidence."""
    classifier = Classifier()
    classifier.register_rule(match=Flaky, failure_type=T.PERMANENT_LOGIC, confidence=0.42)
    assert classifier.classify(Flaky()).confidence == pytest.approx(0.42)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"match": Flaky, "failure_type": "NOT_A_TYPE"}, "failure_type"),
        ({"match": Flaky, "failure_type": 3}, "failure_type"),
        ({"message": "([unclosed", "failure_type": T.UNKNOWN}, "message"),
        ({"message": b"bytes", "failure_type": T.UNKNOWN}, "message"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "priority": "high"}, "priority"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "priority": 1.5}, "priority"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "priority": True}, "priority"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "confidence": 1.5}, "confidence"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "confidence": float("nan")}, "confidence"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "tasks": [1]}, "tasks"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "tasks": []}, "tasks"),
        ({"failure_type": T.UNKNOWN}, "match"),
        ({"match": 42, "failure_type": T.UNKNOWN}, "match"),
        ({"match": int, "failure_type": T.UNKNOWN}, "match"),
        ({"match": "  ", "failure_type": T.UNKNOWN}, "match"),
        ({"match": Flaky, "failure_type": T.UNKNOWN, "name": 7}, "name"),
    ],
)
def test_bad_rules_name_the_field(kwargs: dict[str, object], key: str) -> None:
    """Invalid rules raise ConfigurationError whose key names the offending field."""
    classifier = Classifier()
    with pytest.raises(ConfigurationError) as raised:
        classifier.register_rule(**kwargs)  # type: ignore[arg-type]
    assert raised.value.key == key
    assert isinstance(raised.value, ValueError)
    assert classifier.rules == ()


def test_rules_apply_inside_cause_chains() -> None:
    """User rules also classify causes when a wrapper defers to them."""
    classifier = Classifier()
    classifier.register_rule(match=Flaky, failure_type=T.TRANSIENT_RESOURCE)
    try:
        try:
            raise Flaky("inner")
        except Flaky as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        result = classifier.classify(outer)
    assert result.failure_type is T.TRANSIENT_RESOURCE
    assert result.evidence.startswith("via __cause__ myapp.errors.Flaky")


# --------------------------------------------------------------------------- retry_after


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"retry-after": "0"}, 0.0),
        ({"Retry-After": "-5"}, 0.0),
        (
            {"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)},
            90.0,
        ),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": ""}, None),
        ({"RateLimit-Reset": "17"}, 17.0),
        ({"X-RateLimit-Reset": str(int(NOW + 30))}, 30.0),
        ({"X-RateLimit-Reset": "12"}, 12.0),
        ({"Retry-After": "1e400"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After (seconds or HTTP-date vs context now), RateLimit-Reset, X-RateLimit-Reset."""
    result = classify(_with_headers(429, headers), {"now": NOW})
    assert result.failure_type is T.TRANSIENT_RATE_LIMIT
    if expected is None:
        assert result.retry_after is None
        assert result.retry_delay_seconds == 300
    else:
        assert result.retry_after == pytest.approx(expected)
        assert result.retry_delay_seconds == pytest.approx(expected)


def test_http_date_uses_the_injected_clock_without_context_now() -> None:
    """Without context['now'], HTTP-dates are converted against the classifier's clock."""
    classifier = Classifier(clock=FakeClock(start=NOW))
    date = format_datetime(datetime.fromtimestamp(NOW + 600, UTC), usegmt=True)
    result = classifier.classify(_with_headers(503, {"Retry-After": date}))
    assert result.failure_type is T.EXTERNAL_API_DOWN
    assert result.retry_after == pytest.approx(600)


def test_absurd_retry_after_is_reported_not_capped() -> None:
    """A server asking for a week gets reported as a week; the engine caps, not us."""
    week = str(7 * 86400)
    assert classify(_with_headers(429, {"Retry-After": week})).retry_after == 7 * 86400


def test_retry_after_on_a_non_retryable_type_is_reported_without_delay() -> None:
    """A 404 with Retry-After reports retry_after but recommends no retry (delay 0)."""
    result = classify(_with_headers(404, {"Retry-After": "30"}))
    assert result.retry_after == 30
    assert result.retry_recommended is False
    assert result.retry_delay_seconds == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12.0),
        (2.5, 2.5),
        (timedelta(seconds=9), 9.0),
        ("15", 15.0),
        (b"8", 8.0),
        (None, None),
        ("later", None),
        (object(), None),
        (True, None),
        (float("inf"), None),
    ],
)
def test_retry_after_attribute(value: object, expected: float | None) -> None:
    """A retry_after attribute (some SDKs set one) is read, garbage ignored."""
    exc = type("RateLimited", (Exception,), {"__module__": "sdk"})("slow down")
    exc.retry_after = value  # type: ignore[attr-defined]
    result = classify(exc)
    assert result.failure_type is T.TRANSIENT_RATE_LIMIT
    assert result.retry_after == expected


def test_circuit_open_error_carries_its_retry_after() -> None:
    """Our own CircuitOpenError is an API outage with the breaker's retry_after."""
    from resilience.errors import CircuitOpenError

    result = classify(CircuitOpenError("payments", 12.5))
    assert result.failure_type is T.EXTERNAL_API_DOWN
    assert result.retry_after == 12.5
    assert result.retry_delay_seconds == 12.5


def test_botocore_headers_and_codes() -> None:
    """botocore ClientError: error code first, Retry-After from its HTTPHeaders."""
    from botocore.exceptions import ClientError

    response = {
        "Error": {"Code": "KMS.ThrottlingException", "Message": "Rate exceeded"},
        "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {"retry-after": "4"}},
    }
    result = classify(ClientError(response, "Decrypt"))  # type: ignore[arg-type]
    assert result.failure_type is T.TRANSIENT_RATE_LIMIT
    assert result.retry_after == 4
    assert "provider error code" in result.evidence


# --------------------------------------------------------------------------- robustness


def test_exception_whose_str_raises() -> None:
    """An exception whose __str__ raises is classified from its args instead."""

    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    result = classify(Nasty("deadlock detected"))
    assert result.failure_type is T.TRANSIENT_DATABASE


def test_megabyte_message_only_the_head_is_read() -> None:
    """Only the first few KB of a message are searched (and it stays fast enough to finish)."""
    head = RuntimeError("deadlock detected" + "x" * 1_000_000)
    tail = RuntimeError("x" * 1_000_000 + "deadlock detected")
    assert classify(head).failure_type is T.TRANSIENT_DATABASE
    assert classify(tail).failure_type is T.UNKNOWN


def test_non_utf8_bytes_args() -> None:
    """Bytes args that are not UTF-8 are decoded with replacement, not fatal."""

    class BytesError(Exception):
        def __str__(self) -> str:
            return 42  # type: ignore[return-value]  # noqa: PLE0307 - the hostile case

    result = classify(BytesError(b"\xff\xfe deadlock detected \x80"))
    assert result.failure_type is T.TRANSIENT_DATABASE


def test_cyclic_chains_terminate() -> None:
    """__cause__/__context__ cycles and self-references end the walk."""
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    first.__context__ = first
    assert classify(first).failure_type is T.UNKNOWN
    deep = RuntimeError("top")
    node = deep
    for index in range(100):
        nxt = RuntimeError(f"level {index}")
        node.__cause__ = nxt
        node = nxt
    node.__cause__ = MemoryError()
    assert classify(deep).failure_type is T.UNKNOWN


def test_hostile_attributes_do_not_break_classification() -> None:
    """Properties that raise (errno, response, status_code) give no evidence, no crash."""

    class Hostile(OSError):
        @property
        def errno(self) -> int:  # type: ignore[override]
            raise RuntimeError("boom")

        @property
        def response(self) -> object:
            raise RuntimeError("boom")

    assert classify(Hostile("x")).failure_type is T.UNKNOWN
    exc = _with_headers(503, {})
    exc.response.headers = object()  # type: ignore[attr-defined]
    assert classify(exc).failure_type is T.EXTERNAL_API_DOWN


def test_non_exception_input_is_unknown() -> None:
    """Passing something that is not an exception gives UNKNOWN, not an error."""
    result = classify("not an exception")  # type: ignore[arg-type]
    assert result.failure_type is T.UNKNOWN
    assert result.confidence == 0


def test_custom_base_exception_subclass() -> None:
    """A BaseException subclass outside the table is UNKNOWN and does not crash."""
    weird = type("Shutdown", (BaseException,), {"__module__": "app"})
    assert classify(weird()).failure_type is T.UNKNOWN


@pytest.mark.parametrize("size", [0, -1, 1.5, "10", True])
def test_bad_cache_size_is_rejected(size: object) -> None:
    """A Classifier cache_size that is not a positive int raises ConfigurationError."""
    with pytest.raises(ConfigurationError) as raised:
        Classifier(cache_size=size)  # type: ignore[arg-type]
    assert raised.value.key == "cache_size"


def test_cache_overflow_keeps_classifying_correctly() -> None:
    """With a tiny cache, many distinct classes are still classified right."""
    classifier = Classifier(cache_size=16)
    for index in range(200):
        cls = type(f"OrderNotFound{index}", (Exception,), {"__module__": "shop"})
        assert classifier.classify(cls()).failure_type is T.PERMANENT_NOT_FOUND
    assert classifier.classify(TypeError()).failure_type is T.PERMANENT_LOGIC

"""Property tests: classify never raises and always returns a well-formed result."""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience.taxonomy import AlertLevel, Classifier, FailureType, Remediation, classify

_MODULES = st.sampled_from(
    [
        "builtins",
        "myapp.errors",
        "requests.exceptions",
        "redis.exceptions",
        "psycopg",
        "psycopg2.errors",
        "sqlalchemy.exc",
        "botocore.exceptions",
        "urllib3.exceptions",
        "httpx",
        "celery.exceptions",
        "aiohttp.client_exceptions",
        "django.core.exceptions",
        "",
        "\x00weird\N{SNOWMAN}",
    ]
)
_NAMES = st.one_of(
    st.sampled_from(
        [
            "ConnectionError",
            "ClientError",
            "HTTPError",
            "OperationalError",
            "ResponseError",
            "Retry",
            "RateLimitedError",
            "NotFound",
            "DeadlockDetected",
            "TimeoutError",
            "ValidationError",
            "MaxRetryError",
            "RetryError",
            "X",
        ]
    ),
    st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=30),
)
_BASES = st.sampled_from(
    [
        Exception,
        ValueError,
        OSError,
        RuntimeError,
        KeyError,
        TimeoutError,
        ConnectionError,
        BaseException,
        LookupError,
        UnicodeError,
    ]
)
_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)


class _Response:
    def __init__(self, status: Any, headers: Any) -> None:
        self.status_code = status
        self.status = status
        self.headers = headers


_RESPONSES = st.one_of(
    _JUNK,
    st.builds(
        _Response,
        st.one_of(st.integers(min_value=0, max_value=999), _JUNK),
        st.one_of(
            st.dictionaries(
                st.sampled_from(
                    [
                        "Retry-After",
                        "retry-after",
                        "X-RateLimit-Reset",
                        "RateLimit-Reset",
                        "X-Other",
                    ]
                ),
                st.one_of(st.text(max_size=40), st.binary(max_size=10)),
                max_size=3,
            ),
            _JUNK,
        ),
    ),
    st.fixed_dictionaries(
        {
            "Error": st.fixed_dictionaries({"Code": _JUNK}),
            "ResponseMetadata": st.fixed_dictionaries(
                {"HTTPStatusCode": _JUNK, "HTTPHeaders": _JUNK}
            ),
        }
    ),
)
_ATTRIBUTES = st.dictionaries(
    st.sampled_from(
        [
            "errno",
            "sqlstate",
            "pgcode",
            "response",
            "retry_after",
            "status_code",
            "status",
            "code",
            "reason",
            "orig",
            "exc",
            "when",
            "headers",
            "sqlite_errorname",
            "last_attempt",
            "title",
        ]
    ),
    st.one_of(_JUNK, _RESPONSES),
    max_size=5,
)
_MESSAGES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50),
    st.sampled_from(
        [
            "HTTP 429",
            "deadlock detected",
            "status code 503",
            "Name or service not known",
            "x" * 10_000 + " timed out",
            "OOM command not allowed",
            "",
            "\udcff",
        ]
    ),
)


@st.composite
def exceptions(draw: st.DrawFn, depth: int = 0) -> BaseException:
    """Random exception classes, names, modules, messages, attributes and chains."""
    base = draw(_BASES)
    namespace = {"__module__": draw(_MODULES)}
    if draw(st.booleans()):

        def broken_str(self: BaseException) -> str:
            raise RuntimeError("no")

        namespace["__str__"] = broken_str
    cls = type(draw(_NAMES), (base,), namespace)
    exc = cls(*draw(st.lists(_MESSAGES, max_size=3)))
    for key, value in draw(_ATTRIBUTES).items():
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, key, value)
    if depth < 3 and draw(st.booleans()):
        exc.__cause__ = draw(exceptions(depth + 1))
    if depth < 3 and draw(st.booleans()):
        exc.__context__ = draw(exceptions(depth + 1))
    if draw(st.booleans()):
        exc.__context__ = exc
    if depth < 2 and draw(st.integers(0, 5)) == 0:
        members = draw(st.lists(exceptions(depth + 1), min_size=1, max_size=3))
        return BaseExceptionGroup("group", members)
    return exc


_CONTEXTS = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(
            [
                "task_name",
                "retry_count",
                "max_retries",
                "execution_time",
                "soft_time_limit",
                "time_limit",
                "now",
                "queue",
            ]
        ),
        _JUNK,
        max_size=6,
    ),
)


def _check(result: Any) -> None:
    assert isinstance(result.failure_type, FailureType)
    assert 0.0 <= result.confidence <= 1.0
    assert isinstance(result.remediation, Remediation)
    assert isinstance(result.alert_level, AlertLevel)
    assert math.isfinite(result.retry_delay_seconds)
    assert result.retry_delay_seconds >= 0
    assert result.retry_after is None or (
        math.isfinite(result.retry_after) and result.retry_after >= 0
    )
    assert isinstance(result.evidence, str)
    assert result.evidence
    assert len(result.evidence) <= 600
    if not result.retry_recommended:
        assert result.retry_delay_seconds == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exc=exceptions(), context=_CONTEXTS)
def test_classify_never_raises_on_random_exceptions(exc: BaseException, context: Any) -> None:
    """Random classes, names, messages, attributes, chains and contexts never break classify."""
    _check(classify(exc, context))


@settings(max_examples=100, deadline=None)
@given(exc=exceptions(), message=st.text(max_size=30), priority=st.integers(-5, 5))
def test_user_rules_never_break_classification(
    exc: BaseException, message: str, priority: int
) -> None:
    """With literal-message and raising-predicate rules registered, classify still never raises."""
    classifier = Classifier()
    classifier.register_rule(
        message=re.escape(message) or "x",
        failure_type=FailureType.PERMANENT_LOGIC,
        priority=priority,
    )
    classifier.register_rule(match=lambda e: 1 / 0 > 0, failure_type=FailureType.UNKNOWN)
    _check(classifier.classify(exc, {"task_name": "t"}))


@settings(max_examples=100, deadline=None)
@given(status=st.integers(min_value=100, max_value=599), retry_after=st.integers(0, 10**6))
def test_statuses_with_retry_after_are_consistent(status: int, retry_after: int) -> None:
    """Any status: retry_after is reported as sent; the delay equals it when retrying."""
    exc = type("VendorError", (Exception,), {"__module__": "vendor"})("x")
    exc.response = _Response(status, {"Retry-After": str(retry_after)})  # type: ignore[attr-defined]
    result = classify(exc)
    _check(result)
    if result.failure_type is not FailureType.UNKNOWN and status >= 400:
        assert result.retry_after == retry_after
        if result.retry_recommended:
            assert result.retry_delay_seconds == retry_after

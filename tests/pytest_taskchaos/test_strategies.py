"""Tests for pytest_taskchaos.strategies: policies, curves, failures and backoff invariants."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_taskchaos import strategies
from pytest_taskchaos.strategies import (
    assert_backoff_invariants,
    backoff_strategies,
    failures,
    retry_policies,
)
from resilience import (
    DEFAULT_POLICIES,
    FailureType,
    Jitter,
    RetryPolicy,
    Strategy,
    classify,
    default_policy,
)

# --- public surface ---------------------------------------------------------------------


def test_exported_members() -> None:
    """__all__ lists exactly the module's public callables, sorted."""
    public = {
        name
        for name, value in vars(strategies).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == strategies.__name__
    }
    assert set(strategies.__all__) == public
    assert strategies.__all__ == sorted(strategies.__all__)


# --- retry_policies ---------------------------------------------------------------------


@given(retry_policies())
def test_retry_policies_are_valid_policies(policy: RetryPolicy) -> None:
    """Every drawn policy is a RetryPolicy within the default bounds."""
    assert isinstance(policy, RetryPolicy)
    assert 0 <= policy.max_retries <= 10
    assert 0.0 <= policy.initial_delay <= policy.max_delay <= 3600.0
    assert RetryPolicy.from_dict(policy.to_dict()) == policy


@given(
    retry_policies(
        strategies=["linear", Strategy.FIBONACCI],
        min_retries=2,
        max_retries=4,
        min_delay=timedelta(seconds=1),
        max_delay=timedelta(minutes=1),
        jitter=Jitter.FULL,
    )
)
def test_retry_policies_respect_their_bounds(policy: RetryPolicy) -> None:
    """Strategies, retries, delays (timedelta accepted) and jitter stay within the arguments."""
    assert policy.strategy in {Strategy.LINEAR, Strategy.FIBONACCI}
    assert 2 <= policy.max_retries <= 4
    assert 1.0 <= policy.initial_delay <= policy.max_delay <= 60.0
    assert policy.jitter is Jitter.FULL


def test_retry_policies_cover_every_strategy_and_jitter_mode() -> None:
    """Enough draws reach every strategy and every jitter mode."""
    seen: set[tuple[str, str]] = set()

    @settings(max_examples=300, database=None)
    @given(retry_policies())
    def collect(policy: RetryPolicy) -> None:
        seen.add(("strategy", policy.strategy))
        seen.add(("jitter", policy.jitter))

    collect()
    assert {value for kind, value in seen if kind == "strategy"} == set(Strategy)
    assert {value for kind, value in seen if kind == "jitter"} == set(Jitter)


@given(retry_policies(min_retries=3, max_retries=3, min_delay=5.0, max_delay=5.0))
def test_retry_policies_with_equal_bounds_pin_the_values(policy: RetryPolicy) -> None:
    """Equal min and max bounds are allowed and fix retries and delays."""
    assert policy.max_retries == 3
    assert policy.initial_delay == policy.max_delay == 5.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_retries": 5, "max_retries": 2}, "min_retries=5 exceeds max_retries=2"),
        ({"min_retries": -1}, "min_retries=-1"),
        ({"max_retries": True}, "max_retries=True"),
        ({"min_delay": 10.0, "max_delay": 1.0}, "min_delay=10.0 exceeds max_delay=1.0"),
        ({"min_delay": -1.0}, "min_delay=-1.0"),
        ({"max_delay": math.inf}, "max_delay=inf"),
        ({"max_delay": math.nan}, "max_delay=nan"),
        ({"max_delay": "soon"}, "max_delay='soon'"),
        ({"strategies": []}, "selects nothing"),
        ({"strategies": ["exponentail"]}, "valid values: exponential"),
        ({"strategies": 3}, "strategies=3"),
        ({"jitter": ["full", "sometimes"]}, "jitter holds 'sometimes'"),
    ],
)
def test_retry_policies_reject_invalid_arguments(kwargs: dict[str, object], fragment: str) -> None:
    """Invalid or empty combinations raise InvalidArgument naming the argument."""
    with pytest.raises(InvalidArgument) as info:
        retry_policies(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


# --- backoff_strategies -----------------------------------------------------------------


@given(backoff_strategies())
def test_backoff_strategies_draw_strategy_members(shape: Strategy) -> None:
    """Each draw is a Strategy member that builds a policy."""
    assert isinstance(shape, Strategy)
    assert RetryPolicy(strategy=shape, max_delay=60.0).strategy is shape


def test_backoff_strategies_shrink_to_exponential() -> None:
    """The simplest example is the default shape, EXPONENTIAL."""
    from hypothesis import find

    assert find(backoff_strategies(), lambda _: True) is Strategy.EXPONENTIAL


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure_type", list(FailureType))
@settings(max_examples=40)
@given(data=st.data())
def test_failures_classify_as_requested(failure_type: FailureType, data: st.DataObject) -> None:
    """Every generated exception of a type is classified as that type."""
    exc = data.draw(failures(failure_type=failure_type))
    assert isinstance(exc, BaseException)
    assert classify(exc).failure_type is failure_type, repr(exc)


@pytest.mark.parametrize("failure_type", list(FailureType))
def test_every_catalog_entry_classifies_as_its_type(failure_type: FailureType) -> None:
    """Each catalog maker, not just the ones hypothesis happens to draw, gives its type."""
    makers = strategies._catalog()[failure_type]
    assert makers, f"no example failure for {failure_type}"
    for make in makers:
        exc = make()
        assert classify(exc).failure_type is failure_type, repr(exc)


def test_failures_use_real_library_classes_when_installed() -> None:
    """With the libraries installed, the catalog holds their real exception classes."""
    import psycopg.errors
    import requests

    modules = {
        type(make()).__module__ for makers in strategies._catalog().values() for make in makers
    }
    assert {"psycopg.errors", "requests.exceptions", "redis.exceptions", "httpx"} <= modules
    assert psycopg.errors.DeadlockDetected in {
        type(make()) for make in strategies._catalog()[FailureType.TRANSIENT_DATABASE]
    }
    assert requests.HTTPError in {
        type(make()) for make in strategies._catalog()[FailureType.TRANSIENT_RATE_LIMIT]
    }


def test_failures_fall_back_to_builtins_without_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """When no optional library imports, every type still has standard-library examples."""

    def missing() -> list[tuple[FailureType, object]]:
        raise ImportError("not installed")

    monkeypatch.setattr(strategies, "_LIBRARIES", (missing,))
    strategies._catalog.cache_clear()
    try:
        catalog = strategies._catalog()
        for failure_type, makers in catalog.items():
            assert makers, failure_type
            for make in makers:
                exc = make()
                assert type(exc).__module__ in {
                    "builtins",
                    "sqlite3",
                    "urllib.error",
                    "json.decoder",
                    "socket",
                }
                assert classify(exc).failure_type is failure_type, repr(exc)
    finally:
        strategies._catalog.cache_clear()


@settings(max_examples=60)
@given(failures())
def test_failures_without_a_type_draw_any_type_with_a_traceback(exc: BaseException) -> None:
    """Untyped draws are raised exceptions (with a traceback) of some classifiable type."""
    assert exc.__traceback__ is not None
    assert classify(exc).failure_type in set(FailureType)


def test_failures_give_a_fresh_instance_per_draw() -> None:
    """Two draws never share an exception object (tracebacks and notes would leak)."""
    drawn: list[BaseException] = []

    @settings(max_examples=20, database=None)
    @given(failures(failure_type=FailureType.PERMANENT_LOGIC))
    def collect(exc: BaseException) -> None:
        drawn.append(exc)

    collect()
    assert len({id(exc) for exc in drawn}) == len(drawn)


def test_rate_limit_failures_carry_retry_after() -> None:
    """HTTP 429 examples carry a Retry-After the classifier reads."""
    for make in strategies._catalog()[FailureType.TRANSIENT_RATE_LIMIT]:
        exc = make()
        if "HTTP" in type(exc).__name__ or "Status" in type(exc).__name__:
            assert classify(exc).retry_after == 30.0, repr(exc)


def test_failures_reject_unknown_types() -> None:
    """An unknown failure type raises InvalidArgument listing the valid ones."""
    with pytest.raises(InvalidArgument, match="TRANSIENT_DATABASE"):
        failures(failure_type="TRANSIENT_WEATHER")


def test_failures_accept_the_type_value() -> None:
    """The string value of a type selects it like the member does."""
    from hypothesis import find

    exc = find(failures(failure_type="SYSTEM_DISK_FULL"), lambda _: True)
    assert classify(exc).failure_type is FailureType.SYSTEM_DISK_FULL


# --- assert_backoff_invariants ----------------------------------------------------------


@given(policy=retry_policies(), seed=st.integers(min_value=0, max_value=2**32))
def test_generated_policies_hold_the_backoff_invariants(policy: RetryPolicy, seed: int) -> None:
    """Every valid policy, any seed: delays in bounds, envelopes monotone, deterministic."""
    assert_backoff_invariants(policy, rng=random.Random(seed))


@pytest.mark.parametrize("failure_type", list(FailureType))
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_default_policies_hold_the_backoff_invariants(failure_type: FailureType, seed: int) -> None:
    """The default policy of each of the 18 types holds the invariants for any seed."""
    assert_backoff_invariants(default_policy(failure_type), rng=random.Random(seed))


@settings(max_examples=60)
@given(exc=failures(), seed=st.integers(min_value=0, max_value=2**32))
def test_the_policy_chosen_for_a_real_failure_holds_the_invariants(
    exc: BaseException, seed: int
) -> None:
    """Classifying a realistic failure leads to a default policy with sane delays."""
    policy = DEFAULT_POLICIES[classify(exc).failure_type]
    assert_backoff_invariants(policy, rng=random.Random(seed))
    assert (policy.max_retries > 0) == classify(exc).failure_type.profile.retry_recommended


def _broken(policy: RetryPolicy, **overrides: object) -> RetryPolicy:
    """A copy of ``policy`` whose methods are replaced, to feed the checker bad curves."""

    class Broken:
        def __getattr__(self, name: str) -> object:
            if name in overrides:
                return overrides[name]
            return getattr(policy, name)

        def __repr__(self) -> str:
            return "Broken(...)"

    return Broken()  # type: ignore[return-value]


_POLICY = RetryPolicy(max_retries=3, initial_delay=1.0, max_delay=10.0, jitter="none")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"schedule": lambda *, rng: (1.0, 2.0)}, "schedule has 2 delays for max_retries=3"),
        (
            {"schedule": lambda *, rng: (1.0, 2.0, 11.0)},
            "retry 3: delay 11.0 outside [0, max_delay=10.0]",
        ),
        ({"schedule": lambda *, rng: (1.0, math.nan, 4.0)}, "retry 2: delay nan"),
        (
            {"schedule": lambda *, rng: (1.0, 2.5, 4.0)},
            "retry 2: delay 2.5 outside its envelope [2.0, 2.0]",
        ),
        (
            {"envelope": lambda n: {1: (1.0, 1.0), 2: (0.0, 9.0), 3: (0.0, 4.0)}[n]},
            "retry 3: envelope upper bound 4.0 fell below 9.0 of retry 2",
        ),
    ],
)
def test_invariant_violations_name_the_retry_and_values(
    overrides: dict[str, object], fragment: str
) -> None:
    """Each broken invariant fails with a message naming the retry number and the values."""
    with pytest.raises(AssertionError) as info:
        assert_backoff_invariants(_broken(_POLICY, **overrides))
    assert fragment in str(info.value)
    assert "policy: Broken(...)" in str(info.value)


def test_nondeterministic_schedule_is_reported() -> None:
    """A schedule that differs between two runs with the same seed fails naming the retry."""
    runs = iter([(1.0, 2.0, 4.0), (1.0, 2.0, 3.0)])
    broken = _broken(_POLICY, schedule=lambda *, rng: next(runs), envelope=lambda n: (0.0, 10.0))
    with pytest.raises(AssertionError, match=r"retry 3: seed 0 gave 4\.0 then 3\.0"):
        assert_backoff_invariants(broken)


def test_decorrelated_envelopes_may_not_be_monotone() -> None:
    """The monotone-envelope check is skipped for decorrelated curves only."""
    decorrelated = RetryPolicy(max_retries=3, strategy="decorrelated", max_delay=10.0)
    assert_backoff_invariants(
        _broken(decorrelated, envelope=lambda n: {1: (0.0, 10.0), 2: (0.0, 9.0), 3: (0.0, 10.0)}[n])
    )


def test_invariant_checker_hides_its_frames() -> None:
    """Both the public helper and its failure helper hide their frames from tracebacks."""
    for function in (assert_backoff_invariants, strategies._fail):
        assert "__tracebackhide__" in function.__code__.co_varnames


def test_invariant_checker_draws_one_value_from_the_rng() -> None:
    """The checker takes exactly one draw, so a shared seeded rng stays reproducible."""
    rng, twin = random.Random(5), random.Random(5)
    assert_backoff_invariants(default_policy(FailureType.TRANSIENT_NETWORK), rng=rng)
    twin.getrandbits(64)
    assert rng.random() == twin.random()


def test_zero_retry_policy_passes_with_an_empty_schedule() -> None:
    """A policy that never retries has nothing to violate."""
    policy = dataclasses.replace(_POLICY, max_retries=0)
    assert_backoff_invariants(policy)
    assert policy.schedule() == ()


def test_checking_the_default_policies_leaves_them_unchanged() -> None:
    """Checking every default policy many times does not drift the shared defaults."""
    before = {failure_type: policy.to_dict() for failure_type, policy in DEFAULT_POLICIES.items()}
    for seed in range(20):
        for policy in DEFAULT_POLICIES.values():
            assert_backoff_invariants(policy, rng=random.Random(seed))
    after = {failure_type: policy.to_dict() for failure_type, policy in DEFAULT_POLICIES.items()}
    assert after == before

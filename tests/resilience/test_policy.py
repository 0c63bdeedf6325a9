"""Tests for resilience.policy: validation, default policies, immutability, config and curves."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resilience.backoff import Exponential, Jitter, Strategy
from resilience.errors import ConfigurationError
from resilience.policy import (
    DEFAULT_POLICIES,
    BreakerSettings,
    RetryPolicy,
    default_policy,
)
from resilience.taxonomy import FailureType, profile

if TYPE_CHECKING:
    from collections.abc import Sequence

T = FailureType


def exact(**kwargs: Any) -> RetryPolicy:
    """A policy with jitter off, so delays are the bare curve."""
    return RetryPolicy(jitter=Jitter.NONE, **kwargs)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key", "value"),
    [
        ({"max_retries": -1}, "max_retries", -1),
        ({"max_retries": 2.0}, "max_retries", 2.0),
        ({"max_retries": True}, "max_retries", True),
        ({"max_retries": "3"}, "max_retries", "3"),
        ({"initial_delay": -1.0}, "initial_delay", -1.0),
        ({"initial_delay": math.nan}, "initial_delay", math.nan),
        ({"initial_delay": math.inf}, "initial_delay", math.inf),
        ({"initial_delay": timedelta(seconds=-5)}, "initial_delay", timedelta(seconds=-5)),
        ({"initial_delay": "1"}, "initial_delay", "1"),
        ({"max_delay": -1.0}, "max_delay", -1.0),
        ({"max_delay": math.nan}, "max_delay", math.nan),
        ({"max_delay": math.inf}, "max_delay", math.inf),
        ({"initial_delay": 10.0, "max_delay": 5.0}, "max_delay", 5.0),
        ({"strategy": "expo"}, "strategy", "expo"),
        ({"strategy": 3}, "strategy", 3),
        ({"factor": 0.0, "strategy": "linear"}, "factor", 0.0),
        ({"factor": -2.0, "strategy": "linear"}, "factor", -2.0),
        ({"factor": math.nan}, "factor", math.nan),
        ({"factor": math.inf}, "factor", math.inf),
        ({"factor": 0.5}, "factor", 0.5),
        ({"factor": 0.0, "strategy": "constant"}, "factor", 0.0),
        ({"jitter": "gaussian"}, "jitter", "gaussian"),
        ({"jitter_ratio": 1.5}, "jitter_ratio", 1.5),
        ({"jitter_ratio": -0.1}, "jitter_ratio", -0.1),
        ({"jitter_ratio": math.nan}, "jitter_ratio", math.nan),
        ({"breaker": {"failure_threshold": 3}}, "breaker", {"failure_threshold": 3}),
    ],
)
def test_invalid_fields_raise_configuration_error(
    kwargs: dict[str, Any], key: str, value: object
) -> None:
    """Each invalid field raises ConfigurationError (a ValueError) naming it and its value."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(**kwargs)
    assert info.value.key == key
    assert info.value.value is value or info.value.value == value  # `is`: NaN != NaN
    assert repr(value) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_strategy_lists_the_valid_ones() -> None:
    """An unknown strategy's error lists every valid strategy."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(strategy="fibonaci")
    for strategy in Strategy:
        assert repr(strategy.value) in str(info.value)


def test_strings_become_enums() -> None:
    """Strategy and jitter given as strings are stored as enum members."""
    policy = RetryPolicy(strategy="linear", jitter="full")
    assert policy.strategy is Strategy.LINEAR
    assert policy.jitter is Jitter.FULL


def test_durations_accept_timedelta() -> None:
    """initial_delay and max_delay accept timedelta and are stored as float seconds."""
    policy = RetryPolicy(initial_delay=timedelta(seconds=30), max_delay=timedelta(hours=1))
    assert policy.initial_delay == 30.0
    assert policy.max_delay == 3600.0
    assert type(policy.initial_delay) is float
    assert policy == RetryPolicy(initial_delay=30, max_delay=3600)


def test_defaults() -> None:
    """The field defaults are the documented ones."""
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay, policy.strategy) == (
        3,
        1.0,
        Strategy.EXPONENTIAL,
    )
    assert (policy.factor, policy.max_delay) == (2.0, 3600.0)
    assert (policy.jitter, policy.jitter_ratio, policy.breaker) == (Jitter.PROPORTIONAL, 0.1, None)


def test_zero_delay_policy_is_valid() -> None:
    """A policy with no wait at all (for tests and benchmarks) is accepted."""
    policy = RetryPolicy(initial_delay=0, max_delay=0, jitter="none")
    assert policy.schedule() == (0.0, 0.0, 0.0)
    assert policy.delay(10_000) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"failure_threshold": 0, "reset_timeout": 10}, "failure_threshold"),
        ({"failure_threshold": 2.5, "reset_timeout": 10}, "failure_threshold"),
        ({"failure_threshold": True, "reset_timeout": 10}, "failure_threshold"),
        ({"failure_threshold": 3, "reset_timeout": 0}, "reset_timeout"),
        ({"failure_threshold": 3, "reset_timeout": -1}, "reset_timeout"),
        ({"failure_threshold": 3, "reset_timeout": math.nan}, "reset_timeout"),
        ({"failure_threshold": 3, "reset_timeout": math.inf}, "reset_timeout"),
    ],
)
def test_invalid_breaker_settings(kwargs: dict[str, Any], key: str) -> None:
    """Breaker settings reject a threshold below 1 and a non-positive or unbounded timeout."""
    with pytest.raises(ConfigurationError) as info:
        BreakerSettings(**kwargs)
    assert info.value.key == key
    assert repr(kwargs[key]) in str(info.value)


def test_breaker_reset_timeout_accepts_timedelta() -> None:
    """reset_timeout given as a timedelta is stored as seconds."""
    settings_ = BreakerSettings(failure_threshold=5, reset_timeout=timedelta(minutes=10))
    assert settings_.reset_timeout == 600.0


def test_replace_validates_too() -> None:
    """dataclasses.replace goes through the same validation as construction."""
    with pytest.raises(ConfigurationError) as info:
        dataclasses.replace(RetryPolicy(), initial_delay=-3.0)
    assert info.value.key == "initial_delay"


# --- delays with jitter off --------------------------------------------------------------------


def test_exponential_schedule() -> None:
    """Exponential: initial * factor ** (n - 1), capped."""
    assert exact(max_retries=6, initial_delay=1, max_delay=20).schedule() == (1, 2, 4, 8, 16, 20)


def test_linear_schedule() -> None:
    """Linear: initial * (1 + factor * (n - 1)), so the first delay is the initial one."""
    policy = exact(max_retries=4, initial_delay=300, strategy="linear", factor=1.5)
    assert policy.schedule() == (300, 750, 1200, 1650)


def test_fibonacci_schedule() -> None:
    """Fibonacci: initial * F(n), F = 1, 1, 2, 3, 5, 8."""
    policy = exact(max_retries=7, initial_delay=10, strategy="fibonacci")
    assert policy.schedule() == (10, 10, 20, 30, 50, 80, 130)


def test_constant_schedule() -> None:
    """Constant: the initial delay every time."""
    assert exact(max_retries=3, initial_delay=7, strategy="constant").schedule() == (7, 7, 7)


def test_schedule_length_is_max_retries() -> None:
    """The schedule has one delay per allowed retry; none for max_retries=0."""
    assert len(RetryPolicy(max_retries=5).schedule()) == 5
    assert RetryPolicy(max_retries=0).schedule() == ()


def test_retry_number_must_be_one_based() -> None:
    """delay(0) and negative retry numbers raise ValueError naming retry_number."""
    for retry_number in (0, -1):
        with pytest.raises(ValueError, match="retry_number"):
            RetryPolicy().delay(retry_number)
        with pytest.raises(ValueError, match="retry_number"):
            RetryPolicy().envelope(retry_number)


def test_delay_never_means_give_up() -> None:
    """Exhaustion is allows(), not a 0 delay: the curve goes on past max_retries."""
    policy = exact(max_retries=2, initial_delay=5)
    assert [policy.allows(n) for n in (0, 1, 2, 3)] == [False, True, True, False]
    assert policy.delay(3) == 20.0
    assert not RetryPolicy(max_retries=0).allows(1)


def test_curve_is_the_strategy_capped_at_max_delay() -> None:
    """The policy exposes its curve, built from the strategy and capped at max_delay."""
    policy = RetryPolicy(initial_delay=2.0, factor=3.0, max_delay=100.0)
    assert policy.curve == Exponential(initial=2.0, factor=3.0, cap=100.0)


# --- jitter and the cap ------------------------------------------------------------------------


def test_jitter_never_pushes_a_delay_above_max_delay() -> None:
    """Regression: the original added jitter after the cap, so delays exceeded max_delay."""
    policy = RetryPolicy(initial_delay=100.0, max_delay=100.0, jitter_ratio=1.0, max_retries=50)
    for seed in range(50):
        assert max(policy.schedule(rng=random.Random(seed))) <= 100.0


def test_retries_at_the_cap_still_spread() -> None:
    """At the cap, proportional jitter still spreads delays below max_delay."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=60.0, jitter_ratio=0.2)
    draws = {policy.delay(100, rng=random.Random(seed)) for seed in range(100)}
    assert min(draws) >= 48.0
    assert max(draws) == 60.0
    assert len(draws) > 10
    assert policy.envelope(100) == (48.0, 60.0)


@pytest.mark.parametrize(
    ("jitter", "envelope"),
    [
        ("none", (40.0, 40.0)),
        ("proportional", (36.0, 44.0)),
        ("full", (0.0, 40.0)),
        ("equal", (20.0, 40.0)),
    ],
)
def test_envelope_per_jitter_mode(jitter: str, envelope: tuple[float, float]) -> None:
    """envelope() gives the range each jitter mode spreads the delay over."""
    policy = RetryPolicy(initial_delay=10.0, jitter=jitter, max_delay=1000.0)
    assert policy.envelope(3) == envelope
    for seed in range(30):
        low, high = envelope
        assert low <= policy.delay(3, rng=random.Random(seed)) <= high


def test_seeded_rng_is_deterministic() -> None:
    """The same seed gives the same schedule; another seed gives another one."""
    policy = RetryPolicy(max_retries=8)
    assert policy.schedule(rng=random.Random(1)) == policy.schedule(rng=random.Random(1))
    assert policy.schedule(rng=random.Random(1)) != policy.schedule(rng=random.Random(2))


def test_decorrelated_schedule_chains_and_ignores_jitter_mode() -> None:
    """Decorrelated delays chain from each previous one; jitter settings do not apply on top."""
    one = RetryPolicy(strategy="decorrelated", max_retries=10, max_delay=100.0, jitter="full")
    two = dataclasses.replace(one, jitter=Jitter.NONE)
    assert one.schedule(rng=random.Random(4)) == two.schedule(rng=random.Random(4))
    schedule = one.schedule(rng=random.Random(4))
    previous = one.initial_delay
    for n, value in enumerate(schedule, start=1):
        assert one.initial_delay <= value <= min(100.0, 3 * previous)
        assert one.envelope(n)[0] <= value <= one.envelope(n)[1]
        assert one.delay(n, rng=random.Random(4)) == value
        previous = value


# --- default policies ---------------------------------------------------------------------------


def test_every_failure_type_has_a_default_policy() -> None:
    """All 18 failure types have a policy, and nothing else does."""
    assert len(FailureType) == 18
    assert set(DEFAULT_POLICIES) == set(FailureType)


@pytest.mark.parametrize("failure_type", list(FailureType))
def test_defaults_follow_the_taxonomy_profile(failure_type: FailureType) -> None:
    """One table: the first delay is the profile's, and retries happen iff it recommends them."""
    policy = default_policy(failure_type)
    prof = profile(failure_type)
    assert policy.initial_delay == prof.retry_delay_seconds
    assert (policy.max_retries > 0) == prof.retry_recommended
    if policy.max_retries:
        low, high = policy.envelope(1)
        assert low <= prof.retry_delay_seconds <= high
        centre = dataclasses.replace(policy, jitter=Jitter.NONE)
        assert centre.delay(1) == prof.retry_delay_seconds


@pytest.mark.parametrize(
    ("failure_type", "expected"),
    [
        (T.TRANSIENT_DATABASE, (5, 30, Strategy.EXPONENTIAL, 2.0, 3600, (10, 300))),
        (T.TRANSIENT_NETWORK, (3, 60, Strategy.EXPONENTIAL, 2.0, 1800, (5, 600))),
        (T.TRANSIENT_RATE_LIMIT, (3, 300, Strategy.LINEAR, 1.5, 3600, (3, 900))),
        (T.EXTERNAL_API_DOWN, (2, 900, Strategy.FIBONACCI, None, 7200, (3, 1800))),
        (T.EXTERNAL_TIMEOUT, (2, 300, Strategy.EXPONENTIAL, 3.0, 3600, (5, 600))),
        (T.TRANSIENT_RESOURCE, (3, 30, Strategy.EXPONENTIAL, 2.0, 600, None)),
        (T.SYSTEM_OUT_OF_MEMORY, (1, 120, Strategy.CONSTANT, None, 3600, None)),
        (T.SYSTEM_WORKER_CRASH, (2, 60, Strategy.EXPONENTIAL, 2.0, 3600, None)),
        (T.UNKNOWN, (1, 60, Strategy.CONSTANT, None, 3600, None)),
    ],
)
def test_retrying_default_policies(failure_type: FailureType, expected: tuple[Any, ...]) -> None:
    """The retrying defaults keep the original system's numbers, with ±10 % jitter."""
    retries, initial, strategy, factor, cap, breaker = expected
    policy = default_policy(failure_type)
    assert policy.max_retries == retries
    assert policy.initial_delay == initial
    assert policy.strategy is strategy
    if factor is not None:
        assert policy.factor == factor
    assert policy.max_delay == cap
    assert (policy.jitter, policy.jitter_ratio) == (Jitter.PROPORTIONAL, 0.1)
    if breaker is None:
        assert policy.breaker is None
    else:
        assert policy.breaker == BreakerSettings(
            failure_threshold=breaker[0], reset_timeout=breaker[1]
        )


@pytest.mark.parametrize(
    ("failure_type", "schedule"),
    [
        (T.TRANSIENT_DATABASE, (30, 60, 120, 240, 480)),
        (T.TRANSIENT_NETWORK, (60, 120, 240)),
        (T.TRANSIENT_RATE_LIMIT, (300, 750, 1200)),
        (T.EXTERNAL_API_DOWN, (900, 900)),
        (T.EXTERNAL_TIMEOUT, (300, 900)),
        (T.SYSTEM_WORKER_CRASH, (60, 120)),
    ],
)
def test_default_schedules_without_jitter(
    failure_type: FailureType, schedule: tuple[float, ...]
) -> None:
    """The centre of each default curve, jitter off, is the documented schedule."""
    policy = dataclasses.replace(default_policy(failure_type), jitter=Jitter.NONE)
    assert policy.schedule() == schedule


@pytest.mark.parametrize(
    "failure_type",
    [
        T.PERMANENT_VALIDATION,
        T.PERMANENT_NOT_FOUND,
        T.PERMANENT_PERMISSION,
        T.PERMANENT_LOGIC,
        T.CONFIG_MISSING_SETTING,
        T.CONFIG_INVALID_SETTING,
        T.CONFIG_MISSING_SERVICE,
        T.EXTERNAL_API_ERROR,
        T.SYSTEM_DISK_FULL,
    ],
)
def test_non_retrying_defaults(failure_type: FailureType) -> None:
    """Permanent, config, API-error and disk-full failures are never retried."""
    policy = default_policy(failure_type)
    assert policy.max_retries == 0
    assert not policy.allows(1)
    assert policy.schedule() == ()


def test_default_policy_accepts_the_type_name() -> None:
    """default_policy takes the string value of a failure type too, and rejects others."""
    assert default_policy("TRANSIENT_NETWORK") is DEFAULT_POLICIES[T.TRANSIENT_NETWORK]  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as info:
        default_policy("NETWORK")  # type: ignore[arg-type]
    assert info.value.key == "failure_type"


# --- immutability --------------------------------------------------------------------------------


def test_policies_are_frozen() -> None:
    """Assigning to a policy's field raises FrozenInstanceError."""
    policy = default_policy(T.TRANSIENT_DATABASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.initial_delay = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.breaker.failure_threshold = 1  # type: ignore[union-attr, misc]


def test_default_policies_mapping_is_read_only() -> None:
    """DEFAULT_POLICIES cannot be changed in place."""
    with pytest.raises(TypeError):
        DEFAULT_POLICIES[T.UNKNOWN] = RetryPolicy()  # type: ignore[index]


def test_scaled_returns_a_new_policy() -> None:
    """scaled() multiplies the initial delay in a new policy and leaves the original alone."""
    original = default_policy(T.TRANSIENT_DATABASE)
    slower = original.scaled(1.3)
    assert slower is not original
    assert slower.initial_delay == pytest.approx(39.0)
    assert original.initial_delay == 30.0
    assert slower.max_delay == original.max_delay
    assert slower.max_retries == original.max_retries


def test_repeated_adaptation_does_not_drift_the_defaults() -> None:
    """Regression: the original mutated shared default policies, so adaptations compounded."""
    before = dict(DEFAULT_POLICIES)
    before_dicts = {t: p.to_dict() for t, p in DEFAULT_POLICIES.items()}
    for failure_type in FailureType:
        policy = default_policy(failure_type)
        for _ in range(100):
            policy.scaled(1.3).scaled(0.7).with_max_retries(1)
    assert dict(DEFAULT_POLICIES) == before
    assert {t: p.to_dict() for t, p in DEFAULT_POLICIES.items()} == before_dicts
    assert all(default_policy(t) is before[t] for t in FailureType)


def test_scaled_clamps_initial_to_max_delay() -> None:
    """Scaling beyond the cap clamps the initial delay to max_delay, which is kept."""
    policy = RetryPolicy(initial_delay=100.0, max_delay=300.0).scaled(10.0)
    assert (policy.initial_delay, policy.max_delay) == (300.0, 300.0)


def test_scaled_by_zero_makes_retries_immediate() -> None:
    """scaled(0) gives a policy whose every delay is 0."""
    policy = default_policy(T.TRANSIENT_DATABASE).scaled(0)
    assert policy.schedule(rng=random.Random(0)) == (0.0,) * 5


@pytest.mark.parametrize("multiplier", [-1.0, math.nan, math.inf, "2"])
def test_scaled_rejects_bad_multipliers(multiplier: object) -> None:
    """A negative, NaN, infinite or non-numeric multiplier raises ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy().scaled(multiplier)  # type: ignore[arg-type]
    assert info.value.key == "multiplier"


def test_with_max_retries() -> None:
    """with_max_retries returns a new, validated policy with only the count changed."""
    original = RetryPolicy(max_retries=3)
    more = original.with_max_retries(7)
    assert (original.max_retries, more.max_retries) == (3, 7)
    assert dataclasses.replace(more, max_retries=3) == original
    with pytest.raises(ConfigurationError) as info:
        original.with_max_retries(-1)
    assert info.value.key == "max_retries"


def test_policies_are_hashable_values() -> None:
    """Equal policies are equal and hash alike, so they can key a dict."""
    one = RetryPolicy(initial_delay=timedelta(seconds=2))
    two = RetryPolicy(initial_delay=2.0)
    assert one == two
    assert {one: "x"}[two] == "x"


# --- configuration round trip ------------------------------------------------------------------


@pytest.mark.parametrize("failure_type", list(FailureType))
def test_to_dict_from_dict_round_trip_through_json(failure_type: FailureType) -> None:
    """Every default policy survives to_dict -> JSON -> from_dict unchanged."""
    policy = default_policy(failure_type)
    assert RetryPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


def test_to_dict_is_plain_json() -> None:
    """to_dict holds only JSON types: enums as their string values, breaker as a dict."""
    data = default_policy(T.TRANSIENT_NETWORK).to_dict()
    assert data == {
        "max_retries": 3,
        "initial_delay": 60.0,
        "strategy": "exponential",
        "factor": 2.0,
        "max_delay": 1800.0,
        "jitter": "proportional",
        "jitter_ratio": 0.1,
        "breaker": {"failure_threshold": 5, "reset_timeout": 600.0},
    }
    assert type(data["strategy"]) is str


def test_from_dict_fills_missing_keys_with_defaults() -> None:
    """Keys left out of the mapping take the field defaults."""
    assert RetryPolicy.from_dict({"max_retries": 1}) == RetryPolicy(max_retries=1)


def test_from_dict_unknown_key_suggests_the_closest() -> None:
    """An unknown key is named in the error with a "did you mean" suggestion."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy.from_dict({"inital_delay": 5})
    assert info.value.key == "inital_delay"
    assert "did you mean 'initial_delay'?" in str(info.value)


def test_from_dict_unknown_breaker_key_suggests_the_closest() -> None:
    """Unknown keys inside breaker are named with their path and a suggestion."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy.from_dict({"breaker": {"failure_treshold": 3, "reset_timeout": 60}})
    assert info.value.key == "breaker.failure_treshold"
    assert "did you mean 'breaker.failure_threshold'?" in str(info.value)


def test_from_dict_missing_breaker_key() -> None:
    """A breaker mapping without reset_timeout is rejected, naming the missing key."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy.from_dict({"breaker": {"failure_threshold": 3}})
    assert info.value.key == "breaker.reset_timeout"


def test_from_dict_rejects_non_mappings_and_bad_values() -> None:
    """A non-mapping and an invalid value both raise ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy.from_dict([("max_retries", 3)])  # type: ignore[arg-type]
    assert info.value.key == "policy"
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy.from_dict({"jitter_ratio": 2})
    assert info.value.key == "jitter_ratio"


# --- properties ------------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn, *, strategies: Sequence[Strategy] | None = None) -> RetryPolicy:
    """Any valid policy, huge factors included."""
    strategy = draw(st.sampled_from(strategies or list(Strategy)))
    initial = draw(st.floats(min_value=0.0, max_value=1e5))
    max_delay = draw(st.floats(min_value=initial, max_value=1e7))
    if strategy is Strategy.EXPONENTIAL:
        factor = draw(st.floats(min_value=1.0, max_value=1e308))
    else:
        factor = draw(st.floats(min_value=1e-6, max_value=1e308))
    return RetryPolicy(
        max_retries=draw(st.integers(min_value=0, max_value=25)),
        initial_delay=initial,
        strategy=strategy,
        factor=factor,
        max_delay=max_delay,
        jitter=draw(st.sampled_from(Jitter)),
        jitter_ratio=draw(st.floats(min_value=0.0, max_value=1.0)),
    )


retry_numbers = st.integers(min_value=1, max_value=10_000)
seeds = st.integers(min_value=0, max_value=2**32)
non_random = [s for s in Strategy if s is not Strategy.DECORRELATED]


@settings(deadline=None)
@example(
    policy=RetryPolicy(strategy="decorrelated", initial_delay=5e-324, max_delay=1e7),
    retry_number=10_000,
    seed=0,
)
@example(
    policy=RetryPolicy(initial_delay=5e-324, factor=1e308, max_delay=1e7, jitter_ratio=1.0),
    retry_number=10_000,
    seed=0,
)
@given(policy=policies(), retry_number=retry_numbers, seed=seeds)
def test_property_delay_is_bounded_and_within_envelope(
    policy: RetryPolicy, retry_number: int, seed: int
) -> None:
    """0 <= delay <= max_delay, inside envelope(n), never NaN, for n up to 10**4."""
    value = policy.delay(retry_number, rng=random.Random(seed))
    low, high = policy.envelope(retry_number)
    assert 0.0 <= low <= value <= high <= policy.max_delay
    assert math.isfinite(value)


@given(policy=policies(strategies=non_random), retry_number=retry_numbers)
def test_property_envelope_never_shrinks(policy: RetryPolicy, retry_number: int) -> None:
    """For non-decorrelated curves both envelope bounds are non-decreasing in n."""
    low, high = policy.envelope(retry_number)
    next_low, next_high = policy.envelope(retry_number + 1)
    assert next_low >= low
    assert next_high >= high


@given(policy=policies(), retry_number=retry_numbers)
def test_property_cap_is_reached_eventually(policy: RetryPolicy, retry_number: int) -> None:
    """Far enough out, every growing curve's upper envelope is exactly max_delay."""
    # Linear growth is only polynomial: a subnormal initial delay may need more retries
    # than any int a float can count, so it is held to a realistic lower bound here.
    grows = (
        (policy.strategy is Strategy.EXPONENTIAL and policy.factor > 1)
        or policy.strategy is Strategy.FIBONACCI
        or (policy.strategy is Strategy.LINEAR and policy.initial_delay * policy.factor > 1e-250)
    )
    if grows and policy.initial_delay > 0:
        assert policy.envelope(10**400)[1] == policy.max_delay
    assert policy.envelope(retry_number)[1] <= policy.max_delay


@settings(deadline=None)
@given(policy=policies(), seed=seeds)
def test_property_schedule_is_deterministic_per_seed(policy: RetryPolicy, seed: int) -> None:
    """The same seed always gives the same schedule."""
    assert policy.schedule(rng=random.Random(seed)) == policy.schedule(rng=random.Random(seed))


@settings(deadline=None)
@given(policy=policies(), seed=seeds)
def test_property_total_schedule_time_is_bounded(policy: RetryPolicy, seed: int) -> None:
    """The whole schedule waits at most max_retries * max_delay in total."""
    schedule = policy.schedule(rng=random.Random(seed))
    assert len(schedule) == policy.max_retries
    assert math.fsum(schedule) <= policy.max_retries * policy.max_delay * (1 + 1e-12)


@given(
    factor=st.floats(min_value=1.0, max_value=1e308),
    strategy=st.sampled_from([Strategy.EXPONENTIAL, Strategy.LINEAR]),
    retry_number=st.integers(min_value=1, max_value=10_000),
    seed=seeds,
)
def test_property_huge_factors_never_overflow(
    factor: float, strategy: Strategy, retry_number: int, seed: int
) -> None:
    """Factors up to 1e308 at retry numbers up to 10**4 give a capped delay, no error."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=3600.0, factor=factor, strategy=strategy)
    assert 0.0 <= policy.delay(retry_number, rng=random.Random(seed)) <= 3600.0


@given(
    initial=st.floats(min_value=0.0, max_value=1e4),
    factor=st.floats(min_value=1.0, max_value=10.0),
    retry_number=st.integers(min_value=1, max_value=60),
)
def test_property_shapes_are_exact_without_jitter(
    initial: float, factor: float, retry_number: int
) -> None:
    """With jitter off, each strategy gives exactly its closed form, capped at max_delay."""
    cap = 1e12
    n = retry_number
    expected = {
        Strategy.EXPONENTIAL: initial * factor ** (n - 1),
        Strategy.LINEAR: initial * (1 + factor * (n - 1)),
        Strategy.FIBONACCI: initial * float(_fib(n)),
        Strategy.CONSTANT: initial,
    }
    for strategy, value in expected.items():
        policy = exact(initial_delay=initial, factor=factor, strategy=strategy, max_delay=cap)
        assert policy.delay(n) == min(cap, value)


def _fib(n: int) -> int:
    """The exact n-th Fibonacci number, F(1) = F(2) = 1."""
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a

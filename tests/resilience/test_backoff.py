"""Tests for resilience.backoff: curve shapes, clamping, overflow safety, jitter and composition."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resilience.backoff import (
    Backoff,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Fibonacci,
    Jitter,
    Linear,
    Strategy,
    Sum,
    apply_jitter,
    check_retry_number,
    jitter_bounds,
)
from resilience.errors import ConfigurationError

HUGE_RETRY_NUMBERS = [10_000, 10**6, 10**18, 10**400]


def first(curve: Backoff, count: int, *, rng: random.Random | None = None) -> list[float]:
    """The first ``count`` delays of ``curve``, by retry number."""
    return [curve(n, rng=rng) for n in range(1, count + 1)]


def fib(n: int) -> int:
    """The exact n-th Fibonacci number, F(1) = F(2) = 1."""
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


def all_curves() -> list[Backoff]:
    """One curve of each kind, each with a cap."""
    return [
        Constant(delay=2.0),
        Exponential(initial=1.0, factor=2.0, cap=100.0),
        Linear(initial=1.0, factor=1.5, cap=100.0),
        Fibonacci(initial=1.0, cap=100.0),
        DecorrelatedJitter(initial=1.0, cap=100.0),
    ]


# --- exact shapes ---------------------------------------------------------------------------


def test_exponential_shape() -> None:
    """Exponential delays are initial * factor ** (n - 1), exactly."""
    assert first(Exponential(initial=1.0, factor=2.0), 6) == [1, 2, 4, 8, 16, 32]
    assert first(Exponential(initial=30.0, factor=3.0), 3) == [30, 90, 270]


def test_linear_shape_starts_at_initial() -> None:
    """Linear delays are initial * (1 + factor * (n - 1)), so the first is initial."""
    assert first(Linear(initial=2.0, factor=0.5), 5) == [2, 3, 4, 5, 6]
    assert first(Linear(initial=300.0, factor=1.5), 3) == [300, 750, 1200]


def test_fibonacci_shape() -> None:
    """Fibonacci delays are initial * F(n) with F = 1, 1, 2, 3, 5, 8 ..."""
    assert first(Fibonacci(initial=1.0), 10) == [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    assert first(Fibonacci(initial=900.0), 4) == [900, 900, 1800, 2700]


def test_fibonacci_is_exact_up_to_78_and_close_after() -> None:
    """The exact table and Binet's formula agree with integer Fibonacci numbers."""
    curve = Fibonacci(initial=1.0)
    for n in range(1, 79):
        assert curve(n) == float(fib(n))
    for n in (79, 80, 100, 500, 1400):
        assert curve(n) == pytest.approx(float(fib(n)), rel=1e-12)


def test_fibonacci_stays_monotone_across_the_formula_switch() -> None:
    """Delays keep growing where the exact table hands over to Binet's formula."""
    values = [Fibonacci(initial=1.0)(n) for n in range(70, 90)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_constant_shape() -> None:
    """A constant curve gives its delay for every retry number."""
    assert first(Constant(delay=5.0), 4) == [5, 5, 5, 5]
    assert Constant(delay=5.0)(10**400) == 5.0


def test_caps_clamp_every_curve() -> None:
    """A curve never exceeds its cap, and reaches it once the curve passes it."""
    assert first(Exponential(initial=1.0, factor=2.0, cap=5.0), 5) == [1, 2, 4, 5, 5]
    assert first(Linear(initial=1.0, factor=1.0, cap=2.5), 4) == [1, 2, 2.5, 2.5]
    assert first(Fibonacci(initial=1.0, cap=4.0), 6) == [1, 1, 2, 3, 4, 4]


def test_durations_accept_timedelta() -> None:
    """initial, cap and delay accept a timedelta and are stored as seconds."""
    curve = Exponential(initial=timedelta(seconds=30), cap=timedelta(minutes=1))
    assert (curve.initial, curve.cap) == (30.0, 60.0)
    assert first(curve, 3) == [30, 60, 60]
    assert Constant(delay=timedelta(milliseconds=250))(1) == 0.25


def test_zero_initial_gives_zero_everywhere() -> None:
    """A zero initial delay yields 0 at every retry number, never NaN (0 * inf)."""
    for curve in (
        Exponential(initial=0.0, factor=1e308),
        Linear(initial=0.0, factor=1e308),
        Fibonacci(initial=0.0),
        DecorrelatedJitter(initial=0.0, cap=0.0),
    ):
        for n in (1, 2, 10_000, 10**400):
            assert curve(n, rng=random.Random(0)) == 0.0


# --- overflow safety --------------------------------------------------------------------------


@pytest.mark.parametrize("retry_number", HUGE_RETRY_NUMBERS)
def test_huge_retry_numbers_saturate_at_the_cap(retry_number: int) -> None:
    """Capped curves return their cap for huge retry numbers, without OverflowError."""
    cap = 3600.0
    assert Exponential(initial=1.0, factor=2.0, cap=cap)(retry_number) == cap
    assert Exponential(initial=1e-300, factor=1e308, cap=cap)(retry_number) == cap
    assert Linear(initial=1.0, factor=1e308, cap=cap)(retry_number) == cap
    assert Fibonacci(initial=1e-300, cap=cap)(retry_number) == cap
    value = DecorrelatedJitter(initial=1.0, cap=cap)(retry_number, rng=random.Random(1))
    assert 1.0 <= value <= cap


@pytest.mark.parametrize("retry_number", HUGE_RETRY_NUMBERS)
def test_uncapped_curves_saturate_at_infinity_not_nan(retry_number: int) -> None:
    """Without a cap, a curve that outgrows floats returns inf, never NaN or an error."""
    for curve in (Exponential(factor=2.0), Linear(factor=1e308), Fibonacci()):
        assert curve(retry_number) == math.inf


def test_log_space_keeps_tiny_initials_finite() -> None:
    """A tiny initial times a huge growth is computed, not treated as overflow."""
    # 10 ** 400 overflows a float, 1e-300 * 10 ** 400 = 1e100 does not.
    assert Exponential(initial=1e-300, factor=10.0)(401) == pytest.approx(1e100, rel=1e-9)
    assert Fibonacci(initial=1e-300)(1400) == pytest.approx(fib(1400) * 1e-300, rel=1e-9)


def test_decorrelated_with_a_subnormal_initial() -> None:
    """A tiny initial delay, whose ratio to the cap overflows a float, still works."""
    curve = DecorrelatedJitter(initial=5e-324, cap=1e7)
    assert 5e-324 <= curve(10_000, rng=random.Random(2)) <= 1e7
    assert curve.bounds(10_000) == (5e-324, 1e7)


def test_decorrelated_with_a_cap_near_float_max_never_nan() -> None:
    """Three times a previous delay near float max does not turn into NaN."""
    curve = DecorrelatedJitter(initial=1e307, cap=1.7e308)
    values = list(itertools.islice(curve.delays(rng=random.Random(5)), 200))
    assert all(1e307 <= v <= 1.7e308 for v in values)


# --- retry numbers and validation --------------------------------------------------------------


@pytest.mark.parametrize("curve", all_curves(), ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("retry_number", [0, -1, -(10**400)])
def test_retry_numbers_below_one_are_rejected(curve: Backoff, retry_number: int) -> None:
    """Retry numbers count from 1; 0 and negatives raise ValueError naming the argument."""
    with pytest.raises(ValueError, match="retry_number"):
        curve(retry_number)
    with pytest.raises(ValueError, match="retry_number"):
        curve.bounds(retry_number)


@pytest.mark.parametrize("retry_number", [True, 1.0, "1", None])
def test_non_int_retry_numbers_are_rejected(retry_number: object) -> None:
    """A bool, float or string retry number raises TypeError rather than guessing."""
    with pytest.raises(TypeError, match="retry_number"):
        check_retry_number(retry_number)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_number"):
        Exponential()(retry_number)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "key", "value"),
    [
        (lambda: Exponential(initial=-1.0), "initial", -1.0),
        (lambda: Exponential(initial=math.nan), "initial", math.nan),
        (lambda: Exponential(initial=math.inf), "initial", math.inf),
        (lambda: Exponential(initial="1"), "initial", "1"),  # type: ignore[arg-type]
        (lambda: Exponential(factor=0.5), "factor", 0.5),
        (lambda: Exponential(factor=math.nan), "factor", math.nan),
        (lambda: Exponential(factor=math.inf), "factor", math.inf),
        (lambda: Exponential(cap=-5.0), "cap", -5.0),
        (lambda: Linear(factor=0.0), "factor", 0.0),
        (lambda: Linear(factor=-1.0), "factor", -1.0),
        (lambda: Linear(factor=True), "factor", True),
        (lambda: Fibonacci(initial=timedelta(seconds=-1)), "initial", timedelta(seconds=-1)),
        (lambda: Constant(delay=-0.5), "delay", -0.5),
        (lambda: DecorrelatedJitter(initial=10.0, cap=5.0), "cap", 5.0),
        (lambda: Exponential(initial=10.0, cap=5.0), "cap", 5.0),
        (lambda: Linear(initial=10.0, cap=timedelta(seconds=5)), "cap", timedelta(seconds=5)),
        (lambda: Fibonacci(initial=10.0, cap=0.0), "cap", 0.0),
        (lambda: DecorrelatedJitter(initial=1.0, cap=math.inf), "cap", math.inf),
    ],
)
def test_invalid_arguments_raise_configuration_error(
    build: object, key: str, value: object
) -> None:
    """Each invalid argument raises ConfigurationError naming it and showing the value."""
    with pytest.raises(ConfigurationError) as info:
        build()  # type: ignore[operator]
    assert info.value.key == key
    assert repr(value) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_curves_are_frozen_values() -> None:
    """Curves cannot be changed after construction and compare by value."""
    curve = Exponential(initial=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        curve.initial = 2.0  # type: ignore[misc]
    assert curve == Exponential(initial=1.0)
    assert hash(curve) == hash(Exponential(initial=1.0))
    assert dataclasses.replace(curve, factor=3.0)(2) == 3.0


# --- composition -------------------------------------------------------------------------------


def test_curves_add_up() -> None:
    """``a + b`` is a curve whose delays are the sums of both curves' delays."""
    curve = Exponential(initial=1.0) + Constant(delay=0.5)
    assert first(curve, 4) == [1.5, 2.5, 4.5, 8.5]
    assert curve.bounds(3) == (4.5, 4.5)


def test_sums_flatten() -> None:
    """Adding to a sum extends it instead of nesting sums."""
    curve = Constant(delay=1.0) + Constant(delay=2.0) + Linear(initial=1.0)
    assert isinstance(curve, Sum)
    assert len(curve.parts) == 3
    assert curve(2) == 5.0


def test_adding_something_else_is_a_type_error() -> None:
    """A curve plus a number is a TypeError, not a silent coercion."""
    with pytest.raises(TypeError):
        Constant(delay=1.0) + 1.0


def test_empty_sum_is_rejected() -> None:
    """A Sum needs at least one curve."""
    with pytest.raises(ConfigurationError) as info:
        Sum(parts=())
    assert info.value.key == "parts"


def test_sum_with_a_random_part_chains_that_part() -> None:
    """A sum's delays follow each random part's own chain and stay within its bounds."""
    curve = Constant(delay=1.0) + DecorrelatedJitter(initial=1.0, cap=50.0)
    assert curve.is_random
    chained = list(itertools.islice(curve.delays(rng=random.Random(3)), 10))
    alone = itertools.islice(
        DecorrelatedJitter(initial=1.0, cap=50.0).delays(rng=random.Random(3)), 10
    )
    assert chained == [1.0 + v for v in alone]
    for n, value in enumerate(chained, start=1):
        low, high = curve.bounds(n)
        assert low <= value <= high


# --- decorrelated jitter ------------------------------------------------------------------------


def test_decorrelated_first_delay_lies_between_initial_and_three_times_it() -> None:
    """The chain starts from previous = initial, so retry 1 waits initial to 3 * initial."""
    curve = DecorrelatedJitter(initial=2.0, cap=1000.0)
    draws = [curve(1, rng=random.Random(seed)) for seed in range(200)]
    assert all(2.0 <= d <= 6.0 for d in draws)
    assert max(draws) - min(draws) > 3.0  # it really is spread, not a constant


def test_decorrelated_is_deterministic_per_seed() -> None:
    """The same seed gives the same chain; delay(n) is the n-th value of that chain."""
    curve = DecorrelatedJitter(initial=1.0, cap=100.0)
    chain = list(itertools.islice(curve.delays(rng=random.Random(42)), 30))
    assert chain == list(itertools.islice(curve.delays(rng=random.Random(42)), 30))
    assert chain != list(itertools.islice(curve.delays(rng=random.Random(43)), 30))
    assert [curve(n, rng=random.Random(42)) for n in range(1, 31)] == chain


def test_decorrelated_uses_each_previous_value() -> None:
    """Every draw lies between initial and three times the previous draw (or the cap)."""
    curve = DecorrelatedJitter(initial=1.0, cap=30.0)
    chain = list(itertools.islice(curve.delays(rng=random.Random(9)), 500))
    previous = 1.0
    for value in chain:
        assert 1.0 <= value <= min(30.0, 3 * previous)
        previous = value
    assert 30.0 in chain  # the cap is reached and held


def test_decorrelated_late_retries_reuse_the_settled_draw() -> None:
    """Past saturation, delay(n) stops simulating, so retry 10**9 costs a few dozen draws."""
    curve = DecorrelatedJitter(initial=1.0, cap=81.0)  # upper bound reaches the cap at retry 4

    class CountingRandom(random.Random):
        draws = 0

        def random(self) -> float:
            CountingRandom.draws += 1
            return super().random()

    value = curve(10**9, rng=CountingRandom(1))
    assert 1.0 <= value <= 81.0
    assert CountingRandom.draws <= 4 + 32
    assert curve(10**9, rng=random.Random(1)) == curve(100, rng=random.Random(1))


def test_decorrelated_bounds() -> None:
    """Bounds run from initial to min(cap, initial * 3 ** n)."""
    curve = DecorrelatedJitter(initial=1.0, cap=100.0)
    assert [curve.bounds(n) for n in (1, 2, 3, 4, 5)] == [
        (1.0, 3.0),
        (1.0, 9.0),
        (1.0, 27.0),
        (1.0, 81.0),
        (1.0, 100.0),
    ]
    assert curve.bounds(10**400) == (1.0, 100.0)


def test_only_decorrelated_is_random() -> None:
    """is_random tells a policy which curves carry their own jitter."""
    assert [c.is_random for c in all_curves()] == [False, False, False, False, True]


# --- jitter --------------------------------------------------------------------------------------


def test_jitter_bounds_per_mode() -> None:
    """Each mode spreads over its documented range."""
    assert jitter_bounds(100.0, mode=Jitter.NONE) == (100.0, 100.0)
    assert jitter_bounds(100.0, mode=Jitter.PROPORTIONAL, ratio=0.1) == (90.0, 110.0)
    assert jitter_bounds(100.0, mode=Jitter.FULL) == (0.0, 100.0)
    assert jitter_bounds(100.0, mode=Jitter.EQUAL) == (50.0, 100.0)
    assert jitter_bounds(100.0, mode="proportional", ratio=1.0) == (0.0, 200.0)


def test_jitter_none_returns_the_delay_and_draws_nothing() -> None:
    """NONE leaves the delay alone and does not consume randomness."""
    rng = random.Random(1)
    state = rng.getstate()
    assert apply_jitter(12.5, mode=Jitter.NONE, rng=rng) == 12.5
    assert rng.getstate() == state


@pytest.mark.parametrize("mode", list(Jitter))
def test_jitter_is_deterministic_per_seed(mode: Jitter) -> None:
    """A seeded rng gives the same jittered values every time."""
    one = [apply_jitter(10.0, mode=mode, ratio=0.3, rng=random.Random(7)) for _ in range(5)]
    two = [apply_jitter(10.0, mode=mode, ratio=0.3, rng=random.Random(7)) for _ in range(5)]
    assert one == two


def test_jitter_of_an_infinite_delay_is_infinite() -> None:
    """An infinite delay cannot be spread; jitter returns it rather than NaN."""
    for mode in Jitter:
        assert apply_jitter(math.inf, mode=mode, ratio=1.0, rng=random.Random(0)) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"mode": "gaussian"}, "jitter"),
        ({"mode": Jitter.PROPORTIONAL, "ratio": 1.5}, "jitter_ratio"),
        ({"mode": Jitter.PROPORTIONAL, "ratio": -0.1}, "jitter_ratio"),
        ({"mode": Jitter.PROPORTIONAL, "ratio": math.nan}, "jitter_ratio"),
    ],
)
def test_invalid_jitter_arguments(kwargs: dict[str, object], key: str) -> None:
    """Unknown modes (listing the valid ones) and ratios outside [0, 1] are rejected."""
    with pytest.raises(ConfigurationError) as info:
        apply_jitter(1.0, **kwargs)  # type: ignore[arg-type]
    assert info.value.key == key
    if key == "jitter":
        assert "proportional" in str(info.value)


def test_enum_values_are_the_lowercase_names() -> None:
    """Strategy and Jitter values are stable lowercase strings for JSON config."""
    assert [s.value for s in Strategy] == [
        "exponential",
        "linear",
        "fibonacci",
        "constant",
        "decorrelated",
    ]
    assert [j.value for j in Jitter] == ["none", "proportional", "full", "equal"]


# --- properties ----------------------------------------------------------------------------------

seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
retry_numbers = st.integers(min_value=1, max_value=10_000)


@st.composite
def deterministic_curves(draw: st.DrawFn) -> Backoff:
    """A capped deterministic curve with any valid arguments, huge factors included."""
    initial = draw(seconds)
    cap = draw(st.floats(min_value=initial, max_value=1e12))
    kind = draw(st.sampled_from(["exponential", "linear", "fibonacci", "constant"]))
    if kind == "exponential":
        factor = draw(st.floats(min_value=1.0, max_value=1e308))
        return Exponential(initial=initial, factor=factor, cap=cap)
    if kind == "linear":
        factor = draw(st.floats(min_value=1e-9, max_value=1e308))
        return Linear(initial=initial, factor=factor, cap=cap)
    if kind == "fibonacci":
        return Fibonacci(initial=initial, cap=cap)
    return Constant(delay=initial)


@example(curve=Exponential(initial=5e-324, factor=1e308, cap=1e12), retry_number=10_000)
@example(curve=Linear(initial=5e-324, factor=1e308, cap=1e12), retry_number=10_000)
@example(curve=Fibonacci(initial=5e-324, cap=1e12), retry_number=10_000)
@given(curve=deterministic_curves(), retry_number=retry_numbers)
def test_property_delays_are_finite_non_negative_and_capped(
    curve: Backoff, retry_number: int
) -> None:
    """Any curve, any retry number up to 10**4: 0 <= delay <= cap, never NaN."""
    value = curve(retry_number)
    assert 0.0 <= value <= getattr(curve, "cap", value)
    assert math.isfinite(value)
    assert curve.bounds(retry_number) == (value, value)


@given(curve=deterministic_curves(), retry_number=retry_numbers)
def test_property_deterministic_curves_never_decrease(curve: Backoff, retry_number: int) -> None:
    """The delay before retry n + 1 is at least the delay before retry n."""
    assert curve(retry_number + 1) >= curve(retry_number)


@settings(deadline=None)
@example(initial=5e-324, ratio=1e12, retry_number=10_000, seed=0)  # cap / initial overflows
@example(initial=1e-9, ratio=1.0, retry_number=3, seed=0)  # cap == initial
@given(
    initial=st.floats(min_value=0.0, max_value=1e6),
    ratio=st.floats(min_value=1.0, max_value=1e12),
    retry_number=retry_numbers,
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_property_decorrelated_stays_within_bounds(
    initial: float, ratio: float, retry_number: int, seed: int
) -> None:
    """A decorrelated draw lies within its bounds, between initial and the cap."""
    curve = DecorrelatedJitter(initial=initial, cap=max(initial, initial * ratio))
    value = curve(retry_number, rng=random.Random(seed))
    low, high = curve.bounds(retry_number)
    assert initial == low <= value <= high <= curve.cap


@given(
    delay=seconds,
    mode=st.sampled_from(Jitter),
    ratio=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_property_jitter_stays_within_its_bounds(
    delay: float, mode: Jitter, ratio: float, seed: int
) -> None:
    """A jittered delay lies within jitter_bounds and is never negative."""
    value = apply_jitter(delay, mode=mode, ratio=ratio, rng=random.Random(seed))
    low, high = jitter_bounds(delay, mode=mode, ratio=ratio)
    assert 0.0 <= low <= value <= high

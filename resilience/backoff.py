"""Backoff curves: how long to wait before retry number n, and how to spread it out.

A curve is a small frozen value, called with a 1-based retry number:
``Exponential(initial=1.0, factor=2.0)(3) == 4.0``. Curves compose with ``+``:
``Exponential(initial=1.0) + Constant(delay=0.5)`` is a curve too. No result is
ever negative or NaN, and no retry number (10,000 or 10**100) raises
``OverflowError``: growth moves to log space whenever plain arithmetic could
overflow, and each curve clamps to its ``cap`` (unbounded curves saturate at
``math.inf``).

`Jitter` spreads a delay so that workers failing together do not retry
together. Randomness only comes from a ``random.Random`` passed in (else a
module-level one), so a seeded generator makes every sequence reproducible.

See ``docs/policies.md``.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from itertools import count
from typing import TYPE_CHECKING

from resilience.clock import seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import timedelta

__all__ = [
    "Backoff",
    "Constant",
    "DecorrelatedJitter",
    "Exponential",
    "Fibonacci",
    "Jitter",
    "Linear",
    "Strategy",
    "Sum",
    "apply_jitter",
    "check_retry_number",
    "jitter_bounds",
]

# exp() of anything above this would come within a factor of ~1e8 of the float maximum.
_LOG_MAX = math.log(1e300)
# Retry numbers beyond this are treated as equal to it: converting a larger int to float
# raises OverflowError, and every curve has long saturated by then.
_HUGE_RETRY = 10**300
_DECORRELATED_GROWTH = 3.0  # the multiplier of AWS's published "decorrelated jitter"
# Once its upper bound has reached the cap, the decorrelated chain is simulated this many
# more steps at most: each draw depends on the previous one only, and the chain has
# forgotten where it started long before, so later retries reuse this steady state cheaply.
_DECORRELATED_SETTLE = 32
# Exact Fibonacci numbers are floats up to F(78) (< 2**53); Binet's formula takes over after.
_FIB_EXACT = 78
_LOG_PHI = math.log((1 + math.sqrt(5)) / 2)
_LOG_SQRT5 = 0.5 * math.log(5)

_random = random.Random()  # jitter spreads load; it protects no secret


def _fibonacci_table() -> tuple[float, ...]:
    values = [1, 1]
    while len(values) < _FIB_EXACT:
        values.append(values[-1] + values[-2])
    return tuple(float(v) for v in values)


_FIB = _fibonacci_table()


class Jitter(StrEnum):
    """How a delay is randomised.

    Attributes:
        NONE: the delay as computed.
        PROPORTIONAL: uniformly within ``d * (1 - ratio)`` .. ``d * (1 + ratio)``.
        FULL: ``uniform(0, d)`` (AWS "full jitter").
        EQUAL: ``d / 2 + uniform(0, d / 2)`` (AWS "equal jitter").
    """

    NONE = "none"
    PROPORTIONAL = "proportional"
    FULL = "full"
    EQUAL = "equal"


class Strategy(StrEnum):
    """The shape of a retry policy's curve; each maps to one `Backoff` class."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIBONACCI = "fibonacci"
    CONSTANT = "constant"
    DECORRELATED = "decorrelated"


def check_retry_number(retry_number: int) -> None:
    """Reject anything but a 1-based retry number.

    Args:
        retry_number: the retry about to happen (1 for the first retry).

    Raises:
        TypeError: when ``retry_number`` is not an ``int`` (``bool`` included).
        ValueError: when ``retry_number`` is below 1.
    """
    if isinstance(retry_number, bool) or not isinstance(retry_number, int):
        raise TypeError(f"retry_number must be an int, got {retry_number!r}")
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1 (retries count from 1), got {retry_number!r}")


def _steps(retry_number: int) -> float:
    """``retry_number - 1`` as a float that cannot overflow the conversion."""
    if retry_number < _HUGE_RETRY:
        return float(retry_number - 1)
    return float(_HUGE_RETRY - 1)


def _duration(value: float | timedelta, *, name: str, allow_inf: bool = False) -> float:
    """Seconds from a float or ``timedelta``, rejecting negative, NaN and (unless allowed) inf.

    Raises:
        ConfigurationError: naming ``name`` and the value.
    """
    try:
        seconds = seconds_of(value, name=name)
    except TypeError as exc:
        raise ConfigurationError(str(exc), key=name, value=value) from None
    if math.isnan(seconds) or seconds < 0 or (math.isinf(seconds) and not allow_inf):
        kind = "a non-negative" if allow_inf else "a finite, non-negative"
        raise ConfigurationError(
            f"{name} must be {kind} number of seconds or a timedelta, got {value!r}",
            key=name,
            value=value,
        )
    return seconds


def _number(value: float, *, name: str, minimum: float, inclusive: bool) -> float:
    """A finite number above ``minimum`` (or at it when ``inclusive``).

    Raises:
        ConfigurationError: naming ``name`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, got {value!r}", key=name, value=value)
    result = float(value)
    below = result < minimum if inclusive else result <= minimum
    if not math.isfinite(result) or below:
        relation = ">=" if inclusive else ">"
        raise ConfigurationError(
            f"{name} must be a finite number {relation} {minimum:g}, got {value!r}",
            key=name,
            value=value,
        )
    return result


def _capped(initial: float, cap: float | timedelta, *, allow_inf: bool = True) -> float:
    """``cap`` in seconds, at least ``initial``.

    Raises:
        ConfigurationError: naming ``cap`` and its value.
    """
    seconds = _duration(cap, name="cap", allow_inf=allow_inf)
    if seconds < initial:
        raise ConfigurationError(
            f"cap must be >= initial ({initial!r}), got {cap!r}", key="cap", value=cap
        )
    return seconds


def _grow(initial: float, log_growth: float, cap: float) -> float:
    """``initial * exp(log_growth)`` clamped to ``cap``, in log space so it cannot overflow."""
    if initial == 0.0:
        return 0.0
    log_value = math.log(initial) + log_growth
    if log_value >= _LOG_MAX or (0.0 < cap < math.inf and log_value >= math.log(cap)):
        return cap
    return min(cap, math.exp(log_value))


def _power(initial: float, factor: float, retry_number: int, cap: float) -> float:
    """``initial * factor ** (retry_number - 1)`` clamped to ``cap``, without overflow."""
    try:
        # Plain arithmetic keeps small results exact (1, 2, 4, 8 ...) and is the fast path.
        value = initial * factor ** (retry_number - 1)
    except OverflowError:
        # The power alone overflowed (or the exponent did); the product may still be finite.
        return _grow(initial, _steps(retry_number) * math.log(factor), cap)
    return cap if value > cap else value  # an overflowed product is inf, so it clamps too


class Backoff(ABC):
    """A curve of delays in seconds, indexed by 1-based retry number.

    Call it to get the delay before a retry; add two curves with ``+`` to sum them.
    The concrete curves are frozen, slotted, keyword-only dataclasses.
    """

    __slots__ = ()

    @abstractmethod
    def __call__(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """The delay before retry ``retry_number``.

        Args:
            retry_number: 1 for the first retry.
            rng: randomness for random curves; deterministic curves ignore it.

        Returns:
            Seconds: never negative, never NaN, at most the curve's cap.

        Raises:
            TypeError: when ``retry_number`` is not an int.
            ValueError: when ``retry_number`` is below 1.
        """

    @abstractmethod
    def bounds(self, retry_number: int) -> tuple[float, float]:
        """The smallest and largest delay the curve can give before retry ``retry_number``.

        Raises:
            TypeError: when ``retry_number`` is not an int.
            ValueError: when ``retry_number`` is below 1.
        """

    @property
    def is_random(self) -> bool:
        """Whether the curve draws from its ``rng`` (and so has its own jitter)."""
        return False

    def delays(self, *, rng: random.Random | None = None) -> Iterator[float]:
        """The endless sequence of delays for retries 1, 2, 3, ...

        Random curves draw each value from the previous one, so a seeded ``rng``
        gives the same sequence every time.
        """
        for retry_number in count(1):
            yield self(retry_number, rng=rng)

    def __add__(self, other: object) -> Backoff:
        """A curve whose delays are the sum of both curves' delays."""
        if not isinstance(other, Backoff):
            return NotImplemented
        left = self.parts if isinstance(self, Sum) else (self,)
        right = other.parts if isinstance(other, Sum) else (other,)
        return Sum(parts=(*left, *right))


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Constant(Backoff):
    """The same delay before every retry.

    Args:
        delay: seconds (or a ``timedelta``) before each retry.

    Raises:
        ConfigurationError: when ``delay`` is negative, NaN or infinite.
    """

    delay: float

    def __init__(self, *, delay: float | timedelta = 1.0) -> None:
        object.__setattr__(self, "delay", _duration(delay, name="delay"))

    def __call__(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """``delay``, whatever the retry number."""
        check_retry_number(retry_number)
        return self.delay

    def bounds(self, retry_number: int) -> tuple[float, float]:
        """``(delay, delay)``."""
        value = self(retry_number)
        return value, value


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Exponential(Backoff):
    """``initial * factor ** (n - 1)``, clamped to ``cap``.

    Args:
        initial: the first delay, in seconds or as a ``timedelta``.
        factor: the growth per retry; at least 1 (a smaller factor would shrink delays).
        cap: the largest delay; unbounded by default.

    Raises:
        ConfigurationError: naming the invalid argument.
    """

    initial: float
    factor: float
    cap: float

    def __init__(
        self,
        *,
        initial: float | timedelta = 1.0,
        factor: float = 2.0,
        cap: float | timedelta = math.inf,
    ) -> None:
        object.__setattr__(self, "initial", _duration(initial, name="initial"))
        object.__setattr__(
            self, "factor", _number(factor, name="factor", minimum=1.0, inclusive=True)
        )
        object.__setattr__(self, "cap", _capped(self.initial, cap))

    def __call__(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """``initial * factor ** (retry_number - 1)``, at most ``cap``."""
        if type(retry_number) is not int or retry_number < 1:
            check_retry_number(retry_number)  # raises, naming what is wrong
        return _power(self.initial, self.factor, retry_number, self.cap)

    def bounds(self, retry_number: int) -> tuple[float, float]:
        """``(d, d)``: the curve is deterministic."""
        value = self(retry_number)
        return value, value


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Linear(Backoff):
    """``initial * (1 + factor * (n - 1))``, clamped to ``cap``: ``initial`` first, then steps.

    Args:
        initial: the first delay, in seconds or as a ``timedelta``.
        factor: each retry adds ``factor * initial``; must be above 0.
        cap: the largest delay; unbounded by default.

    Raises:
        ConfigurationError: naming the invalid argument.
    """

    initial: float
    factor: float
    cap: float

    def __init__(
        self,
        *,
        initial: float | timedelta = 1.0,
        factor: float = 1.0,
        cap: float | timedelta = math.inf,
    ) -> None:
        object.__setattr__(self, "initial", _duration(initial, name="initial"))
        object.__setattr__(
            self, "factor", _number(factor, name="factor", minimum=0.0, inclusive=False)
        )
        object.__setattr__(self, "cap", _capped(self.initial, cap))

    def __call__(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """``initial * (1 + factor * (retry_number - 1))``, at most ``cap``."""
        check_retry_number(retry_number)
        if self.initial == 0.0:
            return 0.0  # 0 * inf would be NaN once the product overflows
        # Float products overflow to inf (never raise), and min() then clamps to cap.
        return min(self.cap, self.initial * (1.0 + self.factor * _steps(retry_number)))

    def bounds(self, retry_number: int) -> tuple[float, float]:
        """``(d, d)``: the curve is deterministic."""
        value = self(retry_number)
        return value, value


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Fibonacci(Backoff):
    """``initial * F(n)`` with F = 1, 1, 2, 3, 5, 8 ..., clamped to ``cap``.

    Args:
        initial: the first delay, in seconds or as a ``timedelta``.
        cap: the largest delay; unbounded by default.

    Raises:
        ConfigurationError: naming the invalid argument.
    """

    initial: float
    cap: float

    def __init__(
        self, *, initial: float | timedelta = 1.0, cap: float | timedelta = math.inf
    ) -> None:
        object.__setattr__(self, "initial", _duration(initial, name="initial"))
        object.__setattr__(self, "cap", _capped(self.initial, cap))

    def __call__(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """``initial * F(retry_number)``, at most ``cap``."""
        check_retry_number(retry_number)
        if retry_number <= _FIB_EXACT:
            return min(self.cap, self.initial * _FIB[retry_number - 1])
        # Binet: F(n) = phi**n / sqrt(5), to well below float precision for n > 78.
        log_fib = (_steps(retry_number) + 1.0) * _LOG_PHI - _LOG_SQRT5
        return _grow(self.initial, log_fib, self.cap)

    def bounds(self, retry_number: int) -> tuple[float, float]:
        """``(d, d)``: the curve is deterministic."""
        value = self(retry_number)
        return value, value


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class DecorrelatedJitter(Backoff):
    """AWS "decorrelated jitter": ``next = min(cap, uniform(initial, previous * 3))``.

    The chain starts from ``previous = initial``, so the first delay lies in
    ``[initial, 3 * initial]``. The randomness is the jitter: a policy applies no
    other jitter on top of this curve.

    Args:
        initial: the smallest delay, in seconds or as a ``timedelta``.
        cap: the largest delay (finite, at least ``initial``).

    Raises:
        ConfigurationError: naming the invalid argument.
    """

    initial: float
    cap: float

    def __init__(self, *, initial: float | timedelta = 1.0, cap: float | timedelta) -> None:
        object.__setattr__(self, "initial", _duration(initial, name="initial"))
        # Finite, because each step multiplies the previous delay by 3.
        object.__setattr__(self, "cap", _capped(self.initial, cap, allow_inf=False))

    @property
    def is_random(self) -> bool:
        """Always true: every delay is drawn from the ``rng``."""
        return True

    def _next(self, previous: float, rng: random.Random) -> float:
        r = rng.random()
        # initial + r * (3 * previous - initial), ordered so that no term can be inf * 0.
        value = self.initial + _DECORRELATED_GROWTH * (r * previous) - r * self.initial
        return min(self.cap, max(self.initial, value))

    def _saturation(self) -> int:
        """The first retry number whose upper bound is the cap."""
        if self.initial in (0.0, self.cap):
            return 1
        # A difference of logs: cap / initial overflows for a subnormal initial.
        log_ratio = math.log(self.cap) - math.log(self.initial)
        return math.ceil(log_ratio / math.log(_DECORRELATED_GROWTH))

    def __call__(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """A draw for retry ``retry_number``, simulating the chain from retry 1.

        With the same seeded ``rng`` this equals the ``retry_number``-th value of
        `delays`, up to the point where the chain has settled at the cap (a few
        dozen retries past it); later retry numbers reuse that settled draw, so
        retry 10,000 costs no more than retry 50.
        """
        check_retry_number(retry_number)
        source = _random if rng is None else rng
        steps = min(retry_number, self._saturation() + _DECORRELATED_SETTLE)
        value = self.initial
        for _ in range(steps):
            value = self._next(value, source)
        return value

    def bounds(self, retry_number: int) -> tuple[float, float]:
        """``(initial, min(cap, initial * 3 ** retry_number))``."""
        check_retry_number(retry_number)
        high = _power(
            self.initial, _DECORRELATED_GROWTH, min(retry_number, _HUGE_RETRY) + 1, self.cap
        )
        return self.initial, max(self.initial, high)

    def delays(self, *, rng: random.Random | None = None) -> Iterator[float]:
        """The chain itself: each delay is drawn from the previous one."""
        source = _random if rng is None else rng
        value = self.initial
        while True:
            value = self._next(value, source)
            yield value


@dataclass(frozen=True, slots=True, kw_only=True)
class Sum(Backoff):
    """The sum of several curves; built with ``+`` rather than directly.

    Args:
        parts: the curves to add, at least one.

    Raises:
        ConfigurationError: when ``parts`` is empty or holds something that is not a curve.
    """

    parts: tuple[Backoff, ...]

    def __post_init__(self) -> None:
        if not self.parts or not all(isinstance(p, Backoff) for p in self.parts):
            raise ConfigurationError(
                f"parts must be a non-empty tuple of Backoff curves, got {self.parts!r}",
                key="parts",
                value=self.parts,
            )

    @property
    def is_random(self) -> bool:
        """Whether any part draws from its ``rng``."""
        return any(part.is_random for part in self.parts)

    def __call__(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """The sum of every part's delay for ``retry_number``."""
        return math.fsum(part(retry_number, rng=rng) for part in self.parts)

    def bounds(self, retry_number: int) -> tuple[float, float]:
        """The sums of the parts' lower and upper bounds."""
        pairs = [part.bounds(retry_number) for part in self.parts]
        return math.fsum(p[0] for p in pairs), math.fsum(p[1] for p in pairs)

    def delays(self, *, rng: random.Random | None = None) -> Iterator[float]:
        """Each part's own sequence, summed step by step."""
        for values in zip(*(part.delays(rng=rng) for part in self.parts), strict=True):
            yield math.fsum(values)


def _jitter_args(mode: Jitter | str, ratio: float) -> Jitter:
    try:
        jitter = Jitter(mode)
    except ValueError:
        valid = ", ".join(m.value for m in Jitter)
        raise ConfigurationError(
            f"jitter must be one of {valid}, got {mode!r}", key="jitter", value=mode
        ) from None
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
        raise ConfigurationError(
            f"jitter_ratio must be a number in [0, 1], got {ratio!r}",
            key="jitter_ratio",
            value=ratio,
        )
    return jitter


def _jitter_range(delay: float, jitter: Jitter, ratio: float) -> tuple[float, float]:
    """`jitter_bounds` for arguments already validated."""
    if math.isinf(delay):
        return delay, delay
    if jitter is Jitter.PROPORTIONAL:
        spread = delay * ratio  # d ± d*r rounds better than d * (1 ± r): 900 -> 990.0
        return max(0.0, delay - spread), delay + spread
    if jitter is Jitter.FULL:
        return 0.0, delay
    if jitter is Jitter.EQUAL:
        return delay / 2.0, delay
    return delay, delay


def _draw(low: float, high: float, rng: random.Random | None) -> float:
    """A uniform draw in ``[low, high]``; no draw at all when the range is one point."""
    if low == high:
        return low
    r = (_random if rng is None else rng).random()
    # Clamping absorbs the last-bit rounding of low + span * r, so results stay inside.
    return min(high, max(low, low + (high - low) * r))


def jitter_bounds(delay: float, *, mode: Jitter | str, ratio: float = 0.1) -> tuple[float, float]:
    """The smallest and largest value `apply_jitter` can return for ``delay``.

    Args:
        delay: non-negative seconds.
        mode: the jitter mode (a `Jitter` or its string value).
        ratio: the ± fraction for ``PROPORTIONAL``, in [0, 1].

    Returns:
        ``(low, high)``; ``(inf, inf)`` for an infinite delay, which cannot be spread.

    Raises:
        ConfigurationError: when ``mode`` is unknown or ``ratio`` is outside [0, 1].
    """
    return _jitter_range(delay, _jitter_args(mode, ratio), ratio)


def apply_jitter(
    delay: float,
    *,
    mode: Jitter | str,
    ratio: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Spread ``delay`` at random according to ``mode``.

    Args:
        delay: non-negative seconds.
        mode: the jitter mode (a `Jitter` or its string value).
        ratio: the ± fraction for ``PROPORTIONAL``, in [0, 1].
        rng: the randomness; a module-level generator when omitted.

    Returns:
        A value within `jitter_bounds` of ``delay``; ``delay`` itself for ``NONE``
        or an infinite delay.

    Raises:
        ConfigurationError: when ``mode`` is unknown or ``ratio`` is outside [0, 1].
    """
    low, high = jitter_bounds(delay, mode=mode, ratio=ratio)
    return _draw(low, high, rng)

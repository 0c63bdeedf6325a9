"""Retry policies: how many retries, how far apart, and when to stop calling a dependency.

A `RetryPolicy` is a frozen value validated once, at construction. Nothing
mutates it; every adaptation (`RetryPolicy.scaled`, `RetryPolicy.with_max_retries`,
``dataclasses.replace``) returns a new policy, so the shared `DEFAULT_POLICIES`
cannot drift while a process runs.

`default_policy` gives the policy of each of the 18 failure types. Its first
delay is the taxonomy's ``profile(type).retry_delay_seconds`` and it retries
exactly when the taxonomy recommends a retry: one table, not two.

A policy never signals "give up" through its delay: `RetryPolicy.delay` is a
delay, always; whether a retry may happen at all is `RetryPolicy.allows`.

See ``docs/policies.md``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from resilience.backoff import (
    Backoff,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Fibonacci,
    Jitter,
    Linear,
    Strategy,
    _draw,
    _duration,
    _jitter_range,
    _number,
)
from resilience.errors import ConfigurationError
from resilience.taxonomy import FailureType, profile

if TYPE_CHECKING:
    import random
    from datetime import timedelta

__all__ = [
    "DEFAULT_POLICIES",
    "BreakerSettings",
    "Jitter",
    "RetryPolicy",
    "Strategy",
    "default_policy",
]

_E = TypeVar("_E", bound=StrEnum)


def _member(enum: type[_E], value: object, *, key: str) -> _E:
    """``value`` as a member of ``enum`` (its string value is accepted too)."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass  # reported below with the valid values
    valid = ", ".join(repr(m.value) for m in enum)
    raise ConfigurationError(f"{key} must be one of {valid}, got {value!r}", key=key, value=value)


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], *, prefix: str = "") -> None:
    """Reject unknown keys, suggesting the closest known one."""
    for name in data:
        if name in allowed:
            continue
        key = f"{prefix}{name}"
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
        known = ", ".join(allowed)
        raise ConfigurationError(
            f"unknown setting {key!r}{hint} (known: {known})", key=key, value=data[name]
        )


def _mapping(data: object, *, key: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{key} must be a mapping, got {data!r}", key=key, value=data)
    return data


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class BreakerSettings:
    """When a dependency's circuit breaker opens and how long it stays open.

    Args:
        failure_threshold: failures that open the breaker (at least 1).
        reset_timeout: seconds (or a ``timedelta``) the breaker stays open before it
            admits a probe call; above 0.

    Raises:
        ConfigurationError: naming the invalid field and its value.
    """

    failure_threshold: int
    reset_timeout: float

    def __init__(self, *, failure_threshold: int, reset_timeout: float | timedelta) -> None:
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise ConfigurationError(
                f"failure_threshold must be an int >= 1, got {failure_threshold!r}",
                key="failure_threshold",
                value=failure_threshold,
            )
        seconds = _duration(reset_timeout, name="reset_timeout")
        if seconds == 0.0:
            raise ConfigurationError(
                f"reset_timeout must be above 0 seconds, got {reset_timeout!r}",
                key="reset_timeout",
                value=reset_timeout,
            )
        object.__setattr__(self, "failure_threshold", failure_threshold)
        object.__setattr__(self, "reset_timeout", seconds)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready mapping."""
        return {"failure_threshold": self.failure_threshold, "reset_timeout": self.reset_timeout}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakerSettings:
        """Settings from a mapping such as `to_dict` returns.

        Raises:
            ConfigurationError: for an unknown key (with a suggestion), a missing
                key or an invalid value.
        """
        data = _mapping(data, key="breaker")
        _check_keys(data, _BREAKER_KEYS, prefix="breaker.")
        missing = [name for name in _BREAKER_KEYS if name not in data]
        if missing:
            raise ConfigurationError(
                f"breaker settings need {', '.join(missing)}", key=f"breaker.{missing[0]}"
            )
        return cls(failure_threshold=data["failure_threshold"], reset_timeout=data["reset_timeout"])


_BREAKER_KEYS = ("failure_threshold", "reset_timeout")


@lru_cache(maxsize=256)
def _curve(strategy: Strategy, initial: float, factor: float, cap: float) -> Backoff:
    """The curve of a policy; cached because policies are values and share curves."""
    if strategy is Strategy.EXPONENTIAL:
        return Exponential(initial=initial, factor=factor, cap=cap)
    if strategy is Strategy.LINEAR:
        return Linear(initial=initial, factor=factor, cap=cap)
    if strategy is Strategy.FIBONACCI:
        return Fibonacci(initial=initial, cap=cap)
    if strategy is Strategy.DECORRELATED:
        return DecorrelatedJitter(initial=initial, cap=cap)
    return Constant(delay=min(initial, cap))


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RetryPolicy:
    """How many times to retry, how long to wait before each retry, and the breaker to use.

    The delay before retry ``n`` (1-based) is the strategy's curve, limited to
    ``max_delay``, spread by ``jitter``, and limited to ``max_delay`` again, so no
    delay ever exceeds ``max_delay`` (even with jitter) and retries that reach the
    cap still spread out below it.

    Args:
        max_retries: retries after the first attempt (0: never retry).
        initial_delay: seconds (or a ``timedelta``) before the first retry.
        strategy: the curve's shape (a `Strategy` or its string value).
        factor: growth: ``initial * factor ** (n - 1)`` for exponential (at least 1),
            ``initial * (1 + factor * (n - 1))`` for linear; above 0, unused by the
            other strategies.
        max_delay: the largest delay, in seconds or as a ``timedelta``; at least
            ``initial_delay``.
        jitter: how delays are spread (a `Jitter` or its string value).
            ``DECORRELATED`` curves are random already and ignore it.
        jitter_ratio: the ± fraction of ``PROPORTIONAL`` jitter, in [0, 1].
        breaker: the circuit breaker for the failing dependency, if any.

    Raises:
        ConfigurationError: naming the invalid field (``.key``) and its value.
    """

    max_retries: int
    initial_delay: float
    strategy: Strategy
    factor: float
    max_delay: float
    jitter: Jitter
    jitter_ratio: float
    breaker: BreakerSettings | None

    def __init__(
        self,
        *,
        max_retries: int = 3,
        initial_delay: float | timedelta = 1.0,
        strategy: Strategy | str = Strategy.EXPONENTIAL,
        factor: float = 2.0,
        max_delay: float | timedelta = 3600.0,
        jitter: Jitter | str = Jitter.PROPORTIONAL,
        jitter_ratio: float = 0.1,
        breaker: BreakerSettings | None = None,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(
                f"max_retries must be an int >= 0, got {max_retries!r}",
                key="max_retries",
                value=max_retries,
            )
        initial = _duration(initial_delay, name="initial_delay")
        cap = _duration(max_delay, name="max_delay")
        if cap < initial:
            raise ConfigurationError(
                f"max_delay must be >= initial_delay ({initial!r}), got {max_delay!r}",
                key="max_delay",
                value=max_delay,
            )
        shape = _member(Strategy, strategy, key="strategy")
        growth = _number(
            factor,
            name="factor",
            minimum=1.0 if shape is Strategy.EXPONENTIAL else 0.0,
            inclusive=shape is Strategy.EXPONENTIAL,
        )
        mode = _member(Jitter, jitter, key="jitter")
        if (
            isinstance(jitter_ratio, bool)
            or not isinstance(jitter_ratio, int | float)
            or not 0.0 <= jitter_ratio <= 1.0
        ):
            raise ConfigurationError(
                f"jitter_ratio must be a number in [0, 1], got {jitter_ratio!r}",
                key="jitter_ratio",
                value=jitter_ratio,
            )
        if breaker is not None and not isinstance(breaker, BreakerSettings):
            raise ConfigurationError(
                f"breaker must be BreakerSettings or None, got {breaker!r}",
                key="breaker",
                value=breaker,
            )
        object.__setattr__(self, "max_retries", max_retries)
        object.__setattr__(self, "initial_delay", initial)
        object.__setattr__(self, "strategy", shape)
        object.__setattr__(self, "factor", growth)
        object.__setattr__(self, "max_delay", cap)
        object.__setattr__(self, "jitter", mode)
        object.__setattr__(self, "jitter_ratio", float(jitter_ratio))
        object.__setattr__(self, "breaker", breaker)

    @property
    def curve(self) -> Backoff:
        """The backoff curve of ``strategy``, capped at ``max_delay``, before jitter."""
        return _curve(self.strategy, self.initial_delay, self.factor, self.max_delay)

    def allows(self, retry_number: int) -> bool:
        """Whether retry ``retry_number`` (1-based) is within ``max_retries``."""
        return 1 <= retry_number <= self.max_retries

    def delay(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``retry_number``.

        The curve is defined past ``max_retries`` too; use `allows` to decide
        whether to retry at all.

        Args:
            retry_number: 1 for the first retry.
            rng: randomness for jitter; a seeded ``random.Random`` makes it
                reproducible. A module-level generator when omitted.

        Returns:
            Seconds in ``[0, max_delay]``, within `envelope`, never NaN.

        Raises:
            TypeError: when ``retry_number`` is not an int.
            ValueError: when ``retry_number`` is below 1.
        """
        curve = self.curve
        base = curve(retry_number, rng=rng)
        if curve.is_random or self.jitter is Jitter.NONE:
            return base
        low, high = _jitter_range(base, self.jitter, self.jitter_ratio)
        return min(self.max_delay, _draw(low, high, rng))

    def envelope(self, retry_number: int) -> tuple[float, float]:
        """The smallest and largest delay `delay` can return for ``retry_number``.

        Raises:
            TypeError: when ``retry_number`` is not an int.
            ValueError: when ``retry_number`` is below 1.
        """
        curve = self.curve
        if curve.is_random:
            return curve.bounds(retry_number)
        base = curve(retry_number)
        low, high = _jitter_range(base, self.jitter, self.jitter_ratio)
        return min(low, self.max_delay), min(high, self.max_delay)

    def schedule(self, *, rng: random.Random | None = None) -> tuple[float, ...]:
        """The delays before retries 1 to ``max_retries``, in order.

        Args:
            rng: randomness for jitter; a seeded generator gives the same schedule
                every time. Decorrelated curves draw each delay from the previous one.
        """
        if self.curve.is_random:
            values = self.curve.delays(rng=rng)
            return tuple(next(values) for _ in range(self.max_retries))
        return tuple(self.delay(n, rng=rng) for n in range(1, self.max_retries + 1))

    def scaled(self, multiplier: float) -> RetryPolicy:
        """A new policy whose delays are ``multiplier`` times this one's.

        ``initial_delay`` is multiplied; ``max_delay`` is kept, and the new initial
        delay is clamped to it. This policy is not changed.

        Args:
            multiplier: a finite number >= 0 (0 makes every retry immediate).

        Raises:
            ConfigurationError: when ``multiplier`` is negative, NaN or infinite.
        """
        factor = _number(multiplier, name="multiplier", minimum=0.0, inclusive=True)
        return replace(self, initial_delay=min(self.max_delay, self.initial_delay * factor))

    def with_max_retries(self, max_retries: int) -> RetryPolicy:
        """A new policy that retries ``max_retries`` times; this one is not changed.

        Raises:
            ConfigurationError: when ``max_retries`` is negative or not an int.
        """
        return replace(self, max_retries=max_retries)

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-ready mapping that `from_dict` reads back."""
        return {
            "max_retries": self.max_retries,
            "initial_delay": self.initial_delay,
            "strategy": self.strategy.value,
            "factor": self.factor,
            "max_delay": self.max_delay,
            "jitter": self.jitter.value,
            "jitter_ratio": self.jitter_ratio,
            "breaker": None if self.breaker is None else self.breaker.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetryPolicy:
        """A policy from a mapping (parsed JSON, a settings dict); missing keys take defaults.

        Args:
            data: keys among the field names; ``breaker`` is ``None`` or a mapping
                of `BreakerSettings` fields.

        Raises:
            ConfigurationError: for an unknown key (naming it, with a "did you mean"
                suggestion) or an invalid value.
        """
        data = _mapping(data, key="policy")
        _check_keys(data, _POLICY_KEYS)
        options = dict(data)
        breaker = options.pop("breaker", None)
        if breaker is not None:
            options["breaker"] = BreakerSettings.from_dict(breaker)
        return cls(**options)


_POLICY_KEYS = (
    "max_retries",
    "initial_delay",
    "strategy",
    "factor",
    "max_delay",
    "jitter",
    "jitter_ratio",
    "breaker",
)


def _retrying(
    failure_type: FailureType,
    *,
    max_retries: int,
    strategy: Strategy = Strategy.EXPONENTIAL,
    factor: float = 2.0,
    max_delay: float = 3600.0,
    breaker: tuple[int, float] | None = None,
) -> RetryPolicy:
    return RetryPolicy(
        max_retries=max_retries,
        # The first delay lives in the taxonomy's profile table only.
        initial_delay=profile(failure_type).retry_delay_seconds,
        strategy=strategy,
        factor=factor,
        max_delay=max_delay,
        jitter=Jitter.PROPORTIONAL,
        jitter_ratio=0.1,
        breaker=None
        if breaker is None
        else BreakerSettings(failure_threshold=breaker[0], reset_timeout=breaker[1]),
    )


_NO_RETRY = RetryPolicy(
    max_retries=0, initial_delay=0.0, strategy=Strategy.CONSTANT, jitter=Jitter.NONE
)

_T = FailureType

DEFAULT_POLICIES: Mapping[FailureType, RetryPolicy] = MappingProxyType(
    {
        _T.TRANSIENT_DATABASE: _retrying(_T.TRANSIENT_DATABASE, max_retries=5, breaker=(10, 300)),
        _T.TRANSIENT_NETWORK: _retrying(
            _T.TRANSIENT_NETWORK, max_retries=3, max_delay=1800, breaker=(5, 600)
        ),
        # Pool slots, descriptors and locks free up within minutes and are local to the
        # worker, so a short curve and no breaker (there is no remote dependency to shield).
        _T.TRANSIENT_RESOURCE: _retrying(_T.TRANSIENT_RESOURCE, max_retries=3, max_delay=600),
        # A Retry-After from the provider wins over this curve; the engine applies it.
        _T.TRANSIENT_RATE_LIMIT: _retrying(
            _T.TRANSIENT_RATE_LIMIT,
            max_retries=3,
            strategy=Strategy.LINEAR,
            factor=1.5,
            breaker=(3, 900),
        ),
        _T.PERMANENT_VALIDATION: _NO_RETRY,
        _T.PERMANENT_NOT_FOUND: _NO_RETRY,
        _T.PERMANENT_PERMISSION: _NO_RETRY,
        _T.PERMANENT_LOGIC: _NO_RETRY,
        _T.CONFIG_MISSING_SETTING: _NO_RETRY,
        _T.CONFIG_INVALID_SETTING: _NO_RETRY,
        _T.CONFIG_MISSING_SERVICE: _NO_RETRY,
        _T.EXTERNAL_API_DOWN: _retrying(
            _T.EXTERNAL_API_DOWN,
            max_retries=2,
            strategy=Strategy.FIBONACCI,
            max_delay=7200,
            breaker=(3, 1800),
        ),
        _T.EXTERNAL_API_ERROR: _NO_RETRY,
        _T.EXTERNAL_TIMEOUT: _retrying(
            _T.EXTERNAL_TIMEOUT, max_retries=2, factor=3.0, breaker=(5, 600)
        ),
        # One retry on a fresh worker (the pool replaces the killed child); a second OOM
        # means the task itself needs more memory than a worker has.
        _T.SYSTEM_OUT_OF_MEMORY: _retrying(
            _T.SYSTEM_OUT_OF_MEMORY, max_retries=1, strategy=Strategy.CONSTANT
        ),
        _T.SYSTEM_DISK_FULL: _NO_RETRY,
        # A crash is usually one bad host or a one-off kill; two retries land elsewhere.
        _T.SYSTEM_WORKER_CRASH: _retrying(_T.SYSTEM_WORKER_CRASH, max_retries=2),
        # Unidentified: one retry covers a blip, then a human should classify it.
        _T.UNKNOWN: _retrying(_T.UNKNOWN, max_retries=1, strategy=Strategy.CONSTANT),
    }
)


def default_policy(failure_type: FailureType) -> RetryPolicy:
    """The retry policy for ``failure_type``.

    Args:
        failure_type: one of the 18 `FailureType` members (or its string value).

    Returns:
        A frozen policy shared by every caller; adapt it with `RetryPolicy.scaled`,
        `RetryPolicy.with_max_retries` or ``dataclasses.replace``.

    Raises:
        ConfigurationError: when ``failure_type`` is not a failure type.
    """
    return DEFAULT_POLICIES[_member(FailureType, failure_type, key="failure_type")]


def _check_defaults() -> None:
    for failure_type in FailureType:
        policy = DEFAULT_POLICIES.get(failure_type)
        prof = profile(failure_type)
        if (
            policy is None
            or (policy.max_retries > 0) != prof.retry_recommended
            or policy.initial_delay != prof.retry_delay_seconds
        ):  # pragma: no cover - guards edits to the tables
            raise RuntimeError(f"default policy of {failure_type} disagrees with its profile")
    if not math.isfinite(max(p.max_delay for p in DEFAULT_POLICIES.values())):
        raise RuntimeError("a default policy has no finite cap")  # pragma: no cover


_check_defaults()

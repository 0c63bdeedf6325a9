"""The invariants every retry policy's delays must hold, as one assertion.

`assert_backoff_invariants` is part of `pytest_taskchaos.strategies`, which
re-exports it (and whose name its ``__module__`` carries); it lives here, without
hypothesis, only to keep that module short. Import it from
`pytest_taskchaos.strategies`.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from resilience import Strategy

if TYPE_CHECKING:
    from resilience import RetryPolicy

__all__ = ["assert_backoff_invariants"]


def _fail(policy: RetryPolicy, message: str) -> None:
    __tracebackhide__ = True
    raise AssertionError(f"{message}\n  policy: {policy!r}")


def assert_backoff_invariants(policy: RetryPolicy, *, rng: random.Random | None = None) -> None:
    """Check the invariants every retry policy's delays must hold.

    For retries 1 to ``max_retries``: the schedule has one delay per retry; every
    delay is a number in ``[0, max_delay]`` and within ``policy.envelope(n)``; the
    envelope's upper bound never decreases (except for decorrelated curves, whose
    bounds are not a curve); the total is at most ``max_retries * max_delay``; and
    the same seed gives the same schedule.

    Args:
        policy: the policy to check.
        rng: the source of the seed for the schedule's jitter; seed 0 when omitted.
            One value is drawn from it, so a seeded generator checks the same draw.

    Raises:
        AssertionError: naming the retry number, the values and the policy.
    """
    __tracebackhide__ = True
    seed = 0 if rng is None else rng.getrandbits(64)
    schedule = policy.schedule(rng=random.Random(seed))
    if len(schedule) != policy.max_retries:
        _fail(policy, f"schedule has {len(schedule)} delays for max_retries={policy.max_retries}")
    previous_high = -math.inf
    monotone = policy.strategy is not Strategy.DECORRELATED
    for retry_number, delay in enumerate(schedule, start=1):
        low, high = policy.envelope(retry_number)
        if math.isnan(delay) or not 0.0 <= delay <= policy.max_delay:
            _fail(
                policy,
                f"retry {retry_number}: delay {delay!r} outside "
                f"[0, max_delay={policy.max_delay!r}]",
            )
        if not low <= delay <= high:
            _fail(
                policy,
                f"retry {retry_number}: delay {delay!r} outside its envelope [{low!r}, {high!r}]",
            )
        if monotone and high < previous_high:
            _fail(
                policy,
                f"retry {retry_number}: envelope upper bound {high!r} fell below "
                f"{previous_high!r} of retry {retry_number - 1}",
            )
        previous_high = high
    total = math.fsum(schedule)
    if total > policy.max_retries * policy.max_delay:
        _fail(
            policy,
            f"total delay {total!r} exceeds max_retries * max_delay = "
            f"{policy.max_retries * policy.max_delay!r}",
        )
    again = policy.schedule(rng=random.Random(seed))
    if again != schedule:
        retry_number = next(
            i for i, (a, b) in enumerate(zip(schedule, again, strict=True), 1) if a != b
        )
        _fail(
            policy,
            f"retry {retry_number}: seed {seed} gave {schedule[retry_number - 1]!r} then "
            f"{again[retry_number - 1]!r}; the schedule is not deterministic per seed",
        )


# Tracebacks, help() and the export test name the module users import it from.
assert_backoff_invariants.__module__ = "pytest_taskchaos.strategies"

"""Benchmark: the cost of ``resilience.retry`` next to tenacity, stamina and backoff.

Run ``python bench/retry.py``. Two cases, each implementation measured in the same
run with ``timeit`` (several repeats, median per call):

* success path: the wrapped function returns at once; overhead above a bare call.
* fail once, then succeed, with zero delay: overhead above the same two calls
  written by hand (``try: f() except ValueError: f()``).

The anchors are configured to do no waiting at all, so only their bookkeeping is
measured: tenacity with ``wait_none()`` and ``sleep=lambda s: None``; stamina with
``wait_initial=0, wait_max=0, wait_jitter=0`` and its on-retry instrumentation
(structlog/logging output) switched off; backoff with ``backoff.constant``,
``interval=0``, ``jitter=None``, ``max_time=None``. stamina and backoff still call
``time.sleep(0)`` between attempts (~85 µs on this kind of machine), which is not
their bookkeeping, so ``time.sleep`` is replaced by a no-op while the fail-once case
runs (ours never calls sleep for a zero delay, so the patch does not touch it).
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# `--quick` runs a few iterations only: a smoke test that the bench still works, not a measurement.
QUICK = "--quick" in sys.argv[1:]
REPEAT = 2 if QUICK else 15
TARGET_SECONDS = 0.002 if QUICK else 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One measured implementation of one case."""

    case: str
    name: str
    median_us: float
    baseline_us: float

    @property
    def overhead_us(self) -> float:
        """Median cost above the baseline of the case."""
        return self.median_us - self.baseline_us


def per_call_us(fn: Callable[[], object]) -> float:
    """Median microseconds per call of ``fn`` over ``REPEAT`` timed batches."""
    timer = timeit.Timer(fn)
    number = 1
    while timer.timeit(number) < TARGET_SECONDS / 4:
        number *= 4
    number = max(1, int(number * 4 * TARGET_SECONDS / max(timer.timeit(number), 1e-9) / 4))
    samples = timer.repeat(repeat=REPEAT, number=number)
    return statistics.median(samples) / number * 1e6


def success_case() -> list[tuple[str, Callable[[], object]]]:
    """Implementations of a call that succeeds at once."""
    import backoff
    import stamina
    import tenacity

    from resilience.retrying import retry

    def bare() -> int:
        return 1

    return [
        ("bare call", bare),
        ("ours retry()  (classify-driven)", retry()(bare)),
        ("ours retry(on=ValueError)", retry(on=ValueError)(bare)),
        (
            "tenacity",
            tenacity.retry(
                retry=tenacity.retry_if_exception_type(ValueError),
                wait=tenacity.wait_none(),
                stop=tenacity.stop_after_attempt(4),
                sleep=lambda _s: None,
                reraise=True,
            )(bare),
        ),
        (
            "stamina",
            stamina.retry(on=ValueError, attempts=4, wait_initial=0, wait_max=0, wait_jitter=0)(
                bare
            ),
        ),
        (
            "backoff",
            backoff.on_exception(
                backoff.constant, ValueError, interval=0, max_tries=4, max_time=None, jitter=None
            )(bare),
        ),
    ]


def fail_once_case() -> list[tuple[str, Callable[[], object]]]:
    """Implementations of a call that fails once, then succeeds, with no wait."""
    import backoff
    import stamina
    import tenacity

    from resilience.clock import FakeClock
    from resilience.policy import RetryPolicy
    from resilience.retrying import retry

    def flaky_factory(error: type[Exception]) -> Callable[[], int]:
        failed = [False]

        def flaky() -> int:
            if failed[0]:
                failed[0] = False
                return 1
            failed[0] = True
            raise error

        return flaky

    by_hand_flaky = flaky_factory(ValueError)

    def by_hand() -> int:
        try:
            return by_hand_flaky()
        except ValueError:
            return by_hand_flaky()

    zero = RetryPolicy(max_retries=3, initial_delay=0, max_delay=0, jitter="none")
    # The default path classifies the failure and computes the type's jittered
    # curve (60 s and up); a FakeClock takes the "sleep" so nothing waits.
    fake = FakeClock()
    return [
        ("by hand (try/except)", by_hand),
        (
            "ours on=ValueError, zero policy",
            retry(on=ValueError, policy=zero)(flaky_factory(ValueError)),
        ),
        ("ours classify + zero policy", retry(policy=zero)(flaky_factory(ConnectionResetError))),
        (
            "ours classify + default policy, FakeClock",
            retry(clock=fake)(flaky_factory(ConnectionResetError)),
        ),
        (
            "tenacity",
            tenacity.retry(
                retry=tenacity.retry_if_exception_type(ValueError),
                wait=tenacity.wait_none(),
                stop=tenacity.stop_after_attempt(4),
                sleep=lambda _s: None,
                reraise=True,
            )(flaky_factory(ValueError)),
        ),
        (
            "stamina",
            stamina.retry(on=ValueError, attempts=4, wait_initial=0, wait_max=0, wait_jitter=0)(
                flaky_factory(ValueError)
            ),
        ),
        (
            "backoff",
            backoff.on_exception(
                backoff.constant, ValueError, interval=0, max_tries=4, max_time=None, jitter=None
            )(flaky_factory(ValueError)),
        ),
    ]


def measure(case: str, impls: list[tuple[str, Callable[[], object]]]) -> list[Row]:
    """Time every implementation of ``case``; the first one is the baseline."""
    timings = [(name, per_call_us(fn)) for name, fn in impls]
    baseline = timings[0][1]
    return [Row(case=case, name=name, median_us=us, baseline_us=baseline) for name, us in timings]


def print_table(rows: list[Row]) -> None:
    """Print one case's rows with overhead and ratios against each of ours."""
    ours = [row for row in rows if row.name.startswith("ours")]
    reference = ours[0]
    print(f"\n## {rows[0].case}  (baseline: {rows[0].name}, {rows[0].median_us:.3f} µs)")
    print(
        f"{'implementation':<44} {'median µs':>10} {'overhead µs':>12} "
        f"{'÷ ours (total)':>15} {'÷ ours (overhead)':>18}"
    )
    for row in rows:
        total_ratio = row.median_us / reference.median_us
        overhead_ratio = row.overhead_us / max(reference.overhead_us, 1e-3)
        print(
            f"{row.name:<44} {row.median_us:>10.3f} {row.overhead_us:>12.3f} "
            f"{total_ratio:>14.1f}x {overhead_ratio:>17.1f}x"
        )
    print(f"(ratios against '{reference.name}'; overhead ratio floors ours at 0.001 µs)")


def main() -> int:
    """Run both cases and print the tables."""
    started = time.perf_counter()
    print(f"Python {sys.version.split()[0]}; medians of {REPEAT} timeit repeats per row.")
    print(
        "Anchors configured not to wait: tenacity wait_none() + sleep=no-op; stamina "
        "wait_initial=wait_max=wait_jitter=0, on-retry hooks off; backoff constant "
        "interval=0, jitter=None, max_time=None; time.sleep patched to a no-op during "
        "the fail-once case (stamina and backoff call time.sleep(0) otherwise)."
    )
    import stamina.instrumentation

    # stamina logs every scheduled retry by default; printing is not retry logic.
    stamina.instrumentation.set_on_retry_hooks([])
    print_table(measure("success path", success_case()))
    real_sleep = time.sleep
    time.sleep = lambda _s: None
    try:
        print_table(measure("fail once, then succeed (zero delay)", fail_once_case()))
    finally:
        time.sleep = real_sleep
    print(f"\ntotal run {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

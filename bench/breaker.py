"""Benchmark: the cost of a call through a closed circuit breaker, and concurrency.

Run: ``python bench/breaker.py``. Measures, in one run, a bare call of a trivial
function beside the same call through our ``CircuitBreaker`` (method and
decorator, with and without a failure-rate window), ``pybreaker`` and
``purgatory`` (its sync decorator). Each figure is the median over 7 repeats of
100,000 calls. Then 8 threads each sleep 50 ms inside one breaker: a breaker that
holds a lock across the call serialises them (8 x 50 ms).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import timeit
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from resilience.breaker import CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import Callable

# `--quick` runs a few iterations only: a smoke test that the bench still works, not a measurement.
QUICK = "--quick" in sys.argv[1:]
NUMBER = 1_000 if QUICK else 100_000
REPEAT = 2 if QUICK else 7
THREADS = 8
NAP = 0.05


def trivial() -> int:
    """The protected function: as cheap as a call gets."""
    return 1


def per_call_us(stmt: str, namespace: dict[str, object]) -> float:
    """Median microseconds per execution of ``stmt`` over REPEAT runs of NUMBER."""
    runs = timeit.repeat(stmt, number=NUMBER, repeat=REPEAT, globals=namespace)
    return statistics.median(runs) / NUMBER * 1e6


def overhead_table() -> list[tuple[str, float]]:
    """Per-call medians of every contender, bare call first."""
    import pybreaker
    from purgatory import SyncCircuitBreakerFactory

    ours = CircuitBreaker("bench")
    windowed = CircuitBreaker("bench-window", failure_rate_threshold=0.5, window=100)
    theirs = pybreaker.CircuitBreaker(name="bench")
    purgatory_factory = SyncCircuitBreakerFactory()
    namespace: dict[str, object] = {
        "f": trivial,
        "ours_call": ours.call,
        "ours_decorated": ours(trivial),
        "ours_windowed": windowed.call,
        "pybreaker_call": theirs.call,
        "purgatory_decorated": purgatory_factory("bench")(trivial),
    }
    cases = [
        ("bare call f()", "f()"),
        ("ours: breaker.call(f)", "ours_call(f)"),
        ("ours: @breaker", "ours_decorated()"),
        ("ours: call(f), failure-rate window", "ours_windowed(f)"),
        ("pybreaker: CircuitBreaker().call(f)", "pybreaker_call(f)"),
        ("purgatory: @factory('name') (sync)", "purgatory_decorated()"),
    ]
    return [(label, per_call_us(stmt, namespace)) for label, stmt in cases]


def wall_time_of(guarded_call: Callable[[Callable[[], None]], object]) -> float:
    """Seconds for THREADS threads to each sleep NAP inside ``guarded_call``."""
    start = threading.Barrier(THREADS)

    def worker() -> None:
        start.wait()
        guarded_call(lambda: time.sleep(NAP))

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(worker) for _ in range(THREADS)]:
            future.result()
    return time.perf_counter() - began


def main() -> None:
    """Print both tables."""
    import pybreaker

    rows = overhead_table()
    bare = rows[0][1]
    ours = rows[1][1]
    print(f"Per-call cost, median of {REPEAT} x {NUMBER:,} calls (lower is better)")
    print(f"{'contender':<40} {'µs/call':>9} {'overhead µs':>12} {'vs ours':>8}")
    for label, cost in rows:
        overhead = cost - bare
        ratio = "" if label.startswith("bare") else f"{overhead / (ours - bare):7.1f}x"
        print(f"{label:<40} {cost:9.3f} {overhead:12.3f} {ratio:>8}")

    print()
    print(f"{THREADS} threads each sleeping {NAP * 1000:.0f} ms inside one breaker (wall time)")
    ours_breaker = CircuitBreaker("bench-concurrency")
    theirs = pybreaker.CircuitBreaker(name="bench-concurrency")
    ideal = NAP
    for label, guarded in (("ours", ours_breaker.call), ("pybreaker", theirs.call)):
        wall = wall_time_of(guarded)
        print(f"{label:<12} {wall * 1000:8.1f} ms   ({wall / ideal:4.1f}x one call)")


if __name__ == "__main__":
    main()

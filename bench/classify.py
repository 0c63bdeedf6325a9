"""Benchmark: ``resilience.taxonomy.classify`` against the original's naive classifier.

Run ``python bench/classify.py``. Builds the labelled corpus from
``tests/resilience/corpus`` (local resources only: a closed port, a local HTTP
server thread, SQLite files), then times both classifiers on the same
exceptions in the same run and prints medians, ratios and accuracy.

The naive baseline is the original system's approach: a dict from builtin
exception types to failure types, matched first-hit in dict order with
``isinstance``, then about twenty regexes tried in turn over ``str(exc)``.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from resilience.taxonomy import FailureType, classify

T = FailureType
# `--quick` runs a few iterations only: a smoke test that the bench still works, not a measurement.
QUICK = "--quick" in sys.argv[1:]
_REPEAT = 3 if QUICK else 300

# The original's table: builtin types only, first isinstance hit wins.
_NAIVE_TYPES: dict[type[BaseException], FailureType] = {
    ConnectionError: T.TRANSIENT_NETWORK,
    TimeoutError: T.EXTERNAL_TIMEOUT,
    MemoryError: T.SYSTEM_OUT_OF_MEMORY,
    PermissionError: T.PERMANENT_PERMISSION,
    FileNotFoundError: T.PERMANENT_NOT_FOUND,
    OSError: T.TRANSIENT_RESOURCE,
    ValueError: T.PERMANENT_VALIDATION,
    KeyError: T.PERMANENT_VALIDATION,
    TypeError: T.PERMANENT_LOGIC,
    AttributeError: T.PERMANENT_LOGIC,
    ZeroDivisionError: T.PERMANENT_LOGIC,
    ImportError: T.CONFIG_MISSING_SERVICE,
}
_NAIVE_PATTERNS: list[tuple[re.Pattern[str], FailureType, float]] = [
    (re.compile(pattern), failure_type, confidence)
    for pattern, failure_type, confidence in [
        (r"429", T.TRANSIENT_RATE_LIMIT, 0.85),
        (r"rate limit", T.TRANSIENT_RATE_LIMIT, 0.9),
        (r"too many requests", T.TRANSIENT_RATE_LIMIT, 0.9),
        (r"503", T.EXTERNAL_API_DOWN, 0.85),
        (r"service unavailable", T.EXTERNAL_API_DOWN, 0.85),
        (r"502|bad gateway", T.EXTERNAL_API_DOWN, 0.8),
        (r"504|gateway timeout", T.EXTERNAL_TIMEOUT, 0.8),
        (r"connection timeout", T.TRANSIENT_NETWORK, 0.85),
        (r"connection refused", T.TRANSIENT_NETWORK, 0.9),
        (r"connection reset", T.TRANSIENT_NETWORK, 0.9),
        (r"name resolution failed", T.TRANSIENT_NETWORK, 0.85),
        (r"deadlock", T.TRANSIENT_DATABASE, 0.9),
        (r"lock wait timeout", T.TRANSIENT_DATABASE, 0.9),
        (r"database is locked", T.TRANSIENT_DATABASE, 0.9),
        (r"out of memory", T.SYSTEM_OUT_OF_MEMORY, 0.9),
        (r"no space left", T.SYSTEM_DISK_FULL, 0.9),
        (r"permission denied|forbidden", T.PERMANENT_PERMISSION, 0.85),
        (r"unauthorized|401", T.PERMANENT_PERMISSION, 0.85),
        (r"not found|does not exist|404", T.PERMANENT_NOT_FOUND, 0.8),
        (r"invalid|validation", T.PERMANENT_VALIDATION, 0.75),
        (r"timeout|timed out", T.EXTERNAL_TIMEOUT, 0.75),
    ]
]


def naive_classify(exc: BaseException) -> FailureType:
    """The original's classifier: type dict (first isinstance hit), then regexes over str()."""
    failure_type, confidence = T.UNKNOWN, 0.0
    exact = _NAIVE_TYPES.get(type(exc))
    if exact is not None:
        failure_type, confidence = exact, 0.8
    else:
        for cls, mapped in _NAIVE_TYPES.items():
            if isinstance(exc, cls):
                failure_type, confidence = mapped, 0.8 * 0.8
                break
    try:
        message = str(exc).lower()
    except Exception:
        message = ""
    for pattern, mapped, pattern_confidence in _NAIVE_PATTERNS:
        if pattern.search(message):
            if pattern_confidence > confidence:
                failure_type = mapped
            break
    return failure_type


def _per_call_us(function: Any, exc: BaseException) -> float:
    function(exc)
    start = time.perf_counter_ns()
    for _ in range(_REPEAT):
        function(exc)
    return (time.perf_counter_ns() - start) / _REPEAT / 1000


def _load_corpus() -> list[Any]:
    corpus_dir = Path(__file__).resolve().parent.parent / "tests" / "resilience" / "corpus"
    sys.path.insert(0, str(corpus_dir))
    import taxonomy_corpus  # type: ignore[import-not-found]

    with (
        tempfile.TemporaryDirectory() as tmpdir,
        taxonomy_corpus.corpus_environment(tmpdir) as env,
    ):
        cases: list[Any] = taxonomy_corpus.build_corpus(env)
    return cases


def _needs_message(evidence: str) -> bool:
    return "message pattern" in evidence or "message text" in evidence


def main() -> None:
    """Build the corpus, time both classifiers, print the table."""
    started = time.perf_counter()
    cases = _load_corpus()
    built = time.perf_counter() - started
    groups: dict[str, list[Any]] = {
        "decided by class": [case for case in cases if case.by_class],
        "needs message": [case for case in cases if _needs_message(classify(case.exc).evidence)],
        "whole corpus": cases,
    }
    rows = []
    for name, members in groups.items():
        ours = [_per_call_us(classify, case.exc) for case in members]
        naive = [_per_call_us(naive_classify, case.exc) for case in members]
        rows.append(
            (name, len(members), statistics.median(ours), statistics.median(naive), max(ours))
        )
    ours_right = sum(classify(case.exc).failure_type is case.expected for case in cases)
    naive_right = sum(naive_classify(case.exc) is case.expected for case in cases)
    hard = [case for case in cases if case.hard]
    ours_hard = sum(classify(case.exc).failure_type is case.expected for case in hard)
    naive_hard = sum(naive_classify(case.exc) is case.expected for case in hard)

    print(
        f"taxonomy classify benchmark: {len(cases)} corpus exceptions "
        f"({sum(case.live for case in cases)} triggered live, built in {built:.1f}s), "
        f"{_REPEAT} calls each, Python {sys.version.split()[0]}"
    )
    print()
    header = (
        f"{'group':<18} {'n':>4}  {'ours median µs':>15}  {'naive median µs':>16}  "
        f"{'ours/naive':>10}  {'ours max µs':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, count, ours_median, naive_median, ours_max in rows:
        print(
            f"{name:<18} {count:>4}  {ours_median:>15.2f}  {naive_median:>16.2f}  "
            f"{ours_median / naive_median:>9.2f}x  {ours_max:>11.1f}"
        )
    print()
    print(f"{'accuracy':<18} {'n':>4}  {'ours':>15}  {'naive':>16}")
    print(
        f"{'whole corpus':<18} {len(cases):>4}  {ours_right / len(cases):>15.1%}  "
        f"{naive_right / len(cases):>16.1%}"
    )
    print(
        f"{'hard cases':<18} {len(hard):>4}  {ours_hard / len(hard):>15.1%}  "
        f"{naive_hard / len(hard):>16.1%}"
    )
    print(f"\ntotal run {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()

"""Smoke tests: every benchmark script still runs (with --quick) and compares against its anchors.

These assert that the comparison is made, never how fast anything is: speed is
measured by running the scripts without --quick, not in the test suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    ("script", "anchors"),
    [
        ("classify.py", ["decided by class", "needs message", "naive"]),
        ("retry.py", ["tenacity", "stamina", "backoff", "fail once"]),
        ("breaker.py", ["pybreaker", "purgatory", "8 threads"]),
        ("idempotency.py", ["SET NX PX + SET PX", "INSERT + UPDATE", "@idempotent", "memory"]),
        ("dead_letter.py", ["store.add", "Bulk retry", "memory", "SQLite"]),
        (
            "celery_tasks.py",
            ["stock Task", "fast request stack", "ResilientTask", "SET NX PX + SET PX"],
        ),
        ("simulation.py", ["Simulation", "tracer floor", "celery worker", "attempts/s"]),
    ],
)
def test_bench_runs_and_reports_its_anchors(script: str, anchors: list[str]) -> None:
    """The script exits 0 and prints a row for us and for each anchor it compares with."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for anchor in anchors:
        assert anchor in result.stdout, f"{script} printed no {anchor!r} row:\n{result.stdout}"

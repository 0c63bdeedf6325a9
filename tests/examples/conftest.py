"""Fixtures for the example app: a seeded database and a task context on a fake clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from examples.taskapp.demo import DEMO_NOW, SeedSummary, seed
from examples.taskapp.tasks import TaskContext
from resilience.clock import FakeClock

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A fresh SQLite file path (not created)."""
    return str(tmp_path / "taskapp.sqlite3")


@pytest.fixture
def demo(db_path: str) -> SeedSummary:
    """The demo data seeded into ``db_path``."""
    return seed(db_path)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at the demo's "now"."""
    return FakeClock(start=DEMO_NOW.timestamp())


@pytest.fixture
def fanned_out() -> list[tuple[int, str]]:
    """The report mails a context fanned out, in order."""
    return []


@pytest.fixture
def ctx(
    db_path: str, demo: SeedSummary, clock: FakeClock, fanned_out: list[tuple[int, str]]
) -> TaskContext:
    """A task context over the seeded database, recording fanned-out mails."""
    del demo  # seeded for its side effect
    return TaskContext(
        db_path=db_path,
        clock=clock,
        enqueue_report_mail=lambda report_id, recipient: fanned_out.append((report_id, recipient)),
    )

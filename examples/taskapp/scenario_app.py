"""A zero-argument factory of the example app for scenario files: :func:`make_scenario_app`.

Scenario files name their app as ``module:attribute``; the runner calls a factory
once per run, so every run starts from a fresh database::

    app: examples.taskapp.scenario_app:make_scenario_app

The database is a new SQLite file in a temporary directory (in ``/dev/shm`` when
there is one) (removed when the app
is garbage-collected or the process exits), seeded with :data:`ROWS` rows of each
kind whose ids run from 0, so a workload can address them with ``"{n}"`` or
``"{key}"``:

- tickets ``0 .. ROWS-1``: open, overdue by two hours, with a valid assignee;
- jobs ``0 .. ROWS-1``: completed, so ``autoclose_job`` closes them;
- PPM schedules ``0 .. ROWS-1``: active;
- ticket :data:`BAD_ADDRESS_TICKET`: open and overdue, assigned to an address the
  mail API rejects (a permanent failure).

Broker, result backend and ``resilience`` store are in memory: no server is needed.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from examples.taskapp.app import make_app
from examples.taskapp.db import JobStatus, TicketStatus, init_db, iso, transaction
from examples.taskapp.demo import DEMO_NOW

__all__ = ["BAD_ADDRESS_TICKET", "ROWS", "make_scenario_app", "seed_rows"]

ROWS: Final = 1000
"""How many tickets, completed jobs and PPM schedules the database holds (ids from 0)."""

BAD_ADDRESS_TICKET: Final = 999_999
"""The id of the ticket whose assignee address the mail API rejects."""


def seed_rows(db_path: str | Path, *, rows: int = ROWS) -> None:
    """Create the tables and the numbered rows the scenario workloads address.

    Args:
        db_path: a new SQLite file.
        rows: how many tickets, jobs and PPM schedules (ids ``0 .. rows-1``).
    """
    init_db(db_path)
    created = iso(DEMO_NOW - timedelta(days=3))
    due = iso(DEMO_NOW - timedelta(hours=2))
    with transaction(db_path) as conn:
        conn.executemany(
            "INSERT INTO tickets (id, subject, status, due_at, assignee_email) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (i, f"Ticket {i}", TicketStatus.OPEN, due, f"tech{i % 17}@example.com")
                for i in range(rows)
            ],
        )
        conn.execute(
            "INSERT INTO tickets (id, subject, status, due_at, assignee_email) "
            "VALUES (?, 'Broken window', ?, ?, 'nobody')",
            (BAD_ADDRESS_TICKET, TicketStatus.OPEN, due),
        )
        conn.executemany(
            "INSERT INTO jobs (id, kind, title, status, created_at) "
            "VALUES (?, 'reactive', ?, ?, ?)",
            [(i, f"Job {i}", JobStatus.COMPLETED, created) for i in range(rows)],
        )
        conn.executemany(
            "INSERT INTO ppm_schedules (id, asset, title, frequency_days, active) "
            "VALUES (?, ?, ?, 30, 1)",
            [(i, f"Asset {i}", f"Monthly check {i}") for i in range(rows)],
        )


def make_scenario_app() -> Any:
    """Build the example app on a fresh, seeded database in a temporary directory.

    Returns:
        The ``celery.Celery`` app (``memory://`` broker and store); its database
        directory is removed when the app is garbage-collected or at exit.
    """
    # A memory-backed directory where there is one: every task commits, and fsync on
    # a disk costs more than the whole simulated run.
    shm = Path("/dev/shm")  # noqa: S108 -- a private mkdtemp directory inside it
    folder = tempfile.mkdtemp(prefix="taskchaos-", dir=shm if shm.is_dir() else None)
    db_path = Path(folder) / "taskapp.sqlite3"
    seed_rows(db_path)
    app = make_app(broker_url="memory://", store_url="memory://", db_path=db_path)
    weakref.finalize(app, shutil.rmtree, folder, ignore_errors=True)
    return app

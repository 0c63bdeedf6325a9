"""A small facility-management app whose six background tasks run on ``resilience``.

- :mod:`examples.taskapp.db`: the SQLite domain (jobs, tickets, escalations, PPM
  schedules, emails sent, reports);
- :mod:`examples.taskapp.demo`: deterministic demo data (:func:`~examples.taskapp.demo.seed`);
- :mod:`examples.taskapp.external`: fake mail and report-rendering services;
- :mod:`examples.taskapp.tasks`: the six tasks as plain functions, and their options;
- :mod:`examples.taskapp.app`: the Celery app (imports Celery; nothing else here does).
"""

from __future__ import annotations

"""pytest_taskchaos: chaos-test Celery tasks in deterministic virtual time.

The plugin itself lives in :mod:`pytest_taskchaos.plugin` (entry point
``taskchaos``); it stays inert in projects that do not use it.
"""

from __future__ import annotations

__all__: list[str] = []

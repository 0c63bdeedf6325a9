"""The ``taskchaos`` pytest plugin (entry point ``pytest11``).

Inert until used: this module holds hooks, options and fixtures only and imports
nothing heavy at import time, because pytest loads it in every run of every
project that has the package installed. Disable it with ``-p no:taskchaos``.
"""

from __future__ import annotations

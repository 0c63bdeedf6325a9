"""Example applications built on ``resilience``; not part of the distributed packages."""

from __future__ import annotations

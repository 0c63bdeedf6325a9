"""Shared test configuration."""

from __future__ import annotations

pytest_plugins = ["pytester"]

# The taxonomy corpus builders are data modules imported by the corpus test and
# the classify benchmark, not test modules (they import each other by name).
collect_ignore = ["resilience/corpus"]

"""Tests for the taskchaos pytest plugin's registration."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def test_plugin_is_registered_through_its_entry_point(pytester: pytest.Pytester) -> None:
    """Installing the package registers the plugin as 'taskchaos' in every pytest run."""
    pytester.makepyfile(
        """
        def test_registered(pytestconfig):
            import pytest_taskchaos.plugin as plugin
            assert pytestconfig.pluginmanager.get_plugin("taskchaos") is plugin
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    """'-p no:taskchaos' switches the plugin off."""
    pytester.makepyfile(
        """
        def test_absent(pytestconfig):
            assert pytestconfig.pluginmanager.get_plugin("taskchaos") is None
        """
    )
    pytester.runpytest_subprocess("-p", "no:taskchaos").assert_outcomes(passed=1)


def test_plugin_module_imports_nothing_heavy() -> None:
    """Loading the plugin imports neither celery nor hypothesis nor resilience's extras."""
    code = (
        "import sys, pytest_taskchaos.plugin\n"
        "heavy = {'celery', 'hypothesis', 'kombu', 'redis', 'psycopg', 'freezegun'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_plugin_uses_only_the_public_resilience_api() -> None:
    """No module of pytest_taskchaos imports a private (underscored) part of resilience."""
    import ast
    from pathlib import Path

    import pytest_taskchaos

    offenders = []
    for path in Path(pytest_taskchaos.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resilience"):
                names = [node.module or "", *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("resilience")]
            else:
                continue
            parts = [part for name in names for part in name.split(".")]
            if any(part.startswith("_") for part in parts):
                offenders.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []

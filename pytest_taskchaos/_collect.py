"""pytest collection of scenario files: ``pytest scenarios/`` runs each scenario as a test.

The plugin's ``pytest_collect_file`` hook hands every file to
:func:`collect_scenario_file`, which claims the YAML files that are scenario
files and leaves every other file (CI configs, docker-compose files) alone. A
claimed file becomes a :class:`ScenarioFile` collecting one :class:`ScenarioItem`
per scenario, with node ids such as ``scenarios/mail-outage.yaml::mail-outage``.

Which files are scenario files: ``*.yaml`` and ``*.yml`` files matching one of
the ini ``chaos_scenarios`` patterns (default ``scenarios/*.yaml scenarios/*.yml``,
that is, the YAML files directly inside any directory named ``scenarios``). A
pattern matches the trailing parts of a file's path, relative to the rootdir;
a pattern starting with ``/`` is anchored at the rootdir
(``/scenarios/*.yaml`` claims ``<rootdir>/scenarios/x.yaml`` only).

The seed of a run: the session seed when one is given (``--chaos-seed``,
``TASKCHAOS_SEED`` or ini ``chaos_seed``), else the scenario's ``seed:``, else 0;
so a plain ``pytest scenarios/`` is reproducible, and a failure prints the line
that re-runs it.

Importing this module is cheap: the scenario loader is imported when a file is
collected, Celery and the runner only when an item runs.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from pytest_taskchaos.runner import ScenarioResult
    from pytest_taskchaos.scenario import Scenario

__all__ = [
    "DEFAULT_PATTERNS",
    "ScenarioFailed",
    "ScenarioFile",
    "ScenarioItem",
    "collect_scenario_file",
    "is_scenario_path",
]

DEFAULT_PATTERNS: Final = ("scenarios/*.yaml", "scenarios/*.yml")
"""The ini ``chaos_scenarios`` default: YAML files directly inside a ``scenarios`` directory."""

_SUFFIXES: Final = frozenset({".yaml", ".yml"})


def _patterns(config: pytest.Config) -> tuple[str, ...]:
    """The ini ``chaos_scenarios`` patterns, or the defaults when the key is unset or unknown."""
    try:
        raw: object = config.getini("chaos_scenarios")
    except ValueError:  # the plugin that declares the key is not loaded
        return DEFAULT_PATTERNS
    items = raw.split() if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    found = tuple(str(item) for item in items if str(item).strip())
    return found or DEFAULT_PATTERNS


def is_scenario_path(
    path: Path, *, rootdir: Path, patterns: Iterable[str] = DEFAULT_PATTERNS
) -> bool:
    """Whether ``path`` is a scenario file by the ``chaos_scenarios`` patterns.

    >>> root = Path("/repo")
    >>> is_scenario_path(root / "scenarios" / "outage.yaml", rootdir=root)
    True
    >>> is_scenario_path(root / ".github" / "workflows" / "ci.yml", rootdir=root)
    False
    >>> is_scenario_path(root / "tests" / "scenarios" / "x.yml", rootdir=root,
    ...                  patterns=["/scenarios/*.yml"])
    False

    Args:
        path: the file.
        rootdir: pytest's rootdir; patterns match the path relative to it (the
            absolute path for a file outside it).
        patterns: glob patterns (``*`` stays within one path part); a pattern
            matches the path's trailing parts, or, starting with ``/``, the whole
            path relative to ``rootdir``.

    Returns:
        ``True`` for a ``*.yaml`` / ``*.yml`` file some pattern matches.
    """
    if path.suffix not in _SUFFIXES:
        return False
    try:
        parts = path.resolve().relative_to(rootdir.resolve()).parts
    except ValueError:
        parts = path.resolve().parts
    for pattern in patterns:
        anchored = pattern.startswith("/")
        wanted = PurePosixPath(pattern.lstrip("/")).parts
        if not wanted or len(wanted) > len(parts) or (anchored and len(wanted) != len(parts)):
            continue
        tail = parts[len(parts) - len(wanted) :]
        if all(fnmatchcase(part, want) for part, want in zip(tail, wanted, strict=True)):
            return True
    return False


def collect_scenario_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """The plugin's ``pytest_collect_file``: a :class:`ScenarioFile` for a scenario file.

    Args:
        file_path: the file pytest offers.
        parent: the collector it belongs to.

    Returns:
        The file's collector, or ``None`` for any other file.
    """
    config = parent.config
    if not is_scenario_path(file_path, rootdir=config.rootpath, patterns=_patterns(config)):
        return None
    made: ScenarioFile = ScenarioFile.from_parent(parent, path=file_path)
    return made


def _shown(path: Path, config: pytest.Config) -> str:
    """``path`` as messages show it: relative to the rootdir, with ``/``."""
    try:
        return path.relative_to(config.rootpath).as_posix()
    except ValueError:
        return str(path)


class ScenarioFile(pytest.File):
    """A scenario file: one :class:`ScenarioItem` per scenario in it.

    An invalid file is a collection error whose message is the loader's
    ``file:line:column: key.path: message`` for every mistake.
    """

    def collect(self) -> Iterable[ScenarioItem]:
        """Load the file and yield its scenarios as items.

        Yields:
            One item per scenario, in file order.

        Raises:
            CollectError: the file is not a valid scenario file.
        """
        from pytest_taskchaos.scenario import ScenarioError, load_scenarios_text  # noqa: PLC0415

        source = _shown(self.path, self.config)
        try:
            text = self.path.read_text(encoding="utf-8")
            scenarios = load_scenarios_text(text, source=source)
        except ScenarioError as error:
            raise self.CollectError(str(error)) from None
        except UnicodeDecodeError as error:
            raise self.CollectError(f"{source}: not UTF-8 text ({error.reason})") from None
        for scenario in scenarios:
            yield ScenarioItem.from_parent(self, name=scenario.name, scenario=scenario)


class ScenarioFailed(Exception):
    """A scenario ran and some of its expectations did not hold.

    Args:
        result: the run's result.
        rerun: the command that re-runs the scenario with the same seed.

    Attributes:
        result: the run's result.
        rerun: the command that re-runs the scenario with the same seed.
    """

    def __init__(self, result: ScenarioResult, rerun: str) -> None:
        super().__init__(f"scenario {result.scenario.name!r} failed with seed {result.seed}")
        self.result = result
        self.rerun = rerun


_INT: Final = re.compile(r"\s*(?:0[xob])?\d+\s*", re.IGNORECASE)


def _given_seed(config: pytest.Config) -> int | None:
    """The session seed when the user gave one (option, environment or ini), else ``None``."""
    given: object = config.getoption("chaos_seed", default=None)
    if given is None:
        given = os.environ.get("TASKCHAOS_SEED") or None
    if given is None:
        try:
            given = str(config.getini("chaos_seed")) or None
        except ValueError:  # the plugin that declares the key is not loaded
            given = None
    if given is None:
        return None
    from pytest_taskchaos.plugin import _STATE_KEY  # noqa: PLC0415 -- the plugin's own state

    state = config.stash.get(_STATE_KEY, None)
    if state is not None:
        # The plugin settled it (``last``, xdist workers, validation).
        return int(state.seed)
    text = str(given)
    if not _INT.fullmatch(text):
        msg = f"chaos seed must be an integer, got {text!r}"
        raise pytest.UsageError(msg)
    return int(text.strip(), 0)


class ScenarioItem(pytest.Item):
    """One scenario, run in virtual time by :func:`~pytest_taskchaos.runner.run_scenario`.

    Args:
        scenario: the loaded scenario.
        **kwargs: what ``pytest.Item`` takes (``name``, ``parent``).

    Attributes:
        scenario: the scenario this item runs.
        result: the run's result, once it ran.
    """

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.result: ScenarioResult | None = None
        # ``-k mail`` selects scenarios by tag as well as by name.
        self.extra_keyword_matches.update(scenario.tags)

    def seed(self) -> int:
        """The seed this run uses: the session's if given, else the scenario's, else 0."""
        given = _given_seed(self.config)
        if given is not None:
            return given
        return self.scenario.seed if self.scenario.seed is not None else 0

    def rerun_line(self, seed: int) -> str:
        """The command that re-runs this scenario with ``seed``."""
        return f"re-run: pytest '{self.nodeid}' --chaos-seed={seed}"

    def runtest(self) -> None:
        """Run the scenario and check its expectations.

        Raises:
            ScenarioFailed: some expectation did not hold.
        """
        from pytest_taskchaos.runner import run_scenario  # noqa: PLC0415 -- imports Celery

        seed = self.seed()
        self.user_properties.append(("seed", seed))
        result = run_scenario(self.scenario, seed=seed)
        self.result = result
        self.user_properties.append(("fingerprint", result.fingerprint))
        if not result.passed:
            raise ScenarioFailed(result, self.rerun_line(seed))

    def repr_failure(
        self,
        excinfo: ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | TerminalRepr:
        """Each failed expectation with expected and measured values, then the re-run line.

        Args:
            excinfo: what the run raised.
            style: pytest's traceback style, for errors other than failed expectations.

        Returns:
            The text pytest prints for this failure.
        """
        from resilience.errors import ConfigurationError  # noqa: PLC0415

        error = excinfo.value
        if isinstance(error, ScenarioFailed):
            return _failure_text(self.scenario, error.result, error.rerun)
        if isinstance(error, ConfigurationError):
            return f"scenario {self.scenario.name!r} ({self.scenario.location}) cannot run: {error}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        """The scenario's file, its 0-based line and ``scenario: <name>``."""
        return self.path, self.scenario.line - 1, f"scenario: {self.scenario.name}"


def _failure_text(scenario: Scenario, result: ScenarioResult, rerun: str) -> str:
    failures = result.failures
    lines: list[str] = [
        (
            f"scenario {scenario.name!r} ({scenario.location}) failed with seed {result.seed}: "
            f"{len(failures)} of {len(result.expectations)} expectations did not hold"
        )
    ]
    lines.extend(_described(failures))
    lines.append(_summary(result))
    lines.append(rerun)
    return "\n".join(lines)


def _described(failures: Sequence[Any]) -> list[str]:
    return [
        f"  {failure.name}: expected {failure.expected}, measured {failure.measured}"
        for failure in failures
    ]


def _summary(result: ScenarioResult) -> str:
    measures = result.measures
    return (
        f"run: {measures.get('tasks', 0)} tasks, {measures.get('attempts', 0)} attempts, "
        f"{measures.get('retries', 0)} retries, {measures.get('dlq_total', 0)} dead-lettered, "
        f"{measures.get('virtual_duration', 0.0):.0f}s virtual; fingerprint {result.fingerprint}"
    )

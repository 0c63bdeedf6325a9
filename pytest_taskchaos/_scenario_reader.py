"""Reading scenario files: YAML with positions, and problems located in it.

Private half of :mod:`pytest_taskchaos.scenario`. :func:`read` composes YAML
safely (``yaml.compose`` with the safe loader: no constructor for Python objects
ever runs) and builds plain data from the node tree itself. That records the
line and column of every mapping key and list item, rejects duplicate keys
(PyYAML keeps the last one silently) and rejects every tag that is not plain
data. :class:`Checker` collects problems at those positions, so one pass reports
the mistakes of a whole file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import yaml  # type: ignore[import-untyped, unused-ignore]  # its stubs are optional

from pytest_taskchaos._scenario_fields import did_you_mean, show
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Checker",
    "Document",
    "KeyPath",
    "Problem",
    "format_key_path",
    "read",
]

KeyPath: TypeAlias = tuple[str | int, ...]
"""Where a value sits: mapping keys and list indexes from the document's root."""

_T = TypeVar("_T")


def format_key_path(path: KeyPath) -> str:
    """``("faults", 0, "window")`` as ``"faults[0].window"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# --------------------------------------------------------------------------- reading YAML

_YAML: Final = "tag:yaml.org,2002:"
_MAP: Final = _YAML + "map"
_SEQ: Final = _YAML + "seq"
_MERGE: Final = _YAML + "merge"
_TIMESTAMP: Final = _YAML + "timestamp"
_PLAIN: Final = frozenset(_YAML + name for name in ("str", "int", "float", "bool", "null"))
_PLAIN_DATA: Final = (
    "scenario files hold plain data (strings, numbers, booleans, null, lists, mappings)"
)
# Aliases can make a tiny file expand exponentially ("billion laughs").
_MAX_VALUES: Final = 100_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake: where (1-based line and column) and what is wrong."""

    key_path: KeyPath
    line: int
    column: int
    message: str
    value: object = None


@dataclass(frozen=True, slots=True)
class Document:
    """A file's plain data, the position of each key and list item, reading problems."""

    data: object
    marks: Mapping[KeyPath, tuple[int, int]]
    problems: tuple[Problem, ...]
    rejected: frozenset[KeyPath] = frozenset()


class _TooBig(Exception):
    pass


def _position(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag


class _Reader:
    def __init__(self) -> None:
        self.marks: dict[KeyPath, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.count = 0
        self.active: set[int] = set()
        self.rejected: set[KeyPath] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def reject(self, path: KeyPath, node: Any, message: str) -> None:
        """Report a value that is left out of the data (``None`` in its place)."""
        self.rejected.add(path)
        self.problems.append(Problem(path, *_position(node.start_mark), message))

    def node(self, node: Any, path: KeyPath) -> object:
        self.count += 1
        if self.count > _MAX_VALUES:
            raise _TooBig
        if id(node) in self.active:
            self.reject(path, node, "an alias refers to a value that contains it (a cycle)")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if node.tag != (_MAP if isinstance(node, yaml.MappingNode) else _SEQ):
            self.reject(path, node, f"tag {_tag(node.tag)!r} is not allowed: {_PLAIN_DATA}")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            items: list[object] = []
            for index, child in enumerate(node.value):
                self.marks[(*path, index)] = _position(child.start_mark)
                items.append(self.node(child, (*path, index)))
            return items
        finally:
            self.active.discard(id(node))

    def scalar(self, node: Any, path: KeyPath) -> object:
        if node.tag == _TIMESTAMP:
            # Dates stay text: task arguments travel as JSON, and a task taking a
            # date takes "2025-10-01".
            return str(node.value)
        if node.tag not in _PLAIN:
            self.reject(path, node, f"tag {_tag(node.tag)!r} is not allowed: {_PLAIN_DATA}")
            return None
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, KeyError, TypeError):
            self.reject(path, node, f"{node.value!r} is not a valid {_tag(node.tag)}")
            return None

    def mapping(self, node: Any, path: KeyPath) -> dict[str, object]:
        result: dict[str, object] = {}
        # Merge keys first, so that the mapping's own keys override what they bring.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in reversed(sources):  # the first source wins
                    if not isinstance(source, yaml.MappingNode):
                        self.reject((*path, "<<"), source, "'<<' merges mappings only")
                        continue
                    built = self.node(source, path)
                    result.update(built if isinstance(built, dict) else {})
        first: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            at = _position(key_node.start_mark)
            if not isinstance(key, str):
                self.reject((*path, show(key)), key_node, f"keys must be strings, got {show(key)}")
            elif key in first:
                line, column = first[key]
                message = f"duplicate key {key!r} (first at line {line}, column {column})"
                self.problems.append(Problem((*path, key), *at, message))
            else:
                first[key] = self.marks[(*path, key)] = at
                result[key] = self.node(value_node, (*path, key))
        return result


def _syntax_problem(exc: Exception, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        message = f"invalid YAML: {exc.problem}"
        if exc.context:
            line, column = _position(exc.context_mark)
            message += f" ({exc.context} that starts at line {line}, column {column})"
        return Problem((), *_position(exc.problem_mark), message)
    position = int(getattr(exc, "position", 0))
    column = position - text.rfind("\n", 0, position)
    first = str(exc).splitlines()[0]
    return Problem((), text.count("\n", 0, position) + 1, column, f"invalid YAML: {first}")


def read(text: str) -> Document:
    """Compose ``text`` safely and build its plain data with positions.

    Returns:
        The document; ``data`` is ``None`` for an empty file or a syntax error
        (then ``problems`` says where).
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return Document(None, {}, (_syntax_problem(exc, text),))
    if root is None:
        return Document(None, {}, ())
    reader = _Reader()
    reader.marks[()] = _position(root.start_mark)
    try:
        data = reader.node(root, ())
    except _TooBig:
        message = f"the file expands to more than {_MAX_VALUES} values (through aliases)"
        return Document(None, {}, (Problem((), 1, 1, message),))
    return Document(data, reader.marks, tuple(reader.problems), frozenset(reader.rejected))


class Checker:
    """Collects problems at a document's positions.

    A value the reader rejected (a forbidden tag, a cycle) is ``None`` in the
    data; problems at or below its path are not reported again.
    """

    def __init__(self, document: Document) -> None:
        self.marks = document.marks
        self.read_problems = document.problems
        self.rejected = document.rejected
        self.problems: list[Problem] = []

    def all_problems(self) -> list[Problem]:
        """Every problem, reading and checking, in document order."""
        found = [*self.read_problems, *self.problems]
        return sorted(found, key=lambda problem: (problem.line, problem.column))

    def failed(self, path: KeyPath, since: int) -> bool:
        """Whether a check failed after ``since`` problems, or reading failed under ``path``."""
        return len(self.problems) > since or any(
            problem.key_path[: len(path)] == path for problem in self.read_problems
        )

    def position(self, path: KeyPath) -> tuple[int, int]:
        """The position of ``path``, or of its closest recorded ancestor."""
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, (1, 1))

    def fail(self, path: KeyPath, message: str, value: object = None) -> None:
        """Record a problem at ``path``, unless reading already rejected that value."""
        if not any(path[: len(rejected)] == rejected for rejected in self.rejected):
            self.problems.append(Problem(path, *self.position(path), message, value))

    def locate(self, path: KeyPath, key: str | None) -> KeyPath:
        """The value named by an error's dotted ``key``, at or below ``path``."""
        if not key:
            return path
        parts = tuple(int(part) if part.isdigit() else part for part in key.split("."))
        if (*path, *parts) in self.marks:
            return (*path, *parts)
        for candidate in self.marks:
            if candidate[: len(path)] == path and candidate[-len(parts) :] == parts:
                return candidate
        return path

    def mapping(
        self,
        value: object,
        path: KeyPath,
        *,
        what: str,
        keys: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """``value`` as a mapping, reporting unknown and missing keys (``None``: not one)."""
        if not isinstance(value, dict):
            self.fail(path, f"expected {what}, got {show(value)}", value)
            return None
        for key in value:
            if key not in keys:
                hint = did_you_mean(key, keys)
                message = f"unknown key {key!r}{hint} (valid keys: {', '.join(keys)})"
                self.fail((*path, key), message, value[key])
        for key in required:
            if key not in value:
                self.fail(path, f"missing required key {key!r}")
        return {key: item for key, item in value.items() if key in keys}

    def attempt(self, path: KeyPath, make: Callable[[], _T]) -> _T | None:
        """``make()``, or ``None`` with its ``ConfigurationError`` recorded where its key points."""
        try:
            return make()
        except ConfigurationError as exc:
            self.fail(self.locate(path, exc.key), str(exc), exc.value)
            return None

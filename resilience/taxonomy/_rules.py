"""User classification rules: what they match, how they are validated, how they are removed."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from resilience.errors import ConfigurationError
from resilience.taxonomy._text import qualified_name
from resilience.taxonomy._vocabulary import FailureType

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Matcher", "Rule", "RuleHandle", "make_rule"]

Matcher = type[BaseException] | str | Callable[[BaseException], object]
"""What a rule matches: an exception class, a qualified class name (or glob), or a predicate."""

_GLOB_CHARS = frozenset("*?[")


class _Registry(Protocol):
    def unregister_rule(self, handle: RuleHandle) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One user rule, as registered (normalised and validated).

    Attributes:
        failure_type: the type an exception matching the rule gets.
        match: an exception class (subclasses match), a qualified class name
            (``"myapp.errors.Flaky"``, any class in the MRO; ``*`` globs
            allowed), a predicate ``exc -> bool``, or ``None`` (message only).
        message: a compiled regex searched in the head of ``str(exc)``, or ``None``.
        priority: higher first; user rules always win over built-in ones.
        confidence: the classification's confidence when the rule decides.
        tasks: task names or fnmatch patterns the rule is limited to (empty: all tasks).
        name: shown in the evidence.
        order: registration order, the tie-breaker between equal priorities.
    """

    failure_type: FailureType
    match: Matcher | None = None
    message: re.Pattern[str] | None = None
    priority: int = 0
    confidence: float = 0.95
    tasks: tuple[str, ...] = ()
    name: str = ""
    order: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.failure_type, FailureType):
            raise ConfigurationError(
                f"rule failure_type must be a FailureType, got {self.failure_type!r}",
                key="failure_type",
                value=self.failure_type,
            )
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ConfigurationError(
                f"rule priority must be an int, got {self.priority!r}",
                key="priority",
                value=self.priority,
            )
        if (
            isinstance(self.confidence, bool)
            or not isinstance(self.confidence, int | float)
            or not math.isfinite(self.confidence)
            or not 0.0 <= self.confidence <= 1.0
        ):
            raise ConfigurationError(
                f"rule confidence must be a number within [0, 1], got {self.confidence!r}",
                key="confidence",
                value=self.confidence,
            )
        if self.match is None and self.message is None:
            raise ConfigurationError(
                "a rule needs match= (class, qualified name or predicate) or message= (regex)",
                key="match",
                value=None,
            )
        if not (
            self.match is None
            or isinstance(self.match, str)
            or (isinstance(self.match, type) and issubclass(self.match, BaseException))
            or (callable(self.match) and not isinstance(self.match, type))
        ):
            raise ConfigurationError(
                "rule match must be an exception class, a qualified class name or a "
                f"predicate, got {self.match!r}",
                key="match",
                value=self.match,
            )
        if isinstance(self.match, str) and not self.match.strip():
            raise ConfigurationError(
                "rule match must not be an empty name", key="match", value=self.match
            )

    @property
    def class_bound(self) -> bool:
        """Whether the rule's match depends only on the exception's class (so it is cacheable)."""
        return isinstance(self.match, str | type)

    def matches_class(self, cls: type, names: tuple[str, ...]) -> bool:
        """Whether a class-bound rule matches ``cls`` (whose MRO names are ``names``)."""
        match = self.match
        if isinstance(match, type):
            return issubclass(cls, match)
        if isinstance(match, str):
            if _GLOB_CHARS.isdisjoint(match):
                return match in names
            return any(fnmatch.fnmatchcase(name, match) for name in names)
        return True

    def applies_to_task(self, task_name: str | None) -> bool:
        """Whether the rule's task scope admits ``task_name`` (a scoped rule needs a name)."""
        if not self.tasks:
            return True
        if task_name is None:
            return False
        return any(fnmatch.fnmatchcase(task_name, pattern) for pattern in self.tasks)

    def describe(self) -> str:
        """A short description for the evidence (``user rule 'flaky' (match=..., priority 10)``)."""
        parts = []
        if isinstance(self.match, type):
            parts.append(f"class {qualified_name(self.match)}")
        elif isinstance(self.match, str):
            parts.append(f"name {self.match!r}")
        elif self.match is not None:
            parts.append(f"predicate {getattr(self.match, '__qualname__', 'callable')}")
        if self.message is not None:
            parts.append(f"message /{self.message.pattern[:60]}/")
        if self.tasks:
            parts.append(f"tasks {list(self.tasks)!r}")
        label = f" {self.name!r}" if self.name else ""
        return f"user rule{label} ({', '.join(parts)}, priority {self.priority})"


@dataclass(frozen=True, slots=True, eq=False)
class RuleHandle:
    """Returned by ``register_rule``: unregisters the rule, also as a context manager.

    Attributes:
        rule: the registered rule.
    """

    rule: Rule
    _registry: _Registry = field(repr=False)

    def unregister(self) -> bool:
        """Remove the rule; returns ``False`` if it was already removed."""
        return self._registry.unregister_rule(self)

    def __enter__(self) -> RuleHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unregister()


def _failure_type(value: object) -> FailureType:
    if isinstance(value, FailureType):
        return value
    if isinstance(value, str):
        try:
            return FailureType(value.strip().upper())
        except ValueError:
            pass
    raise ConfigurationError(
        f"unknown failure_type {value!r}; expected one of {', '.join(FailureType)}",
        key="failure_type",
        value=value,
    )


def _message(value: object) -> re.Pattern[str] | None:
    if value is None or isinstance(value, re.Pattern):
        if isinstance(value, re.Pattern) and not isinstance(value.pattern, str):
            raise ConfigurationError("rule message must be a str regex", key="message", value=value)
        return value
    if isinstance(value, str):
        try:
            return re.compile(value, re.IGNORECASE)
        except re.error as error:
            raise ConfigurationError(
                f"rule message is not a valid regex ({error}): {value!r}",
                key="message",
                value=value,
            ) from error
    raise ConfigurationError(
        f"rule message must be a regex string or pattern, got {value!r}", key="message", value=value
    )


def _tasks(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Iterable):
        items = tuple(value)
        if items and all(isinstance(item, str) and item for item in items):
            return items
    raise ConfigurationError(
        f"rule tasks must be task names or fnmatch patterns, got {value!r}",
        key="tasks",
        value=value,
    )


def make_rule(
    *,
    match: Matcher | None,
    message: str | re.Pattern[str] | None,
    failure_type: FailureType | str,
    priority: int,
    confidence: float | None,
    tasks: str | Iterable[str] | None,
    name: str | None,
    order: int,
) -> Rule:
    """Normalise ``register_rule`` arguments into a validated :class:`Rule`.

    Raises:
        ConfigurationError: naming the offending field (``failure_type``, ``message``,
            ``priority``, ``confidence``, ``tasks``, ``match`` or ``name``).
    """
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"rule name must be a str, got {name!r}", key="name", value=name)
    return Rule(
        failure_type=_failure_type(failure_type),
        match=match,
        message=_message(message),
        priority=priority,
        confidence=0.95 if confidence is None else confidence,
        tasks=_tasks(tasks),
        name=name or "",
        order=order,
    )

"""The classifier: walk the MRO, read structured attributes, follow chains, apply context.

Order of evidence for one exception (first decisive one wins):

1. user rules (highest priority first), limited to their tasks;
2. structured probes of the closest known class (errno, SQLSTATE, HTTP status,
   provider code, SQLite code) and its class-scoped refinements;
3. the closest known class in the MRO, or the words of a closer unknown
   class's name, or a message phrase when the class says little;
4. for wrappers and weak verdicts, the exception's cause chain.

Per-class work (MRO names, the closest rule, the name words, the user rules
that can apply) is cached in a bounded dict; the common path is a dict lookup.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from resilience.clock import system_clock
from resilience.errors import ConfigurationError
from resilience.taxonomy._builtin import RULES, ClassRule
from resilience.taxonomy._context import ContextFacts, apply_context
from resilience.taxonomy._patterns import MESSAGE_CONFIDENCE, message_verdict, words_verdict
from resilience.taxonomy._probes import errno_probe, generic_probe, retry_after_of
from resilience.taxonomy._rules import Matcher, Rule, RuleHandle, make_rule
from resilience.taxonomy._text import qualified_name
from resilience.taxonomy._verdict import Subject, Verdict
from resilience.taxonomy._vocabulary import PROFILES, FailureType

if TYPE_CHECKING:
    import re
    from collections.abc import Iterable, Mapping

    from resilience.clock import Clock
    from resilience.taxonomy._classification import Classification
    from resilience.taxonomy._probes import Probe

__all__ = ["Classifier", "classify", "default_classifier", "register_rule"]

_log = logging.getLogger("resilience.taxonomy")

_MAX_DEPTH = 8
_MAX_GROUP_MEMBERS = 32
_MAX_EVIDENCE = 600
# Below this, a verdict is weak: an explicit __cause__ with stronger evidence wins.
_STRONG = 0.8
# A class verdict at or above this is not overridden by class-name words.
_SPECIFIC = 0.85
_UNKNOWN = FailureType.UNKNOWN


class _Plan:
    """What can be decided about an exception class once, before seeing an instance."""

    __slots__ = (
        "class_verdict",
        "defer",
        "errno_gated",
        "links",
        "name",
        "probes",
        "static",
        "user_rules",
        "wait_attribute",
        "words",
    )

    def __init__(self) -> None:
        self.name = ""
        self.class_verdict: Verdict | None = None
        self.words: Verdict | None = None
        self.probes: tuple[Probe, ...] = ()
        self.defer = False
        self.links: tuple[str, ...] = ()
        self.user_rules: tuple[Rule, ...] = ()
        self.static: Classification | None = None
        self.wait_attribute = False
        self.errno_gated = False


class _Call:
    """State of one ``classify`` call: the caller's facts and notes for the evidence."""

    __slots__ = ("facts", "notes", "seen")

    def __init__(self, facts: ContextFacts, seen: set[int]) -> None:
        self.facts = facts
        self.notes: list[str] = []
        self.seen = seen


def _class_verdict(rule: ClassRule, rule_name: str, name: str) -> Verdict | None:
    if rule.failure_type is None:
        return None
    where = rule_name if rule_name == name else f"{rule_name} (base of {name})"
    return Verdict(
        rule.failure_type,
        rule.confidence,
        f"exception class {where}: {rule.note}",
        defer=rule.defer,
        retry=rule.retry,
        exhausted=rule.exhausted,
    )


def _build(verdict: Verdict, facts: ContextFacts | None, notes: list[str]) -> Classification:
    return apply_context(verdict, facts, notes, limit=_MAX_EVIDENCE)


class Classifier:
    """A failure classifier with its own set of user rules.

    The module-level :func:`classify` and :func:`register_rule` use a shared
    default instance; create your own for an isolated rule set (tests, apps
    with several configurations).

    Args:
        clock: where "now" comes from when a Retry-After header holds an HTTP-date
            and the context has no ``now``.
        cache_size: how many exception classes' analyses to keep (the cache is
            dropped when full).

    Raises:
        ConfigurationError: when ``cache_size`` is not a positive int (key ``cache_size``).

    Example:
        >>> from resilience.taxonomy import Classifier, FailureType
        >>> classifier = Classifier()
        >>> classifier.classify(TimeoutError("timed out")).failure_type
        <FailureType.EXTERNAL_TIMEOUT: 'EXTERNAL_TIMEOUT'>
    """

    def __init__(self, *, clock: Clock = system_clock, cache_size: int = 2048) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigurationError(
                f"Classifier cache_size must be a positive int, got {cache_size!r}",
                key="cache_size",
                value=cache_size,
            )
        self._clock = clock
        self._cache_size = cache_size
        self._rules: tuple[Rule, ...] = ()
        self._plans: dict[type, _Plan] = {}
        self._order = 0
        self._no_facts = ContextFacts.of(None, clock)

    # ------------------------------------------------------------------ rules

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The registered user rules, in evaluation order."""
        return self._rules

    def register_rule(
        self,
        *,
        failure_type: FailureType | str,
        match: Matcher | None = None,
        message: str | re.Pattern[str] | None = None,
        priority: int = 0,
        confidence: float | None = None,
        tasks: str | Iterable[str] | None = None,
        name: str | None = None,
    ) -> RuleHandle:
        """Add a rule; user rules are tried before every built-in one.

        Args:
            failure_type: the type to assign (a ``FailureType`` or its name).
            match: an exception class (subclasses match), a qualified class name
                such as ``"myapp.errors.Flaky"`` (matched along the MRO; ``*``
                globs allowed) or a predicate ``exc -> bool``. A predicate that
                raises is skipped and the error noted in the evidence.
            message: a regex (case-insensitive when given as a string) searched in
                the first 4 KB of ``str(exc)``; with ``match``, both must hold.
            priority: higher runs first; ties go to the earlier registration.
            confidence: the confidence to report (default 0.95).
            tasks: limit the rule to these task names or fnmatch patterns
                (``["billing.*"]``); a scoped rule never applies without a
                ``task_name`` in the context.
            name: shown in the evidence.

        Returns:
            A handle whose ``unregister()`` removes the rule (also a context manager).

        Raises:
            ConfigurationError: for an unknown failure type, a bad regex, a
                non-int priority, a confidence outside [0, 1], bad tasks or
                neither ``match`` nor ``message``; ``.key`` names the field.
        """
        self._order += 1
        rule = make_rule(
            match=match,
            message=message,
            failure_type=failure_type,
            priority=priority,
            confidence=confidence,
            tasks=tasks,
            name=name,
            order=self._order,
        )
        self._rules = tuple(sorted((*self._rules, rule), key=lambda r: (-r.priority, r.order)))
        self._plans = {}
        return RuleHandle(rule, self)

    def unregister_rule(self, handle: RuleHandle) -> bool:
        """Remove the rule behind ``handle``; ``False`` if it is not registered here."""
        remaining = tuple(rule for rule in self._rules if rule is not handle.rule)
        if len(remaining) == len(self._rules):
            return False
        self._rules = remaining
        self._plans = {}
        return True

    # ------------------------------------------------------------------ classify

    def classify(
        self, exc: BaseException, context: Mapping[str, object] | None = None
    ) -> Classification:
        """Classify ``exc``; never raises.

        Args:
            exc: the exception a task raised.
            context: optional facts about the attempt: ``task_name``,
                ``retry_count``, ``max_retries``, ``execution_time``,
                ``soft_time_limit`` / ``time_limit``, ``now`` (epoch seconds).
                Missing, ``None`` or wrongly typed values are ignored.

        Returns:
            The :class:`Classification`.
        """
        try:
            candidate: object = exc
            if not isinstance(candidate, BaseException):
                return _build(
                    Verdict(_UNKNOWN, 0.0, f"not an exception: {type(candidate).__name__}"),
                    None,
                    [],
                )
            plan = self._plans.get(type(exc))
            if plan is None:
                plan = self._plan(type(exc))
            if (
                not context
                and plan.static is not None
                and not (plan.errno_gated and getattr(exc, "errno", None) is not None)
                and not _has_wait_hints(exc)
            ):
                return plan.static
            facts = ContextFacts.of(context, self._clock) if context else self._no_facts
            call = _Call(facts, {id(exc)})
            verdict = self._judge(exc, plan, 0, call)
            return _build(verdict, facts, call.notes)
        except Exception as error:  # noqa: BLE001 - classification must never raise
            return _build(
                Verdict(
                    _UNKNOWN,
                    0.0,
                    f"classifier error {type(error).__name__} while examining the exception",
                ),
                None,
                [],
            )

    def _plan(self, cls: type) -> _Plan:
        plan = _Plan()
        try:
            mro = cls.__mro__
        except Exception:  # noqa: BLE001 - a metaclass may hide __mro__
            mro = (cls,)
        names = tuple(qualified_name(klass) for klass in mro)
        plan.name = names[0] if names else "<unnamed>"
        rule: ClassRule | None = None
        rule_name = ""
        for klass, klass_name in zip(mro, names, strict=False):
            rule = RULES.get(klass_name)
            if rule is not None:
                rule_name = klass_name
                break
            if plan.words is None and getattr(klass, "__module__", "builtins") != "builtins":
                plan.words = words_verdict(klass, plan.name)
        if rule is not None:
            plan.class_verdict = _class_verdict(rule, rule_name, plan.name)
            plan.probes = rule.probes
            plan.defer = rule.defer
            plan.links = rule.links
        weak = plan.class_verdict is None or plan.class_verdict.confidence < _STRONG
        if weak and not plan.probes and getattr(cls, "__module__", "builtins") != "builtins":
            # Unknown classes (and weak library base classes) may still carry an
            # HTTP status or a SQLSTATE, SDK-style.
            plan.probes = (generic_probe,)
        plan.wait_attribute = any(
            hasattr(cls, name) for name in ("retry_after", "response", "headers", "hdrs")
        )
        plan.user_rules = tuple(
            user_rule
            for user_rule in self._rules
            if not user_rule.class_bound or user_rule.matches_class(cls, names)
        )
        plan.errno_gated = plan.probes == (errno_probe,)
        if (
            not plan.user_rules
            and (not plan.probes or plan.errno_gated)
            and not plan.links
            and plan.words is None
            and plan.class_verdict is not None
            and plan.class_verdict.confidence >= _STRONG
            and not plan.class_verdict.defer
            and not issubclass(cls, BaseExceptionGroup)
            and not plan.wait_attribute
        ):
            plan.static = _build(plan.class_verdict, None, [])
        if len(self._plans) >= self._cache_size:
            self._plans = {}
        self._plans[cls] = plan
        return plan

    def _plan_of(self, exc: BaseException) -> _Plan:
        plan = self._plans.get(type(exc))
        return plan if plan is not None else self._plan(type(exc))

    def _judge(self, exc: BaseException, plan: _Plan, depth: int, call: _Call) -> Verdict:
        subject = Subject(exc, plan.name, call.facts.now)
        if plan.user_rules:
            verdict = self._user_verdict(subject, plan, call)
            if verdict is not None:
                return verdict
        if isinstance(exc, BaseExceptionGroup) and depth < _MAX_DEPTH:
            return self._group_verdict(exc, plan, depth, call)
        verdict = self._own_verdict(subject, plan)
        if depth >= _MAX_DEPTH:
            return verdict
        undecided = verdict.defer or verdict.failure_type is _UNKNOWN
        if not undecided and verdict.confidence >= _STRONG:
            return verdict
        for how, cause in _links(
            exc, plan.links, allow_context=undecided, allow_suppressed=verdict.defer
        ):
            if id(cause) in call.seen:
                continue
            call.seen.add(id(cause))
            cause_plan = self._plan_of(cause)
            found = self._judge(cause, cause_plan, depth + 1, call)
            if found.failure_type is _UNKNOWN and found.retry is None:
                continue
            if undecided or found.confidence > verdict.confidence:
                return Verdict(
                    found.failure_type,
                    found.confidence,
                    f"via {how} {cause_plan.name}: {found.evidence}",
                    retry=found.retry,
                    retry_after=(
                        found.retry_after if found.retry_after is not None else verdict.retry_after
                    ),
                    exhausted=found.exhausted or verdict.exhausted,
                )
            break
        return verdict

    def _own_verdict(self, subject: Subject, plan: _Plan) -> Verdict:
        verdict: Verdict | None = None
        for probe in plan.probes:
            try:
                verdict = probe(subject)
            except Exception:  # noqa: BLE001 - a probe meeting a hostile object gives no evidence
                verdict = None
            if verdict is not None:
                break
        if verdict is None:
            verdict = plan.class_verdict
            if plan.words is not None and (verdict is None or verdict.confidence < _SPECIFIC):
                verdict = plan.words
            if verdict is None or verdict.confidence < MESSAGE_CONFIDENCE:
                found = message_verdict(subject)
                if found is not None and (verdict is None or found.confidence > verdict.confidence):
                    if plan.defer:
                        found.defer = True
                    verdict = found
        if verdict is None:
            return Verdict(_UNKNOWN, 0.1, f"no rule matched {subject.name}", defer=plan.defer)
        if (
            verdict.retry_after is None
            and verdict.failure_type is not _UNKNOWN
            and (plan.wait_attribute or _has_wait_hints(subject.exc))
        ):
            waited = retry_after_of(subject)
            if waited is not None:
                return Verdict(
                    verdict.failure_type,
                    verdict.confidence,
                    f"{verdict.evidence}; {waited[1]} {waited[0]:g}s",
                    defer=verdict.defer,
                    retry=verdict.retry,
                    retry_after=waited[0],
                    exhausted=verdict.exhausted,
                )
        return verdict

    def _user_verdict(self, subject: Subject, plan: _Plan, call: _Call) -> Verdict | None:
        task_name = call.facts.task_name
        for rule in plan.user_rules:
            if not rule.applies_to_task(task_name):
                continue
            if rule.match is not None and not rule.class_bound:
                try:
                    matched = bool(rule.match(subject.exc))  # type: ignore[operator]
                except Exception as error:  # noqa: BLE001 - a user predicate must not break us
                    call.notes.append(f"{rule.describe()} raised {type(error).__name__}; ignored")
                    if _log.isEnabledFor(logging.DEBUG):
                        _log.debug("classification rule predicate raised", exc_info=True)
                    continue
                if not matched:
                    continue
            if rule.message is not None and rule.message.search(subject.message) is None:
                continue
            found = retry_after_of(subject)
            return Verdict(
                rule.failure_type,
                rule.confidence,
                f"{rule.describe()} matched {subject.name}",
                retry_after=None if found is None else found[0],
            )
        return None

    def _group_verdict(
        self, group: BaseExceptionGroup[BaseException], plan: _Plan, depth: int, call: _Call
    ) -> Verdict:
        members = group.exceptions[:_MAX_GROUP_MEMBERS]
        best: tuple[tuple[bool, int, float], int, Verdict, str] | None = None
        for index, member in enumerate(members):
            if id(member) in call.seen:
                continue
            call.seen.add(id(member))
            member_plan = self._plan_of(member)
            found = self._judge(member, member_plan, depth + 1, call)
            rank = PROFILES[found.failure_type].alert_level.rank
            key = (found.failure_type is not _UNKNOWN, rank, found.confidence)
            if best is None or key > best[0]:
                best = (key, index, found, member_plan.name)
        if best is None:
            return Verdict(_UNKNOWN, 0.1, f"exception group {plan.name} with no members")
        _, index, found, member_name = best
        return Verdict(
            found.failure_type,
            found.confidence,
            f"exception group {plan.name} ({len(group.exceptions)} members), most severe "
            f"member #{index + 1} {member_name}: {found.evidence}",
            retry=found.retry,
            retry_after=found.retry_after,
            exhausted=found.exhausted,
        )


def _has_wait_hints(exc: BaseException) -> bool:
    try:
        attrs = exc.__dict__
    except Exception:  # noqa: BLE001 - exotic exceptions without a usable __dict__
        return False
    return bool(attrs) and (
        "retry_after" in attrs or "response" in attrs or "headers" in attrs or "hdrs" in attrs
    )


def _attempt_exception(attempt: object) -> object:
    # tenacity's last_attempt is a finished concurrent.futures.Future.
    done = getattr(attempt, "done", None)
    if not callable(done) or not done():
        return None
    method = getattr(attempt, "exception", None)
    return method(timeout=0) if callable(method) else None


def _links(
    exc: BaseException,
    attributes: tuple[str, ...],
    *,
    allow_context: bool,
    allow_suppressed: bool,
) -> Iterable[tuple[str, BaseException]]:
    """The exceptions this one wraps, best first: library attributes, __cause__, __context__.

    A wrapper's suppressed context (``raise Wrapper(...) from None``, as httpcore
    does) is still the error it wraps, so wrappers follow it anyway.
    """
    found: list[tuple[str, BaseException]] = []
    for attribute in attributes:
        try:
            value = getattr(exc, attribute, None)
            if attribute == "last_attempt":
                value = _attempt_exception(value)
        except Exception:  # noqa: BLE001 - third-party attributes may raise
            value = None
        if isinstance(value, BaseException) and value is not exc:
            found.append((f".{attribute}", value))
    cause = exc.__cause__
    if isinstance(cause, BaseException):
        found.append(("__cause__", cause))
    if allow_context and (allow_suppressed or not exc.__suppress_context__):
        context = exc.__context__
        if isinstance(context, BaseException):
            found.append(("__context__", context))
    return found


default_classifier = Classifier()
"""The classifier behind the module-level :func:`classify` and :func:`register_rule`."""


def classify(exc: BaseException, context: Mapping[str, object] | None = None) -> Classification:
    """Classify ``exc`` with the default classifier; never raises.

    Args:
        exc: the exception a task raised.
        context: optional facts (``task_name``, ``retry_count``, ``max_retries``,
            ``execution_time``, ``soft_time_limit``, ``time_limit``, ``now``).

    Returns:
        The :class:`Classification`.

    Example:
        >>> classify(ConnectionRefusedError(111, "Connection refused")).failure_type
        <FailureType.TRANSIENT_NETWORK: 'TRANSIENT_NETWORK'>
    """
    return default_classifier.classify(exc, context)


def register_rule(
    *,
    failure_type: FailureType | str,
    match: Matcher | None = None,
    message: str | re.Pattern[str] | None = None,
    priority: int = 0,
    confidence: float | None = None,
    tasks: str | Iterable[str] | None = None,
    name: str | None = None,
) -> RuleHandle:
    """Register a rule on the default classifier (see :meth:`Classifier.register_rule`).

    Returns:
        A handle whose ``unregister()`` removes the rule.

    Raises:
        ConfigurationError: for an invalid rule; ``.key`` names the field.

    Example:
        >>> handle = register_rule(match="myapp.errors.Flaky",
        ...                        failure_type="TRANSIENT_NETWORK", tasks=["billing.*"])
        >>> handle.unregister()
        True
    """
    return default_classifier.register_rule(
        failure_type=failure_type,
        match=match,
        message=message,
        priority=priority,
        confidence=confidence,
        tasks=tasks,
        name=name,
    )

"""Hypothesis strategies for retry policies, backoff curves and realistic failures.

This is the only module of the plugin that imports hypothesis, so projects that
never use property tests never pay for it. The functions follow hypothesis' own
style: plural nouns returning a ``SearchStrategy``, keyword-only ``min_*`` /
``max_*`` bounds, and ``hypothesis.errors.InvalidArgument`` for arguments that
could only describe an empty strategy.

- `retry_policies` draws valid `resilience.RetryPolicy` values over every
  strategy and jitter mode.
- `backoff_strategies` draws `resilience.backoff.Strategy` members.
- `failures` draws exceptions a task really meets, of the requested
  `resilience.taxonomy.FailureType` (real library classes where installed).
- `assert_backoff_invariants` checks what every policy's delays must satisfy.
- `fault_schedules`, `injections` and `fault_plans` draw chaos-test fault plans:
  `pytest_taskchaos.schedules.Schedule` values, and
  `pytest_taskchaos.injection.Injection` values built by the same
  `pytest_taskchaos.injection.injection` function the ``chaos`` marker uses.
- `decision_sources` draws hypothesis-controlled sources for probabilistic
  schedules, so a failing chaos run shrinks to the fewest faults that fire.

The chaos strategies validate their arguments the way the marker does: bad
bounds raise ``resilience.errors.ConfigurationError`` naming the argument
(``key``), and an unknown fault raises the catalog's own error.

What needs no hypothesis lives in private modules, to keep this one short: the
exceptions `failures` draws (`pytest_taskchaos._failure_catalog`), the invariant
check (`pytest_taskchaos._backoff_invariants`, re-exported here) and the argument
checks of the chaos strategies (`pytest_taskchaos._plan_arguments`).

See ``docs/strategies.md``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_taskchaos import schedules as sched
from pytest_taskchaos._backoff_invariants import assert_backoff_invariants
from pytest_taskchaos._failure_catalog import catalog, raised
from pytest_taskchaos._plan_arguments import horizon_of, integer_of, placements_of, tasks_of
from pytest_taskchaos.injection import injection
from resilience import BreakerSettings, FailureType, Jitter, RetryPolicy, Strategy
from resilience.clock import seconds_of
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from hypothesis.strategies import SearchStrategy

    from pytest_taskchaos.injection import Injection
    from pytest_taskchaos.schedules import DecisionSource, Schedule

__all__ = [
    "assert_backoff_invariants",
    "backoff_strategies",
    "decision_sources",
    "failures",
    "fault_plans",
    "fault_schedules",
    "injections",
    "retry_policies",
]

# Growth factors above this reach any cap within a couple of retries; larger ones add
# no new curve shapes, only slower shrinking.
_MAX_FACTOR = 10.0
_MAX_BREAKER_THRESHOLD = 20
_MAX_RESET_TIMEOUT = 3600.0


# --- retry policies ---------------------------------------------------------------------


def _lookup(enum: type[Strategy] | type[Jitter], item: object) -> Any:
    """The member of ``enum`` whose value is ``item``, or ``None``."""
    if isinstance(item, str):
        try:
            return enum(item)
        except ValueError:
            return None
    return None


def _members(enum: type[Strategy] | type[Jitter], values: object, *, name: str) -> tuple[Any, ...]:
    """The enum members named by ``values`` (one member, its string, or an iterable of them).

    Raises:
        InvalidArgument: for an empty selection or an unknown member, listing the valid ones.
    """
    if values is None:
        return tuple(enum)
    items: Iterable[object] = (
        (values,) if isinstance(values, str) else values  # type: ignore[assignment]
    )
    if not isinstance(items, Iterable):
        raise InvalidArgument(f"{name}={values!r} must be a member, its name or an iterable")
    chosen: list[Any] = []
    for item in items:
        member = _lookup(enum, item)
        if member is None:
            valid = ", ".join(m.value for m in enum)
            raise InvalidArgument(f"{name} holds {item!r}; valid values: {valid}")
        if member not in chosen:
            chosen.append(member)
    if not chosen:
        raise InvalidArgument(f"{name}={values!r} selects nothing; pass None for all of them")
    return tuple(chosen)


def _count(value: object, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name}={value!r} must be an int >= 0")
    return value


def _seconds(value: object, *, name: str) -> float:
    try:
        seconds = seconds_of(value, name=name)  # type: ignore[arg-type]
    except TypeError as exc:
        raise InvalidArgument(f"{name}={value!r}: {exc}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"{name}={value!r} must be a finite, non-negative duration")
    return seconds


def _factors(strategy: Strategy) -> SearchStrategy[float]:
    if strategy is Strategy.EXPONENTIAL:
        return st.floats(min_value=1.0, max_value=_MAX_FACTOR)
    if strategy is Strategy.LINEAR:
        return st.floats(min_value=0.0, max_value=_MAX_FACTOR, exclude_min=True)
    return st.just(2.0)  # unused by the other curves; a fixed value keeps examples small


def _breakers() -> SearchStrategy[BreakerSettings | None]:
    settings = st.builds(
        BreakerSettings,
        failure_threshold=st.integers(min_value=1, max_value=_MAX_BREAKER_THRESHOLD),
        reset_timeout=st.floats(min_value=0.0, max_value=_MAX_RESET_TIMEOUT, exclude_min=True),
    )
    return st.none() | settings


def retry_policies(
    *,
    strategies: Strategy | str | Iterable[Strategy | str] | None = None,
    min_retries: int = 0,
    max_retries: int = 10,
    min_delay: float | timedelta = 0.0,
    max_delay: float | timedelta = 3600.0,
    jitter: Jitter | str | Iterable[Jitter | str] | None = None,
) -> SearchStrategy[RetryPolicy]:
    """Valid retry policies, over every curve shape and jitter mode unless narrowed.

    Each policy's ``initial_delay`` and ``max_delay`` lie in ``[min_delay, max_delay]``
    (``initial_delay <= max_delay`` as the policy requires); its factor, jitter ratio
    and breaker settings are drawn too. Shrinks towards few retries, small delays and
    the first strategy and jitter mode listed.

    Args:
        strategies: the curve shapes to draw from (members or their names); all of them
            when ``None``.
        min_retries: the fewest ``max_retries`` a policy may have.
        max_retries: the most ``max_retries`` a policy may have.
        min_delay: the smallest initial delay, in seconds or as a ``timedelta``.
        max_delay: the largest delay cap, in seconds or as a ``timedelta``; finite.
        jitter: the jitter modes to draw from; all of them when ``None``.

    Returns:
        A strategy of `resilience.RetryPolicy`.

    Raises:
        hypothesis.errors.InvalidArgument: for negative or inverted bounds, an infinite
            ``max_delay``, or an empty or unknown selection of strategies or jitter modes.
    """
    shapes: tuple[Strategy, ...] = _members(Strategy, strategies, name="strategies")
    modes: tuple[Jitter, ...] = _members(Jitter, jitter, name="jitter")
    low_retries = _count(min_retries, name="min_retries")
    high_retries = _count(max_retries, name="max_retries")
    if low_retries > high_retries:
        raise InvalidArgument(f"min_retries={min_retries!r} exceeds max_retries={max_retries!r}")
    low_delay = _seconds(min_delay, name="min_delay")
    high_delay = _seconds(max_delay, name="max_delay")
    if low_delay > high_delay:
        raise InvalidArgument(f"min_delay={min_delay!r} exceeds max_delay={max_delay!r}")

    @st.composite
    def policies(draw: st.DrawFn) -> RetryPolicy:
        shape = draw(st.sampled_from(shapes))
        initial = draw(st.floats(min_value=low_delay, max_value=high_delay))
        return RetryPolicy(
            max_retries=draw(st.integers(min_value=low_retries, max_value=high_retries)),
            initial_delay=initial,
            strategy=shape,
            factor=draw(_factors(shape)),
            max_delay=draw(st.floats(min_value=initial, max_value=high_delay)),
            jitter=draw(st.sampled_from(modes)),
            jitter_ratio=draw(st.floats(min_value=0.0, max_value=1.0)),
            breaker=draw(_breakers()),
        )

    return policies()


def backoff_strategies() -> SearchStrategy[Strategy]:
    """The curve shapes a policy can have: `resilience.backoff.Strategy` members.

    Members rather than curve objects, because a shape alone is what a policy
    takes (``RetryPolicy(strategy=...)``); `retry_policies` draws complete curves.

    Returns:
        A strategy of `resilience.backoff.Strategy`, shrinking towards ``EXPONENTIAL``.
    """
    return st.sampled_from(tuple(Strategy))


# --- failures ---------------------------------------------------------------------------


def failures(*, failure_type: FailureType | str | None = None) -> SearchStrategy[BaseException]:
    """Exceptions a task really meets, each filed by `resilience.classify` under its type.

    Real library classes are used where the library is installed (requests, httpx,
    psycopg, SQLAlchemy, redis, botocore, Celery, billiard, kombu); standard-library
    exceptions cover every type without them. Each draw is a new instance, raised
    once so it carries a traceback. Shrinks towards the standard-library examples.

    Args:
        failure_type: the `resilience.taxonomy.FailureType` (or its value) to draw;
            every type when ``None``.

    Returns:
        A strategy of exceptions ``exc`` with
        ``resilience.classify(exc).failure_type == failure_type``.

    Raises:
        hypothesis.errors.InvalidArgument: when ``failure_type`` is not a failure type.
    """
    makers = catalog()
    if failure_type is None:
        return st.one_of([failures(failure_type=member) for member in FailureType])
    try:
        member = FailureType(failure_type)
    except ValueError:
        valid = ", ".join(m.value for m in FailureType)
        raise InvalidArgument(
            f"failure_type={failure_type!r} is not a failure type; valid values: {valid}"
        ) from None
    return st.sampled_from(makers[member]).map(raised)


# --- fault schedules and plans ----------------------------------------------------------

# Simplest first: hypothesis shrinks a sampled choice towards the start of its list, so a
# failing schedule trades a window or a probability for a plain count when it can.
_CONDITIONS = ("first", "every", "attempts", "task", "window", "probability")


def _windows(horizon: float) -> SearchStrategy[Schedule]:
    @st.composite
    def windows(draw: st.DrawFn) -> Schedule:
        start = draw(st.floats(min_value=0.0, max_value=horizon, exclude_max=True))
        end = draw(st.floats(min_value=start, max_value=horizon, exclude_min=True))
        return sched.window(start, end)

    return windows()


def fault_schedules(
    *,
    max_conditions: int = 3,
    max_count: int = 5,
    horizon: float | timedelta = 3600.0,
    tasks: Sequence[str] | None = None,
    random: bool = True,
) -> SearchStrategy[Schedule]:
    """Valid fault schedules: conjunctions of up to ``max_conditions`` conditions.

    Each condition kind appears at most once: ``first(n)`` and ``every(n)`` with
    ``n`` in ``[1, max_count]``; a non-empty ``window(start, end)`` inside
    ``[0, horizon)``; ``only_first_attempts()`` or ``only_retries()`` (never both);
    ``task(pattern)`` with a pattern from ``tasks``, when given; and
    ``probability(p)``, when ``random`` is true. Shrinks towards fewer conditions
    (``always()`` first), then towards counts and filters rather than windows and
    probabilities, then towards small counts.

    Args:
        max_conditions: the most conditions a schedule has (0: always ``always()``).
        max_count: the largest ``n`` of ``first(n)`` and ``every(n)``.
        horizon: the virtual seconds (or ``timedelta``) windows lie in; finite, > 0.
        tasks: the task-name globs ``task()`` conditions use (one string is one glob);
            ``None`` for no task conditions.
        random: whether schedules may hold a ``probability()`` condition. With
            ``False``, every schedule is deterministic and needs no decision source.

    Returns:
        A strategy of `pytest_taskchaos.schedules.Schedule`.

    Raises:
        resilience.errors.ConfigurationError: for a negative ``max_conditions``, a
            ``max_count`` below 1, a horizon that is not a finite positive duration,
            an empty or non-string ``tasks`` entry, or a non-bool ``random``; ``key``
            names the argument.
    """
    most = integer_of(max_conditions, key="max_conditions", minimum=0)
    count = integer_of(max_count, key="max_count", minimum=1)
    end = horizon_of(horizon)
    patterns = tasks_of(tasks)
    if not isinstance(random, bool):
        raise ConfigurationError(
            f"random must be True or False, got {random!r}", key="random", value=random
        )
    parts: dict[str, SearchStrategy[Schedule]] = {
        "first": st.integers(min_value=1, max_value=count).map(sched.first),
        "every": st.integers(min_value=1, max_value=count).map(sched.every),
        "attempts": st.sampled_from((sched.only_first_attempts(), sched.only_retries())),
        "window": _windows(end),
    }
    if patterns:
        parts["task"] = st.sampled_from(patterns).map(sched.task)
    if random:
        parts["probability"] = st.floats(min_value=0.0, max_value=1.0).map(sched.probability)
    kinds = tuple(kind for kind in _CONDITIONS if kind in parts)
    size = min(most, len(kinds))

    @st.composite
    def schedules(draw: st.DrawFn) -> Schedule:
        # The kinds first, then their values: deleting a kind is the shrinker's first move.
        chosen = draw(st.lists(st.sampled_from(kinds), unique=True, max_size=size))
        return sched.all_of(*(draw(parts[kind]) for kind in chosen))

    return schedules()


def injections(
    *,
    faults: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    points: Sequence[str] = ("entry", "exit"),
    max_conditions: int = 3,
    max_count: int = 5,
    horizon: float | timedelta = 3600.0,
    random: bool = True,
) -> SearchStrategy[Injection]:
    """Injections of catalog faults, built by `pytest_taskchaos.injection.injection`.

    Every draw goes through the same function as ``@pytest.mark.chaos(...)``, so it is
    validated the same way. The point is one of ``points`` where the fault can fire
    (``broker_down`` only at ``"publish"``, ``result_backend_down`` only at
    ``"result"``, ``worker_lost`` and ``duplicate_delivery`` only at ``"entry"`` or
    ``"exit"``), the task glob is ``"*"`` or one of ``tasks``, and the schedule comes
    from `fault_schedules` (without ``task()`` conditions: the injection's own task
    glob filters tasks). Faults keep their catalog parameters. Shrinks towards the
    first fault listed, at its natural point, for every task, on ``always()``.

    Args:
        faults: catalog names to draw from (one string is one name); ``None`` for
            every catalog fault that can fire at one of ``points``.
        tasks: task-name globs an injection may be limited to; ``None``: every task.
        points: where faults may fire: ``"entry"``, ``"exit"``, ``"publish"``,
            ``"result"`` or a dependency point (``"db"``, ``"http"``, ...).
        max_conditions: passed to `fault_schedules`.
        max_count: passed to `fault_schedules`.
        horizon: passed to `fault_schedules`.
        random: passed to `fault_schedules`.

    Returns:
        A strategy of `pytest_taskchaos.injection.Injection`.

    Raises:
        resilience.errors.ConfigurationError: an unknown fault (the catalog's own
            error, ``key="fault"``), a fault that can fire at none of ``points``
            (``key="faults"``), an empty selection or an unknown point
            (``key="points"``), or a bad schedule bound (as in `fault_schedules`).
    """
    schedules = fault_schedules(
        max_conditions=max_conditions,
        max_count=max_count,
        horizon=horizon,
        random=random,
    )
    globs = ("*", *tasks_of(tasks))
    placements = placements_of(faults, points)
    names = tuple(placements)

    @st.composite
    def built(draw: st.DrawFn) -> Injection:
        name = draw(st.sampled_from(names))
        return injection(
            name,
            at=draw(st.sampled_from(placements[name])),
            task=draw(st.sampled_from(globs)),
            when=draw(schedules),
        )

    return built()


def fault_plans(
    *,
    min_size: int = 1,
    max_size: int = 3,
    faults: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    points: Sequence[str] = ("entry", "exit"),
    max_conditions: int = 3,
    max_count: int = 5,
    horizon: float | timedelta = 3600.0,
    random: bool = True,
) -> SearchStrategy[tuple[Injection, ...]]:
    """Fault plans: tuples of ``min_size`` to ``max_size`` injections for one chaos run.

    Shrinks towards ``min_size`` injections, each as `injections` shrinks it.

    Args:
        min_size: the fewest injections in a plan (0 allows a plan without faults).
        max_size: the most injections in a plan.
        faults: passed to `injections`.
        tasks: passed to `injections`.
        points: passed to `injections`.
        max_conditions: passed to `injections`.
        max_count: passed to `injections`.
        horizon: passed to `injections`.
        random: passed to `injections`.

    Returns:
        A strategy of tuples of `pytest_taskchaos.injection.Injection`.

    Raises:
        resilience.errors.ConfigurationError: for a negative ``min_size``, a
            ``max_size`` below ``min_size``, or any argument `injections` rejects;
            ``key`` names the argument.
    """
    low = integer_of(min_size, key="min_size", minimum=0)
    high = integer_of(max_size, key="max_size", minimum=0)
    if high < low:
        raise ConfigurationError(
            f"max_size={max_size!r} is below min_size={min_size!r}", key="max_size", value=max_size
        )
    elements = injections(
        faults=faults,
        tasks=tasks,
        points=points,
        max_conditions=max_conditions,
        max_count=max_count,
        horizon=horizon,
        random=random,
    )
    return st.lists(elements, min_size=low, max_size=high).map(tuple)


# --- decision sources -------------------------------------------------------------------

_TOP = math.nextafter(1.0, 0.0)
# hypothesis shrinks ``u`` towards 0.0, so decisions shrink towards just below 1.0, where
# no probability below 1 fires: a failing run sheds every firing it does not need.
# ``1 - u`` is exact for u >= 0.5, so shown decisions read as 0.25 rather than 0.2499...
_DECISIONS = st.floats(min_value=0.0, max_value=1.0).map(lambda u: min(1.0 - u, _TOP))
_SEEDS = st.integers(min_value=0, max_value=2**64 - 1)
# hypothesis gives one example 8 KiB of choices, about 900 floats: past that every example
# is discarded as too large and the test never finishes. The default leaves room for the
# test's other draws (the fault plan, the workload).
_MAX_DRAWS = 256


class _Decisions:
    """A decision source whose ``random()`` calls are draws hypothesis chooses."""

    __slots__ = ("_data", "_left", "_max_draws", "_rng")

    def __init__(self, data: st.DataObject, max_draws: int) -> None:
        self._data = data
        self._max_draws = max_draws
        self._left = max_draws
        self._rng: random.Random | None = None

    def random(self) -> float:
        if self._left > 0:
            self._left -= 1
            return self._data.draw(_DECISIONS, label="decision")
        if self._rng is None:
            self._rng = random.Random(self._data.draw(_SEEDS, label="seed of later decisions"))
        return self._rng.random()

    def __repr__(self) -> str:
        if self._max_draws == _MAX_DRAWS:
            return "decision_sources()"
        return f"decision_sources(max_draws={self._max_draws})"


def decision_sources(*, max_draws: int = _MAX_DRAWS) -> SearchStrategy[DecisionSource]:
    """Decision sources for probabilistic schedules, controlled by hypothesis.

    Pass one where a seeded ``random.Random`` would go (``schedule.should_fire(call,
    source)``). Each of the first ``max_draws`` ``random()`` calls is a hypothesis
    draw of its own, shown in a failing example as ``Draw n (decision): 0.25``, so
    hypothesis chooses fire and don't-fire decisions directly and shrinks a failing
    run to the fewest firings that still fail: decisions shrink towards just below
    1.0, where only ``probability(1.0)`` fires. Later calls come from a
    ``random.Random`` seeded by one more draw, because hypothesis discards an example
    that makes more than about 900 float draws.

    ``st.randoms(use_true_random=False)`` also makes each ``random()`` a shrinkable
    draw, but it shrinks towards 0.0, where every probability fires, and has no
    bound on the number of draws. A source works only inside the test, or the
    ``hypothesis.find`` predicate, that drew it.

    Args:
        max_draws: how many decisions hypothesis chooses one by one (0: all of them
            come from the seeded generator).

    Returns:
        A strategy of `pytest_taskchaos.schedules.DecisionSource` objects.

    Raises:
        resilience.errors.ConfigurationError: when ``max_draws`` is not an integer
            >= 0 (``key="max_draws"``).
    """
    budget = integer_of(max_draws, key="max_draws", minimum=0)

    @st.composite
    def sources(draw: st.DrawFn) -> DecisionSource:
        return _Decisions(draw(st.data()), budget)

    return sources()

"""Tests for pytest_taskchaos.strategies: policies, curves, failures, invariants and fault plans."""

from __future__ import annotations

import ast
import dataclasses
import math
import random
from datetime import timedelta

import hypothesis
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_taskchaos import (
    _backoff_invariants,
    _failure_catalog,
    _plan_arguments,
    strategies,
)
from pytest_taskchaos.faults import CATALOG
from pytest_taskchaos.injection import Injection
from pytest_taskchaos.schedules import CallInfo, DecisionSource, Schedule, probability
from pytest_taskchaos.strategies import (
    assert_backoff_invariants,
    backoff_strategies,
    decision_sources,
    failures,
    fault_plans,
    fault_schedules,
    injections,
    retry_policies,
)
from resilience import (
    DEFAULT_POLICIES,
    FailureType,
    Jitter,
    RetryPolicy,
    Strategy,
    classify,
    default_policy,
)
from resilience.errors import ConfigurationError

# --- public surface ---------------------------------------------------------------------


def test_exported_members() -> None:
    """__all__ lists exactly the module's public callables, sorted."""
    public = {
        name
        for name, value in vars(strategies).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == strategies.__name__
    }
    assert set(strategies.__all__) == public
    assert strategies.__all__ == sorted(strategies.__all__)


# --- retry_policies ---------------------------------------------------------------------


@given(retry_policies())
def test_retry_policies_are_valid_policies(policy: RetryPolicy) -> None:
    """Every drawn policy is a RetryPolicy within the default bounds."""
    assert isinstance(policy, RetryPolicy)
    assert 0 <= policy.max_retries <= 10
    assert 0.0 <= policy.initial_delay <= policy.max_delay <= 3600.0
    assert RetryPolicy.from_dict(policy.to_dict()) == policy


@given(
    retry_policies(
        strategies=["linear", Strategy.FIBONACCI],
        min_retries=2,
        max_retries=4,
        min_delay=timedelta(seconds=1),
        max_delay=timedelta(minutes=1),
        jitter=Jitter.FULL,
    )
)
def test_retry_policies_respect_their_bounds(policy: RetryPolicy) -> None:
    """Strategies, retries, delays (timedelta accepted) and jitter stay within the arguments."""
    assert policy.strategy in {Strategy.LINEAR, Strategy.FIBONACCI}
    assert 2 <= policy.max_retries <= 4
    assert 1.0 <= policy.initial_delay <= policy.max_delay <= 60.0
    assert policy.jitter is Jitter.FULL


def test_retry_policies_cover_every_strategy_and_jitter_mode() -> None:
    """Enough draws reach every strategy and every jitter mode."""
    seen: set[tuple[str, str]] = set()

    @settings(max_examples=300, database=None)
    @given(retry_policies())
    def collect(policy: RetryPolicy) -> None:
        seen.add(("strategy", policy.strategy))
        seen.add(("jitter", policy.jitter))

    collect()
    assert {value for kind, value in seen if kind == "strategy"} == set(Strategy)
    assert {value for kind, value in seen if kind == "jitter"} == set(Jitter)


@given(retry_policies(min_retries=3, max_retries=3, min_delay=5.0, max_delay=5.0))
def test_retry_policies_with_equal_bounds_pin_the_values(policy: RetryPolicy) -> None:
    """Equal min and max bounds are allowed and fix retries and delays."""
    assert policy.max_retries == 3
    assert policy.initial_delay == policy.max_delay == 5.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_retries": 5, "max_retries": 2}, "min_retries=5 exceeds max_retries=2"),
        ({"min_retries": -1}, "min_retries=-1"),
        ({"max_retries": True}, "max_retries=True"),
        ({"min_delay": 10.0, "max_delay": 1.0}, "min_delay=10.0 exceeds max_delay=1.0"),
        ({"min_delay": -1.0}, "min_delay=-1.0"),
        ({"max_delay": math.inf}, "max_delay=inf"),
        ({"max_delay": math.nan}, "max_delay=nan"),
        ({"max_delay": "soon"}, "max_delay='soon'"),
        ({"strategies": []}, "selects nothing"),
        ({"strategies": ["exponentail"]}, "valid values: exponential"),
        ({"strategies": 3}, "strategies=3"),
        ({"jitter": ["full", "sometimes"]}, "jitter holds 'sometimes'"),
    ],
)
def test_retry_policies_reject_invalid_arguments(kwargs: dict[str, object], fragment: str) -> None:
    """Invalid or empty combinations raise InvalidArgument naming the argument."""
    with pytest.raises(InvalidArgument) as info:
        retry_policies(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


# --- backoff_strategies -----------------------------------------------------------------


@given(backoff_strategies())
def test_backoff_strategies_draw_strategy_members(shape: Strategy) -> None:
    """Each draw is a Strategy member that builds a policy."""
    assert isinstance(shape, Strategy)
    assert RetryPolicy(strategy=shape, max_delay=60.0).strategy is shape


def test_backoff_strategies_shrink_to_exponential() -> None:
    """The simplest example is the default shape, EXPONENTIAL."""
    from hypothesis import find

    assert find(backoff_strategies(), lambda _: True) is Strategy.EXPONENTIAL


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure_type", list(FailureType))
@settings(max_examples=40)
@given(data=st.data())
def test_failures_classify_as_requested(failure_type: FailureType, data: st.DataObject) -> None:
    """Every generated exception of a type is classified as that type."""
    exc = data.draw(failures(failure_type=failure_type))
    assert isinstance(exc, BaseException)
    assert classify(exc).failure_type is failure_type, repr(exc)


@pytest.mark.parametrize("failure_type", list(FailureType))
def test_every_catalog_entry_classifies_as_its_type(failure_type: FailureType) -> None:
    """Each catalog maker, not just the ones hypothesis happens to draw, gives its type."""
    makers = _failure_catalog.catalog()[failure_type]
    assert makers, f"no example failure for {failure_type}"
    for make in makers:
        exc = make()
        assert classify(exc).failure_type is failure_type, repr(exc)


def test_failures_use_real_library_classes_when_installed() -> None:
    """With the libraries installed, the catalog holds their real exception classes."""
    import psycopg.errors
    import requests

    modules = {
        type(make()).__module__ for makers in _failure_catalog.catalog().values() for make in makers
    }
    assert {"psycopg.errors", "requests.exceptions", "redis.exceptions", "httpx"} <= modules
    assert psycopg.errors.DeadlockDetected in {
        type(make()) for make in _failure_catalog.catalog()[FailureType.TRANSIENT_DATABASE]
    }
    assert requests.HTTPError in {
        type(make()) for make in _failure_catalog.catalog()[FailureType.TRANSIENT_RATE_LIMIT]
    }


def test_failures_fall_back_to_builtins_without_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """When no optional library imports, every type still has standard-library examples."""

    def missing() -> list[tuple[FailureType, object]]:
        raise ImportError("not installed")

    monkeypatch.setattr(_failure_catalog, "LIBRARIES", (missing,))
    _failure_catalog.catalog.cache_clear()
    try:
        catalog = _failure_catalog.catalog()
        for failure_type, makers in catalog.items():
            assert makers, failure_type
            for make in makers:
                exc = make()
                assert type(exc).__module__ in {
                    "builtins",
                    "sqlite3",
                    "urllib.error",
                    "json.decoder",
                    "socket",
                }
                assert classify(exc).failure_type is failure_type, repr(exc)
    finally:
        _failure_catalog.catalog.cache_clear()


@settings(max_examples=60)
@given(failures())
def test_failures_without_a_type_draw_any_type_with_a_traceback(exc: BaseException) -> None:
    """Untyped draws are raised exceptions (with a traceback) of some classifiable type."""
    assert exc.__traceback__ is not None
    assert classify(exc).failure_type in set(FailureType)


def test_failures_give_a_fresh_instance_per_draw() -> None:
    """Two draws never share an exception object (tracebacks and notes would leak)."""
    drawn: list[BaseException] = []

    @settings(max_examples=20, database=None)
    @given(failures(failure_type=FailureType.PERMANENT_LOGIC))
    def collect(exc: BaseException) -> None:
        drawn.append(exc)

    collect()
    assert len({id(exc) for exc in drawn}) == len(drawn)


def test_rate_limit_failures_carry_retry_after() -> None:
    """HTTP 429 examples carry a Retry-After the classifier reads."""
    for make in _failure_catalog.catalog()[FailureType.TRANSIENT_RATE_LIMIT]:
        exc = make()
        if "HTTP" in type(exc).__name__ or "Status" in type(exc).__name__:
            assert classify(exc).retry_after == 30.0, repr(exc)


def test_failures_reject_unknown_types() -> None:
    """An unknown failure type raises InvalidArgument listing the valid ones."""
    with pytest.raises(InvalidArgument, match="TRANSIENT_DATABASE"):
        failures(failure_type="TRANSIENT_WEATHER")


def test_failures_accept_the_type_value() -> None:
    """The string value of a type selects it like the member does."""
    from hypothesis import find

    exc = find(failures(failure_type="SYSTEM_DISK_FULL"), lambda _: True)
    assert classify(exc).failure_type is FailureType.SYSTEM_DISK_FULL


# --- assert_backoff_invariants ----------------------------------------------------------


@given(policy=retry_policies(), seed=st.integers(min_value=0, max_value=2**32))
def test_generated_policies_hold_the_backoff_invariants(policy: RetryPolicy, seed: int) -> None:
    """Every valid policy, any seed: delays in bounds, envelopes monotone, deterministic."""
    assert_backoff_invariants(policy, rng=random.Random(seed))


@pytest.mark.parametrize("failure_type", list(FailureType))
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_default_policies_hold_the_backoff_invariants(failure_type: FailureType, seed: int) -> None:
    """The default policy of each of the 18 types holds the invariants for any seed."""
    assert_backoff_invariants(default_policy(failure_type), rng=random.Random(seed))


@settings(max_examples=60)
@given(exc=failures(), seed=st.integers(min_value=0, max_value=2**32))
def test_the_policy_chosen_for_a_real_failure_holds_the_invariants(
    exc: BaseException, seed: int
) -> None:
    """Classifying a realistic failure leads to a default policy with sane delays."""
    policy = DEFAULT_POLICIES[classify(exc).failure_type]
    assert_backoff_invariants(policy, rng=random.Random(seed))
    assert (policy.max_retries > 0) == classify(exc).failure_type.profile.retry_recommended


def _broken(policy: RetryPolicy, **overrides: object) -> RetryPolicy:
    """A copy of ``policy`` whose methods are replaced, to feed the checker bad curves."""

    class Broken:
        def __getattr__(self, name: str) -> object:
            if name in overrides:
                return overrides[name]
            return getattr(policy, name)

        def __repr__(self) -> str:
            return "Broken(...)"

    return Broken()  # type: ignore[return-value]


_POLICY = RetryPolicy(max_retries=3, initial_delay=1.0, max_delay=10.0, jitter="none")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"schedule": lambda *, rng: (1.0, 2.0)}, "schedule has 2 delays for max_retries=3"),
        (
            {"schedule": lambda *, rng: (1.0, 2.0, 11.0)},
            "retry 3: delay 11.0 outside [0, max_delay=10.0]",
        ),
        ({"schedule": lambda *, rng: (1.0, math.nan, 4.0)}, "retry 2: delay nan"),
        (
            {"schedule": lambda *, rng: (1.0, 2.5, 4.0)},
            "retry 2: delay 2.5 outside its envelope [2.0, 2.0]",
        ),
        (
            {"envelope": lambda n: {1: (1.0, 1.0), 2: (0.0, 9.0), 3: (0.0, 4.0)}[n]},
            "retry 3: envelope upper bound 4.0 fell below 9.0 of retry 2",
        ),
    ],
)
def test_invariant_violations_name_the_retry_and_values(
    overrides: dict[str, object], fragment: str
) -> None:
    """Each broken invariant fails with a message naming the retry number and the values."""
    with pytest.raises(AssertionError) as info:
        assert_backoff_invariants(_broken(_POLICY, **overrides))
    assert fragment in str(info.value)
    assert "policy: Broken(...)" in str(info.value)


def test_nondeterministic_schedule_is_reported() -> None:
    """A schedule that differs between two runs with the same seed fails naming the retry."""
    runs = iter([(1.0, 2.0, 4.0), (1.0, 2.0, 3.0)])
    broken = _broken(_POLICY, schedule=lambda *, rng: next(runs), envelope=lambda n: (0.0, 10.0))
    with pytest.raises(AssertionError, match=r"retry 3: seed 0 gave 4\.0 then 3\.0"):
        assert_backoff_invariants(broken)


def test_decorrelated_envelopes_may_not_be_monotone() -> None:
    """The monotone-envelope check is skipped for decorrelated curves only."""
    decorrelated = RetryPolicy(max_retries=3, strategy="decorrelated", max_delay=10.0)
    assert_backoff_invariants(
        _broken(decorrelated, envelope=lambda n: {1: (0.0, 10.0), 2: (0.0, 9.0), 3: (0.0, 10.0)}[n])
    )


def test_invariant_checker_hides_its_frames() -> None:
    """Both the public helper and its failure helper hide their frames from tracebacks."""
    for function in (assert_backoff_invariants, _backoff_invariants._fail):
        assert "__tracebackhide__" in function.__code__.co_varnames


def test_invariant_checker_draws_one_value_from_the_rng() -> None:
    """The checker takes exactly one draw, so a shared seeded rng stays reproducible."""
    rng, twin = random.Random(5), random.Random(5)
    assert_backoff_invariants(default_policy(FailureType.TRANSIENT_NETWORK), rng=rng)
    twin.getrandbits(64)
    assert rng.random() == twin.random()


def test_zero_retry_policy_passes_with_an_empty_schedule() -> None:
    """A policy that never retries has nothing to violate."""
    policy = dataclasses.replace(_POLICY, max_retries=0)
    assert_backoff_invariants(policy)
    assert policy.schedule() == ()


def test_checking_the_default_policies_leaves_them_unchanged() -> None:
    """Checking every default policy many times does not drift the shared defaults."""
    before = {failure_type: policy.to_dict() for failure_type, policy in DEFAULT_POLICIES.items()}
    for seed in range(20):
        for policy in DEFAULT_POLICIES.values():
            assert_backoff_invariants(policy, rng=random.Random(seed))
    after = {failure_type: policy.to_dict() for failure_type, policy in DEFAULT_POLICIES.items()}
    assert after == before


# --- fault_schedules --------------------------------------------------------------------

_KINDS = {"first", "every", "window", "only_retries", "only_first_attempts", "task", "probability"}
_CALLS = st.builds(
    CallInfo,
    task_name=st.sampled_from(["payments.charge", "emails.send", "reports.build"]),
    queue=st.none() | st.just("default"),
    retries=st.integers(min_value=0, max_value=5),
    now=st.floats(min_value=0.0, max_value=7200.0),
    call_index=st.integers(min_value=1, max_value=50),
)


def _parts(schedule: Schedule) -> list[tuple[str, tuple[object, ...]]]:
    """Each condition of ``schedule`` as (name, arguments), read back from describe()."""
    parts = []
    for condition in schedule.conditions:
        name, _, rest = condition.describe().partition("(")
        parts.append((name, ast.literal_eval(f"({rest[:-1]},)") if rest[:-1] else ()))
    return parts


@settings(max_examples=200)
@given(
    schedule=fault_schedules(max_count=4, horizon=600.0, tasks=["payments.*", "emails.send"]),
    call=_CALLS,
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_fault_schedules_draw_valid_schedules_within_bounds(
    schedule: Schedule, call: CallInfo, seed: int
) -> None:
    """Every drawn schedule evaluates, and its counts, windows and patterns respect the bounds."""
    assert isinstance(schedule, Schedule)
    assert isinstance(schedule.should_fire(call, random.Random(seed)), bool)
    parts = _parts(schedule)
    names = [name for name, _ in parts]
    assert len(parts) <= 3
    assert len(set(names)) == len(names), schedule.describe()
    assert set(names) <= _KINDS
    assert not {"only_retries", "only_first_attempts"} <= set(names)
    for name, args in parts:
        if name in {"first", "every"}:
            assert 1 <= args[0] <= 4  # type: ignore[operator]
        elif name == "window":
            start, end = args
            assert 0.0 <= start < end <= 600.0  # type: ignore[operator]
        elif name == "task":
            assert args[0] in {"payments.*", "emails.send"}
        elif name == "probability":
            assert 0.0 <= args[0] <= 1.0  # type: ignore[operator]


@settings(max_examples=100)
@given(schedule=fault_schedules(max_conditions=6, random=False), call=_CALLS)
def test_fault_schedules_without_random_never_need_a_decision_source(
    schedule: Schedule, call: CallInfo
) -> None:
    """random=False never draws probability(): should_fire works without a source."""
    assert not schedule.random
    assert "probability" not in schedule.describe()
    assert isinstance(schedule.should_fire(call), bool)
    assert "task(" not in schedule.describe()  # no tasks given: no task conditions


@settings(max_examples=50)
@given(fault_schedules(max_conditions=6, horizon=timedelta(minutes=1)))
def test_fault_schedules_take_a_timedelta_horizon(schedule: Schedule) -> None:
    """A timedelta horizon bounds windows in seconds."""
    for name, args in _parts(schedule):
        if name == "window":
            assert args[1] <= 60.0  # type: ignore[operator]


@given(fault_schedules(max_conditions=0))
def test_fault_schedules_with_no_conditions_are_always(schedule: Schedule) -> None:
    """max_conditions=0 allows only the empty conjunction."""
    assert schedule.describe() == "always()"


def test_fault_schedules_cover_every_condition_kind() -> None:
    """Enough draws reach every kind of condition, both attempt filters included."""
    seen: set[str] = set()

    @settings(max_examples=300, database=None)
    @given(fault_schedules(max_conditions=6, tasks="billing.*"))
    def collect(schedule: Schedule) -> None:
        seen.update(name for name, _ in _parts(schedule))

    collect()
    assert seen == _KINDS


_CALL_3 = CallInfo(task_name="payments.charge", call_index=3)
# find()'s own budget (2000 examples); passing settings would otherwise lower it to 100.
_FIND = settings(database=None, max_examples=2000)


def test_fault_schedules_shrink_to_always() -> None:
    """When any schedule would do, the minimal example has no conditions."""
    found = find(
        fault_schedules(tasks=["payments.*"]),
        lambda s: s.should_fire(_CALL_3, random.Random(0)),
        settings=_FIND,
    )
    assert found.describe() == "always()"


def test_fault_schedules_shrink_to_one_small_count() -> None:
    """A schedule that must skip call 3 shrinks to the simplest that does: first(1)."""
    found = find(
        fault_schedules(random=False),
        lambda s: not s.should_fire(_CALL_3),
        settings=_FIND,
    )
    assert found.describe() == "first(1)"


def test_fault_schedules_shrink_towards_simple_conditions() -> None:
    """With three conditions required, the minimal ones are counts of 1 and an attempt filter."""
    found = find(
        fault_schedules(random=False),
        lambda s: len(s.conditions) == 3,
        settings=_FIND,
    )
    assert found.describe() == "first(1) & every(1) & only_first_attempts()"


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        ({"max_conditions": -1}, "max_conditions", "max_conditions must be >= 0, got -1"),
        ({"max_conditions": 2.0}, "max_conditions", "max_conditions must be an integer"),
        ({"max_count": 0}, "max_count", "max_count must be >= 1, got 0"),
        ({"max_count": True}, "max_count", "max_count must be an integer, got True"),
        ({"horizon": 0}, "horizon", "horizon must be finite seconds > 0, got 0"),
        ({"horizon": -5.0}, "horizon", "got -5.0"),
        ({"horizon": math.inf}, "horizon", "got inf"),
        ({"horizon": math.nan}, "horizon", "got nan"),
        ({"horizon": "1h"}, "horizon", "horizon must be a number of seconds or a timedelta"),
        ({"tasks": []}, "tasks", "tasks=[] selects nothing; pass None"),
        ({"tasks": ["ok", ""]}, "tasks", "tasks holds ''; each must be a non-empty string"),
        ({"tasks": 3}, "tasks", "tasks must be a string or a sequence of strings, got 3"),
        ({"random": "yes"}, "random", "random must be True or False, got 'yes'"),
    ],
)
def test_fault_schedules_reject_invalid_bounds(
    kwargs: dict[str, object], key: str, fragment: str
) -> None:
    """Bad bounds raise ConfigurationError naming the argument, when the strategy is made."""
    with pytest.raises(ConfigurationError) as info:
        fault_schedules(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key
    assert fragment in str(info.value)


# --- injections and fault_plans ---------------------------------------------------------

_NOT_AT_TASK_POINTS = {"broker_down", "result_backend_down"}


@settings(max_examples=150)
@given(injections(tasks=["billing.*"]))
def test_injections_are_valid_catalog_injections(drawn: Injection) -> None:
    """Default draws: a catalog fault at entry or exit, every task or a given glob."""
    assert isinstance(drawn, Injection)
    assert drawn.fault.name in CATALOG
    assert drawn.fault.name not in _NOT_AT_TASK_POINTS
    assert drawn.at in {"entry", "exit"}
    assert drawn.task in {"*", "billing.*"}
    assert "task(" not in drawn.schedule.describe()  # the injection's glob filters tasks
    assert drawn.describe().startswith(f"{drawn.fault.name} at ")


def test_injections_default_to_every_fault_that_fires_at_the_points() -> None:
    """The default faults are those the points allow, each at its own point first."""
    placements = _plan_arguments.placements_of(None, ("entry", "exit"))
    assert set(placements) == set(CATALOG) - _NOT_AT_TASK_POINTS
    assert placements["worker_lost"] == ("exit", "entry")
    assert placements["deadlock"] == ("entry", "exit")
    assert _plan_arguments.placements_of(None, ("publish", "result")) == {
        "broker_down": ("publish",),
        "result_backend_down": ("result",),
    }


@settings(max_examples=60)
@given(injections(points=(" DB ", "http")))
def test_injections_at_dependency_points_skip_delivery_faults(drawn: Injection) -> None:
    """At dependency points only raising faults fire; point names are normalised."""
    assert drawn.at in {"db", "http"}
    assert drawn.dependency
    assert not drawn.fault.worker_lost
    assert not drawn.fault.duplicate_delivery
    assert drawn.fault.name not in _NOT_AT_TASK_POINTS


def test_injections_shrink_to_the_faults_own_point() -> None:
    """A fault shrinks to the point its nature puts it at, not the first point listed."""
    found = find(injections(faults=["worker_lost"]), lambda _: True, settings=_FIND)
    assert found.describe() == "worker_lost at exit when always()"


@settings(max_examples=60)
@given(fault_plans(min_size=2, max_size=4, faults="rate_limit", random=False))
def test_fault_plans_respect_their_size_and_faults(plan: tuple[Injection, ...]) -> None:
    """Plans are tuples within the size bounds, of the requested faults only."""
    assert isinstance(plan, tuple)
    assert 2 <= len(plan) <= 4
    assert {i.fault.name for i in plan} == {"rate_limit"}
    assert not any(i.schedule.random for i in plan)


def test_fault_plans_shrink_to_one_injection() -> None:
    """A plan that needs one fault shrinks to that fault alone, for every task, always."""
    found = find(
        fault_plans(max_size=3),
        lambda plan: any(i.fault.name == "oom" for i in plan),
        settings=_FIND,
    )
    assert [i.describe() for i in found] == ["oom at entry when always()"]


def test_fault_plans_may_be_empty() -> None:
    """min_size=0 allows, and shrinks to, a plan without faults."""
    assert find(fault_plans(min_size=0), lambda _: True, settings=_FIND) == ()


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        ({"faults": ["dedlock"]}, "fault", "unknown fault 'dedlock'; did you mean 'deadlock'?"),
        ({"faults": []}, "faults", "faults=[] selects nothing; pass None for every fault"),
        (
            {"faults": ["broker_down"]},
            "faults",
            "fault 'broker_down' cannot fire at any of points=('entry', 'exit'); it fires",
        ),
        ({"faults": ["oom"], "points": "result"}, "faults", "it fires at 'entry'"),
        ({"points": []}, "points", "points=[] selects nothing"),
        ({"points": ["entry", "dbb"]}, "points", "points holds 'dbb', which is not an injection"),
        ({"tasks": [""]}, "tasks", "tasks holds ''"),
        ({"horizon": -1}, "horizon", "horizon must be finite seconds > 0"),
        ({"min_size": -1}, "min_size", "min_size must be >= 0, got -1"),
        ({"min_size": 3, "max_size": 2}, "max_size", "max_size=2 is below min_size=3"),
    ],
)
def test_fault_plans_reject_invalid_arguments(
    kwargs: dict[str, object], key: str, fragment: str
) -> None:
    """Unknown faults get the catalog's error; impossible selections name their argument."""
    with pytest.raises(ConfigurationError) as info:
        fault_plans(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key
    assert fragment in str(info.value)


# --- decision_sources -------------------------------------------------------------------


@settings(max_examples=100)
@given(
    schedule=fault_schedules(max_conditions=4),
    source=decision_sources(),
    calls=st.lists(_CALLS, max_size=10),
)
def test_decision_sources_drive_any_schedule(
    schedule: Schedule, source: DecisionSource, calls: list[CallInfo]
) -> None:
    """A drawn source stands in for random.Random in every schedule, giving floats in [0, 1)."""
    for call in calls:
        assert isinstance(schedule.should_fire(call, source), bool)
    assert 0.0 <= source.random() < 1.0


def test_decision_sources_are_deterministic_under_a_seed() -> None:
    """The same hypothesis seed gives the same decisions, example by example."""

    def run() -> list[list[float]]:
        seen: list[list[float]] = []

        @hypothesis.seed(20240611)
        @settings(max_examples=15, database=None)
        @given(decision_sources())
        def collect(source: DecisionSource) -> None:
            seen.append([source.random() for _ in range(5)])

        collect()
        return seen

    first_run = run()
    assert len({tuple(values) for values in first_run}) > 1
    assert run() == first_run


@pytest.mark.parametrize("max_draws", [256, 0])
def test_decision_sources_are_controlled_by_hypothesis(max_draws: int) -> None:
    """hypothesis can steer a decision either way, also through the seeded fallback."""
    high = find(
        decision_sources(max_draws=max_draws),
        lambda r: r.random() > 0.9,
        settings=_FIND,
    )
    low = find(
        decision_sources(max_draws=max_draws),
        lambda r: r.random() < 0.1,
        settings=_FIND,
    )
    shown = "decision_sources()" if max_draws == 256 else "decision_sources(max_draws=0)"
    assert repr(high) == repr(low) == shown


def test_decision_sources_shrink_to_the_fewest_firings() -> None:
    """A run failing when two of ten 50% decisions fire shrinks to exactly two firings."""
    rate = probability(0.5)
    log: list[tuple[DecisionSource, list[bool]]] = []

    def fires_twice(source: DecisionSource) -> bool:
        calls = [dataclasses.replace(_CALL_3, call_index=i) for i in range(1, 11)]
        fired = [rate.should_fire(call, source) for call in calls]
        log.append((source, fired))
        return sum(fired) >= 2

    found = find(decision_sources(), fires_twice, settings=_FIND)
    fired = next(pattern for source, pattern in reversed(log) if source is found)
    assert sum(fired) == 2, fired


def test_decision_sources_survive_long_runs() -> None:
    """Past max_draws, decisions come from a seeded generator: thousands of calls still run."""
    runs: list[int] = []

    @settings(max_examples=5, database=None)
    @given(decision_sources(max_draws=50))
    def long_run(source: DecisionSource) -> None:
        values = [source.random() for _ in range(5000)]
        assert all(0.0 <= value < 1.0 for value in values)
        assert len(set(values[50:])) > 4000  # a real stream, not a constant
        runs.append(len(values))

    long_run()
    assert runs == [5000] * 5


@pytest.mark.parametrize("value", [-1, 2.5, True])
def test_decision_sources_reject_invalid_max_draws(value: object) -> None:
    """max_draws must be an integer >= 0."""
    with pytest.raises(ConfigurationError, match="max_draws must be") as info:
        decision_sources(max_draws=value)  # type: ignore[arg-type]
    assert info.value.key == "max_draws"


def test_decision_sources_show_their_decisions_in_a_failing_example(
    pytester: pytest.Pytester,
) -> None:
    """A failing chaos property prints each decision hypothesis made, shrunk to the minimum."""
    pytester.makepyfile(
        """
        from hypothesis import given, settings
        from pytest_taskchaos.schedules import CallInfo, probability
        from pytest_taskchaos.strategies import decision_sources

        @settings(database=None)
        @given(decision_sources())
        def test_fires_once_at_most(source):
            rate = probability(0.5)
            calls = [CallInfo(task_name="t", call_index=i) for i in range(1, 6)]
            assert sum(rate.should_fire(call, source) for call in calls) < 2
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*source=decision_sources(),*", "*Draw 5 (decision): *"])
    # Only the traceback's lines: with CI set, pytest also repeats the message untruncated in
    # the short test summary.
    decisions = [
        line for line in result.stdout.lines if line.startswith("E ") and "(decision): " in line
    ]
    # Newer hypothesis versions annotate values ("0.99  # or any other generated value").
    fired = [float(line.split("(decision): ", 1)[1].split()[0]) < 0.5 for line in decisions]
    assert len(decisions) == 5
    assert sum(fired) == 2, decisions

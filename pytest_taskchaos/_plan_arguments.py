"""The arguments of the chaos strategies, checked the way the ``chaos`` marker checks them.

`pytest_taskchaos.strategies` builds fault schedules, injections, fault plans and
decision sources from what these return; a bad argument raises
``resilience.errors.ConfigurationError`` naming it (``key``), and an unknown fault
raises the catalog's own error. Which faults can fire at which points is decided
by `pytest_taskchaos.injection.injection` itself, the function the marker uses.

No hypothesis here: `pytest_taskchaos.strategies` stays the only module of the
plugin that imports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pytest_taskchaos.faults import CATALOG, Fault, InjectionPoint, fault
from pytest_taskchaos.injection import injection
from resilience.clock import seconds_of
from resilience.errors import ConfigurationError

__all__ = ["horizon_of", "integer_of", "placements_of", "tasks_of"]

_TASK_POINTS = frozenset(point.value for point in InjectionPoint)
# An ordinary raising fault, to validate a dependency point's name whatever faults are chosen.
_PROBE = Fault(name="probe", failure_type=None, raises=RuntimeError)


def integer_of(value: object, *, key: str, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) >= ``minimum``; else ``key`` is named."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{key} must be an integer, got {value!r}", key=key, value=value)
    if value < minimum:
        raise ConfigurationError(f"{key} must be >= {minimum}, got {value!r}", key=key, value=value)
    return value


def horizon_of(value: object) -> float:
    """The horizon in seconds (from seconds or a ``timedelta``): finite and > 0."""
    try:
        seconds = seconds_of(value, name="horizon")  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(str(exc), key="horizon", value=value) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"horizon must be finite seconds > 0, got {value!r}", key="horizon", value=value
        )
    return seconds


def _items(values: object, *, key: str, hint: str) -> list[object]:
    """One string as a single item, else the items of an iterable (at least one)."""
    items: object = (values,) if isinstance(values, str) else values
    if not isinstance(items, Iterable):
        raise ConfigurationError(
            f"{key} must be a string or a sequence of strings, got {values!r}",
            key=key,
            value=values,
        )
    listed = list(items)
    if not listed:
        raise ConfigurationError(f"{key}={values!r} selects nothing; {hint}", key=key, value=values)
    return listed


def _patterns(values: object, *, key: str, hint: str) -> tuple[str, ...]:
    """Non-empty strings, deduplicated in their given order."""
    chosen: list[str] = []
    for item in _items(values, key=key, hint=hint):
        if not isinstance(item, str) or not item:
            raise ConfigurationError(
                f"{key} holds {item!r}; each must be a non-empty string", key=key, value=item
            )
        if item not in chosen:
            chosen.append(item)
    return tuple(chosen)


def tasks_of(tasks: object) -> tuple[str, ...]:
    """The task globs of ``tasks`` (one string is one glob); none for ``None``."""
    if tasks is None:
        return ()
    return _patterns(
        tasks, key="tasks", hint="pass None for schedules and injections without task filters"
    )


def _fires_at(what: str | Fault, point: str) -> bool:
    """Whether ``injection()`` accepts ``what`` at ``point`` (the marker's own rules)."""
    try:
        injection(what, at=point)
    except ConfigurationError:
        return False
    return True


def _points(points: object) -> tuple[str, ...]:
    names: list[str] = []
    for name in _patterns(points, key="points", hint="pass at least one point, such as 'entry'"):
        try:
            # The marker's own check, which also normalises a dependency point (" DB " -> "db").
            point = name if name in _TASK_POINTS else injection(_PROBE, at=name).at
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"points holds {name!r}, which is not an injection point: {exc}",
                key="points",
                value=name,
            ) from None
        if point not in names:
            names.append(point)
    return tuple(names)


def _fault_names(faults: object) -> tuple[str, ...]:
    chosen: list[str] = []
    for item in _items(faults, key="faults", hint="pass None for every fault in the catalog"):
        made = fault(item)  # type: ignore[arg-type]  # an unknown name raises the catalog's error
        if made.name not in chosen:
            chosen.append(made.name)
    return tuple(chosen)


def placements_of(faults: object, points: object) -> dict[str, tuple[str, ...]]:
    """Each usable fault's allowed points, its natural point first (the shrink target)."""
    where = _points(points)
    explicit = faults is not None
    placements: dict[str, tuple[str, ...]] = {}
    for name in _fault_names(faults) if explicit else tuple(CATALOG):
        own = CATALOG[name].point.value
        ordered = sorted(where, key=lambda point: point != own)
        usable = tuple(point for point in ordered if _fires_at(name, point))
        if usable:
            placements[name] = usable
        elif explicit:
            raise ConfigurationError(
                f"fault {name!r} cannot fire at any of points={where!r}; it fires at {own!r}, "
                "so add that point or drop the fault",
                key="faults",
                value=name,
            )
    return placements

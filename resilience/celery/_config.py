"""Settings of the Celery integration: install() arguments, then ``app.conf``, then env.

Each setting has one name per source: the ``install()`` keyword (``idempotency_lease``),
the Celery setting (``resilience_idempotency_lease``; with Django's ``CELERY``
namespace, ``CELERY_RESILIENCE_IDEMPOTENCY_LEASE``) and the environment variable
(``RESILIENCE_IDEMPOTENCY_LEASE``). The first source that sets a value wins. A bad
value raises :class:`~resilience.errors.ConfigurationError` whose ``key`` is the
name in the source it came from. Per-task options (``resilience={...}``) are
parsed here too, when Celery builds the task class.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from types import MappingProxyType
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from resilience.clock import seconds_of
from resilience.engine import Priority
from resilience.errors import ConfigurationError
from resilience.idempotency import DEFAULT_LEASE, DEFAULT_TTLS, OnStoreError
from resilience.policy import RetryPolicy
from resilience.taxonomy import FailureType

__all__ = [
    "CELERY_TIMEZONE",
    "CONF_PREFIX",
    "ENV_PREFIX",
    "ResilienceSettings",
    "TaskOptions",
    "engine_settings_given",
    "flag",
    "parse_peak_hours",
    "parse_policies",
    "parse_task_options",
    "parse_timezone",
    "resolve_settings",
]

_E = TypeVar("_E", OnStoreError, Priority, FailureType)

CONF_PREFIX: Final = "resilience_"
ENV_PREFIX: Final = "RESILIENCE_"

# install() keyword -> its default; the Celery setting and env var derive from the name.
_DURATIONS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "idempotency_lease": DEFAULT_LEASE,
        "in_progress_delay": 5.0,
        "min_deferral": 1.0,
        "forced_open_delay": 60.0,
    }
)
# On/off settings -> their default; the environment spells them 1/0, true/false, yes/no, on/off.
_FLAGS: Final[Mapping[str, bool]] = MappingProxyType({"track_executions": False})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
# Settings read from app.conf but not from the environment (objects, not strings).
_CONF_ONLY: Final = frozenset({"policies"})
# The store's env var is the one every part of the library reads.
_ENV_NAMES: Final[Mapping[str, str]] = MappingProxyType({"store": "RESILIENCE_STORE_URL"})
# Settings of the engine install() builds (an engine passed to install() has its own).
_ENGINE_KEYS: Final = ("timezone", "peak_hours")
_KNOWN: Final = frozenset(
    {"store", "on_store_error", "priority", *_DURATIONS, *_FLAGS, *_CONF_ONLY, *_ENGINE_KEYS}
)
# Celery's own time zone setting, the fallback of resilience_timezone.
CELERY_TIMEZONE: Final = "timezone"
_UTC: Final = ZoneInfo("UTC")
_DEFAULT_PEAK_HOURS: Final = (9, 18)
_HOURS: Final = re.compile(r"\s*(\d{1,2})\s*-\s*(\d{1,2})\s*")

_TASK_KEYS: Final = (
    "idempotency_lease",
    "idempotency_ttl",
    "max_retries",
    "policies",
    "priority",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResilienceSettings:
    """The resolved settings of one Celery app's resilient tasks.

    Attributes:
        store_url: the store's URL (``None`` when a store object was passed).
        on_store_error: what idempotency does when its store fails.
        priority: the default priority of tasks that do not set one.
        idempotency_lease: seconds a run holds its idempotency key before another
            delivery may take it over (a killed worker blocks the key this long).
        in_progress_delay: the longest wait before re-checking a key held by a run in
            progress elsewhere (shorter when the holder's lease ends sooner).
        min_deferral: the shortest countdown of a deferral (a breaker half-open with
            its probe slot taken answers "0 s": this keeps it from spinning).
        forced_open_delay: how long to wait before re-checking a breaker forced open
            by an operator (no probe time exists).
        policies: per-type retry policies for the app's engine.
        track_executions: record the outcome of every attempt (not only retries) in
            the outcomes store, for the executions and success rate of ``resilience
            stats`` and the dashboard. Off by default: a plain success then touches
            no store.
        timezone: the time zone of the peak hours (``resilience_timezone``, else
            Celery's own ``timezone`` setting, else UTC).
        peak_hours: ``(start, end)`` local hours during which retries of low-priority
            tasks wait for the end of the window (end exclusive, may wrap midnight);
            ``None`` defers nothing. ``timezone`` and ``peak_hours`` configure the
            engine ``install()`` builds; an engine passed to it keeps its own.
    """

    store_url: str | None = None
    on_store_error: OnStoreError = OnStoreError.FAIL_CLOSED
    priority: Priority = Priority.NORMAL
    idempotency_lease: float = DEFAULT_LEASE
    in_progress_delay: float = 5.0
    min_deferral: float = 1.0
    forced_open_delay: float = 60.0
    policies: Mapping[FailureType, RetryPolicy] = field(
        default_factory=lambda: MappingProxyType({})
    )
    track_executions: bool = False
    timezone: tzinfo = _UTC
    peak_hours: tuple[int, int] | None = _DEFAULT_PEAK_HOURS

    def __post_init__(self) -> None:
        for name in _FLAGS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigurationError(
                    f"{name} must be True or False, got {value!r}", key=name, value=value
                )
        for name in _DURATIONS:
            value = getattr(self, name)
            if not isinstance(value, float) or not value > 0 or math.isinf(value):
                raise ConfigurationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}",
                    key=name,
                    value=value,
                )
        if not isinstance(self.on_store_error, OnStoreError):
            raise ConfigurationError(
                f"on_store_error must be an OnStoreError, got {self.on_store_error!r}",
                key="on_store_error",
                value=self.on_store_error,
            )
        if not isinstance(self.priority, Priority):
            raise ConfigurationError(
                f"priority must be a Priority, got {self.priority!r}",
                key="priority",
                value=self.priority,
            )
        if not isinstance(self.timezone, tzinfo):
            raise ConfigurationError(
                f"timezone must be a tzinfo, got {self.timezone!r}",
                key="timezone",
                value=self.timezone,
            )
        if self.peak_hours is not None and (
            not isinstance(self.peak_hours, tuple)
            or parse_peak_hours(self.peak_hours, key="peak_hours") != self.peak_hours
        ):
            raise ConfigurationError(
                f"peak_hours must be a (start, end) tuple or None, got {self.peak_hours!r}",
                key="peak_hours",
                value=self.peak_hours,
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """One task's options, parsed from its class attributes when Celery builds it.

    Attributes:
        breaker: the dependency whose breaker guards the task, or ``None``.
        idempotency_key: ``None`` (off), ``True`` (derived from every argument), a
            template (``"charge:{order_id}"``) or a callable.
        idempotency_category: a key of ``DEFAULT_TTLS``.
        idempotency_ttl: overrides the category's TTL, in seconds.
        idempotency_lease: overrides the app's lease, in seconds.
        priority: overrides the app's default priority.
        policies: per-type policies for this task only.
        max_retries: caps the retries of every retried type for this task.
    """

    breaker: str | None = None
    idempotency_key: bool | str | Callable[..., object] | None = None
    idempotency_category: str = "default"
    idempotency_ttl: float | None = None
    idempotency_lease: float | None = None
    priority: Priority | None = None
    policies: Mapping[FailureType, RetryPolicy] = field(
        default_factory=lambda: MappingProxyType({})
    )
    max_retries: int | None = None

    @property
    def guarded(self) -> bool:
        """Whether the task uses a breaker or idempotency (the slower, guarded path)."""
        return self.breaker is not None or self.idempotency_key is not None


def resolve_settings(
    given: Mapping[str, Any],
    conf: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> ResilienceSettings:
    """Merge install() arguments, ``app.conf`` and the environment, first set wins.

    Args:
        given: install()'s keyword arguments that were not ``None``.
        conf: the Celery app's configuration (``app.conf``), or ``None``.
        environ: the environment; ``os.environ`` by default.

    Returns:
        The resolved settings.

    Raises:
        ConfigurationError: an unknown ``resilience_*`` Celery setting, or a bad value
            (``key`` names the argument, setting or variable it came from).
    """
    env = os.environ if environ is None else environ
    conf_values = _conf_values(conf)

    def pick(name: str) -> tuple[str, Any] | None:
        return _pick(name, given, conf_values, env)

    values: dict[str, Any] = {}
    found = pick("store")
    if found is not None:
        key, value = found
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"{key} must be a store URL, got {value!r}", key=key, value=type(value).__name__
            )
        values["store_url"] = value
    found = pick("on_store_error")
    if found is not None:
        values["on_store_error"] = _member(OnStoreError, found)
    found = pick("priority")
    if found is not None:
        values["priority"] = _member(Priority, found)
    for name in _DURATIONS:
        found = pick(name)
        if found is not None:
            values[name] = duration(found[1], key=found[0])
    for name in _FLAGS:
        found = pick(name)
        if found is not None:
            values[name] = flag(found[1], key=found[0])
    found = pick("policies")
    if found is not None:
        values["policies"] = parse_policies(found[1], key=found[0])
    found = pick("timezone")
    if found is None:
        celery_zone = _celery_timezone(conf)
        if celery_zone is not None:
            found = CELERY_TIMEZONE, celery_zone
    if found is not None:
        values["timezone"] = parse_timezone(found[1], key=found[0])
    found = pick("peak_hours")
    if found is not None:
        values["peak_hours"] = parse_peak_hours(found[1], key=found[0])
    return ResilienceSettings(**values)


def engine_settings_given(
    given: Mapping[str, Any],
    conf: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, Any]]:
    """The engine settings (``timezone``, ``peak_hours``) set explicitly, and their values.

    An argument, a ``resilience_*`` Celery setting or an environment variable counts;
    Celery's own ``timezone`` (only a fallback) does not.

    Returns:
        ``(key, value)`` per setting set, ``key`` naming it in the source it came from
        (``"resilience_timezone"``).
    """
    env = os.environ if environ is None else environ
    conf_values = _conf_values(conf)
    found = (_pick(name, given, conf_values, env) for name in _ENGINE_KEYS)
    return [source for source in found if source is not None]


def _conf_values(conf: Mapping[str, Any] | None) -> dict[str, tuple[str, Any]]:
    """The ``resilience_*`` settings set in ``conf``: short name -> (key as written, value).

    Under a namespace (Django's ``config_from_object(..., namespace="CELERY")``)
    Celery keeps settings it does not know as written: ``CELERY_RESILIENCE_STORE``.
    """
    conf_values: dict[str, tuple[str, Any]] = {}
    if conf is None:
        return conf_values
    names = list(conf.keys())  # first: Celery loads a lazy configuration, and its prefix
    prefix = getattr(conf, "prefix", None)
    namespaced = f"{prefix}{ENV_PREFIX}" if isinstance(prefix, str) and prefix else None
    for name in names:
        if name.startswith(CONF_PREFIX):
            short = name[len(CONF_PREFIX) :]
        elif namespaced is not None and name.startswith(namespaced):
            short = name[len(namespaced) :].lower()
        else:
            continue
        if short not in _KNOWN:
            spelling = name[: len(name) - len(short)]
            known = ", ".join(sorted(spelling + _spelled(k, name) for k in _KNOWN))
            raise ConfigurationError(
                f"unknown Celery setting {name!r}; known: {known}", key=name, value=conf[name]
            )
        if conf[name] is not None:
            conf_values[short] = (name, conf[name])
    return conf_values


def _spelled(short: str, like: str) -> str:
    """``short`` in the case of the setting name ``like`` (upper under a namespace)."""
    return short.upper() if like.isupper() else short


def _pick(
    name: str,
    given: Mapping[str, Any],
    conf_values: Mapping[str, tuple[str, Any]],
    env: Mapping[str, str],
) -> tuple[str, Any] | None:
    """The first source that sets ``name``: its key there and its value."""
    if given.get(name) is not None:
        return name, given[name]
    if name in conf_values:
        return conf_values[name]
    if name not in _CONF_ONLY:
        var = _ENV_NAMES.get(name, ENV_PREFIX + name.upper())
        raw = env.get(var)
        if raw:
            return var, raw
    return None


def _celery_timezone(conf: Mapping[str, Any] | None) -> object:
    """Celery's ``timezone`` setting (Django's ``TIME_ZONE`` too, via Celery), or ``None``."""
    if conf is None:
        return None
    # Celery's Settings.timezone also reads Django's TIME_ZONE; a plain mapping has no such
    # attribute.
    zone = getattr(conf, CELERY_TIMEZONE, None)
    if zone is None and isinstance(conf, Mapping):
        zone = conf.get(CELERY_TIMEZONE)
    return zone or None


def parse_timezone(value: object, *, key: str) -> tzinfo:
    """A time zone from an IANA name (``"Europe/Paris"``) or a ``tzinfo``.

    Raises:
        ConfigurationError: not a known IANA time zone.
    """
    if isinstance(value, tzinfo):
        return value
    if isinstance(value, str) and value.strip():
        try:
            return ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ConfigurationError(
        f"{key} must be an IANA time zone such as 'Europe/Paris' (or a tzinfo), got {value!r}",
        key=key,
        value=value,
    )


def parse_peak_hours(value: object, *, key: str) -> tuple[int, int] | None:
    """The peak window from ``(start, end)``, ``"start-end"`` or ``"none"`` (no deferral).

    Hours are whole local hours in 0..23, start and end distinct (end exclusive; the
    window may wrap midnight: ``"22-6"``).

    Raises:
        ConfigurationError: any other value.
    """
    hours: object = value
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none":
            return None
        matched = _HOURS.fullmatch(text)
        hours = (int(matched[1]), int(matched[2])) if matched else None
    elif isinstance(value, list):
        hours = tuple(value)
    if (
        isinstance(hours, tuple)
        and len(hours) == 2
        and all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23 for h in hours)
        and hours[0] != hours[1]
    ):
        return hours[0], hours[1]
    raise ConfigurationError(
        f"{key} must be two distinct hours in 0..23 as 'start-end' ('9-18'; '22-6' wraps "
        f"midnight) or (start, end), or 'none' to defer nothing, got {value!r}",
        key=key,
        value=value,
    )


def flag(value: object, *, key: str) -> bool:
    """An on/off setting from a bool or a string (from the environment).

    Args:
        value: ``True``/``False``, or ``1``/``0``, ``true``/``false``, ``yes``/``no``,
            ``on``/``off`` in any case.
        key: the name of the setting in its source, for the message.

    Returns:
        The setting's value.

    Raises:
        ConfigurationError: any other value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigurationError(
        f"{key} must be true or false (1/0, yes/no, on/off), got {value!r}", key=key, value=value
    )


def parse_policies(value: object, *, key: str) -> Mapping[FailureType, RetryPolicy]:
    """Per-type policies from ``{FailureType or its name: RetryPolicy or a dict}``.

    Raises:
        ConfigurationError: not a mapping, an unknown type or an invalid policy.
    """
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{key} must map failure types to retry policies, got {value!r}", key=key, value=value
        )
    policies: dict[FailureType, RetryPolicy] = {}
    for raw_type, raw_policy in value.items():
        failure_type = _member(FailureType, (f"{key}[{raw_type!r}]", raw_type))
        if isinstance(raw_policy, RetryPolicy):
            policies[failure_type] = raw_policy
        elif isinstance(raw_policy, Mapping):
            policies[failure_type] = RetryPolicy.from_dict(raw_policy)
        else:
            raise ConfigurationError(
                f"{key}[{raw_type!r}] must be a RetryPolicy or a dict, got {raw_policy!r}",
                key=f"{key}.{failure_type.value}",
                value=raw_policy,
            )
    return MappingProxyType(policies)


def parse_task_options(task_name: str, namespace: Mapping[str, Any]) -> TaskOptions:
    """Check and parse a ResilientTask's options (its class attributes).

    Args:
        task_name: the task's name, for the messages.
        namespace: reads ``breaker``, ``idempotency_key``, ``idempotency_category``
            and ``resilience`` (a dict of per-task overrides).

    Returns:
        The parsed options.

    Raises:
        ConfigurationError: naming the option (``key``) and the task.
    """
    try:
        return _task_options(task_name, namespace)
    except ConfigurationError as error:
        if f"task {task_name!r}" in str(error):
            raise
        raise ConfigurationError(
            f"task {task_name!r}: {error}", key=error.key, value=error.value
        ) from None


def _task_options(task_name: str, namespace: Mapping[str, Any]) -> TaskOptions:
    breaker = namespace.get("breaker")
    if breaker is not None and (not isinstance(breaker, str) or not breaker.strip()):
        raise ConfigurationError(
            f"task {task_name!r}: breaker must be a dependency name (a non-empty str), "
            f"got {breaker!r}",
            key="breaker",
            value=breaker,
        )
    spec = namespace.get("idempotency_key")
    if not (
        spec is None or spec is True or (isinstance(spec, str) and spec) or callable(spec)
    ) or isinstance(spec, type):
        raise ConfigurationError(
            f"task {task_name!r}: idempotency_key must be None, True, a template string or "
            f"a callable, got {spec!r}",
            key="idempotency_key",
            value=spec,
        )
    category = namespace.get("idempotency_category") or "default"
    if category not in DEFAULT_TTLS:
        raise ConfigurationError(
            f"task {task_name!r}: unknown idempotency_category {category!r}; "
            f"known: {', '.join(DEFAULT_TTLS)}",
            key="idempotency_category",
            value=category,
        )
    raw = namespace.get("resilience") or {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f"task {task_name!r}: resilience must be a dict of options, got {raw!r}",
            key="resilience",
            value=raw,
        )
    unknown = sorted(str(k) for k in raw if k not in _TASK_KEYS)
    if unknown:
        raise ConfigurationError(
            f"task {task_name!r}: unknown resilience option(s) {', '.join(unknown)}; "
            f"known: {', '.join(_TASK_KEYS)}",
            key=f"resilience.{unknown[0]}",
            value=raw[unknown[0]],
        )
    max_retries = raw.get("max_retries")
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ConfigurationError(
            f"task {task_name!r}: resilience max_retries must be an int >= 0, got {max_retries!r}",
            key="resilience.max_retries",
            value=max_retries,
        )
    priority = raw.get("priority")
    ttl, lease = raw.get("idempotency_ttl"), raw.get("idempotency_lease")
    return TaskOptions(
        breaker=breaker,
        idempotency_key=spec,
        idempotency_category=category,
        idempotency_ttl=None if ttl is None else duration(ttl, key="resilience.idempotency_ttl"),
        idempotency_lease=(
            None if lease is None else duration(lease, key="resilience.idempotency_lease")
        ),
        priority=None if priority is None else _member(Priority, ("resilience.priority", priority)),
        policies=parse_policies(raw.get("policies") or {}, key="resilience.policies"),
        max_retries=max_retries,
    )


def duration(value: object, *, key: str) -> float:
    """Seconds from a number, a ``timedelta`` or a numeric string (from the environment).

    Raises:
        ConfigurationError: not a finite duration > 0.
    """
    seconds: float | None = None
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = None
    elif isinstance(value, timedelta) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    ):
        seconds = seconds_of(value, name=key)
    if seconds is None or not seconds > 0 or math.isinf(seconds):
        raise ConfigurationError(
            f"{key} must be a finite duration > 0 (seconds or a timedelta), got {value!r}",
            key=key,
            value=value,
        )
    return seconds


def _member(enum: type[_E], found: tuple[str, object]) -> _E:
    key, value = found
    try:
        return enum(value)  # type: ignore[arg-type]  # a wrong type is reported below
    except (ValueError, TypeError):
        known = ", ".join(member.value for member in enum)
        raise ConfigurationError(
            f"{key} must be one of {known}, got {value!r}", key=key, value=value
        ) from None

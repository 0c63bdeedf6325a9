"""Alert rules over the dashboard's snapshot, and the sinks that hear about alerts.

The defaults are the seed's thresholds: dead-letter depth (PENDING + RETRYING)
above 50 is critical and above 20 a warning; a success rate below 90 % a warning
(the task executions' success rate when workers track executions, else the retry
success rate); an open breaker critical; any dead letter of a system failure (out of
memory, disk full) critical. :class:`AlertRules` changes them; sinks
(:class:`LogSink`, :class:`WebhookSink`, any callable taking an :class:`Alert`)
are told once when an alert starts, not on every page view. :func:`watch` is the
server's timer: it runs a check every few seconds, so an unattended dashboard
still tells its sinks.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from anyio import sleep
from starlette.concurrency import run_in_threadpool

from resilience.errors import ConfigurationError
from resilience.storage.records import DeadLetterStatus
from resilience.taxonomy import AlertLevel, FailureType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from resilience.dashboard._context import Snapshot

__all__ = [
    "Alert",
    "AlertMonitor",
    "AlertRules",
    "AlertSink",
    "LogSink",
    "WebhookSink",
    "check_once",
    "evaluate",
    "watch",
]

_log = logging.getLogger("resilience.dashboard.alerts")


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert in force.

    Attributes:
        rule: which rule fired (``"dlq_depth"``, ``"success_rate"``,
            ``"open_breaker"``, ``"system_failure"``).
        subject: what it is about (a breaker name, a failure type, ``"dlq"``).
        level: how loud.
        message: one sentence for a human.
        value: the measured value.
    """

    rule: str
    subject: str
    level: AlertLevel
    message: str
    value: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-compatible dict."""
        return {
            "rule": self.rule,
            "subject": self.subject,
            "level": self.level.value,
            "message": self.message,
            "value": self.value,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRules:
    """The thresholds; a rule set to ``None`` is off.

    Attributes:
        dlq_warning: active dead letters (PENDING + RETRYING) above which to warn.
        dlq_critical: active dead letters above which it is critical.
        success_rate_warning: warn when the success rate is below this (0..1): the
            executions' when tracked (``track_executions``), else the retries'.
        open_breaker_level: the level of an open breaker alert.
        critical_breakers: only these breakers alert when open (``None``: every one).
        system_failure_types: types whose active dead letters are critical.

    Raises:
        ConfigurationError: a negative threshold, a rate outside 0..1, or
            ``dlq_warning`` above ``dlq_critical``.
    """

    dlq_warning: int | None = 20
    dlq_critical: int | None = 50
    success_rate_warning: float | None = 0.9
    open_breaker_level: AlertLevel | None = AlertLevel.CRITICAL
    critical_breakers: frozenset[str] | None = None
    system_failure_types: frozenset[FailureType] = field(
        default_factory=lambda: frozenset(
            {FailureType.SYSTEM_OUT_OF_MEMORY, FailureType.SYSTEM_DISK_FULL}
        )
    )

    def __post_init__(self) -> None:
        for key in ("dlq_warning", "dlq_critical"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ConfigurationError(
                    f"AlertRules.{key} must be an int >= 0 or None, got {value!r}",
                    key=key,
                    value=value,
                )
        if (
            self.dlq_warning is not None
            and self.dlq_critical is not None
            and self.dlq_warning > self.dlq_critical
        ):
            raise ConfigurationError(
                f"AlertRules.dlq_warning ({self.dlq_warning}) must not exceed "
                f"dlq_critical ({self.dlq_critical})",
                key="dlq_warning",
                value=self.dlq_warning,
            )
        rate = self.success_rate_warning
        if rate is not None and not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):
            raise ConfigurationError(
                f"AlertRules.success_rate_warning must be between 0 and 1 or None, got {rate!r}",
                key="success_rate_warning",
                value=rate,
            )


def evaluate(rules: AlertRules, snap: Snapshot) -> list[Alert]:
    """The alerts in force for ``snap`` under ``rules``, most severe first.

    Args:
        rules: the thresholds.
        snap: the dead letters, breakers, retries and executions read once.

    Returns:
        The alerts.
    """
    alerts: list[Alert] = []
    by_status = snap.summary.by_status
    active = by_status[DeadLetterStatus.PENDING] + by_status[DeadLetterStatus.RETRYING]
    for limit, level in (
        (rules.dlq_critical, AlertLevel.CRITICAL),
        (rules.dlq_warning, AlertLevel.WARNING),
    ):
        if limit is not None and active > limit:
            alerts.append(
                Alert(
                    rule="dlq_depth",
                    subject="dlq",
                    level=level,
                    message=f"{active} dead letters waiting (PENDING or RETRYING), above {limit}",
                    value=float(active),
                )
            )
            break
    floor = rules.success_rate_warning
    executions = snap.executions
    if executions.tracked:
        rate, subject = executions.success_rate, "executions"
        what = f"task success rate {{:.1%}} over {executions.total} executions"
    else:
        rate, subject, what = snap.success_rate, "retries", "retry success rate {:.1%}"
    if floor is not None and rate is not None and rate < floor:
        alerts.append(
            Alert(
                rule="success_rate",
                subject=subject,
                level=AlertLevel.WARNING,
                message=f"{what.format(rate)} is below {floor:.0%}",
                value=rate,
            )
        )
    if rules.open_breaker_level is not None:
        for row in snap.breakers:
            name = str(row["name"])
            wanted = rules.critical_breakers is None or name in rules.critical_breakers
            if wanted and row["state"] in ("open", "forced_open"):
                alerts.append(
                    Alert(
                        rule="open_breaker",
                        subject=name,
                        level=rules.open_breaker_level,
                        message=f"circuit breaker {name!r} is {row['state']}",
                        value=1.0,
                    )
                )
    for kind in sorted(rules.system_failure_types):
        count = sum(
            n
            for (status, type_name), n in snap.depth_by_status_and_type.items()
            if type_name == kind.value
            and status in (DeadLetterStatus.PENDING.value, DeadLetterStatus.RETRYING.value)
        )
        if count:
            alerts.append(
                Alert(
                    rule="system_failure",
                    subject=kind.value,
                    level=AlertLevel.CRITICAL,
                    message=f"{count} dead letter(s) failed with {kind.value}",
                    value=float(count),
                )
            )
    alerts.sort(key=lambda a: -a.level.rank)
    return alerts


class AlertSink(Protocol):
    """Anything told about an alert that starts: a callable taking the :class:`Alert`."""

    def __call__(self, alert: Alert) -> None:
        """Deliver ``alert``; exceptions are logged by the monitor, never raised to a page."""
        ...


class LogSink:
    """Log each alert (critical and error as ERROR, warning as WARNING, info as INFO).

    Args:
        logger: where to log (default ``resilience.dashboard.alerts``).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or _log

    def __call__(self, alert: Alert) -> None:
        """Log ``alert`` with its fields as ``extra``."""
        level = {
            AlertLevel.CRITICAL: logging.ERROR,
            AlertLevel.ERROR: logging.ERROR,
            AlertLevel.WARNING: logging.WARNING,
        }.get(alert.level, logging.INFO)
        self.logger.log(
            level,
            "alert %s: %s",
            alert.level.value,
            alert.message,
            extra={"alert": alert.to_dict()},
        )


class WebhookSink:
    """POST each alert as JSON (``Alert.to_dict()``) to a URL with urllib.

    Args:
        url: an ``http://`` or ``https://`` URL.
        timeout: seconds to wait for the receiver.
        headers: extra headers (an ``Authorization`` for the receiver, say).

    Raises:
        ConfigurationError: a URL with another scheme.
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"WebhookSink url must start with http:// or https://, got {url!r}",
                key="url",
                value=url,
            )
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})

    def __call__(self, alert: Alert) -> None:
        """POST ``alert``; raises ``OSError`` when the receiver fails (the monitor logs it)."""
        body = json.dumps(alert.to_dict()).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **self.headers},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            response.read()


class AlertMonitor:
    """Evaluate the rules and tell the sinks about alerts that were not in force before.

    Args:
        rules: the thresholds.
        sinks: who to tell.
    """

    def __init__(self, rules: AlertRules, sinks: Iterable[AlertSink] = ()) -> None:
        self.rules = rules
        self.sinks = list(sinks)
        self._active: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def check(self, snap: Snapshot) -> list[Alert]:
        """The alerts in force; sinks hear about each one once, when it starts.

        Args:
            snap: the state to evaluate.

        Returns:
            The alerts in force (see :func:`evaluate`).
        """
        alerts = evaluate(self.rules, snap)
        keys = {(a.rule, a.subject, a.level.value) for a in alerts}
        with self._lock:
            new = [a for a in alerts if (a.rule, a.subject, a.level.value) not in self._active]
            self._active = keys
        for alert in new:
            for sink in self.sinks:
                try:
                    sink(alert)
                except Exception:  # noqa: BLE001 - a broken sink must not break the dashboard
                    _log.exception("alert sink %r failed for %s", sink, alert.rule)
        return alerts


async def check_once(check: Callable[[], object]) -> bool:
    """Run one alert check in a worker thread (store reads block), logging any failure.

    Args:
        check: reads the store and tells the sinks (sink failures are already
            logged by :meth:`AlertMonitor.check`).

    Returns:
        Whether the check completed; a failure (an unreachable store, say) is
        logged with its traceback and not raised, so the timer keeps going.
    """
    try:
        await run_in_threadpool(check)
    except Exception:  # noqa: BLE001 - the timer outlives a store outage
        _log.exception("periodic alert check failed; the next one runs as scheduled")
        return False
    return True


async def watch(check: Callable[[], object], *, interval: float) -> None:
    """Wait ``interval`` seconds, run :func:`check_once`, forever (until cancelled).

    The first check comes one interval after start-up, not at once, so opening
    the app (a test client, a rolling restart) reads nothing from the store.

    Args:
        check: the check to run (see :func:`check_once`).
        interval: seconds between checks (> 0).
    """
    while True:
        await sleep(interval)
        await check_once(check)

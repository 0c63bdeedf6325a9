"""The operator dashboard: server-rendered pages, a JSON API and Prometheus metrics.

An ASGI app (Starlette, Jinja2 templates) over a store::

    from resilience.dashboard import create_app

    app = create_app("redis://localhost:6379/1", celery_app=celery_app)
    # uvicorn module:app, or mount it: Mount("/ops", app=app)

Needs the ``dashboard`` extra (``starlette``, ``jinja2``, ``python-multipart``,
``uvicorn``). Every route needs a token; see ``docs/dashboard.md``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse

from resilience.clock import Clock, seconds_of, system_clock
from resilience.dashboard import _alerts, _api, _metrics, _pages
from resilience.dashboard._alerts import (
    Alert,
    AlertMonitor,
    AlertRules,
    AlertSink,
    LogSink,
    WebhookSink,
)
from resilience.dashboard._auth import READ_TOKEN_ENV, TOKEN_ENV, AuthMiddleware, Credentials
from resilience.dashboard._context import Context, snapshot
from resilience.dead_letter import DeadLetterQueue
from resilience.errors import ConfigurationError
from resilience.storage import open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from datetime import timedelta

    from starlette.requests import Request
    from starlette.responses import Response

    from resilience.dead_letter import Replay
    from resilience.storage.base import Store

__all__ = [
    "READ_TOKEN_ENV",
    "TOKEN_ENV",
    "Alert",
    "AlertRules",
    "AlertSink",
    "LogSink",
    "WebhookSink",
    "create_app",
]


def create_app(
    store: str | Store,
    *,
    token: str | None = None,
    read_token: str | None = None,
    dead_letters: DeadLetterQueue | None = None,
    replay: Replay | None = None,
    celery_app: Any = None,
    alert_rules: AlertRules | None = None,
    alert_sinks: Iterable[AlertSink] = (),
    clock: Clock = system_clock,
    session_secret: bytes | None = None,
    alert_interval: float | timedelta | None = 60.0,
) -> Starlette:
    """Build the dashboard's ASGI app.

    Args:
        store: a store URL (opened now, closed when the app shuts down) or a store.
        token: the operator token (default: ``$RESILIENCE_DASHBOARD_TOKEN``).
        read_token: the read-only token (default: ``$RESILIENCE_DASHBOARD_READ_TOKEN``).
        dead_letters: a ready queue (its redaction, replay); default: one over ``store``.
        replay: re-enqueues a record's task; needed for retries.
        celery_app: a Celery app set up with ``resilience.celery.install``; its
            replay is used when ``replay`` is not given.
        alert_rules: the alert thresholds (default: the seed's).
        alert_sinks: who is told when an alert starts (default: a :class:`LogSink`).
        clock: where ``now`` comes from.
        session_secret: the key that signs session cookies (default: random, so
            sessions end when the process does; pass one to share sessions
            between processes).
        alert_interval: seconds between alert checks run by a background task
            while the app is served (so sinks hear about alerts with nobody
            looking); ``None`` or ``0`` turns the timer off. The task starts
            and stops with the app's lifespan, which a host app must forward
            when it mounts the dashboard (see ``docs/dashboard.md``).

    Returns:
        The app. Mount it under a prefix to serve it inside another app.

    Raises:
        ConfigurationError: no token configured (there are no default
            credentials), a short token, a negative or non-finite
            ``alert_interval``, or a bad argument.
    """
    interval = _interval(alert_interval)
    credentials = Credentials(
        token=token if token is not None else os.environ.get(TOKEN_ENV) or None,
        read_token=read_token if read_token is not None else os.environ.get(READ_TOKEN_ENV) or None,
        secret=session_secret,
    )
    if replay is None and celery_app is not None:
        # Imported here: Celery is optional, and only retries need it.
        from resilience.celery import runtime_for  # noqa: PLC0415

        replay = runtime_for(celery_app).replay
    owns = isinstance(store, str)
    bundle: Store = open_store(store) if isinstance(store, str) else store
    try:
        if dead_letters is None:
            dead_letters = DeadLetterQueue(bundle, clock=clock, replay=replay)
        elif replay is not None:
            dead_letters.replay = replay
        sinks = list(alert_sinks) or [LogSink()]
        context = Context(
            store=bundle,
            dlq=dead_letters,
            clock=clock,
            monitor=AlertMonitor(alert_rules or AlertRules(), sinks),
            owns_store=owns,
        )
    except ConfigurationError:
        if owns:
            bundle.close()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with anyio.create_task_group() as group:
                if interval:
                    group.start_soon(_watch, context, interval, name="resilience alert timer")
                yield
                group.cancel_scope.cancel()
        finally:
            if context.owns_store:
                context.store.close()

    app = Starlette(
        routes=[*_api.routes(), *_metrics.routes(), *_pages.routes()],
        middleware=[Middleware(AuthMiddleware, credentials=credentials)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.context = context
    app.state.credentials = credentials
    app.state.alert_interval = interval
    return app


def _interval(value: float | timedelta | None) -> float:
    """``alert_interval`` in seconds, 0.0 when the timer is off."""
    if value is None:
        return 0.0
    try:
        seconds = seconds_of(value, name="alert_interval")
    except TypeError as exc:
        raise ConfigurationError(str(exc), key="alert_interval", value=value) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(
            f"alert_interval must be a finite number of seconds >= 0 (0 or None: no timer), "
            f"got {value!r}",
            key="alert_interval",
            value=value,
        )
    return seconds


def _check_alerts(context: Context) -> list[Alert]:
    """One alert evaluation, as the overview does it: read the store, tell the sinks.

    Blocking (store reads): the timer runs it in a worker thread.

    Raises:
        Exception: whatever the store raises (the timer logs it and goes on).
    """
    return context.monitor.check(snapshot(context))


async def _watch(context: Context, interval: float) -> None:
    """The timer task: :func:`_check_alerts` every ``interval`` seconds until cancelled."""
    await _alerts.watch(functools.partial(_check_alerts, context), interval=interval)


async def _http_error(request: Request, exc: Exception) -> Response:
    """404/405 and friends: JSON under /api/, plain text elsewhere."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    root = request.scope.get("root_path", "")
    path = request.url.path[len(root) :] if request.url.path.startswith(root) else request.url.path
    if path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)

"""The server-rendered pages: overview, dead letters, breakers, taxonomy, policies, trends.

Jinja2 with autoescape on renders every page; forms that change something carry
the session's CSRF token, checked before anything is read from the form. Every
action (retry, abandon, resolve, bulk actions, breaker resets) asks for
confirmation on a page of its own before it changes anything.
"""

from __future__ import annotations

import functools
import hmac
import json
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route

from resilience import _operations
from resilience.dashboard._auth import LOGIN_NONCE_COOKIE, SESSION_COOKIE, Credentials
from resilience.dashboard._charts import lines
from resilience.dashboard._context import (
    NO_REPLAY,
    BreakerNotFound,
    Context,
    adaptations,
    engine_of,
    is_open,
    snapshot,
)
from resilience.errors import ConfigurationError, DeadLetterConflict, StorageUnavailable
from resilience.policy import RetryPolicy, default_policy
from resilience.storage.records import DeadLetterRecord, DeadLetterStatus
from resilience.taxonomy import AlertLevel, FailureType

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.datastructures import FormData
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["PAGE_ACTOR", "routes"]

PAGE_ACTOR = "dashboard"
"""The actor the history of a change made from a page names."""

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_FILTERS = ("status", "task", "type", "since", "until", "text")
_NONCE_SHAPE = re.compile(r"[A-Za-z0-9_-]{22,64}")  # what token_urlsafe(16) makes, with room


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


_ENV.filters["iso"] = _iso


class PageError(Exception):
    """A page answer other than 200, shown as a message page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def render(request: Request, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
    """Render ``template`` with the common values (prefix, role, CSRF token, flash)."""
    session = getattr(request.state, "session", None)
    credentials: Credentials = request.app.state.credentials
    html = _ENV.get_template(template).render(
        base=_base(request),
        role=getattr(request.state, "role", None),
        csrf="" if session is None else credentials.csrf_token(session.sid),
        done=request.query_params.get("done"),
        **values,
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def _page(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except PageError as exc:
            return render(request, "message.html", status=exc.status, message=str(exc))
        except ConfigurationError as exc:
            return render(request, "message.html", status=400, message=str(exc))
        except DeadLetterConflict as exc:
            return render(request, "message.html", status=409, message=str(exc))
        except StorageUnavailable as exc:
            return render(request, "message.html", status=503, message=f"store unavailable: {exc}")

    return wrapper


async def _form(request: Request) -> FormData:
    """The posted form, after checking its CSRF token against the session."""
    form = await request.form()
    credentials: Credentials = request.app.state.credentials
    session = request.state.session
    if not credentials.csrf_ok(session.sid, form.get("csrf")):
        raise HTTPException(
            403, "CSRF token missing or wrong: reload the page and submit the form again"
        )
    return form


def _redirect(request: Request, path: str, **query: str) -> RedirectResponse:
    suffix = f"?{urlencode(query)}" if query else ""
    return RedirectResponse(f"{_base(request)}{path}{suffix}", status_code=303)


# --------------------------------------------------------------------------- login


async def login_form(request: Request) -> Response:
    """``GET /login``: the token form (with a double-submit nonce against login CSRF).

    A nonce the browser already holds is kept: browsers fetch ``/favicon.ico`` (and
    people open a second tab) after the form loaded, and each unauthenticated
    request lands here; a fresh nonce each time would expire the form already shown.
    """
    held = request.cookies.get(LOGIN_NONCE_COOKIE, "")
    nonce = held if _NONCE_SHAPE.fullmatch(held) else secrets.token_urlsafe(16)
    response = render(request, "login.html", nonce=nonce, error=None)
    _set_cookie(request, response, LOGIN_NONCE_COOKIE, nonce, max_age=3600)
    return response


async def login(request: Request) -> Response:
    """``POST /login``: check the token, set the session cookie."""
    form = await request.form()
    nonce = form.get("nonce")
    cookie = request.cookies.get(LOGIN_NONCE_COOKIE, "")
    credentials: Credentials = request.app.state.credentials
    if not isinstance(nonce, str) or not cookie or not hmac.compare_digest(nonce, cookie):
        fresh = secrets.token_urlsafe(16)
        response = render(
            request, "login.html", status=403, nonce=fresh, error="The form expired: try again."
        )
        _set_cookie(request, response, LOGIN_NONCE_COOKIE, fresh, max_age=3600)
        return response
    token = form.get("token")
    role = credentials.role_of(token) if isinstance(token, str) else None
    if role is None:
        return render(request, "login.html", status=401, nonce=nonce, error="Invalid token.")
    redirect = _redirect(request, "/")
    _set_cookie(request, redirect, SESSION_COOKIE, credentials.new_session(role), max_age=None)
    redirect.delete_cookie(LOGIN_NONCE_COOKIE, path=_base(request) or "/")
    return redirect


async def logout(request: Request) -> Response:
    """``POST /logout``: end the session."""
    await _form(request)
    response = _redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path=_base(request) or "/")
    return response


def _set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_base(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# --------------------------------------------------------------------------- overview


@_page
async def overview(request: Request) -> Response:
    """``GET /``: executions, DLQ depth, open breakers, failure types, alerts, retry success."""
    context = _context(request)

    def read() -> dict[str, Any]:
        snap = snapshot(context)
        tracked = snap.executions
        active = (DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING)
        critical = {
            t.value: n
            for (status, t_name), n in snap.depth_by_status_and_type.items()
            for t in [FailureType(t_name)]
            if DeadLetterStatus(status) in active and t.profile.alert_level is AlertLevel.CRITICAL
        }
        return {
            "snap": snap,
            "alerts": context.monitor.check(snap),
            "executions": tracked,
            "not_tracked": _operations.NOT_TRACKED,
            "open_breakers": [row for row in snap.breakers if is_open(row)],
            "critical": critical,
            "retries": sum(snap.retries.values()),
        }

    return render(request, "overview.html", **await run_in_threadpool(read))


# --------------------------------------------------------------------------- dead letters


def _filters_of(source: Any) -> dict[str, str]:
    return {k: str(source.get(k)).strip() for k in _FILTERS if source.get(k)}


@_page
async def dlq_list(request: Request) -> Response:
    """``GET /dlq/``: filters, a page of records, bulk actions."""
    context = _context(request)
    filters = _filters_of(request.query_params)
    where = _operations.dead_letter_filter(
        statuses=[filters["status"]] if "status" in filters else [],
        task=filters.get("task"),
        types=[filters["type"]] if "type" in filters else [],
        since=filters.get("since"),
        until=filters.get("until"),
        text=filters.get("text"),
    )
    after = request.query_params.get("after") or None
    page = await run_in_threadpool(
        functools.partial(
            context.dlq.list,
            status=where.statuses,
            task_name=where.task_name,
            failure_type=where.failure_types,
            since=where.since,
            until=where.until,
            text=where.text,
            limit=25,
            after=after,
        )
    )
    next_url = None
    if page.next_cursor is not None:
        next_url = f"{_base(request)}/dlq/?{urlencode({**filters, 'after': page.next_cursor})}"
    return render(
        request,
        "dlq_list.html",
        records=page.records,
        filters=filters,
        next_url=next_url,
        statuses=list(DeadLetterStatus),
        types=list(FailureType),
        can_retry=context.dlq.replay is not None,
    )


def _args_html(data: object, replacement: str) -> Markup:
    """Arguments as indented JSON, with every redaction marked so it reads as one."""
    text = str(escape(json.dumps(data, indent=2, ensure_ascii=False)))
    marker = str(escape(replacement))
    return Markup(  # noqa: S704 - built from escaped text and a fixed tag
        text.replace(marker, f'<mark class="redacted" title="redacted">{marker}</mark>')
    )


@_page
async def dlq_detail(request: Request) -> Response:
    """``GET /dlq/{id}/``: every field, arguments, traceback, history, action forms."""
    context = _context(request)
    record_id: str = request.path_params["record_id"]
    record = await run_in_threadpool(context.dlq.get, record_id)
    if record is None:
        raise PageError(404, f"no dead letter with id {record_id!r}")
    replacement = context.dlq.redaction.replacement
    return render(
        request,
        "dlq_detail.html",
        record=record,
        args_html=_args_html(record.args, replacement),
        kwargs_html=_args_html(record.kwargs, replacement),
        profile=record.failure_type.profile,
        can_retry=context.dlq.replay is not None,
        no_replay=NO_REPLAY,
    )


_ACTIONS = ("retry", "abandon", "resolve")
_ALLOWED = {
    "retry": frozenset({DeadLetterStatus.PENDING}),
    "abandon": frozenset({DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING}),
    "resolve": frozenset({DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING}),
}


def _check_action(record: DeadLetterRecord | None, record_id: str, action: str) -> DeadLetterRecord:
    """The record, if ``action`` applies to it now; else the page error saying why."""
    if record is None:
        raise PageError(404, f"no dead letter with id {record_id!r}")
    allowed = _ALLOWED[action]
    if record.status not in allowed:
        expected = " or ".join(sorted(s.value for s in allowed))
        raise PageError(
            409,
            f"dead letter {record_id!r} is {record.status.value}; "
            f"cannot {action} it (expects {expected})",
        )
    return record


@_page
async def dlq_action(request: Request) -> Response:
    """``POST /dlq/{id}/{retry|abandon|resolve}/``: confirm, then act.

    The detail page's forms post here without ``confirmed``: the answer is a
    confirmation page (task, failure type, what will happen) and nothing changes.
    Its form posts again with ``confirmed=yes``; both posts need the CSRF token.
    """
    context = _context(request)
    record_id: str = request.path_params["record_id"]
    action: str = request.path_params["action"]
    if action not in _ACTIONS:
        raise PageError(404, f"unknown action {action!r}: retry, abandon or resolve")
    form = await _form(request)
    note = str(form.get("note") or "").strip() or None
    if action == "abandon" and note is None:
        raise PageError(400, "abandon: a reason is required")
    if action == "retry" and context.dlq.replay is None:
        raise PageError(409, NO_REPLAY)
    record = _check_action(await run_in_threadpool(context.dlq.get, record_id), record_id, action)
    if form.get("confirmed") != "yes":
        return render(
            request,
            "confirm_action.html",
            action=action,
            record=record,
            note=note,
            profile=record.failure_type.profile,
            unreplayable=[f for f in record.flags if f in ("redacted", "truncated", "non_json")],
        )

    def act() -> None:
        if action == "retry":
            try:
                context.dlq.retry(record_id, actor=PAGE_ACTOR, note=note)
            except (DeadLetterConflict, ConfigurationError):
                raise
            except Exception as exc:  # noqa: BLE001 - any broker error: back to PENDING
                raise PageError(502, f"re-enqueuing failed: {exc} (back to PENDING)") from None
        elif action == "abandon":
            assert note is not None  # noqa: S101 - checked above, before the review
            context.dlq.abandon(record_id, actor=PAGE_ACTOR, reason=note)
        else:
            context.dlq.resolve(record_id, actor=PAGE_ACTOR, note=note)

    await run_in_threadpool(act)
    return _redirect(request, f"/dlq/{record_id}/", done=action)


@_page
async def dlq_bulk(request: Request) -> Response:
    """``POST /dlq/bulk/``: confirm, then retry or abandon a selection or a filter."""
    context = _context(request)
    form = await _form(request)
    action = form.get("action")
    if action not in ("retry", "abandon"):
        raise PageError(400, "action: choose retry or abandon")
    ids = [str(i) for i in form.getlist("ids") if str(i)]
    scope = form.get("scope", "selected")
    filters = _filters_of(form)
    reason = str(form.get("reason") or "").strip()
    if action == "abandon" and not reason:
        raise PageError(400, "abandon: a reason is required")
    if scope == "selected" and not ids:
        raise PageError(400, "select at least one record, or choose 'every match of the filter'")
    where = _operations.dead_letter_filter(
        statuses=[filters["status"]] if "status" in filters else [],
        task=filters.get("task"),
        types=[filters["type"]] if "type" in filters else [],
        since=filters.get("since"),
        until=filters.get("until"),
        text=filters.get("text"),
    )
    if scope != "selected":
        ids = []
    if action == "retry" and context.dlq.replay is None:
        raise PageError(409, NO_REPLAY)
    active = frozenset({DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING})
    targets = frozenset({DeadLetterStatus.PENDING}) if action == "retry" else active
    statuses = targets if where.statuses is None else where.statuses & targets

    def select() -> list[str]:
        from dataclasses import replace  # noqa: PLC0415

        selection = replace(where, statuses=statuses, ids=frozenset(ids) if ids else None)
        return [r.id for r in _operations.all_records(context.store.dead_letters, selection)]

    chosen = await run_in_threadpool(select) if statuses else []
    if form.get("confirmed") != "yes":
        return render(
            request,
            "confirm_bulk.html",
            action=action,
            chosen=chosen,
            reason=reason,
            ids=ids,
            scope=scope,
            filters=filters,
        )

    def act() -> tuple[int, int]:
        done = skipped = 0
        for record_id in chosen:
            try:
                if action == "retry":
                    context.dlq.retry(record_id, actor=PAGE_ACTOR)
                else:
                    context.dlq.abandon(record_id, actor=PAGE_ACTOR, reason=reason)
                done += 1
            except Exception:  # noqa: BLE001 - one failure must not stop the batch
                skipped += 1
        return done, skipped

    done, skipped = await run_in_threadpool(act)
    return _redirect(request, "/dlq/", done=f"bulk {action}: {done} done, {skipped} skipped")


# --------------------------------------------------------------------------- breakers


@_page
async def breakers(request: Request) -> Response:
    """``GET /breakers/``: state, failure counts, time to next probe, reset."""
    context = _context(request)
    try:
        rows = await run_in_threadpool(context.breakers)
        error = None
    except ConfigurationError as exc:
        rows, error = [], str(exc)
    return render(request, "breakers.html", rows=rows, error=error)


@_page
async def breaker_reset(request: Request) -> Response:
    """``GET`` asks for confirmation; ``POST`` (confirmed, CSRF-checked) resets."""
    context = _context(request)
    name: str = request.path_params["name"]
    if request.method == "GET":
        return render(request, "confirm_reset.html", name=name)
    await _form(request)
    try:
        result = await run_in_threadpool(context.reset_breaker, name)
    except BreakerNotFound as exc:
        raise PageError(404, str(exc)) from None
    return _redirect(request, "/breakers/", done=f"breaker {name}: {result['from']} -> closed")


# --------------------------------------------------------------------------- analysis pages


@_page
async def taxonomy(request: Request) -> Response:
    """``GET /taxonomy/``: distribution over 24 h, top 10 tasks, remediation per type."""
    context = _context(request)

    def read() -> dict[str, Any]:
        now = context.clock.time()
        trends = _operations.failure_trends(context.store, hours=24, now=now)
        dead: dict[str, list[int]] = trends["dead_letters"]  # type: ignore[assignment]
        retried: dict[str, list[int]] = trends["failed_retries"]  # type: ignore[assignment]
        summary = context.dlq.summary(now=now, top=10)
        rows = [
            {
                "type": t,
                "dead_letters": sum(dead.get(t.value, [])),
                "failed_retries": sum(retried.get(t.value, [])),
                "average_retries": summary.average_retries.get(t),
                "profile": t.profile,
            }
            for t in FailureType
        ]
        return {"rows": rows, "top_tasks": summary.top_tasks}

    return render(request, "taxonomy.html", **await run_in_threadpool(read))


def _delay_chart(kind: FailureType, policy: RetryPolicy) -> Markup | None:
    retries = list(range(1, policy.max_retries + 1))
    if not retries:
        return None
    envelope = [policy.envelope(n) for n in retries]
    return lines(
        {"shortest": [lo for lo, _ in envelope], "longest": [hi for _, hi in envelope]},
        x_labels=[f"#{n}" for n in retries],
        title=f"delay before each retry of {kind.value}",
        y_unit="s",
    )


@_page
async def policies(request: Request) -> Response:
    """``GET /policies/``: effective policy per type, adaptations per task, budget use."""
    context = _context(request)
    engine = engine_of(context)

    def read() -> dict[str, Any]:
        now = context.clock.time()
        rows = []
        for kind in FailureType:
            policy = engine.policy_for(kind) if engine is not None else default_policy(kind)
            rows.append(
                {
                    "type": kind,
                    "policy": policy,
                    "configured": policy != default_policy(kind),
                    "chart": _delay_chart(kind, policy),
                }
            )
        tasks = adaptations(context, engine)
        budget = None if engine is None else engine.budget
        budget_rows = (
            []
            if budget is None
            else [
                {"task": task, "state": budget.state(task, now=now)}
                for task in sorted({a.task for a in tasks})
            ]
        )
        return {
            "rows": rows,
            "tasks": tasks,
            "from_engine": engine is not None,
            "budget": budget,
            "budget_rows": budget_rows,
            "history_hours": (24 * 3600.0 if engine is None else engine.history.window) / 3600,
        }

    return render(request, "policies.html", **await run_in_threadpool(read))


@_page
async def trends(request: Request) -> Response:
    """``GET /trends/?hours=N``: failures per hour and type, as SVG charts."""
    context = _context(request)
    raw = request.query_params.get("hours", "24")
    if not raw.isdigit() or not 1 <= int(raw) <= 168:
        raise PageError(400, f"hours: must be an integer 1..168, got {raw!r}")
    hours = int(raw)
    data = await run_in_threadpool(
        functools.partial(
            _operations.failure_trends, context.store, hours=hours, now=context.clock.time()
        )
    )
    starts: list[float] = data["hour_starts"]  # type: ignore[assignment]
    labels = [_iso(s)[11:16] for s in starts]
    charts = {
        title: lines(series, x_labels=labels, title=title) if series else None  # type: ignore[arg-type]
        for title, series in (
            ("dead letters per hour", data["dead_letters"]),
            ("failed retries per hour", data["failed_retries"]),
        )
    }
    return render(request, "trends.html", charts=charts, hours=hours)


def routes() -> list[Route]:
    """The pages' routes."""
    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", overview, methods=["GET"]),
        Route("/dlq/", dlq_list, methods=["GET"]),
        Route("/dlq/bulk/", dlq_bulk, methods=["POST"]),
        Route("/dlq/{record_id}/", dlq_detail, methods=["GET"]),
        Route("/dlq/{record_id}/{action:str}/", dlq_action, methods=["POST"]),
        Route("/breakers/", breakers, methods=["GET"]),
        Route("/breakers/{name:path}/reset/", breaker_reset, methods=["GET", "POST"]),
        Route("/taxonomy/", taxonomy, methods=["GET"]),
        Route("/policies/", policies, methods=["GET"]),
        Route("/trends/", trends, methods=["GET"]),
    ]

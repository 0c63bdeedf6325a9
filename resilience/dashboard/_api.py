"""The JSON API under ``/api/``: dead letters, breakers, failure trends, statistics.

Every answer is JSON. Bad input is 400 ``{"error", "parameter"}``, an unknown id
or name 404, an action the record's status does not allow 409, a store that does
not answer 503. Store work runs in a worker thread, so a slow store never blocks
the event loop.
"""

from __future__ import annotations

import functools
import json
import math
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

from resilience import _operations
from resilience.dashboard._context import NO_REPLAY, BreakerNotFound, Context, snapshot
from resilience.dashboard._openapi import openapi
from resilience.errors import ConfigurationError, DeadLetterConflict, StorageUnavailable
from resilience.storage.records import DeadLetterFilter, DeadLetterStatus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from resilience.storage.records import DeadLetterRecord

__all__ = ["API_ACTOR", "ApiError", "routes"]

API_ACTOR = "api"
"""The actor the history of an API change names."""
_MAX_HOURS = 168
_MAX_BODY = 1024 * 1024
_FILTER_KEYS = ("status", "task", "type", "since", "until", "text")


class ApiError(Exception):
    """An answer other than 200: a status, a message and the offending parameter.

    Args:
        status: the HTTP status.
        message: what went wrong, naming the input.
        parameter: the query or body parameter at fault, for 400s.
    """

    def __init__(self, status: int, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.parameter = parameter

    def response(self) -> JSONResponse:
        """The JSON response."""
        body: dict[str, object] = {"error": str(self)}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return JSONResponse(body, status_code=self.status)


def _json_errors(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except ConfigurationError as exc:
            return ApiError(400, str(exc), parameter=exc.key or "request").response()
        except DeadLetterConflict as exc:
            return ApiError(409, str(exc)).response()
        except StorageUnavailable as exc:
            return ApiError(503, f"the store is unavailable: {exc}").response()

    return wrapper


def _context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


def _values(request: Request, name: str) -> list[str]:
    """A repeatable parameter: ``?status=A&status=B`` or ``?status=A,B``."""
    return [
        v.strip() for raw in request.query_params.getlist(name) for v in raw.split(",") if v.strip()
    ]


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(400, f"{name}: give it once, got {len(values)} values", parameter=name)
    return values[0] if values else None


def _int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = _one(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, f"{name}: expected an integer {low}..{high}, got {raw!r}", parameter=name
        ) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}: must be {low}..{high}, got {value}", parameter=name)
    return value


def _query_filter(request: Request) -> DeadLetterFilter:
    return _operations.dead_letter_filter(
        statuses=_values(request, "status"),
        task=_one(request, "task"),
        types=_values(request, "type"),
        since=_one(request, "since"),
        until=_one(request, "until"),
        text=_one(request, "text"),
    )


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise ApiError(400, f"body: larger than {_MAX_BODY} bytes", parameter="body")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "body: not valid JSON", parameter="body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: expected a JSON object", parameter="body")
    return data


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"{key}: required, a non-empty string", parameter=key)
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key}: expected a string, got {type(value).__name__}", parameter=key)
    return value


def _record_or_404(context: Context, record_id: str) -> DeadLetterRecord:
    record = context.dlq.get(record_id)
    if record is None:
        raise ApiError(404, f"no dead letter with id {record_id!r}")
    return record


# --------------------------------------------------------------------------- dead letters


@_json_errors
async def dlq_list(request: Request) -> Response:
    """``GET /api/dlq/``: one page of dead letters, newest failure first."""
    context = _context(request)
    where = _query_filter(request)
    limit = _int(request, "limit", default=50, low=1, high=1000)
    after = _one(request, "after") or None

    def read() -> dict[str, object]:
        page = context.dlq.list(
            status=where.statuses,
            task_name=where.task_name,
            failure_type=where.failure_types,
            since=where.since,
            until=where.until,
            text=where.text,
            limit=limit,
            after=after,
        )
        return {"records": [r.to_dict() for r in page.records], "next_cursor": page.next_cursor}

    return JSONResponse(await run_in_threadpool(read))


@_json_errors
async def dlq_detail(request: Request) -> Response:
    """``GET /api/dlq/{id}/``: one record with its history."""
    context = _context(request)
    record_id: str = request.path_params["record_id"]
    record = await run_in_threadpool(_record_or_404, context, record_id)
    return JSONResponse(record.to_dict())


@_json_errors
async def dlq_retry(request: Request) -> Response:
    """``POST /api/dlq/{id}/retry/``: re-enqueue one PENDING record."""
    context = _context(request)
    record_id: str = request.path_params["record_id"]
    note = _text(await _body(request), "note")

    def act() -> dict[str, object]:
        _record_or_404(context, record_id)
        if context.dlq.replay is None:
            raise ApiError(409, NO_REPLAY)
        try:
            record = context.dlq.retry(record_id, actor=API_ACTOR, note=note)
        except (DeadLetterConflict, ConfigurationError):
            raise
        except Exception as exc:  # noqa: BLE001 - any broker error: the record is back to PENDING
            raise ApiError(
                502, f"re-enqueuing failed: {exc} (the record is back to PENDING)"
            ) from None
        return {
            "id": record.id,
            "status": record.status.value,
            "task_id": record.history[-1].task_id,
        }

    return JSONResponse(await run_in_threadpool(act))


@_json_errors
async def dlq_abandon(request: Request) -> Response:
    """``POST /api/dlq/{id}/abandon/``: give up on a record; ``reason`` is required."""
    context = _context(request)
    record_id: str = request.path_params["record_id"]
    reason = _text(await _body(request), "reason", required=True)
    assert reason is not None  # noqa: S101 - required=True guarantees it (for mypy)

    def act() -> dict[str, object]:
        _record_or_404(context, record_id)
        record = context.dlq.abandon(record_id, actor=API_ACTOR, reason=reason)
        return {"id": record.id, "status": record.status.value}

    return JSONResponse(await run_in_threadpool(act))


@_json_errors
async def dlq_resolve(request: Request) -> Response:
    """``POST /api/dlq/{id}/resolve/``: mark a record resolved."""
    context = _context(request)
    record_id: str = request.path_params["record_id"]
    note = _text(await _body(request), "note")

    def act() -> dict[str, object]:
        _record_or_404(context, record_id)
        record = context.dlq.resolve(record_id, actor=API_ACTOR, note=note)
        return {"id": record.id, "status": record.status.value}

    return JSONResponse(await run_in_threadpool(act))


def _bulk_selection(body: dict[str, Any]) -> tuple[list[str] | None, DeadLetterFilter | None]:
    ids = body.get("ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids)
    ):
        raise ApiError(400, "ids: expected a list of record ids (strings)", parameter="ids")
    spec = body.get("filter")
    if spec is not None and not isinstance(spec, dict):
        raise ApiError(400, "filter: expected a JSON object", parameter="filter")
    if ids is None and spec is None:
        raise ApiError(
            400,
            'give "ids": [...] or "filter": {...} (an empty filter {} selects every '
            "PENDING record)",
            parameter="ids",
        )
    where = None
    if spec is not None:
        unknown = sorted(set(spec) - set(_FILTER_KEYS))
        if unknown:
            raise ApiError(
                400,
                f"filter: unknown key {unknown[0]!r}"
                f"{_operations.suggest(unknown[0], _FILTER_KEYS)} "
                f"(valid: {', '.join(_FILTER_KEYS)})",
                parameter=f"filter.{unknown[0]}",
            )

        def listed(key: str) -> list[str]:
            value = spec.get(key)
            if value is None:
                return []
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ApiError(
                    400,
                    f"filter.{key}: expected a string or a list of strings",
                    parameter=f"filter.{key}",
                )
            return values

        def single(key: str) -> str | None:
            value = spec.get(key)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"filter.{key}: expected a string", parameter=f"filter.{key}")
            return value

        where = _operations.dead_letter_filter(
            statuses=listed("status"),
            task=single("task"),
            types=listed("type"),
            since=single("since"),
            until=single("until"),
            text=single("text"),
            prefix="filter.",
        )
        if where.statuses is not None and where.statuses != {DeadLetterStatus.PENDING}:
            raise ApiError(
                400,
                "filter.status: bulk retry retries PENDING records only; drop it or pass PENDING",
                parameter="filter.status",
            )
    return ids, where


@_json_errors
async def dlq_bulk_retry(request: Request) -> Response:
    """``POST /api/dlq/bulk-retry/``: retry the given ids and/or the PENDING records of a filter."""
    context = _context(request)
    body = await _body(request)
    ids, where = _bulk_selection(body)
    note = _text(body, "note")

    def act() -> dict[str, object]:
        if context.dlq.replay is None:
            raise ApiError(409, NO_REPLAY)
        result = context.dlq.bulk_retry(ids=ids, where=where, actor=API_ACTOR, note=note)
        return {"retried": list(result.retried), "skipped": dict(result.skipped)}

    return JSONResponse(await run_in_threadpool(act))


# --------------------------------------------------------------------------- breakers and stats


@_json_errors
async def breakers(request: Request) -> Response:
    """``GET /api/circuit-breakers/``: every breaker's state, counts and next probe."""
    context = _context(request)
    try:
        rows = await run_in_threadpool(context.breakers)
    except ConfigurationError as exc:
        raise ApiError(501, str(exc)) from None
    return JSONResponse({"breakers": rows})


@_json_errors
async def breaker_reset(request: Request) -> Response:
    """``POST /api/circuit-breakers/{name}/reset/``: close a breaker, forget its counts."""
    context = _context(request)
    name: str = request.path_params["name"]
    try:
        result = await run_in_threadpool(context.reset_breaker, name)
    except BreakerNotFound as exc:
        raise ApiError(404, str(exc)) from None
    return JSONResponse(result)


@_json_errors
async def failure_trends(request: Request) -> Response:
    """``GET /api/failure-trends/?hours=N``: failures per hour and type."""
    context = _context(request)
    hours = _int(request, "hours", default=24, low=1, high=_MAX_HOURS)
    now = context.clock.time()
    return JSONResponse(
        await run_in_threadpool(
            functools.partial(_operations.failure_trends, context.store, hours=hours, now=now)
        )
    )


@_json_errors
async def stats(request: Request) -> Response:
    """``GET /api/stats/?window=24h``: executions and retries per task, DLQ depth and summary."""
    context = _context(request)
    raw = _one(request, "window") or "24h"
    window = _operations.parse_duration(raw, option="window")
    if not (math.isfinite(window) and 0 < window <= 7 * 86400):
        raise ApiError(
            400, f"window: must be above 0 and at most 7d, got {raw!r}", parameter="window"
        )

    def read() -> dict[str, object]:
        now = context.clock.time()
        report = _operations.stats_report(context.store, window=window, now=now)
        summary = context.dlq.summary(now=now)
        report["dead_letters"] = {
            "total": summary.total,
            "by_failure_type": {t.value: n for t, n in summary.by_failure_type.items()},
            "top_tasks": [{"task": t, "records": n} for t, n in summary.top_tasks],
            "average_retries": {t.value: round(v, 3) for t, v in summary.average_retries.items()},
        }
        return report

    return JSONResponse(await run_in_threadpool(read))


@_json_errors
async def alerts(request: Request) -> Response:
    """``GET /api/alerts/``: the alerts in force."""
    context = _context(request)

    def read() -> list[dict[str, object]]:
        return [a.to_dict() for a in context.monitor.check(snapshot(context))]

    return JSONResponse({"alerts": await run_in_threadpool(read)})


async def openapi_json(request: Request) -> Response:
    """``GET /api/openapi.json``: this API's OpenAPI 3.1 description."""
    return JSONResponse(openapi(server=request.scope.get("root_path", "") or "/"))


def routes() -> list[Route]:
    """The API's routes (the order matters: ``bulk-retry`` before ``{record_id}``)."""
    return [
        Route("/api/openapi.json", openapi_json, methods=["GET"]),
        Route("/api/dlq/", dlq_list, methods=["GET"]),
        Route("/api/dlq/bulk-retry/", dlq_bulk_retry, methods=["POST"]),
        Route("/api/dlq/{record_id}/", dlq_detail, methods=["GET"]),
        Route("/api/dlq/{record_id}/retry/", dlq_retry, methods=["POST"]),
        Route("/api/dlq/{record_id}/abandon/", dlq_abandon, methods=["POST"]),
        Route("/api/dlq/{record_id}/resolve/", dlq_resolve, methods=["POST"]),
        Route("/api/circuit-breakers/", breakers, methods=["GET"]),
        Route("/api/circuit-breakers/{name:path}/reset/", breaker_reset, methods=["POST"]),
        Route("/api/failure-trends/", failure_trends, methods=["GET"]),
        Route("/api/stats/", stats, methods=["GET"]),
        Route("/api/alerts/", alerts, methods=["GET"]),
    ]

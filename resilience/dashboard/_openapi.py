"""The hand-written OpenAPI 3.1 description of the dashboard's JSON API (``/api/openapi.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong, naming the input."},
        "parameter": {"type": "string", "description": "The parameter at fault (400 only)."},
    },
}
_RECORD = {
    "type": "object",
    "description": "DeadLetterRecord.to_dict(): every field, with the action history.",
    "required": ["id", "task_name", "status", "failure_type", "history", "version"],
    "properties": {
        "id": {"type": "string"},
        "task_id": {"type": ["string", "null"]},
        "task_name": {"type": "string"},
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
        "failure_type": {"type": "string"},
        "confidence": {"type": "number"},
        "exception_class": {"type": "string"},
        "message": {"type": "string"},
        "traceback": {"type": "string"},
        "retry_count": {"type": "integer"},
        "first_failed_at": {"type": "number"},
        "last_failed_at": {"type": "number"},
        "next_retry_at": {"type": ["number", "null"]},
        "status": {"enum": ["PENDING", "RETRYING", "RESOLVED", "ABANDONED"]},
        "priority": {"type": "integer"},
        "queue": {"type": ["string", "null"]},
        "correlation_id": {"type": ["string", "null"]},
        "flags": {"type": "array", "items": {"type": "string"}},
        "history": {"type": "array", "items": {"type": "object"}},
        "version": {"type": "integer"},
    },
}
_STATUS = {"type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_FILTERS = [
    _query("status", "PENDING, RETRYING, RESOLVED or ABANDONED; repeat or comma-separate."),
    _query("task", "An exact task name."),
    _query("type", "A failure type such as TRANSIENT_NETWORK; repeat or comma-separate."),
    _query("since", "Last failure at or after: ISO 8601 (UTC without offset) or epoch seconds."),
    _query("until", "Last failure before: ISO 8601 or epoch seconds."),
    _query("text", "A case-insensitive substring of the message."),
]
_ID = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string"}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

_COUNT = {"type": ["integer", "null"]}
_RATE = {"type": ["number", "null"], "description": "0..1, rounded to 4 places; null: unknown."}
_EXECUTIONS = {
    "type": "object",
    "description": "Tracked executions over the window, all tasks (track_executions).",
    "required": ["tracked", "executions", "successes", "failures", "success_rate", "note"],
    "properties": {
        "tracked": {"type": "boolean", "description": "Whether any execution was recorded."},
        "executions": {**_COUNT, "description": "Attempts, each counted once."},
        "successes": {**_COUNT, "description": "Successful attempts."},
        "failures": {**_COUNT, "description": "Failed attempts."},
        "success_rate": {**_RATE, "description": "successes / executions (null: not tracked)."},
        "note": {
            "type": ["string", "null"],
            "description": "'executions not tracked: enable track_executions' when not tracked.",
        },
    },
}
_STATS_TASK = {
    "type": "object",
    "properties": {
        "task": {"type": "string"},
        "executions": {**_COUNT, "description": "Attempts (null: executions not tracked)."},
        "successes": {**_COUNT, "description": "Successful attempts (null: not tracked)."},
        "success_rate": {**_RATE, "description": "successes / executions."},
        "retries": {"type": "integer"},
        "retry_successes": {"type": "integer"},
        "retry_success_rate": _RATE,
        "failed_retries_by_type": {"type": "object"},
        "dead_letters": {"type": "integer"},
        "dead_letters_by_type": {"type": "object"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "Bad parameter: the error names it.",
        401: "No or invalid bearer token.",
        403: "A read-only token tried a change.",
        404: "Unknown record or breaker.",
        409: "The record's status does not allow it, or no replay is configured.",
        501: "The store cannot list its breakers.",
        502: "The replay (Celery) failed; the record is back to PENDING.",
        503: "The store is unavailable.",
    }
    return {
        str(code): _json({"$ref": "#/components/schemas/Error"}, meaning[code]) for code in codes
    }


def _op(
    summary: str,
    ok: dict[str, Any],
    *codes: int,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": parameters or [],
        "responses": {"200": ok, **_errors(401, *codes, 503)},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _body(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def openapi(*, server: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document.

    Args:
        server: the URL prefix the dashboard is served under.

    Returns:
        The document as a dict of JSON values.
    """
    record_ref = {"$ref": "#/components/schemas/DeadLetterRecord"}
    paths: dict[str, Any] = {
        "/api/openapi.json": {
            "get": _op("This description.", _json({"type": "object"}, "OpenAPI"))
        },
        "/api/dlq/": {
            "get": _op(
                "List dead letters, newest failure first, one page at a time.",
                _json(
                    _body(
                        records={"type": "array", "items": record_ref},
                        next_cursor={"type": ["string", "null"]},
                    ),
                    "One page; pass next_cursor as 'after' for the next.",
                ),
                400,
                parameters=[
                    *_FILTERS,
                    _query("limit", "Page size 1..1000 (50).", {"type": "integer"}),
                    _query("after", "The previous page's next_cursor."),
                ],
            )
        },
        "/api/dlq/bulk-retry/": {
            "post": _op(
                "Re-enqueue the given ids and/or every PENDING record matching a filter.",
                _json(
                    _body(
                        retried={"type": "array", "items": {"type": "string"}},
                        skipped={"type": "object", "additionalProperties": {"type": "string"}},
                    ),
                    "Retried ids, and skipped ids with reasons.",
                ),
                400,
                403,
                409,
                body=_body(
                    ids={"type": "array", "items": {"type": "string"}},
                    filter=_body(**{p["name"]: {"type": ["string", "array"]} for p in _FILTERS}),
                    note={"type": "string"},
                ),
            )
        },
        "/api/dlq/{record_id}/": {
            "get": _op(
                "One dead letter with its history.",
                _json(record_ref, "The record."),
                404,
                parameters=[_ID],
            )
        },
        "/api/dlq/{record_id}/retry/": {
            "post": _op(
                "Re-enqueue a PENDING record through the Celery app (moves it to RETRYING).",
                _json(
                    _body(
                        id={"type": "string"}, status={"type": "string"}, task_id={"type": "string"}
                    ),
                    "Re-enqueued.",
                ),
                400,
                403,
                404,
                409,
                502,
                parameters=[_ID],
                body=_body(note={"type": "string"}),
            )
        },
        "/api/dlq/{record_id}/abandon/": {
            "post": _op(
                "Give up on a PENDING or RETRYING record; a reason is required.",
                _json(_STATUS, "Abandoned."),
                400,
                403,
                404,
                409,
                parameters=[_ID],
                body={**_body(reason={"type": "string"}), "required": ["reason"]},
            )
        },
        "/api/dlq/{record_id}/resolve/": {
            "post": _op(
                "Mark a PENDING or RETRYING record resolved.",
                _json(_STATUS, "Resolved."),
                400,
                403,
                404,
                409,
                parameters=[_ID],
                body=_body(note={"type": "string"}),
            )
        },
        "/api/circuit-breakers/": {
            "get": _op(
                "Every breaker: state, failure counts, time to the next probe.",
                _json(_body(breakers={"type": "array", "items": {"type": "object"}}), "Breakers."),
                501,
            )
        },
        "/api/circuit-breakers/{name}/reset/": {
            "post": _op(
                "Close a breaker and forget its counts (the trip count is kept).",
                _json(
                    _body(
                        name={"type": "string"},
                        **{"from": {"type": "string"}},
                        state={"type": "string"},
                    ),
                    "Reset.",
                ),
                403,
                404,
                parameters=[_NAME],
            )
        },
        "/api/failure-trends/": {
            "get": _op(
                "Failures per clock hour and failure type: dead letters and failed retries.",
                _json(
                    _body(
                        hours={"type": "integer"},
                        hour_starts={"type": "array", "items": {"type": "number"}},
                        dead_letters={"type": "object"},
                        failed_retries={"type": "object"},
                    ),
                    "Counts per type, one per hour, oldest first.",
                ),
                400,
                parameters=[_query("hours", "1..168 (24).", {"type": "integer"})],
            )
        },
        "/api/stats/": {
            "get": _op(
                "Task executions and success rate (overall and per task), retries per "
                "task and failure type, dead letters by task, type and status. Executions "
                "are attempts (first attempts and retries, once each) recorded only by "
                "workers with track_executions; success_rate = successful attempts / "
                "attempts. Without tracking, executions.tracked is false, the counts are "
                "null and executions.note says how to enable it.",
                _json(
                    _body(
                        window_seconds={"type": "number"},
                        executions=_EXECUTIONS,
                        tasks={"type": "array", "items": _STATS_TASK},
                        dead_letters_by_status={
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                        dead_letters={"type": "object"},
                    ),
                    "Statistics.",
                ),
                400,
                parameters=[_query("window", "Retry window: 90s, 12h, 7d (24h); at most 7d.")],
            )
        },
        "/api/alerts/": {
            "get": _op(
                "The alerts in force.",
                _json(_body(alerts={"type": "array", "items": {"type": "object"}}), "Alerts."),
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "resilience dashboard API",
            "version": "1",
            "description": "Dead letters, circuit breakers and failure statistics. "
            "Every request needs 'Authorization: Bearer <token>'; changes need the "
            "operator token.",
        },
        "servers": [{"url": server}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "DeadLetterRecord": _RECORD},
        },
    }

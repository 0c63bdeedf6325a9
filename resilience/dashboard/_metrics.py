"""``GET /metrics``: the Prometheus text exposition format (version 0.0.4).

Series (every one needs the bearer token, like the API)::

    resilience_dead_letters{status="PENDING",failure_type="TRANSIENT_NETWORK"} 3
    resilience_circuit_breaker_state{breaker="payments",state="open"} 1
    resilience_circuit_breaker_consecutive_failures{breaker="payments"} 5
    resilience_retries{failure_type="TRANSIENT_NETWORK",outcome="failure"} 7
    resilience_task_executions{task="shop.charge",outcome="success"} 120
    resilience_alerts{level="critical"} 1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from resilience.dashboard._context import snapshot
from resilience.storage.base import CircuitState
from resilience.storage.records import DeadLetterStatus
from resilience.taxonomy import AlertLevel

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from resilience.dashboard._context import Context

__all__ = ["CONTENT_TYPE", "render", "routes"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}"


def render(context: Context) -> str:
    """The metrics text for the store as it is now."""
    snap = snapshot(context)
    lines = [
        "# HELP resilience_dead_letters Dead letters in the store, by status and failure type.",
        "# TYPE resilience_dead_letters gauge",
        *(
            _series("resilience_dead_letters", {"status": s, "failure_type": t}, n)
            for (s, t), n in sorted(snap.depth_by_status_and_type.items())
        ),
        "# HELP resilience_dead_letters_by_status Dead letters in the store, by status.",
        "# TYPE resilience_dead_letters_by_status gauge",
        *(
            _series(
                "resilience_dead_letters_by_status",
                {"status": status.value},
                snap.summary.by_status[status],
            )
            for status in DeadLetterStatus
        ),
    ]
    lines += [
        "# HELP resilience_circuit_breaker_state 1 for the breaker's current state, else 0.",
        "# TYPE resilience_circuit_breaker_state gauge",
    ]
    for row in snap.breakers:
        for state in CircuitState:
            lines.append(
                _series(
                    "resilience_circuit_breaker_state",
                    {"breaker": str(row["name"]), "state": state.value},
                    1 if row["state"] == state.value else 0,
                )
            )
    lines += [
        "# HELP resilience_circuit_breaker_consecutive_failures Failures since the last success.",
        "# TYPE resilience_circuit_breaker_consecutive_failures gauge",
    ]
    lines += [
        _series(
            "resilience_circuit_breaker_consecutive_failures",
            {"breaker": str(row["name"])},
            float(row["consecutive_failures"]),  # type: ignore[arg-type]
        )
        for row in snap.breakers
    ]
    lines += [
        f"# HELP resilience_retries Retry outcomes in the last {snap.window:g} s, by failure type.",
        "# TYPE resilience_retries gauge",
    ]
    lines += [
        _series("resilience_retries", {"failure_type": t, "outcome": o}, n)
        for (t, o), n in sorted(snap.retries.items())
    ]
    tracked = snap.executions
    lines += [
        (
            f"# HELP resilience_task_executions Task attempts in the last {snap.window:g} s, "
            "by task and outcome (only with track_executions)."
        ),
        "# TYPE resilience_task_executions gauge",
    ]
    for task, (ok, bad) in sorted(tracked.by_task.items()):
        lines.append(
            _series("resilience_task_executions", {"task": task, "outcome": "success"}, ok)
        )
        lines.append(
            _series("resilience_task_executions", {"task": task, "outcome": "failure"}, bad)
        )
    alerts = context.monitor.check(snap)
    lines += [
        "# HELP resilience_alerts Alerts in force, by level.",
        "# TYPE resilience_alerts gauge",
    ]
    lines += [
        _series("resilience_alerts", {"level": level.value}, sum(a.level is level for a in alerts))
        for level in AlertLevel
    ]
    return "\n".join(lines) + "\n"


async def metrics(request: Request) -> Response:
    """``GET /metrics``."""
    context: Context = request.app.state.context
    text = await run_in_threadpool(render, context)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


def routes() -> list[Route]:
    """The ``/metrics`` route."""
    return [Route("/metrics", metrics, methods=["GET"])]

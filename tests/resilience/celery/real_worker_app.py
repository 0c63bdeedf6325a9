"""The Celery app that the real-worker proof tests run in worker subprocesses.

``celery -A real_worker_app worker`` (with this directory on ``PYTHONPATH``) builds
``app`` from the environment; the test process builds the same app with
:func:`make_app` to publish tasks and inspect the shared state:

- ``TASKCHAOS_PROOF_REDIS_URL``: broker, result backend and resilience store;
- ``TASKCHAOS_PROOF_PREFIX``: every Redis key of the run starts with it (broker,
  results, store, journal), so parallel runs never meet;
- ``TASKCHAOS_PROOF_QUEUE``: the default queue;
- ``TASKCHAOS_PROOF_DIR``: a directory for marker files.

Task bodies write what they did to a journal (Redis lists, one per run id), with
the worker's host name and process id, so a test can tell which process did what.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Final

from celery import Celery  # type: ignore[import-untyped]
from celery import signals as celery_signals

from resilience import CircuitBreaker, FailureType, RetryEngine, RetryPolicy
from resilience.celery import ResilientTask, install
from resilience.storage.redis import RedisStore

__all__ = [
    "BREAKER_RESET",
    "BREAKER_THRESHOLD",
    "DEADLOCK_POLICY",
    "DEPENDENCY",
    "KILL_LEASE",
    "NETWORK_POLICY",
    "Journal",
    "app",
    "make_app",
]

app: Any
"""The worker's app, built from the environment on first access (see ``__getattr__``)."""

DEPENDENCY: Final = "ledger-api"
"""The dependency whose breaker the breaker proof opens."""

BREAKER_THRESHOLD: Final = 2
BREAKER_RESET: Final = 4.0
"""Seconds the proof's breaker stays open before it lets a probe through."""

KILL_LEASE: Final = 1.0
"""Lease of the SIGKILL task's key: how long a dead run blocks its redelivery."""

DEADLOCK_POLICY: Final = RetryPolicy(
    max_retries=3, initial_delay=0.3, factor=2.0, strategy="exponential", jitter="none"
)
NETWORK_POLICY: Final = RetryPolicy(max_retries=2, initial_delay=0.2, jitter="none")


class Journal:
    """What task bodies and worker signals did, in Redis lists shared with the test."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, name: str) -> str:
        """The Redis key of the list ``name``."""
        return f"{self.prefix}journal:{name}"

    def write(self, name: str, **fields: Any) -> None:
        """Append an entry with this process's identity and the wall time."""
        entry = {"pid": os.getpid(), "host": _HOST[0], "at": time.time(), **fields}
        self.client.rpush(self.key(name), json.dumps(entry))

    def read(self, name: str) -> list[dict[str, Any]]:
        """Every entry of ``name``, oldest first."""
        return [json.loads(raw) for raw in self.client.lrange(self.key(name), 0, -1)]


# The worker's node name (-n), set when the worker process starts; the prefork
# children inherit it.
_HOST = [socket.gethostname()]


def make_app(*, redis_url: str, prefix: str, queue: str, marker_dir: str) -> Any:
    """Build the proof app: broker, results and store on one Redis under ``prefix``.

    Returns:
        The Celery app, with the resilience runtime installed and the tasks registered.
    """
    import redis

    transport = {"global_keyprefix": prefix}
    celery_app = Celery("proof", broker=redis_url, backend=redis_url, set_as_current=False)
    celery_app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        proof_marker_dir=marker_dir,
    )
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=f"{prefix}store:")

    def breaker_factory(name: str, policy: RetryPolicy) -> CircuitBreaker:
        return CircuitBreaker(
            name,
            failure_threshold=BREAKER_THRESHOLD,
            reset_timeout=BREAKER_RESET,
            store=store.breakers,
        )

    engine = RetryEngine(
        store=store,
        policies={
            FailureType.TRANSIENT_DATABASE: DEADLOCK_POLICY,
            FailureType.TRANSIENT_NETWORK: NETWORK_POLICY,
        },
        peak_hours=None,
        breaker_factory=breaker_factory,
    )
    install(
        celery_app,
        store=store,
        engine=engine,
        in_progress_delay=0.3,
        min_deferral=0.2,
    )
    journal = Journal(client, prefix)
    celery_app.proof_journal = journal
    _register(celery_app, journal, Path(marker_dir))
    _watch(celery_app, journal)
    return celery_app


def _register(celery_app: Any, journal: Journal, markers: Path) -> None:
    register = celery_app.task

    def ping() -> str:
        return "pong"

    def deadlock(self: Any, run_id: str) -> str:
        import psycopg

        journal.write(run_id, retries=self.request.retries)
        if len(journal.read(run_id)) <= 2:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "committed"

    def validate(self: Any, run_id: str, row: dict[str, str]) -> None:
        journal.write(run_id, retries=self.request.retries)
        raise ValueError(f"column 'amount' is not a number: {row['amount']!r}")

    def flaky_network(self: Any, run_id: str) -> None:
        journal.write(run_id, retries=self.request.retries)
        raise ConnectionError("ERP refused the connection")

    def kill_after_effect(self: Any, run_id: str) -> str:
        key = self.request.idempotency_key
        journal.write(run_id, key=key, token=self.request.fencing_token)
        # The side effect is keyed by the idempotency key (a unique column in a real
        # database): a second run of the body finds it and adds nothing.
        if journal.client.set(journal.key(f"effect:{key}"), run_id, nx=True):
            journal.write(f"{run_id}:effects", key=key)
        marker = markers / f"{run_id}.killed"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return "done"

    def call_dependency(self: Any, run_id: str, *, fail: bool) -> str:
        journal.write(run_id, fail=fail)
        if fail:
            raise ConnectionError("ledger API refused the connection")
        return "posted"

    def render_report(self: Any, run_id: str) -> str:
        journal.write(run_id, retries=self.request.retries)
        if not journal.client.exists(journal.key(f"fixed:{run_id}")):
            raise KeyError("template 'monthly' not found")
        return f"report-{run_id}.pdf"

    def book_once(self: Any, run_id: str) -> str:
        journal.write(f"{run_id}:executions")
        # Hold the key until the other worker has received its copy of the message,
        # so the two deliveries overlap for sure.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            hosts = {entry["host"] for entry in journal.read(f"{run_id}:deliveries")}
            if len(hosts) >= 2:
                break
            time.sleep(0.02)
        return "booked"

    resilient = {"base": ResilientTask, "bind": True}
    register(name="proof.ping")(ping)
    register(name="proof.deadlock", **resilient)(deadlock)
    register(name="proof.validate", **resilient)(validate)
    register(name="proof.flaky_network", **resilient)(flaky_network)
    register(
        name="proof.kill_after_effect",
        idempotency_key="effect:{run_id}",
        resilience={"idempotency_lease": KILL_LEASE},
        **resilient,
    )(kill_after_effect)
    register(
        name="proof.call_dependency",
        breaker=DEPENDENCY,
        resilience={"max_retries": 0},
        **resilient,
    )(call_dependency)
    register(name="proof.render_report", **resilient)(render_report)
    register(name="proof.book_once", idempotency_key="book:{run_id}", **resilient)(book_once)


def _watch(celery_app: Any, journal: Journal) -> None:
    """Journal the deliveries and outcomes of the duplicate proof, and every retry."""

    def ours(sender: Any, name: str | None = None) -> bool:
        # Receivers are process-wide: ignore tasks of other apps (other tests).
        if getattr(sender, "app", None) is not celery_app:
            return False
        return name is None or getattr(sender, "name", None) == name

    def delivered(sender: Any = None, task_id: str | None = None, args: Any = (), **_: Any) -> None:
        if ours(sender, "proof.book_once"):
            journal.write(f"{args[0]}:deliveries", task_id=task_id)

    def finished(
        sender: Any = None,
        task_id: str | None = None,
        args: Any = (),
        state: str | None = None,
        **_: Any,
    ) -> None:
        if ours(sender, "proof.book_once"):
            journal.write(f"{args[0]}:outcomes", task_id=task_id, state=state)

    def retried(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
        if not ours(sender):
            return
        cause = getattr(reason, "exc", None)
        journal.write(
            f"retries:{request.id}",
            task=getattr(sender, "name", None),
            cause=type(cause).__name__,
            countdown=_countdown(reason),
        )

    # One receiver of each per app, however often a process builds the app.
    uid = f"proof:{journal.prefix}"
    celery_signals.task_prerun.connect(delivered, weak=False, dispatch_uid=f"{uid}:prerun")
    celery_signals.task_postrun.connect(finished, weak=False, dispatch_uid=f"{uid}:postrun")
    celery_signals.task_retry.connect(retried, weak=False, dispatch_uid=f"{uid}:retry")


def _countdown(reason: Any) -> float | None:
    when = getattr(reason, "when", None)
    return float(when) if isinstance(when, int | float) else None


def _name_worker(sender: Any = None, **_: Any) -> None:
    # celeryd_init sends the node name (-n) as sender, before the pool forks.
    if sender:
        _HOST[0] = str(sender)


celery_signals.celeryd_init.connect(_name_worker, weak=False, dispatch_uid="proof:name-worker")


def __getattr__(name: str) -> Any:
    """Build the worker's ``app`` from the environment on first access."""
    if name == "app":
        built = globals().get("_app")
        if built is None:
            built = globals()["_app"] = make_app(
                redis_url=os.environ["TASKCHAOS_PROOF_REDIS_URL"],
                prefix=os.environ["TASKCHAOS_PROOF_PREFIX"],
                queue=os.environ["TASKCHAOS_PROOF_QUEUE"],
                marker_dir=os.environ["TASKCHAOS_PROOF_DIR"],
            )
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""An in-process worker for resilient tasks: real messages, Celery's own tracer, virtual time.

Messages are published to kombu's in-memory transport (one queue per test), read
back, wrapped in Celery's worker ``Request`` and run through
``celery.app.trace.trace_task``: the code path a worker's pool runs, with the
request context, ``self.retry`` publishing a real retry message, and states.
Countdowns are read from the messages, never waited for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from celery import Celery, states
from celery.app.trace import trace_task
from celery.worker.request import Request
from kombu import Message

from resilience import FakeClock, MemoryStore
from resilience.celery import Resilience, install

if TYPE_CHECKING:
    from collections.abc import Iterator

START = 1_700_000_000.0  # 2023-11-14 22:13 UTC: outside the engine's default peak hours


@dataclass
class Delivery:
    """One message run through the tracer."""

    message: Message
    state: str
    result: Any
    task_id: str

    @property
    def headers(self) -> dict[str, Any]:
        """The message's headers (Celery's and ours)."""
        return dict(self.message.headers)


class InProcessWorker:
    """Runs an app's messages the way a worker's pool does, one at a time, in this thread."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue

    def fetch(self) -> Message | None:
        """The next message of the queue, or ``None``."""
        with self.app.connection_for_read() as conn:
            simple = conn.SimpleQueue(self.queue, no_ack=True)
            try:
                return simple.get(block=False)
            except simple.Empty:
                return None
            finally:
                simple.close()

    def pending(self) -> list[Message]:
        """Every message waiting in the queue (removed from it)."""
        found = []
        while (message := self.fetch()) is not None:
            found.append(message)
        return found

    def run(self, message: Message) -> Delivery:
        """Run one message through Celery's tracer as the worker's pool would."""
        task = self.app.tasks[message.headers["task"]]
        request = Request(message, app=self.app, task=task)
        context = dict(request.request_dict)
        context.update({"loglevel": 0, "logfile": None, "is_eager": False})
        retval, info, _, _ = trace_task(
            task,
            request.id,
            request.args,
            request.kwargs,
            context,
            hostname="test-worker",
            loader=self.app.loader,
            app=self.app,
        )
        state = states.SUCCESS if info is None else info.state
        result = retval.exception if isinstance(retval, ExceptionInfo) else retval
        if isinstance(result, ExceptionWithTraceback):
            result = result.exc
        return Delivery(message=message, state=state, result=result, task_id=request.id)

    def run_next(self) -> Delivery:
        """Run the next message; fails the test if there is none."""
        message = self.fetch()
        assert message is not None, "no message in the queue"
        return self.run(message)

    def drain(self, *, limit: int = 50) -> list[Delivery]:
        """Run messages (retries included, countdowns ignored) until the queue is empty."""
        done = []
        while (message := self.fetch()) is not None:
            done.append(self.run(message))
            assert len(done) <= limit, "the queue never emptied"
        return done


class _CountingRole:
    """Forwards to a store role and records the name of every method called."""

    def __init__(self, role: object, role_name: str, calls: list[str]) -> None:
        self._role = role
        self._role_name = role_name
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._role, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(f"{self._role_name}.{name}")
            return value(*args, **kwargs)

        return counted


class CountingStore:
    """A memory store whose role calls are recorded in ``calls`` (one entry per round trip)."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.calls: list[str] = []
        self.url = "memory://counting"
        self.breakers = _CountingRole(self.inner.breakers, "breakers", self.calls)
        self.idempotency = _CountingRole(self.inner.idempotency, "idempotency", self.calls)
        self.dead_letters = _CountingRole(self.inner.dead_letters, "dead_letters", self.calls)
        self.outcomes = _CountingRole(self.inner.outcomes, "outcomes", self.calls)

    def close(self) -> None:
        """Close the inner store."""
        self.inner.close()


@pytest.fixture
def clock() -> FakeClock:
    """Virtual time, starting outside peak hours."""
    return FakeClock(start=START)


@pytest.fixture
def store() -> MemoryStore:
    """A fresh in-process store."""
    return MemoryStore()


@pytest.fixture
def app() -> Iterator[Celery]:
    """A Celery app on the in-memory broker with a queue of its own."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    celery_app = Celery(name, broker="memory://", backend="cache+memory://", set_as_current=False)
    celery_app.conf.task_default_queue = name
    celery_app.conf.task_always_eager = False
    yield celery_app
    celery_app.close()


@pytest.fixture
def resilience(app: Celery, store: MemoryStore, clock: FakeClock) -> Resilience:
    """The app installed on the memory store and the virtual clock."""
    return install(app, store=store, clock=clock)


@pytest.fixture
def worker(app: Celery) -> InProcessWorker:
    """The in-process worker of the app (install the app with a fixture or in the test)."""
    return InProcessWorker(app, app.conf.task_default_queue)

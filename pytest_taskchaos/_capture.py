"""How a simulation captures what the app publishes: into the virtual queue, never the broker.

:class:`Capture` replaces the app's ``send_task``, Celery's ``amqp.send_task_message``
and ``Task.retry`` while a :class:`~pytest_taskchaos.simulation.Simulation` is
active (the simulation's module docstring tells how a publish is built). Each
message lands in the virtual queue at its due time, as a worker would receive it,
and its publish is recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery.app.task import Task  # type: ignore[import-untyped]
from kombu import serialization

from pytest_taskchaos._history import EventKind
from pytest_taskchaos._parts import Message, replace
from pytest_taskchaos._publish import DirectPublisher, fast_retry
from pytest_taskchaos.faults import InjectionPoint

if TYPE_CHECKING:
    import random
    from collections.abc import Callable
    from contextlib import ExitStack

    from pytest_taskchaos._injector import Injector
    from pytest_taskchaos._parts import VirtualQueue
    from pytest_taskchaos._recorder import Recorder
    from resilience.clock import FakeClock

_PUBLISH = InjectionPoint.PUBLISH.value

# kombu's (un-annotated) serializer: a captured body takes the wire's round trip.
_dumps: Callable[..., tuple[str, str, Any]] = serialization.dumps
_loads: Callable[..., Any] = serialization.loads

_SCALARS = frozenset({str, int, float, bool, type(None)})
# uuid.UUID(int=bits, version=4) sets these bits; its str() costs three times this.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def uuid4(bits: int) -> str:
    """``str(uuid.UUID(int=bits, version=4))``: a task id from 128 seeded random bits.

    Args:
        bits: 128 random bits.

    Returns:
        The id, in ``uuid``'s canonical form.
    """
    digits = f"{(bits & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def plain_body(body: Any, serializer: str) -> tuple[Any, ...] | None:
    """A body as the JSON wire would return it, or None when only the wire can tell.

    Scalar arguments come back from JSON unchanged (the args tuple as a list), so
    the round trip, a good part of a publish's cost, is skipped for them; anything
    else (containers, objects, signatures in the embed, other serializers) takes it.

    Args:
        body: Celery's ``(args, kwargs, embed)``.
        serializer: the message's serializer name.

    Returns:
        ``(args list, kwargs, embed)``, or ``None``: serialize and load it instead.
    """
    if serializer != "json":
        return None
    args, kwargs, embed = body
    for value in embed.values():
        if value is not None:
            return None
    # Exact types: a subclass (an IntEnum, a str subclass) may not survive.
    for value in args:
        if type(value) not in _SCALARS:
            return None
    for key, value in kwargs.items():
        if type(key) is not str or type(value) not in _SCALARS:
            return None
    return (list(args), dict(kwargs), dict(embed))


class Capture:
    """The publishing side of one simulation: ``send_task`` into the virtual queue.

    Args:
        app: the simulation's Celery app.
        clock: its virtual clock (a message's due time is read from it).
        rng: its seeded generator (task ids are drawn from it).
        queue: its virtual queue.
        recorder: its history (publishes are recorded; the running message is read).
        injector: its injector (``broker_down`` faults fire at each publish).

    Attributes:
        retry_due: the due time of the retry each running task published, by task id;
            the run loop pops it to record the retry's countdown.
    """

    __slots__ = (
        "_app",
        "_clock",
        "_injector",
        "_original_send_task",
        "_pending_due",
        "_producer",
        "_publisher",
        "_queue",
        "_recorder",
        "_rng",
        "retry_due",
    )

    def __init__(
        self,
        app: Any,
        *,
        clock: FakeClock,
        rng: random.Random,
        queue: VirtualQueue,
        recorder: Recorder,
        injector: Injector,
    ) -> None:
        self._app = app
        self._clock = clock
        self._rng = rng
        self._queue = queue
        self._recorder = recorder
        self._injector = injector
        self.retry_due: dict[str, float] = {}
        self._pending_due: float | None = None
        self._original_send_task: Callable[..., Any] | None = None
        self._publisher: DirectPublisher | None = None
        self._producer: Any = None

    def patch(self, stack: ExitStack) -> None:
        """Capture the app's ``send_task`` and ``amqp.send_task_message`` until ``stack`` closes.

        Args:
            stack: closing it undoes the patches.
        """
        app = self._app
        self._original_send_task = app.send_task
        self._publisher = DirectPublisher(app)
        replace(stack, app, "send_task", self._send_task)
        replace(stack, app.amqp, "send_task_message", self._capture)

    def patch_retry(self, stack: ExitStack) -> None:
        """Make ``self.retry()`` publish directly, until ``stack`` closes; after :meth:`patch`.

        Class-wide, as Celery resolves it; other apps' tasks go to the previous one.

        Args:
            stack: closing it restores ``Task.retry``.
        """
        assert self._publisher is not None  # noqa: S101 -- set by patch()
        replace(stack, Task, "retry", fast_retry(self._app, Task.retry, self._publisher))

    def open_producer(self, stack: ExitStack) -> None:
        """Acquire the one producer the whole run publishes with, until ``stack`` closes.

        Acquiring one from the pool per publish costs more than running the task.

        Args:
            stack: closing it releases the producer.
        """
        self._producer = stack.enter_context(self._app.producer_or_acquire())

    def _send_task(  # noqa: PLR0917 -- Celery.send_task's positional parameters
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> Any:
        self._injector.fire(_PUBLISH, name)
        now = self._clock.time()
        due = now
        if eta is not None:
            if eta.tzinfo is None:
                eta = eta.replace(tzinfo=UTC)
            due = eta.timestamp()
        elif countdown is not None:
            due = now + float(countdown)
        if task_id is None:
            task_id = uuid4(self._rng.getrandbits(128))
        when = datetime.fromtimestamp(due, tz=UTC) if due > now else None
        app = self._app
        producer = options.get("producer") or options.get("publisher") or self._producer
        publisher = self._publisher
        built = (
            None
            if publisher is None
            else publisher.build(name, args, kwargs, when, task_id, options)
        )
        if built is None:
            # What the direct builder leaves to Celery: its send_task builds the
            # message and hands it to _capture.
            assert self._original_send_task is not None  # noqa: S101 -- set on patch
            if options.get("producer") is None and options.get("connection") is None:
                options["producer"] = self._producer
            self._pending_due = due
            try:
                return self._original_send_task(
                    name, args, kwargs, eta=when, task_id=task_id, **options
                )
            finally:
                self._pending_due = None
        # The rest of Celery.send_task: tell the result backend, queue, return the result.
        ignore_result = built.ignore_result
        if not ignore_result:
            app.backend.on_task_call(producer, built.task_id)
        self._queue_message(
            name, built.headers, built.properties, built.body, built.options, due=due
        )
        result = (built.result_cls or app.AsyncResult)(built.task_id)
        result.ignored = ignore_result
        if built.parent:
            built.parent.add_trail(result)
        return result

    def _capture(self, producer: Any, name: str, message: Any, **options: Any) -> None:
        due = self._pending_due
        self._queue_message(
            name,
            dict(message.headers),
            dict(message.properties),
            message.body,
            options,
            due=self._clock.time() if due is None else due,
        )

    def _queue_message(
        self,
        name: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        raw_body: Any,
        options: dict[str, Any],
        *,
        due: float,
    ) -> None:
        """Queue a built message as the worker receives it, and record its publish."""
        # Celery's sender merges custom headers (a retry's) into the message's own,
        # where the worker's request finds them.
        custom = options.get("headers")
        if custom:
            headers.update(custom)
        priority = options.get("priority")
        if priority is not None:
            properties["priority"] = priority
        serializer = options.get("serializer")
        if not serializer:
            publisher = self._publisher
            serializer = (
                self._app.conf.task_serializer
                if publisher is None
                else publisher.serializer(options)
            )
        body = plain_body(raw_body, serializer)
        if body is None:
            content_type, encoding, data = _dumps(raw_body, serializer=serializer)
            body = tuple(_loads(data, content_type, encoding, accept=None))
        queue = options.get("queue")
        routing_key = options.get("routing_key") or getattr(queue, "routing_key", None)
        exchange = options.get("exchange") or getattr(getattr(queue, "exchange", None), "name", "")
        task_id = str(headers["id"])
        attempt = int(headers.get("retries") or 0) + 1
        current = self._recorder.current
        if current is not None and current.task_id == task_id:
            self.retry_due[task_id] = due
        self._queue.push(
            Message(
                due=due,
                task_name=name,
                task_id=task_id,
                attempt=attempt,
                headers=headers,
                body=body,
                delivery_info={
                    "exchange": exchange or "",
                    "routing_key": routing_key or getattr(queue, "name", None),
                    "priority": properties.get("priority"),
                    "redelivered": False,
                },
                properties=properties,
            )
        )
        self._recorder.record(
            EventKind.PUBLISHED, name, task_id, attempt, eta=due - self._recorder.start
        )

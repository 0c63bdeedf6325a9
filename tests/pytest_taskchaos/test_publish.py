"""The simulation's direct message builder queues what Celery's own send_task path queues.

Each scenario runs twice with one seed: once with ``DirectPublisher`` building the
messages, once with it declining every publish, so that ``Celery.send_task`` and
``app.amqp.as_task_v2`` build them and the simulation captures the result at
``send_task_message``. No header is volatile between the two runs: both happen in
this process and thread (``origin``, ``reply_to``) with the same seeded task ids,
so headers, body, properties and delivery info are compared whole.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery
from celery.utils.saferepr import saferepr as celery_saferepr

from pytest_taskchaos import _publish
from pytest_taskchaos._history import Event, EventKind, fingerprint
from pytest_taskchaos._parts import Message, VirtualQueue
from pytest_taskchaos._publish import DirectPublisher, saferepr
from pytest_taskchaos.simulation import Simulation
from resilience import RetryPolicy
from resilience.celery import ResilientTask
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

POLICY = RetryPolicy(max_retries=3, initial_delay=2.0, jitter="none")
LATER = datetime(2026, 1, 5, 13, tzinfo=UTC)


class Run:
    """What one simulation run queued, returned and recorded."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.results: list[tuple[str, str, Any]] = []
        self.children: list[list[str]] = []
        self.direct = 0
        self.fingerprint = ""


def make_app(**conf: Any) -> tuple[Celery, dict[str, Any]]:
    """An app with a plain task, a parent publishing children and two retrying tasks."""
    app = Celery("pubtest", broker="memory://", set_as_current=False)
    app.conf.update(conf)
    seen: dict[str, Any] = {"children": []}

    @app.task(name="pub.plain", shared=False)
    def plain(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    @app.task(bind=True, name="pub.parent", shared=False)
    def parent(self: Any) -> None:
        plain.delay(1, "two")
        plain.apply_async((3,), countdown=7, priority=4, headers={"trace": "t-1"})
        plain.apply_async((4,), add_to_parent=False, queue="side")
        seen["children"].append([child.id for child in self.request.children])

    @app.task(bind=True, name="pub.retrying", shared=False, max_retries=3)
    def retrying(self: Any, order: int) -> int:
        if self.request.retries < 2:
            raise self.retry(countdown=30, headers={"hop": self.request.retries})
        return order

    @app.task(
        base=ResilientTask,
        bind=True,
        name="pub.resilient",
        shared=False,
        resilience={"policies": {"TRANSIENT_NETWORK": POLICY}},
    )
    def resilient(self: Any, order: int) -> int:
        if self.request.retries == 0:
            raise ConnectionResetError("connection reset by peer")
        return order

    seen.update(plain=plain, parent=parent, retrying=retrying, resilient=resilient)
    return app, seen


def record(
    monkeypatch: pytest.MonkeyPatch,
    app: Celery,
    seen: dict[str, Any],
    scenario: Callable[[Celery, dict[str, Any]], list[Any]],
    *,
    direct: bool,
    drain: bool,
) -> Run:
    """Run a scenario in a simulation of ``app``; ``direct=False``: Celery builds every message."""
    run = Run()
    seen["children"] = []
    pushed = VirtualQueue.push

    def push(queue: VirtualQueue, message: Message) -> None:
        run.messages.append(message)
        pushed(queue, message)

    build = DirectPublisher.build

    def counted(publisher: DirectPublisher, *args: Any) -> Any:
        built = build(publisher, *args) if direct else None
        run.direct += built is not None
        return built

    with monkeypatch.context() as patch:
        patch.setattr(VirtualQueue, "push", push)
        patch.setattr(DirectPublisher, "build", counted)
        with Simulation(app, seed=5) as sim:
            results = scenario(app, seen)
            if drain:
                sim.run_until_idle()
    run.results = [(type(r).__name__, r.id, r.ignored) for r in results]
    run.children = seen["children"]
    run.fingerprint = sim.fingerprint()
    return run


def both(
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[[Celery, dict[str, Any]], list[Any]],
    *,
    drain: bool = True,
    **conf: Any,
) -> tuple[Run, Run]:
    """The scenario built by Celery, then by the direct builder, in one app (one reply_to)."""
    app, seen = make_app(**conf)
    celery = record(monkeypatch, app, seen, scenario, direct=False, drain=drain)
    direct = record(monkeypatch, app, seen, scenario, direct=True, drain=drain)
    return celery, direct


def from_outside(app: Celery, seen: dict[str, Any]) -> list[Any]:
    """Publishes from test code: delay, countdown, eta, queue, priority, headers and more."""
    plain = seen["plain"]
    return [
        plain.delay(1, "it's", 2.5, True, None),
        plain.apply_async((2,), {"k": [1, {"deep": (1, 2)}]}, countdown=30),
        plain.apply_async((3,), eta=LATER),
        plain.apply_async((4,), queue="reports", priority=7),
        plain.apply_async((5,), headers={"tenant": "acme", "attempted": 0}),
        plain.apply_async((6,), ignore_result=True, time_limit=20, soft_time_limit=10),
        plain.apply_async((7,), shadow="plain-nickname", argsrepr="(hidden)"),
        plain.apply_async((8,), exchange="direct-x", routing_key="rk-8"),
        plain.apply_async(kwargs={"name": "x" * 2000}),
        app.send_task("pub.plain", (9,), {"via": "send_task"}),
        app.send_task("pub.unregistered", (10,)),
    ]


def from_inside(app: Celery, seen: dict[str, Any]) -> list[Any]:
    """A running task publishes children: parent_id and root_id come from its request."""
    return [seen["parent"].delay()]


def retries(app: Celery, seen: dict[str, Any]) -> list[Any]:
    """Celery retries (custom headers) and a ResilientTask's retry (its own headers)."""
    return [seen["retrying"].delay(1), seen["resilient"].delay(2)]


@pytest.mark.parametrize(
    ("scenario", "direct_publishes", "drain"),
    # from_outside publishes to a task the app lacks (send_task by name): not run.
    [(from_outside, 11, False), (from_inside, 4, True), (retries, 5, True)],
)
def test_direct_messages_equal_celery_built_ones(
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[[Celery, dict[str, Any]], list[Any]],
    direct_publishes: int,
    drain: bool,
) -> None:
    """Headers, body, properties, delivery info, results and history match Celery's path."""
    celery, direct = both(monkeypatch, scenario, drain=drain)
    assert direct.direct == direct_publishes, "the direct builder must have built them"
    assert celery.direct == 0
    assert len(direct.messages) == len(celery.messages) >= direct_publishes
    for ours, theirs in zip(direct.messages, celery.messages, strict=True):
        assert ours.headers == theirs.headers
        assert ours.body == theirs.body
        assert ours.properties == theirs.properties
        assert ours.delivery_info == theirs.delivery_info
        assert ours == theirs
    assert direct.results == celery.results
    assert direct.children == celery.children
    assert direct.fingerprint == celery.fingerprint


def test_children_trail_parent_and_root_ids_from_a_running_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Children of a running task name it as parent and root; add_to_parent=False stays off."""
    run = both(monkeypatch, from_inside)[1]
    parent, *children = run.messages
    assert [m.headers["parent_id"] for m in children] == [parent.task_id] * 3
    assert [m.headers["root_id"] for m in children] == [parent.task_id] * 3
    assert run.children == [[children[0].task_id, children[1].task_id]]
    assert children[1].headers["trace"] == "t-1"
    assert children[1].delivery_info["priority"] == 4
    assert children[2].queue == "side"


def test_a_retry_keeps_its_custom_headers_and_counts_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retry's message carries its headers, the retry count and the same task id."""
    run = both(monkeypatch, retries)[1]
    plain_retries = [m for m in run.messages if m.task_name == "pub.retrying"]
    assert [m.headers["retries"] for m in plain_retries] == [0, 1, 2]
    assert [m.headers.get("hop") for m in plain_retries] == [None, 0, 1]
    assert len({m.task_id for m in plain_retries}) == 1
    resilient = [m for m in run.messages if m.task_name == "pub.resilient"]
    assert resilient[1].headers["resilience_failures"] == 1
    assert resilient[1].headers["resilience_failure_type"] == "TRANSIENT_NETWORK"


def test_inherited_parent_priority_matches_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    """With task_inherit_parent_priority a child takes its parent's priority, as in Celery."""

    def prioritized(app: Celery, seen: dict[str, Any]) -> list[Any]:
        return [seen["parent"].apply_async(priority=6)]

    celery, direct = both(monkeypatch, prioritized, task_inherit_parent_priority=True)
    assert direct.direct == 4
    assert direct.messages == celery.messages
    # Celery's quirk, kept: with an explicit queue the task's own priority=None stays
    # in the options, and setdefault does not replace it.
    assert [m.delivery_info["priority"] for m in direct.messages] == [6, 6, 4, None]


def test_task_routes_are_asked_as_celery_asks_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """With task_routes configured the router decides the queue, on both paths alike."""
    routes = {"pub.plain": {"queue": "routed"}}
    celery, direct = both(monkeypatch, from_outside, drain=False, task_routes=routes)
    assert direct.messages == celery.messages
    assert direct.messages[0].queue == "routed"


def test_a_setting_changed_inside_the_simulation_applies_to_the_next_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings are read per publish: a new default queue is used at once."""

    def switch(app: Celery, seen: dict[str, Any]) -> list[Any]:
        app.conf.task_default_queue = "celery"
        first = seen["plain"].delay(1)
        app.conf.task_default_queue = "elsewhere"
        return [first, seen["plain"].delay(2)]

    celery, direct = both(monkeypatch, switch)
    assert direct.messages == celery.messages
    assert [m.queue for m in direct.messages] == ["celery", "elsewhere"]


def test_what_the_builder_declines_goes_through_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Links, expiry and stamped headers are left to Celery's send_task, and still queue."""

    def declined(app: Celery, seen: dict[str, Any]) -> list[Any]:
        plain = seen["plain"]
        return [
            plain.apply_async((1,), link=plain.s(2)),
            plain.apply_async((3,), expires=600),
            plain.apply_async((4,), stamped_headers=["mark"], mark="m"),
        ]

    run = both(monkeypatch, declined)[1]
    assert run.direct == 1, "only the linked callback's own publish is built directly"
    first, expiring, stamped = run.messages[:3]
    assert first.body[2]["callbacks"][0]["task"] == "pub.plain"
    assert expiring.headers["expires"] is not None
    assert stamped.headers["stamps"] == {"mark": "m"}


@pytest.mark.parametrize(
    "value",
    [
        (),
        [],
        {},
        (1,),
        [1],
        (1, 2.5, -3, True, False, None),
        ("it's", 'say "hi"', "line\nbreak", "back\\slash", "émoji ✓"),
        {"a": 1, "b's": "c'd", "n": None},
        [float("inf"), float("nan"), 1e300, 10**30],
        ("x" * 1020,),
        ("x" * 1100,),
        tuple(range(400)),
        {"k": "v" * 1019},
        ((1, 2), [3]),
        {"nested": {"a": [1]}},
        {1: "int key"},
        (b"bytes",),
    ],
)
def test_saferepr_gives_celerys_text(value: Any) -> None:
    """argsrepr/kwargsrepr text is exactly Celery's saferepr, short, long or nested."""
    assert saferepr(value, 1024, 3) == celery_saferepr(value, 1024, maxlevels=3)


def test_saferepr_leaves_subclasses_to_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tuple subclass or an int subclass is not rendered by the fast path."""
    calls: list[Any] = []

    def spy(value: Any, maxlen: int, maxlevels: int) -> str:
        calls.append(value)
        return str(celery_saferepr(value, maxlen, maxlevels=maxlevels))

    monkeypatch.setattr(_publish, "celery_saferepr", spy)

    class Flag(int):
        pass

    assert saferepr((Flag(1),), 1024, 3) == "(1,)"
    assert saferepr((1,), 1024, 3) == "(1,)"
    assert len(calls) == 1


def test_trusted_events_equal_validated_ones() -> None:
    """The simulation's fast events are equal to Event(...), frozen and read-only."""
    details = {"eta": 1.5, "reason": "x"}
    fast = Event._trusted(EventKind.PUBLISHED, 1.0, "t", "id-1", 2, dict(details))
    slow = Event(
        kind=EventKind.PUBLISHED, at=1.0, task_name="t", task_id="id-1", attempt=2, details=details
    )
    assert fast == slow
    assert type(fast) is Event
    assert fast.describe() == slow.describe()
    assert fingerprint([fast]) == fingerprint([slow])
    with pytest.raises(FrozenInstanceError):
        fast.attempt = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        fast.details["eta"] = 2.0  # type: ignore[index]
    with pytest.raises(ConfigurationError, match="attempt counts from 1, got 0"):
        Event._trusted(EventKind.PUBLISHED, 1.0, "t", "id-1", 0, {})

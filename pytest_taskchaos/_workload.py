"""A scenario's workload as a plan: which message is published when, with what arguments.

The plan is computed up front from a seeded generator, so the same seed publishes
the same messages at the same virtual times; the runner then publishes them in
order, draining the simulation up to each one's time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_taskchaos._scenario_values import ArrivalPattern, KeyPattern, TaskCall

if TYPE_CHECKING:
    from pytest_taskchaos._scenario_values import Workload

__all__ = ["Planned", "plan"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """One message of the workload.

    Attributes:
        index: the message's index, from 0 (the ``{n}`` placeholder).
        at: virtual seconds since the start when it is published.
        call: the task entry it was drawn from.
        args: its positional arguments, placeholders filled in.
        kwargs: its keyword arguments, placeholders filled in.
        twice: published a second time with the same task id (a duplicate).
    """

    index: int
    at: float
    call: TaskCall
    args: tuple[object, ...]
    kwargs: dict[str, object]
    twice: bool


def _times(workload: Workload, rng: random.Random) -> list[float]:
    count = workload.count
    arrival = workload.arrival
    if arrival.pattern is ArrivalPattern.UNIFORM and arrival.over:
        return sorted(rng.uniform(0.0, arrival.over) for _ in range(count))
    if arrival.pattern is ArrivalPattern.POISSON and arrival.rate:
        times: list[float] = []
        now = 0.0
        for _ in range(count):
            now += rng.expovariate(arrival.rate)
            times.append(now)
        return times
    return [0.0] * count


def plan(tasks: tuple[TaskCall, ...], workload: Workload, *, seed: int) -> list[Planned]:
    """The workload's messages in publishing order.

    Tasks are drawn by weight; arrival times follow the pattern (``burst``: all at
    0, ``uniform``: uniformly at random over ``over``, ``poisson``: exponential
    gaps at ``rate`` per second); ``duplicate_ratio`` of the messages, chosen at
    random, are marked to be published twice.

    Args:
        tasks: the scenario's task entries.
        workload: the scenario's workload.
        seed: the seed of every choice.

    Returns:
        The messages, sorted by publishing time (ties keep index order).
    """
    rng = random.Random(seed)
    count = workload.count
    chosen = rng.choices(tasks, weights=[call.weight for call in tasks], k=count)
    times = _times(workload, rng)
    doubled = set(rng.sample(range(count), round(count * workload.duplicate_ratio)))
    keys = workload.keys
    distinct = keys.distinct if keys.pattern is KeyPattern.REPEATED and keys.distinct else None
    planned: list[Planned] = []
    for index, (call, at) in enumerate(zip(chosen, times, strict=True)):
        args, kwargs = call.render(index, key=index if distinct is None else index % distinct)
        planned.append(
            Planned(
                index=index,
                at=at,
                call=call,
                args=args,
                kwargs=kwargs,
                twice=index in doubled,
            )
        )
    return planned

"""The Redis dead-letter store: JSON records, ordered lex indexes per status, atomic scripts.

Each query order has one sorted set per status whose members sort, byte by byte,
exactly like ``records.sort_key``: a fixed-width hex encoding of the ordering
numbers followed by the id. All members score 0, so ``ZRANGEBYLEX`` walks them in
order from a keyset cursor, and a page reads only the records it returns (plus
those the filter skips). Several statuses are merged in Python. Records are
read with ``MGET`` and filtered with ``DeadLetterFilter.matches``, the reference
semantics, so every backend answers alike.
"""

from __future__ import annotations

import heapq
import json
import struct
from itertools import islice
from typing import TYPE_CHECKING, Any

from resilience.errors import ConfigurationError
from resilience.storage import _redis_scripts as scripts
from resilience.storage._redis_common import Shared, number, text
from resilience.storage.records import (
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterPage,
    DeadLetterRecord,
    DeadLetterStatus,
    decode_cursor,
    encode_cursor,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["RedisDeadLetterStore"]

_CHUNK = 1000
_DIRECT = 1000  # candidate sets up to this size are fetched and sorted in Python
_NEWEST_WIDTH = 16
_REPLAY_WIDTH = 32
_SIGN = 1 << 63
_MASK = (1 << 64) - 1


def _float_key(value: float) -> str:
    # IEEE 754 bits reordered so unsigned comparison follows numeric order; -0.0
    # is folded into 0.0 because the two compare equal.
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(value) + 0.0))
    return f"{(bits ^ _MASK) if bits & _SIGN else (bits | _SIGN):016x}"


def _priority_key(priority: int) -> str:
    # Higher priority first: encode _SIGN - 1 - priority, which fits 64 bits for int64.
    if not -_SIGN <= priority < _SIGN:
        raise ConfigurationError(
            f"dead letter priority {priority} is outside the 64-bit range the Redis index holds",
            key="priority",
            value=priority,
        )
    return f"{_SIGN - 1 - priority:016x}"


def _member(order: DeadLetterOrder, record: DeadLetterRecord) -> str:
    if order is DeadLetterOrder.NEWEST:
        return _float_key(record.last_failed_at) + record.id
    return _priority_key(record.priority) + _float_key(record.first_failed_at) + record.id


def _cursor_member(order: DeadLetterOrder, after: str) -> str:
    position = decode_cursor(order, after)
    if order is DeadLetterOrder.NEWEST:
        last_failed_at, record_id = position
        return _float_key(last_failed_at) + str(record_id)
    priority, first_failed_at, record_id = position
    return _priority_key(priority) + _float_key(first_failed_at) + str(record_id)


def _width(order: DeadLetterOrder) -> int:
    return _NEWEST_WIDTH if order is DeadLetterOrder.NEWEST else _REPLAY_WIDTH


def _beyond(order: DeadLetterOrder, member: str, mark: str | None) -> bool:
    if mark is None:
        return True
    return member < mark if order is DeadLetterOrder.NEWEST else member > mark


class RedisDeadLetterStore:
    """Dead letters on Redis (see the module docstring for the indexes)."""

    __slots__ = ("_add", "_base", "_cas", "_purge", "_shared")

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._base = f"{shared.prefix}dlq:"
        register = shared.client.register_script
        self._add = register(scripts.DEAD_LETTER_ADD)
        self._cas = register(scripts.DEAD_LETTER_COMPARE_AND_SET)
        self._purge = register(scripts.DEAD_LETTER_PURGE)

    # ------------------------------------------------------------------ writes

    def _index(self, record: DeadLetterRecord) -> tuple[list[str], list[str]]:
        newest = _member(DeadLetterOrder.NEWEST, record)
        replay = _member(DeadLetterOrder.REPLAY, record)
        due = "" if record.next_retry_at is None else number(record.next_retry_at)
        meta = json.dumps(
            [record.version, record.status.value, newest, replay, due], ensure_ascii=False
        )
        base, status = self._base, record.status.value
        keys = [
            f"{base}rec:{record.id}",
            f"{base}meta",
            f"{base}newest:{status}",
            f"{base}replay:{status}",
            f"{base}due",
        ]
        return keys, [meta, newest, replay, due]

    def add(self, record: DeadLetterRecord) -> None:
        """Insert ``record`` and index it, in one script.

        Raises:
            ValueError: a record with the same id exists.
            StorageUnavailable: Redis cannot be reached.
        """
        keys, (meta, newest, replay, due) = self._index(record)
        with self._shared:
            added = self._add(
                keys=keys, args=[record.id, record.to_json(), meta, newest, replay, due]
            )
        if not added:
            raise ValueError(f"dead letter {record.id!r} already exists")

    def compare_and_set(self, expected_version: int, record: DeadLetterRecord) -> bool:
        """Replace the record if its version is still ``expected_version``, moving its indexes.

        Raises:
            ValueError: ``record.version`` is not ``expected_version + 1``.
            StorageUnavailable: Redis cannot be reached.
        """
        if record.version != expected_version + 1:
            raise ValueError(f"record.version must be {expected_version + 1}, got {record.version}")
        keys, (meta, newest, replay, due) = self._index(record)
        args = [record.id, str(expected_version), record.to_json(), meta, newest, replay, due]
        with self._shared:
            return bool(self._cas(keys=keys, args=[*args, self._base]))

    def purge(self, where: DeadLetterFilter) -> int:
        """Delete matching records, in atomic chunks; returns how many were deleted.

        A record changed by someone else between matching and deleting is kept:
        it may no longer match.
        """
        removed = 0
        with self._shared:
            doomed = [(r.id, r.version) for r in self._matching(where, DeadLetterOrder.NEWEST)]
            for start in range(0, len(doomed), _CHUNK):
                args: list[str] = [self._base]
                for record_id, version in doomed[start : start + _CHUNK]:
                    args += [record_id, str(version)]
                removed += int(
                    self._purge(keys=[f"{self._base}meta", f"{self._base}due"], args=args)
                )
        return removed

    # ------------------------------------------------------------------ reads

    def get(self, record_id: str) -> DeadLetterRecord | None:
        """The record with ``record_id``, or ``None``."""
        with self._shared:
            raw = self._shared.client.get(f"{self._base}rec:{record_id}")
        return None if raw is None else DeadLetterRecord.from_json(raw)

    def query(
        self,
        where: DeadLetterFilter,
        *,
        order: DeadLetterOrder,
        limit: int,
        after: str | None = None,
    ) -> DeadLetterPage:
        """Up to ``limit`` matching records in ``order`` after cursor ``after``.

        Raises:
            ConfigurationError: a malformed cursor, or one of another order.
            StorageUnavailable: Redis cannot be reached.
        """
        mark = None if after is None else _cursor_member(order, after)
        if limit <= 0:
            return DeadLetterPage(records=(), next_cursor=None)
        with self._shared:
            found = list(islice(self._matching(where, order, mark, first=limit + 1), limit + 1))
        page = tuple(found[:limit])
        more = len(found) > limit
        return DeadLetterPage(
            records=page, next_cursor=encode_cursor(order, page[-1]) if more else None
        )

    def count(self, where: DeadLetterFilter) -> int:
        """How many records match ``where``; index counts alone when the filter allows."""
        statuses = sorted(where.statuses) if where.statuses is not None else list(DeadLetterStatus)
        unindexed = (where.ids, where.task_name, where.failure_types, where.text, where.due_by)
        client = self._shared.client
        with self._shared:
            if all(value is None for value in unindexed):
                low, high = self._time_bounds(where)
                pipe = client.pipeline(transaction=False)
                for status in statuses:
                    pipe.zlexcount(f"{self._base}newest:{status.value}", low, high)
                return sum(int(n) for n in pipe.execute())
            if where == DeadLetterFilter(due_by=where.due_by) and where.due_by is not None:
                return int(client.zcount(f"{self._base}due", "-inf", number(where.due_by)))
            return sum(1 for _ in self._matching(where, DeadLetterOrder.NEWEST))

    # ------------------------------------------------------------------ matching

    def _matching(
        self,
        where: DeadLetterFilter,
        order: DeadLetterOrder,
        mark: str | None = None,
        *,
        first: int = _CHUNK,
    ) -> Iterator[DeadLetterRecord]:
        """Matching records in ``order`` after member ``mark``, narrowed by the indexes."""
        candidates = self._candidates(where)
        if candidates is not None and len(candidates) <= _DIRECT:
            yield from self._sorted(candidates, where, order, mark)
            return
        members = self._walk(where, order, mark, first)
        if candidates is not None:
            members = (m for m in members if m[_width(order) :] in candidates)
        seen: set[str] = set()
        size = max(1, min(first, _CHUNK))
        while True:
            batch = list(islice(members, size))
            if not batch:
                return
            for member, record in zip(
                batch, self._fetch(m[_width(order) :] for m in batch), strict=True
            ):
                # A record changed between the index read and the fetch now sits
                # elsewhere in the order (or nowhere): skip the stale entry.
                if (
                    record is not None
                    and record.id not in seen
                    and _member(order, record) == member
                    and where.matches(record)
                ):
                    seen.add(record.id)
                    yield record
            size = min(size * 2, _CHUNK)

    def _candidates(self, where: DeadLetterFilter) -> set[str] | None:
        if where.ids is not None:
            return set(where.ids)
        if where.due_by is not None:
            due = self._shared.client.zrangebyscore(
                f"{self._base}due", "-inf", number(where.due_by)
            )
            return {text(record_id) for record_id in due}
        return None

    def _sorted(
        self,
        candidates: set[str],
        where: DeadLetterFilter,
        order: DeadLetterOrder,
        mark: str | None,
    ) -> Iterator[DeadLetterRecord]:
        keyed = [
            (_member(order, record), record)
            for record in self._fetch(sorted(candidates))
            if record is not None and where.matches(record)
        ]
        keyed.sort(key=lambda pair: pair[0], reverse=order is DeadLetterOrder.NEWEST)
        for member, record in keyed:
            if _beyond(order, member, mark):
                yield record

    def _fetch(self, ids: Iterable[str]) -> list[DeadLetterRecord | None]:
        keys = [f"{self._base}rec:{record_id}" for record_id in ids]
        found: list[DeadLetterRecord | None] = []
        for start in range(0, len(keys), _CHUNK):
            found.extend(
                None if raw is None else DeadLetterRecord.from_json(raw)
                for raw in self._shared.client.mget(keys[start : start + _CHUNK])
            )
        return found

    def _time_bounds(self, where: DeadLetterFilter) -> tuple[str, str]:
        # Lex bounds on the NEWEST index for since <= last_failed_at < until.
        low = "-" if where.since is None else "[" + _float_key(where.since)
        high = "+" if where.until is None else "(" + _float_key(where.until)
        return low, high

    def _walk(
        self, where: DeadLetterFilter, order: DeadLetterOrder, mark: str | None, first: int
    ) -> Iterator[str]:
        statuses = sorted(where.statuses) if where.statuses is not None else list(DeadLetterStatus)
        newest = order is DeadLetterOrder.NEWEST
        if newest:
            low, high = self._time_bounds(where)
            if mark is not None and (high == "+" or mark < high[1:]):
                high = "(" + mark
        else:
            low, high = ("-" if mark is None else "(" + mark), "+"
        streams = [
            self._scan(f"{self._base}{order.value}:{status.value}", newest, low, high, first)
            for status in statuses
        ]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, reverse=newest)

    def _scan(self, key: str, descending: bool, low: str, high: str, first: int) -> Iterator[str]:
        client = self._shared.client
        size = max(1, min(first, _CHUNK))
        while True:
            if descending:
                chunk: Any = client.zrevrangebylex(key, high, low, start=0, num=size)
            else:
                chunk = client.zrangebylex(key, low, high, start=0, num=size)
            members = [text(member) for member in chunk]
            yield from members
            if len(members) < size:
                return
            if descending:
                high = "(" + members[-1]
            else:
                low = "(" + members[-1]
            size = min(size * 2, _CHUNK)

"""In-process storage: state shared by the threads of one process, gone when it exits.

The default store of every breaker that is not given one. Use a shared backend
(SQLite, Redis, PostgreSQL) when several processes must see the same state.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resilience.storage.base import BreakerRecord

__all__ = ["MemoryBreakerStore"]


class MemoryBreakerStore:
    """Breaker records in a dict, with an atomic compare-and-set.

    Records are immutable, so the store keeps the objects themselves: a load is
    one dict lookup and hands out no copy, which keeps a closed breaker's call
    path cheap. The lock is held only inside :meth:`compare_and_set`.

    Example:
        >>> from resilience.storage import BreakerRecord
        >>> store = MemoryBreakerStore()
        >>> store.compare_and_set("payments", None, BreakerRecord(version=1))
        True
        >>> store.compare_and_set("payments", None, BreakerRecord(version=1))
        False
        >>> store.load("payments").version
        1
    """

    __slots__ = ("_lock", "_records")

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def load(self, name: str) -> BreakerRecord | None:
        """The record of breaker ``name``, or ``None`` if never written."""
        # No lock: a dict lookup is atomic and records are never mutated, so a
        # reader sees either the old record or the new one, never a torn write.
        return self._records.get(name)

    def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is still ``expected_version``.

        Args:
            name: the breaker's name.
            expected_version: the version read before computing ``record``, or
                ``None`` when no record may exist yet.
            record: the new record, with ``version == (expected_version or 0) + 1``.

        Returns:
            ``True`` if stored, ``False`` if the stored version differs.

        Raises:
            ValueError: when ``record.version`` is not ``expected_version + 1`` (a
                caller bug that would break every other writer's compare-and-set).
        """
        if record.version != (expected_version or 0) + 1:
            raise ValueError(
                f"record.version must be {(expected_version or 0) + 1} to replace version "
                f"{expected_version!r}, got {record.version}"
            )
        with self._lock:
            current = self._records.get(name)
            if (None if current is None else current.version) != expected_version:
                return False
            self._records[name] = record
            return True

    def __repr__(self) -> str:
        return f"MemoryBreakerStore(breakers={sorted(self._records)!r})"

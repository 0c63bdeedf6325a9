"""A dead-letter store that never loses a write: spool locally while the primary is down.

``SpoolingDeadLetterStore(primary, spool)`` sends everything to ``primary`` (Redis,
PostgreSQL). When ``primary.add`` fails for any reason other than a duplicate id,
the record goes to ``spool`` (a local store, typically SQLite) instead, and
``add`` still returns normally: the record is durable. Before every later
operation the spool is flushed to the primary if it holds anything. Flushing is
idempotent: a record is copied first and removed from the spool after, and a
copy that is already in the primary (a flush interrupted between the two steps)
is recognised by its id and not duplicated.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from resilience.errors import StorageUnavailable
from resilience.storage.records import DeadLetterFilter, DeadLetterOrder

if TYPE_CHECKING:
    from resilience.storage.base import DeadLetterStore
    from resilience.storage.records import DeadLetterPage, DeadLetterRecord

__all__ = ["SpoolingDeadLetterStore"]

_log = logging.getLogger("resilience.dead_letter")

_FLUSH_PAGE = 200
_EVERYTHING = DeadLetterFilter()


class SpoolingDeadLetterStore:
    """A :class:`~resilience.storage.DeadLetterStore` that spools adds while its primary fails.

    Reads and status changes go to the primary only (a spooled record becomes
    visible there once flushed); they raise the primary's error while it is down.

    Args:
        primary: the shared store (``open_store("postgresql://...").dead_letters``).
        spool: a local store that outlives the process (``SQLiteStore(path).dead_letters``);
            records left in it by an earlier process are flushed too.

    Example:
        >>> from resilience.storage.memory import MemoryDeadLetterStore
        >>> store = SpoolingDeadLetterStore(MemoryDeadLetterStore(), MemoryDeadLetterStore())
        >>> store.pending()
        0
    """

    __slots__ = ("_flush_lock", "_pending", "primary", "spool")

    def __init__(self, primary: DeadLetterStore, spool: DeadLetterStore) -> None:
        self.primary = primary
        self.spool = spool
        # None: unknown until the spool is first looked at (it may hold records
        # from an earlier process that died while the primary was down).
        self._pending: bool | None = None
        self._flush_lock = threading.Lock()

    def pending(self) -> int:
        """How many records wait in the spool."""
        count = self.spool.count(_EVERYTHING)
        self._pending = count > 0
        return count

    def flush(self) -> int:
        """Move spooled records to the primary, oldest first.

        Returns:
            How many records left the spool (copied now, or found already copied).

        Raises:
            StorageUnavailable: the primary failed while flushing; what was moved
                so far stays moved, the rest stays spooled.
        """
        with self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        moved = 0
        after: str | None = None
        while True:
            page = self.spool.query(
                _EVERYTHING, order=DeadLetterOrder.REPLAY, limit=_FLUSH_PAGE, after=after
            )
            done: list[str] = []
            for record in page.records:
                try:
                    self.primary.add(record)
                except ValueError:
                    pass  # already copied by an interrupted flush: not a duplicate
                except StorageUnavailable:
                    self._forget(done)
                    self._pending = True
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad record must not block the rest
                    _log.warning(
                        "dead letter %s stays spooled: the primary store rejected it (%s)",
                        record.id,
                        type(exc).__name__,
                    )
                    continue
                done.append(record.id)
            moved += self._forget(done)
            if page.next_cursor is None:
                break
            # Keyset cursors are positions, so removing what came before is harmless.
            after = page.next_cursor
        # Recount rather than assume empty: another thread may have spooled meanwhile,
        # and records the primary rejected are still there.
        self._pending = self.spool.count(_EVERYTHING) > 0
        return moved

    def _forget(self, ids: list[str]) -> int:
        if not ids:
            return 0
        self.spool.purge(DeadLetterFilter(ids=frozenset(ids)))
        return len(ids)

    def _flush_if_pending(self) -> bool:
        """Flush when the spool holds records; ``False`` if the primary is still down."""
        if self._pending is None:
            self.pending()
        if not self._pending:
            return True
        if not self._flush_lock.acquire(blocking=False):
            return True  # another thread is flushing right now
        try:
            self._flush_locked()
        except StorageUnavailable:
            return False
        finally:
            self._flush_lock.release()
        return True

    def add(self, record: DeadLetterRecord) -> None:
        """Insert ``record`` into the primary, or into the spool if the primary fails.

        Raises:
            ValueError: a record with the same id exists in the primary.
        """
        if self._flush_if_pending():
            try:
                self.primary.add(record)
            except ValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the primary spools the record
                _log.warning(
                    "dead-letter primary store failed (%s); spooling %s locally",
                    type(exc).__name__,
                    record.id,
                )
            else:
                return
        self.spool.add(record)
        self._pending = True

    def get(self, record_id: str) -> DeadLetterRecord | None:
        """The record with ``record_id`` from the primary (after flushing the spool)."""
        self._flush_if_pending()
        return self.primary.get(record_id)

    def query(
        self,
        where: DeadLetterFilter,
        *,
        order: DeadLetterOrder,
        limit: int,
        after: str | None = None,
    ) -> DeadLetterPage:
        """A page of the primary's records (after flushing the spool)."""
        self._flush_if_pending()
        return self.primary.query(where, order=order, limit=limit, after=after)

    def count(self, where: DeadLetterFilter) -> int:
        """How many of the primary's records match (after flushing the spool)."""
        self._flush_if_pending()
        return self.primary.count(where)

    def compare_and_set(self, expected_version: int, record: DeadLetterRecord) -> bool:
        """Compare-and-set on the primary (after flushing the spool)."""
        self._flush_if_pending()
        return self.primary.compare_and_set(expected_version, record)

    def purge(self, where: DeadLetterFilter) -> int:
        """Purge from the primary (after flushing the spool)."""
        self._flush_if_pending()
        return self.primary.purge(where)

    def __repr__(self) -> str:
        return f"SpoolingDeadLetterStore(primary={self.primary!r}, spool={self.spool!r})"

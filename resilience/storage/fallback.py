"""Breaker state that survives an outage of its shared store.

When Redis or PostgreSQL is down, a breaker must still protect its dependency:
failing every call because the *store* is unreachable would turn a storage
outage into an outage of everything. :class:`FallbackBreakerStore` keeps serving
from a local in-process store while the shared one raises
:class:`~resilience.errors.StorageUnavailable`, warns once per outage, and goes
back to the shared state once it answers again (the local state of the outage is
then dropped: the shared record is the truth every worker agrees on).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from resilience.clock import Clock, system_clock
from resilience.errors import StorageUnavailable
from resilience.storage.memory import MemoryBreakerStore

if TYPE_CHECKING:
    from resilience.storage.base import BreakerRecord, BreakerStateStore

__all__ = ["FallbackBreakerStore"]

_log = logging.getLogger("resilience.storage")


class FallbackBreakerStore:
    """A shared breaker store that falls back to local state while the shared one is down.

    Args:
        primary: the shared store (``open_store(url).breakers``).
        recheck: seconds between attempts to return to the primary during an outage.
        clock: the time source for ``recheck``.

    Example:
        >>> from resilience.storage import BreakerRecord, MemoryBreakerStore
        >>> store = FallbackBreakerStore(MemoryBreakerStore())
        >>> store.compare_and_set("api", None, BreakerRecord(version=1))
        True
        >>> store.degraded
        False
    """

    def __init__(
        self, primary: BreakerStateStore, *, recheck: float = 30.0, clock: Clock = system_clock
    ) -> None:
        self.primary = primary
        self.local = MemoryBreakerStore()
        self.recheck = recheck
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = 0.0

    @property
    def degraded(self) -> bool:
        """Whether breakers are running on local state because the shared store is down."""
        return self._down_since is not None

    def load(self, name: str) -> BreakerRecord | None:
        """The shared record, or the local one during an outage."""
        if self._use_local():
            return self.local.load(name)
        try:
            record = self.primary.load(name)
        except StorageUnavailable as exc:
            self._went_down(exc)
            return self.local.load(name)
        self._came_back()
        return record

    def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Write to the shared store, or to the local one during an outage.

        A write that fails because the shared store just went down returns
        ``False``: the breaker re-reads (now from local state) and recomputes.
        """
        if self._use_local():
            return self.local.compare_and_set(name, expected_version, record)
        try:
            stored = self.primary.compare_and_set(name, expected_version, record)
        except StorageUnavailable as exc:
            self._went_down(exc)
            return False
        self._came_back()
        return stored

    def _use_local(self) -> bool:
        if self._down_since is None:
            return False
        return self._clock.monotonic() < self._next_try

    def _went_down(self, exc: StorageUnavailable) -> None:
        with self._lock:
            self._next_try = self._clock.monotonic() + self.recheck
            if self._down_since is None:
                self._down_since = self._clock.time()
                _log.warning(
                    "breaker store %s is unavailable (%s): breakers use local in-process "
                    "state until it answers again (next check in %gs)",
                    exc.store,
                    exc,
                    self.recheck,
                )

    def _came_back(self) -> None:
        if self._down_since is None:  # the common case: no lock taken
            return
        down_since = self._end_outage()
        if down_since is None:  # another thread announced it first
            return
        _log.warning(
            "breaker store is available again after %.0fs: breakers use the shared state again",
            self._clock.time() - down_since,
        )

    def _end_outage(self) -> float | None:
        with self._lock:
            down_since, self._down_since = self._down_since, None
            if down_since is not None:
                self.local = MemoryBreakerStore()
            return down_since

    def __repr__(self) -> str:
        mode = "local (shared store down)" if self.degraded else "shared"
        return f"FallbackBreakerStore({self.primary!r}, mode={mode!r})"

"""Tests for breaker-state storage: the record's JSON form and the store's compare-and-set.

The store tests take a ``store`` fixture parametrised by backend, so every
backend added later runs the same conformance checks.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience.errors import ConfigurationError
from resilience.storage import (
    BreakerRecord,
    BreakerStateStore,
    CircuitState,
    MemoryBreakerStore,
)

finite = st.floats(min_value=0, max_value=4e9, allow_nan=False)
counts = st.integers(min_value=0, max_value=10**6)
records = st.builds(
    BreakerRecord,
    state=st.sampled_from(CircuitState),
    consecutive_failures=counts,
    opened_at=st.none() | finite,
    open_until=st.none() | finite,
    probes=st.lists(st.tuples(st.text(min_size=1, max_size=16), finite), max_size=4).map(tuple),
    half_open_successes=counts,
    outcomes=st.text(alphabet="sf", max_size=50),
    buckets=st.lists(st.tuples(finite, counts, counts), max_size=10).map(tuple),
    trips=counts,
    version=counts,
)


# -- the record ------------------------------------------------------------------------


@given(records)
def test_record_round_trips_through_json(record: BreakerRecord) -> None:
    """Every record survives to_json/from_json unchanged."""
    text = record.to_json()
    assert isinstance(json.loads(text), dict)
    assert BreakerRecord.from_json(text) == record


def test_record_json_is_plain_and_readable() -> None:
    """The stored JSON names the state by value and holds lists, not tuples or reprs."""
    record = BreakerRecord(
        state=CircuitState.HALF_OPEN,
        opened_at=10.0,
        open_until=40.0,
        probes=(("ab12", 100.0),),
        trips=1,
        version=3,
    )
    data = json.loads(record.to_json())
    assert data["state"] == "half_open"
    assert data["probes"] == [["ab12", 100.0]]
    assert record.half_open_in_flight == 1


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d.update(state="ajar"), "state"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.pop("version"), "version"),
        (lambda d: d.update(version=-1), "version"),
        (lambda d: d.update(trips=True), "trips"),
        (lambda d: d.update(opened_at="yesterday"), "opened_at"),
        (lambda d: d.update(outcomes="sfx"), "outcomes"),
        (lambda d: d.update(probes=[["a"]]), "probes"),
        (lambda d: d.update(buckets=[[1.0, -1, 0]]), "buckets"),
    ],
)
def test_corrupt_record_is_rejected_naming_the_field(mutate, key: str) -> None:
    """A stored record with a wrong, missing or unknown field raises ConfigurationError(key)."""
    data = BreakerRecord(version=1).to_dict()
    mutate(data)
    with pytest.raises(ConfigurationError) as info:
        BreakerRecord.from_json(json.dumps(data))
    assert info.value.key == key


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "null"])
def test_non_object_json_is_rejected(text: str) -> None:
    """Text that is not a JSON object is a ConfigurationError, not a crash."""
    with pytest.raises(ConfigurationError) as info:
        BreakerRecord.from_json(text)
    assert info.value.key == "record"


def test_record_validates_its_fields() -> None:
    """Constructing a record with a negative count or a non-state fails at once."""
    with pytest.raises(ConfigurationError) as info:
        BreakerRecord(consecutive_failures=-1)
    assert info.value.key == "consecutive_failures"
    with pytest.raises(ConfigurationError) as info:
        BreakerRecord(state="open")  # type: ignore[arg-type]
    assert info.value.key == "state"


# -- the store (conformance: every backend must pass these) ------------------------------


@pytest.fixture(params=["memory"])
def store(request: pytest.FixtureRequest) -> BreakerStateStore:
    """A fresh, empty store of each backend."""
    assert request.param == "memory"
    return MemoryBreakerStore()


def test_store_satisfies_the_protocol(store: BreakerStateStore) -> None:
    """The backend structurally matches BreakerStateStore."""
    assert isinstance(store, BreakerStateStore)


def test_unknown_breaker_loads_as_none(store: BreakerStateStore) -> None:
    """A name never written has no record."""
    assert store.load("nobody") is None


def test_create_only_when_absent(store: BreakerStateStore) -> None:
    """expected_version=None creates the record once; a second create loses."""
    first = BreakerRecord(consecutive_failures=1, version=1)
    assert store.compare_and_set("dep", None, first) is True
    assert store.compare_and_set("dep", None, BreakerRecord(version=1)) is False
    assert store.load("dep") == first


def test_compare_and_set_needs_the_current_version(store: BreakerStateStore) -> None:
    """A write based on a stale version loses and leaves the stored record alone."""
    store.compare_and_set("dep", None, BreakerRecord(version=1))
    opened = BreakerRecord(state=CircuitState.OPEN, opened_at=5.0, open_until=65.0, version=2)
    assert store.compare_and_set("dep", 1, opened) is True
    assert store.compare_and_set("dep", 1, BreakerRecord(version=2)) is False
    assert store.load("dep") == opened


def test_names_are_independent(store: BreakerStateStore) -> None:
    """Records of different breakers never interfere."""
    store.compare_and_set("a", None, BreakerRecord(trips=1, version=1))
    store.compare_and_set("b", None, BreakerRecord(trips=2, version=1))
    assert (store.load("a").trips, store.load("b").trips) == (1, 2)


def test_version_must_advance_by_one(store: BreakerStateStore) -> None:
    """A record whose version is not expected + 1 is a caller bug and is refused."""
    with pytest.raises(ValueError, match="version"):
        store.compare_and_set("dep", None, BreakerRecord(version=5))


def test_concurrent_writers_never_lose_an_update(store: BreakerStateStore) -> None:
    """8 threads x 200 read-modify-CAS increments: every one lands (lesson 12)."""
    start = threading.Barrier(8, timeout=10)

    def increment_many() -> None:
        start.wait()
        for _ in range(200):
            while True:
                current = store.load("dep")
                base = current or BreakerRecord()
                new = dataclasses.replace(
                    base,
                    consecutive_failures=base.consecutive_failures + 1,
                    version=base.version + 1,
                )
                if store.compare_and_set("dep", None if current is None else base.version, new):
                    break

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(increment_many) for _ in range(8)]:
            future.result(timeout=60)
    record = store.load("dep")
    assert record.consecutive_failures == 1_600
    assert record.version == 1_600


def test_memory_store_repr_lists_breakers() -> None:
    """The memory store's repr names the breakers it holds."""
    store = MemoryBreakerStore()
    store.compare_and_set("payments", None, BreakerRecord(version=1))
    assert repr(store) == "MemoryBreakerStore(breakers=['payments'])"

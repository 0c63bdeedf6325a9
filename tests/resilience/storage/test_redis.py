"""Redis backend specifics: key layout, prefixes, atomic scripts under threads, URLs, errors.

Behaviour shared with every backend is pinned by ``test_conformance.py``; these
tests cover what only the Redis backend has. Each runs on fakeredis and on the
real server named by ``RESILIENCE_TEST_REDIS_URL`` (skipped without it, a failure
when ``RESILIENCE_REQUIRE_SERVERS=1``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import fakeredis
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from resilience.errors import ConfigurationError, StorageUnavailable
from resilience.storage import (
    BreakerRecord,
    BreakerStateStore,
    DeadLetterFilter,
    DeadLetterOrder,
    DeadLetterRecord,
    DeadLetterStatus,
    DeadLetterStore,
    HistoryEntry,
    IdempotencyStore,
    MemoryStore,
    OutcomeStore,
    Store,
    open_store,
)
from resilience.storage._redis_dead_letters import _float_key, _priority_key
from resilience.storage.redis import (
    GC_GRACE_SECONDS,
    TOKEN_HORIZON_SECONDS,
    RedisDeadLetterStore,
    RedisStore,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T0 = 1_700_000_000.0
PENDING = frozenset({DeadLetterStatus.PENDING})


def real_server_url() -> str:
    """The real Redis of the test run, or skip (fail when servers are required)."""
    url = os.environ.get("RESILIENCE_TEST_REDIS_URL")
    if url:
        return url
    message = "RESILIENCE_TEST_REDIS_URL is not set: start the servers with scripts/servers.sh"
    if os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{message} (RESILIENCE_REQUIRE_SERVERS=1 forbids skipping)")
    pytest.skip(message)


def make_client(kind: str, **options: Any) -> Any:
    """A fakeredis client, or a redis-py client of the real server."""
    if kind == "fakeredis":
        return fakeredis.FakeRedis(**options)
    return redis.Redis.from_url(real_server_url(), **options)


@pytest.fixture(params=["fakeredis", "redis"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A client of each kind; every key the test wrote under ``rt:`` is removed afterwards."""
    made = make_client(request.param)
    yield made
    keys = list(made.scan_iter(match="rt:*", count=1000))
    if keys:
        made.delete(*keys)
    made.close()


def fresh_prefix() -> str:
    """A key prefix no other test uses."""
    return f"rt:{uuid.uuid4().hex[:10]}:"


def keys_under(client: Any, prefix: str) -> set[str]:
    """Every key under ``prefix``, without the prefix."""
    return {k.decode()[len(prefix) :] for k in client.scan_iter(match=f"{prefix}*", count=1000)}


def letter(n: int, **changes: Any) -> DeadLetterRecord:
    """A pending dead letter with predictable ordering fields."""
    fields: dict[str, Any] = {
        "id": f"r{n:05d}",
        "task_name": "billing.charge",
        "message": f"deadlock {n}",
        "first_failed_at": T0 + n,
        "last_failed_at": T0 + n,
        "priority": n % 3,
    }
    fields.update(changes)
    return DeadLetterRecord(**fields)


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Start ``count`` threads at once on ``target(i)`` and wait for all of them."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- layout


def test_store_satisfies_every_role_protocol(client: Any) -> None:
    """RedisStore is a Store and each role matches its protocol."""
    store = RedisStore(client, prefix=fresh_prefix())
    assert isinstance(store, Store)
    assert isinstance(store.breakers, BreakerStateStore)
    assert isinstance(store.idempotency, IdempotencyStore)
    assert isinstance(store.dead_letters, DeadLetterStore)
    assert isinstance(store.outcomes, OutcomeStore)


def test_key_layout_and_json_values(client: Any) -> None:
    """Every role writes the documented keys, as JSON or delimited text or string hashes."""
    prefix = fresh_prefix()
    store = RedisStore(client, prefix=prefix)
    breaker = BreakerRecord(version=1)
    assert store.breakers.compare_and_set("payments", None, breaker)
    assert store.idempotency.acquire("order:1", fingerprint="fp", lease=30, ttl=60, now=T0).acquired
    store.dead_letters.add(letter(1, next_retry_at=T0 + 60))
    store.outcomes.add("billing.charge", "TRANSIENT_NETWORK", success=False, now=T0)
    bucket = math.floor(T0 / 60)
    assert keys_under(client, prefix) == {
        "breaker:payments",
        "idem:order:1",
        "idem-token:order:1",
        "dlq:rec:r00001",
        "dlq:meta",
        "dlq:newest:PENDING",
        "dlq:replay:PENDING",
        "dlq:due",
        "outcomes:buckets:billing.charge",
        f"outcomes:count:{bucket}:billing.charge",
    }
    assert BreakerRecord.from_json(client.get(f"{prefix}breaker:payments")) == breaker
    assert json.loads(client.get(f"{prefix}dlq:rec:r00001"))["id"] == "r00001"
    # STATE|token|created|fingerprint bytes|fingerprint|lease|expires|updated|result
    assert client.get(f"{prefix}idem:order:1").decode() == (
        f"IN_PROGRESS|1|{T0!r}|2|fp|{T0 + 30!r}|{T0 + 60!r}|{T0!r}|"
    )
    assert client.get(f"{prefix}idem-token:order:1") == b"1"
    assert client.hgetall(f"{prefix}outcomes:count:{bucket}:billing.charge") == {
        b"TRANSIENT_NETWORK:f": b"1"
    }


def test_prefix_isolates_stores_sharing_one_database(client: Any) -> None:
    """Two prefixes on one client never see each other's state."""
    mine, theirs = (
        RedisStore(client, prefix=fresh_prefix()),
        RedisStore(client, prefix=fresh_prefix()),
    )
    assert mine.breakers.compare_and_set("b", None, BreakerRecord(version=1))
    assert mine.idempotency.acquire("k", fingerprint="a", lease=30, ttl=60, now=T0).acquired
    mine.dead_letters.add(letter(1))
    mine.outcomes.add("t", "X", success=True, now=T0)
    assert theirs.breakers.load("b") is None
    assert theirs.idempotency.acquire("k", fingerprint="b", lease=30, ttl=60, now=T0).acquired
    assert theirs.dead_letters.get("r00001") is None
    assert theirs.dead_letters.count(DeadLetterFilter()) == 0
    assert theirs.outcomes.counts("t", since=0) == {}
    theirs.dead_letters.add(letter(1))
    assert theirs.dead_letters.purge(DeadLetterFilter()) == 1
    assert mine.dead_letters.get("r00001") == letter(1)


@pytest.mark.parametrize("prefix", ["", None, 3])
def test_prefix_must_be_a_non_empty_string(prefix: Any) -> None:
    """An empty or non-string prefix is a ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError) as caught:
        RedisStore(fakeredis.FakeRedis(), prefix=prefix)
    assert caught.value.key == "prefix"


# --------------------------------------------------------------------------- idempotency GC


@pytest.mark.parametrize("now", [0.0, T0, 4e9])
def test_expiry_is_relative_so_any_now_works(client: Any, now: float) -> None:
    """PEXPIRE comes from durations, not from `now`, so a fake clock far from real time works."""
    prefix = fresh_prefix()
    idem = RedisStore(client, prefix=prefix).idempotency
    assert idem.acquire("k", fingerprint="fp", lease=300, ttl=60, now=now).acquired
    record_ms = client.pttl(f"{prefix}idem:k")
    assert (300 + GC_GRACE_SECONDS - 5) * 1000 < record_ms <= (300 + GC_GRACE_SECONDS) * 1000
    counter_ms = client.pttl(f"{prefix}idem-token:k")
    assert counter_ms > (TOKEN_HORIZON_SECONDS + 300) * 1000 - 5000
    assert idem.get("k", now=now + 59) is not None
    assert idem.get("k", now=now + 60) is None


def test_renew_extends_the_collection_horizon(client: Any) -> None:
    """A lease renewed past the TTL keeps the record (and its token) in Redis that long."""
    prefix = fresh_prefix()
    idem = RedisStore(client, prefix=prefix).idempotency
    assert idem.acquire("k", fingerprint="fp", lease=10, ttl=60, now=T0).acquired
    assert idem.renew("k", token=1, lease=3600, now=T0 + 5)
    assert client.pttl(f"{prefix}idem:k") > (3600 - 5) * 1000
    assert client.pttl(f"{prefix}idem-token:k") > (TOKEN_HORIZON_SECONDS + 3590) * 1000


def test_token_keeps_growing_after_the_record_is_collected(client: Any) -> None:
    """The counter key outlives the record, so a collected key never reissues a token."""
    prefix = fresh_prefix()
    idem = RedisStore(client, prefix=prefix).idempotency
    assert idem.acquire("k", fingerprint="fp", lease=10, ttl=60, now=T0).acquired
    assert idem.complete("k", token=1, result="null", ttl=60, now=T0)
    client.delete(f"{prefix}idem:k")  # what PEXPIRE does after the TTL
    second = idem.acquire("k", fingerprint="fp", lease=10, ttl=60, now=T0 + 1)
    assert (second.acquired, second.record.token) == (True, 2)
    assert idem.complete("k", token=1, result='"late"', ttl=60, now=T0 + 2) is False
    client.delete(f"{prefix}idem-token:k")  # a lost counter still cannot go backwards
    assert idem.release("k", token=2, now=T0 + 3)
    assert idem.acquire("k", fingerprint="fp", lease=10, ttl=60, now=T0 + 4).record.token == 3


def test_infinite_ttl_is_kept_forever(client: Any) -> None:
    """ttl=inf stores a record with no expiry that stays live at any `now`."""
    prefix = fresh_prefix()
    idem = RedisStore(client, prefix=prefix).idempotency
    claim = idem.acquire("k", fingerprint="fp", lease=10, ttl=math.inf, now=T0)
    assert claim.record.expires_at == math.inf
    assert client.pttl(f"{prefix}idem:k") == -1
    assert idem.get("k", now=1e15) == claim.record


_FREE_TEXT = ["", "|", "a|b||c", "naïve ☃ 🎉", "\x00\n|9|", "x" * 300]


@pytest.mark.parametrize("fingerprint", _FREE_TEXT)
def test_free_text_fingerprints_and_results_survive_every_change(
    client: Any, fingerprint: str
) -> None:
    """Delimiters, multi-byte text and empty strings in a fingerprint or result round-trip."""
    idem = RedisStore(client, prefix=fresh_prefix()).idempotency
    claim = idem.acquire("k", fingerprint=fingerprint, lease=10, ttl=60, now=T0)
    assert idem.get("k", now=T0) == claim.record
    assert idem.renew("k", token=1, lease=20, now=T0 + 1)
    assert idem.release("k", token=1, now=T0 + 2)
    failed = idem.get("k", now=T0 + 2)
    assert failed is not None
    assert (failed.state.value, failed.fingerprint, failed.result) == ("FAILED", fingerprint, None)
    again = idem.acquire("k", fingerprint=fingerprint, lease=10, ttl=60, now=T0 + 3)
    assert (again.acquired, again.record.token) == (True, 2)
    assert idem.complete("k", token=2, result=fingerprint, ttl=60, now=T0 + 4)
    blocked = idem.acquire("k", fingerprint=fingerprint, lease=10, ttl=60, now=T0 + 5)
    assert not blocked.acquired
    assert (blocked.record.fingerprint, blocked.record.result) == (fingerprint, fingerprint)
    assert blocked.record == idem.get("k", now=T0 + 5)


@given(st.text(), st.text(), st.text())
def test_record_text_matches_the_memory_reference(key: str, fingerprint: str, result: str) -> None:
    """Any key, fingerprint and result read back from Redis exactly as the memory store has them."""
    stores = [RedisStore(fakeredis.FakeRedis(), prefix="p:").idempotency, MemoryStore().idempotency]
    seen = []
    for idem in stores:
        claim = idem.acquire(key, fingerprint=fingerprint, lease=10, ttl=60, now=T0)
        mismatch = idem.acquire(key, fingerprint=fingerprint + "!", lease=10, ttl=60, now=T0)
        completed = idem.complete(key, token=claim.record.token, result=result, ttl=90, now=T0 + 1)
        seen.append((claim, mismatch, completed, idem.get(key, now=T0 + 2)))
    assert seen[0] == seen[1]


@pytest.mark.parametrize("token", [1.0, True])
def test_an_integral_token_of_another_type_still_owns_the_key(client: Any, token: Any) -> None:
    """Like the memory reference, a token equal to the owner's (1.0, True) owns the key."""
    idem = RedisStore(client, prefix=fresh_prefix()).idempotency
    assert idem.acquire("k", fingerprint="fp", lease=10, ttl=60, now=T0).acquired
    assert not idem.complete("k", token=1.5, result="1", ttl=60, now=T0 + 1)  # type: ignore[arg-type]
    assert idem.complete("k", token=token, result="1", ttl=60, now=T0 + 1)


def test_nan_times_are_refused(client: Any) -> None:
    """A NaN `now` is a ValueError before anything is written."""
    prefix = fresh_prefix()
    with pytest.raises(ValueError, match="NaN"):
        RedisStore(client, prefix=prefix).idempotency.acquire(
            "k", fingerprint="fp", lease=10, ttl=60, now=math.nan
        )
    assert keys_under(client, prefix) == set()


# --------------------------------------------------------------------------- atomicity


def test_concurrent_acquires_claim_each_key_once(client: Any) -> None:
    """32 threads racing on the same 100 keys: every key is acquired exactly once."""
    idem = RedisStore(client, prefix=fresh_prefix()).idempotency
    wins: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(_: int) -> None:
        for n in range(100):
            if idem.acquire(f"k{n}", fingerprint="fp", lease=30, ttl=60, now=T0).acquired:
                with lock:
                    wins[f"k{n}"] += 1

    run_threads(32, worker)
    assert wins == Counter({f"k{n}": 1 for n in range(100)})


def test_concurrent_takeover_of_an_expired_lease_has_one_winner(client: Any) -> None:
    """After the lease passes, 32 racing workers produce one new owner with token 2."""
    idem = RedisStore(client, prefix=fresh_prefix()).idempotency
    assert idem.acquire("k", fingerprint="fp", lease=10, ttl=600, now=T0).acquired
    tokens: list[int] = []

    def worker(_: int) -> None:
        claim = idem.acquire("k", fingerprint="fp", lease=10, ttl=600, now=T0 + 11)
        if claim.acquired:
            tokens.append(claim.record.token)

    run_threads(32, worker)
    assert tokens == [2]


def test_concurrent_outcome_counts_lose_no_update(client: Any) -> None:
    """16 threads x 200 increments add up exactly (the original's counters lost updates)."""
    outcomes = RedisStore(client, prefix=fresh_prefix()).outcomes

    def worker(i: int) -> None:
        for _ in range(200):
            outcomes.add("t", "TRANSIENT_NETWORK", success=i % 2 == 0, now=T0)

    run_threads(16, worker)
    counts = outcomes.counts("t", since=T0)["TRANSIENT_NETWORK"]
    assert (counts.successes, counts.failures) == (1600, 1600)


def test_concurrent_compare_and_set_has_one_winner(client: Any) -> None:
    """16 threads retrying one dead letter and 16 creating one breaker: one success each."""
    store = RedisStore(client, prefix=fresh_prefix())
    record = letter(1)
    store.dead_letters.add(record)
    retried: list[int] = []
    created: list[int] = []

    def worker(i: int) -> None:
        entry = HistoryEntry(at=T0, actor=f"op{i}", action="retry")
        new = record.with_action(entry, status=DeadLetterStatus.RETRYING)
        if store.dead_letters.compare_and_set(1, new):
            retried.append(i)
        if store.breakers.compare_and_set("b", None, BreakerRecord(version=1, trips=i)):
            created.append(i)

    run_threads(16, worker)
    assert len(retried) == 1
    assert len(created) == 1
    stored = store.dead_letters.get(record.id)
    assert stored is not None
    assert stored.history[-1].actor == f"op{retried[0]}"
    assert store.breakers.load("b") == BreakerRecord(version=1, trips=created[0])


# --------------------------------------------------------------------------- dead letters


def test_indexes_follow_status_changes_and_purge(client: Any) -> None:
    """compare_and_set moves a record between status indexes; purge leaves no orphan entry."""
    prefix = fresh_prefix()
    dlq = RedisStore(client, prefix=prefix).dead_letters
    for n in range(1, 4):
        dlq.add(letter(n, next_retry_at=T0 + n))
    first = letter(1, next_retry_at=T0 + 1)
    done = first.with_action(
        HistoryEntry(at=T0, actor="ops", action="resolve"),
        status=DeadLetterStatus.RESOLVED,
        next_retry_at=None,
    )
    assert dlq.compare_and_set(1, done)
    assert client.zcard(f"{prefix}dlq:newest:PENDING") == 2
    assert client.zcard(f"{prefix}dlq:replay:RESOLVED") == 1
    assert client.zrange(f"{prefix}dlq:due", 0, -1) == [b"r00002", b"r00003"]
    assert dlq.count(DeadLetterFilter(statuses=frozenset({DeadLetterStatus.RESOLVED}))) == 1
    assert dlq.purge(DeadLetterFilter(statuses=PENDING)) == 2
    assert keys_under(client, prefix) == {
        "dlq:rec:r00001",
        "dlq:meta",
        "dlq:newest:RESOLVED",
        "dlq:replay:RESOLVED",
    }
    assert dlq.purge(DeadLetterFilter()) == 1
    assert keys_under(client, prefix) == set()


def test_purge_spares_a_record_changed_after_it_matched(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record whose version moved between matching and deleting is not deleted."""
    dlq = RedisStore(client, prefix=fresh_prefix()).dead_letters
    for n in range(1, 4):
        dlq.add(letter(n))
    matching = RedisDeadLetterStore._matching

    def racing(self: RedisDeadLetterStore, *args: Any, **kwargs: Any) -> Iterator[DeadLetterRecord]:
        found = list(matching(self, *args, **kwargs))
        retry = HistoryEntry(at=T0, actor="other", action="retry")
        assert dlq.compare_and_set(1, letter(2).with_action(retry))
        return iter(found)

    monkeypatch.setattr(RedisDeadLetterStore, "_matching", racing)
    assert dlq.purge(DeadLetterFilter()) == 2
    assert dlq.get("r00002") is not None


class CountingClient:
    """Wraps a client and counts the records a query fetches with MGET."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fetched = 0

    def mget(self, keys: list[str], *args: Any) -> Any:
        """Count, then delegate."""
        self.fetched += len(keys)
        return self.inner.mget(keys, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("order", list(DeadLetterOrder))
def test_a_page_reads_only_the_records_it_needs(client: Any, order: DeadLetterOrder) -> None:
    """With 2,000 records a page of 10 fetches a few dozen records, not the whole queue."""
    counting = CountingClient(client)
    dlq = RedisStore(counting, prefix=fresh_prefix()).dead_letters
    for n in range(2000):
        status = DeadLetterStatus.PENDING if n % 2 else DeadLetterStatus.ABANDONED
        dlq.add(letter(n, status=status))
    reference = MemoryStore().dead_letters
    for n in range(2000):
        reference.add(dlq.get(f"r{n:05d}"))  # type: ignore[arg-type]
    after = None
    for where in (DeadLetterFilter(), DeadLetterFilter(statuses=PENDING)):
        for _ in range(3):
            counting.fetched = 0
            page = dlq.query(where, order=order, limit=10, after=after)
            want = reference.query(where, order=order, limit=10, after=after)
            assert [r.id for r in page.records] == [r.id for r in want.records]
            assert counting.fetched <= 40
            after = page.next_cursor
        after = None


@pytest.mark.parametrize("order", list(DeadLetterOrder))
def test_unicode_ids_sort_like_the_reference(client: Any, order: DeadLetterOrder) -> None:
    """Ids beyond ASCII break ties in the same order as the memory reference."""
    dlq, reference = RedisStore(client, prefix=fresh_prefix()).dead_letters, MemoryStore()
    for n, record_id in enumerate(["a", "é", "z", "ü", "\U0001f600", "ab", "", "Z"]):
        record = letter(n, id=record_id, first_failed_at=T0, last_failed_at=T0, priority=1)
        dlq.add(record)
        reference.dead_letters.add(record)
    everything = DeadLetterFilter()
    got = dlq.query(everything, order=order, limit=100)
    want = reference.dead_letters.query(everything, order=order, limit=100)
    assert [r.id for r in got.records] == [r.id for r in want.records]


def test_large_candidate_sets_are_walked_in_order(client: Any) -> None:
    """A due or ids filter with more than 1,000 candidates pages like the reference."""
    dlq, reference = RedisStore(client, prefix=fresh_prefix()).dead_letters, MemoryStore()
    for n in range(1500):
        record = letter(n, next_retry_at=T0 + n, priority=n % 4)
        dlq.add(record)
        reference.dead_letters.add(record)
    for where in (
        DeadLetterFilter(due_by=T0 + 1200),
        DeadLetterFilter(ids=frozenset(f"r{n:05d}" for n in range(0, 1500, 1))),
    ):
        after = None
        for _ in range(3):
            got = dlq.query(where, order=DeadLetterOrder.REPLAY, limit=50, after=after)
            want = reference.dead_letters.query(
                where, order=DeadLetterOrder.REPLAY, limit=50, after=after
            )
            assert [r.id for r in got.records] == [r.id for r in want.records]
            after = got.next_cursor
        assert dlq.count(where) == reference.dead_letters.count(where)


def test_priority_outside_64_bits_is_refused(client: Any) -> None:
    """The REPLAY index holds 64-bit priorities; a larger one is a ConfigurationError."""
    dlq = RedisStore(client, prefix=fresh_prefix()).dead_letters
    with pytest.raises(ConfigurationError) as caught:
        dlq.add(letter(1, priority=2**63))
    assert caught.value.key == "priority"


@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_float_key_orders_like_the_numbers(a: float, b: float) -> None:
    """The hex encoding of the lex indexes sorts exactly like the floats it encodes."""
    assert (_float_key(a) < _float_key(b)) == (a < b)
    assert (_float_key(a) == _float_key(b)) == (a == b)


@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
def test_priority_key_orders_higher_priority_first(a: int, b: int) -> None:
    """The priority encoding sorts higher priorities first across the whole int64 range."""
    assert (_priority_key(a) < _priority_key(b)) == (a > b)


# --------------------------------------------------------------------------- clients and URLs


def test_clients_that_decode_responses_work_too() -> None:
    """A client created with decode_responses=True gives the same answers."""
    client = fakeredis.FakeRedis(decode_responses=True)
    store = RedisStore(client, prefix=fresh_prefix())
    assert store.idempotency.acquire("k", fingerprint="a", lease=30, ttl=60, now=T0).acquired
    blocked = store.idempotency.acquire("k", fingerprint="b", lease=30, ttl=60, now=T0)
    assert (blocked.acquired, blocked.record.fingerprint) == (False, "a")
    store.dead_letters.add(letter(1))
    page = store.dead_letters.query(DeadLetterFilter(), order=DeadLetterOrder.NEWEST, limit=5)
    assert [r.id for r in page.records] == ["r00001"]
    store.outcomes.add("t", "X", success=True, now=T0)
    assert store.outcomes.counts("t", since=T0)["X"].successes == 1


def test_an_empty_script_cache_is_refilled() -> None:
    """After a server restart (script cache flushed) the scripts are loaded again, no error."""
    client = fakeredis.FakeRedis()
    store = RedisStore(client, prefix=fresh_prefix())
    assert store.idempotency.acquire("k", fingerprint="f", lease=5, ttl=5, now=T0).acquired
    client.script_flush()
    assert store.idempotency.complete("k", token=1, result="1", ttl=5, now=T0)
    assert store.breakers.compare_and_set("b", None, BreakerRecord(version=1))


def test_from_url_parses_db_tls_and_prefix() -> None:
    """from_url reads the database number, rediss:// TLS and a prefix query parameter."""
    store = RedisStore.from_url("redis://127.0.0.1:16379/5")
    pool = store._client.connection_pool  # type: ignore[attr-defined]
    assert (pool.connection_kwargs["db"], store.prefix) == (5, "resilience:")
    tls = RedisStore.from_url("rediss://:s3cret@cache.internal:6380/2?prefix=billing:")
    pool = tls._client.connection_pool  # type: ignore[attr-defined]
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["db"] == 2
    assert tls.prefix == "billing:"
    assert tls.url == "rediss://:***@cache.internal:6380/2?prefix=billing:"
    query_db = RedisStore.from_url("redis://localhost?db=3", prefix="x:")
    pool = query_db._client.connection_pool  # type: ignore[attr-defined]
    assert (pool.connection_kwargs["db"], query_db.prefix) == (3, "x:")


@pytest.mark.parametrize(
    "url", ["redis://:s3cret@host/notadb", "redis://:s3cret@host:99999/0", "ftp://:s3cret@h/0"]
)
def test_malformed_urls_are_configuration_errors_without_the_password(url: str) -> None:
    """A bad database, port or scheme is a ConfigurationError that never shows the password."""
    with pytest.raises(ConfigurationError) as caught:
        RedisStore.from_url(url)
    assert caught.value.key == "url"
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in str(caught.value.value)


def test_credentials_are_masked_in_url_and_repr() -> None:
    """Neither url nor repr shows a password, whether opened by URL or given a client."""
    by_url = RedisStore.from_url("redis://ops:s3cret@cache.internal:6379/1")
    assert by_url.url == "redis://ops:***@cache.internal:6379/1"
    password = "s3cret"  # noqa: S105 - a made-up password the test proves is never shown
    given_client = RedisStore(redis.Redis(host="cache.internal", password=password, db=4))
    assert given_client.url == "redis://:***@cache.internal:6379/4"
    for store in (by_url, given_client):
        assert "s3cret" not in repr(store)
        assert "s3cret" not in store.url


def free_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_raises_storage_unavailable_on_every_role() -> None:
    """redis-py's connection errors become StorageUnavailable, chained, password masked."""
    store = RedisStore.from_url(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    calls: dict[str, Callable[[], object]] = {
        "breakers": lambda: store.breakers.load("b"),
        "idempotency": lambda: store.idempotency.acquire(
            "k", fingerprint="f", lease=1, ttl=1, now=T0
        ),
        "dead_letters": lambda: store.dead_letters.query(
            DeadLetterFilter(), order=DeadLetterOrder.NEWEST, limit=1
        ),
        "outcomes": lambda: store.outcomes.add("t", "X", success=True, now=T0),
    }
    for role, call in calls.items():
        with pytest.raises(StorageUnavailable) as caught:
            call()
        error = caught.value
        assert isinstance(error, ConnectionError)  # the builtin, so plain handlers catch it
        assert isinstance(error.__cause__, redis.exceptions.ConnectionError)
        assert (error.role, error.store) == (role, store.url)
        assert "s3cret" not in str(error)
        assert "***" in error.store
    store.close()


def test_timeouts_raise_storage_unavailable() -> None:
    """A redis-py TimeoutError from a script is reported as StorageUnavailable too."""

    class TimingOut:
        def register_script(self, script: str) -> Callable[..., Any]:
            def run(**_: Any) -> Any:
                raise redis.exceptions.TimeoutError("Timeout reading from socket")

            return run

    store = RedisStore(TimingOut(), prefix="p:")  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable, match="TimeoutError") as caught:
        store.idempotency.release("k", token=1, now=T0)
    assert isinstance(caught.value.__cause__, redis.exceptions.TimeoutError)


def test_close_releases_only_a_client_the_store_opened(client: Any) -> None:
    """A given client stays usable after close(); a from_url client is closed, once."""
    store = RedisStore(client, prefix=fresh_prefix())
    store.close()
    assert client.ping()
    owned = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    closed: list[bool] = []
    owned._client.close = lambda: closed.append(True)  # type: ignore[method-assign]
    owned.close()
    owned.close()
    assert closed == [True]


def test_a_closed_store_raises_storage_unavailable(client: Any) -> None:
    """Every role refuses to work once its store is closed."""
    store = RedisStore(client, prefix=fresh_prefix())
    store.close()
    with pytest.raises(StorageUnavailable, match="closed") as caught:
        store.dead_letters.get("r1")
    assert caught.value.role == "dead_letters"
    with pytest.raises(StorageUnavailable, match="closed"):
        store.idempotency.get("k", now=T0)
    with pytest.raises(StorageUnavailable, match="closed"):
        store.breakers.load("b")
    with pytest.raises(StorageUnavailable, match="closed"):
        store.outcomes.counts("t", since=T0)


def test_open_store_reaches_the_real_server() -> None:
    """open_store(redis://...?prefix=) opens a working RedisStore under that prefix."""
    prefix = fresh_prefix()
    store = open_store(f"{real_server_url()}?prefix={prefix}")
    try:
        assert isinstance(store, RedisStore)
        assert store.prefix == prefix
        claim = store.idempotency.acquire("k", fingerprint="f", lease=5, ttl=5, now=T0)
        assert claim.acquired
        assert store.idempotency.delete("k") is True
        assert store.idempotency.delete("k") is False
    finally:
        store.close()


def test_module_imports_and_runs_without_redis_py() -> None:
    """Without redis-py the module imports, a given client works, from_url says what to install."""
    script = """
import sys
sys.modules["redis"] = None
from resilience.errors import ConfigurationError
from resilience.storage.redis import RedisStore

class Stub:
    def register_script(self, script):
        return lambda keys, args: 1

store = RedisStore(Stub(), prefix="p:")
assert store.idempotency.release("k", token=1, now=0.0) is True
try:
    RedisStore.from_url("redis://:s3cret@localhost/0")
except ConfigurationError as exc:
    assert "pip install" in str(exc) and "s3cret" not in str(exc), exc
else:
    raise AssertionError("from_url worked without redis-py")
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr

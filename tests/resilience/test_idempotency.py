"""Tests for resilience.idempotency on the memory store with a fake clock."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import math
import threading
import types
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience._idempotency_codec import Binder
from resilience._serialization import to_jsonable
from resilience.clock import FakeClock
from resilience.errors import (
    ConfigurationError,
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    StorageUnavailable,
)
from resilience.idempotency import (
    DEFAULT_LEASE,
    DEFAULT_TTLS,
    IdempotencyGuard,
    OnStoreError,
    idempotency_key,
    idempotent,
    payload_fingerprint,
)
from resilience.storage import IdempotencyState, MemoryStore
from resilience.storage.memory import MemoryIdempotencyStore
from resilience.storage.records import MAX_KEY_LENGTH

if TYPE_CHECKING:
    from collections.abc import Callable

    from resilience.storage.records import Acquisition

START = 1_700_000_000.0


def canonical_sha(value: object) -> str:
    """SHA-256 of compact sorted JSON, computed independently of the library."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class RedisLikeConnectionError(Exception):
    """Like redis-py's ConnectionError: not a subclass of the builtin ConnectionError."""


class FlakyStore:
    """An idempotency store that fails while ``down`` is set, else delegates to memory."""

    def __init__(self) -> None:
        self.inner = MemoryIdempotencyStore()
        self.down = False
        self.fail_on: set[str] = set()

    def _check(self, operation: str) -> None:
        if self.down or operation in self.fail_on:
            raise RedisLikeConnectionError("Error 111 connecting to 127.0.0.1:6379")

    def acquire(
        self, key: str, *, fingerprint: str, lease: float, ttl: float, now: float
    ) -> Acquisition:
        """Delegate unless down."""
        self._check("acquire")
        return self.inner.acquire(key, fingerprint=fingerprint, lease=lease, ttl=ttl, now=now)

    def complete(self, key: str, *, token: int, result: str, ttl: float, now: float) -> bool:
        """Delegate unless down."""
        self._check("complete")
        return self.inner.complete(key, token=token, result=result, ttl=ttl, now=now)

    def release(self, key: str, *, token: int, now: float) -> bool:
        """Delegate unless down."""
        self._check("release")
        return self.inner.release(key, token=token, now=now)

    def renew(self, key: str, *, token: int, lease: float, now: float) -> bool:
        """Delegate unless down."""
        self._check("renew")
        return self.inner.renew(key, token=token, lease=lease, now=now)

    def get(self, key: str, *, now: float) -> Any:
        """Delegate unless down."""
        self._check("get")
        return self.inner.get(key, now=now)

    def delete(self, key: str) -> bool:
        """Delegate unless down."""
        self._check("delete")
        return self.inner.delete(key)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at a fixed start."""
    return FakeClock(start=START)


@pytest.fixture
def store() -> MemoryStore:
    """An empty memory store."""
    return MemoryStore()


# --------------------------------------------------------------------------- keys


def test_default_key_is_task_name_and_sha256_of_canonical_arguments() -> None:
    """The default key is '<task>:<sha256 of [args, kwargs] as sorted compact JSON>'."""
    key = idempotency_key("billing.charge", (1, "a"), {"b": [2, 3], "a": None})
    assert key == f"billing.charge:{canonical_sha([[1, 'a'], {'a': None, 'b': [2, 3]}])}"
    assert key == idempotency_key("billing.charge", [1, "a"], {"a": None, "b": [2, 3]})
    assert key != idempotency_key("billing.charge", (1, "b"), {"b": [2, 3], "a": None})
    assert key != idempotency_key("billing.refund", (1, "a"), {"b": [2, 3], "a": None})


def test_key_is_the_same_in_another_process() -> None:
    """Keys never depend on per-process state such as hash() randomisation."""
    import subprocess
    import sys

    code = (
        "from resilience.idempotency import idempotency_key;"
        "print(idempotency_key('t', ('x', 1.5), {'when': {'y': 2}}))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {idempotency_key("t", ("x", 1.5), {"when": {"y": 2}})}


def test_binding_to_the_function_normalises_positional_and_keyword_calls() -> None:
    """With func, f(1, 2) and f(1, b=2) are one request: same key, same fingerprint."""

    def f(a: int, b: int) -> None:
        """A function."""

    assert idempotency_key("t", (1, 2), {}, func=f) == idempotency_key("t", (1,), {"b": 2}, func=f)
    assert payload_fingerprint((1, 2), func=f) == payload_fingerprint((), {"a": 1, "b": 2}, func=f)
    with pytest.raises(TypeError):
        idempotency_key("t", (1, 2, 3), {}, func=f)


def test_template_key_uses_keyword_positional_and_task_name_fields() -> None:
    """A template is formatted with bound arguments (positional ones by name), {0} and task."""

    def charge(order_id: int, amount: Decimal, **extra: object) -> None:
        """A function."""

    assert idempotency_key("t", (), {"order_id": 7}, key="charge:{order_id}") == "charge:7"
    assert idempotency_key("t", (7, 1), {}, key="charge:{order_id}", func=charge) == "charge:7"
    assert idempotency_key("t", (7,), {}, key="c:{0}") == "c:7"
    template = "{task_name}:{tenant}:{0}"
    assert idempotency_key("pay", (7, 1), {"tenant": "x"}, key=template, func=charge) == "pay:x:7"


def test_template_naming_a_missing_field_raises_configuration_error_naming_it() -> None:
    """A template field the call lacks is a ConfigurationError whose key is the field."""
    with pytest.raises(ConfigurationError, match="order_id") as info:
        idempotency_key("t", (), {"amount": 1}, key="charge:{order_id}")
    assert info.value.key == "order_id"
    with pytest.raises(ConfigurationError) as positional:
        idempotency_key("t", (), {}, key="charge:{0}")
    assert positional.value.key == "0"


def test_callable_key_receives_the_call_arguments() -> None:
    """A callable key is called with the call's arguments; ints are accepted."""
    seen: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def key(*args: object, **kwargs: object) -> int:
        seen.append((args, kwargs))
        return 42

    assert idempotency_key("t", (1,), {"b": 2}, key=key) == "42"
    assert seen == [((1,), {"b": 2})]
    for bad in (None, "", 1.5, True):
        with pytest.raises(ConfigurationError) as info:
            idempotency_key("t", (), {}, key=lambda bad=bad: bad)
        assert info.value.key == "key"


def test_long_keys_are_hashed_with_a_readable_prefix_never_truncated() -> None:
    """Keys over MAX_KEY_LENGTH keep a readable prefix plus a digest; short keys pass."""
    base = "report:" + "x" * MAX_KEY_LENGTH
    first = idempotency_key("t", (), {}, key=base + "1")
    second = idempotency_key("t", (), {}, key=base + "2")
    assert first != second
    assert len(first) <= MAX_KEY_LENGTH
    assert first.startswith("report:xxx")
    assert idempotency_key("t", (), {}, key="short") == "short"
    exact = "k" * MAX_KEY_LENGTH
    assert idempotency_key("t", (), {}, key=exact) == exact


@given(st.text(min_size=1, max_size=400), st.text(min_size=1, max_size=400))
def test_fitted_keys_stay_distinct_and_short(a: str, b: str) -> None:
    """Property: distinct keys stay distinct after fitting, and every key fits."""
    fitted_a = idempotency_key("t", (), {}, key=lambda: a)
    fitted_b = idempotency_key("t", (), {}, key=lambda: b)
    assert len(fitted_a) <= MAX_KEY_LENGTH
    assert (fitted_a == fitted_b) == (a == b)


def test_arguments_with_memory_addresses_need_an_explicit_key() -> None:
    """A repr holding a memory address cannot make a stable default key: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="key=") as info:
        idempotency_key("t", (object(),), {})
    assert info.value.key == "key"
    # Fingerprints count such objects by type, so every process agrees.
    assert payload_fingerprint((object(),)) == payload_fingerprint((object(),))
    # Deterministic reprs (Decimal, datetime) are fine in default keys.
    assert idempotency_key("t", (Decimal("9.99"),), {}) != idempotency_key(
        "t", (Decimal("9.98"),), {}
    )


def test_decorated_functions_key_on_module_and_qualified_name(store: MemoryStore) -> None:
    """Two functions of the same name in different modules never share a key (lesson 27)."""
    calls: list[str] = []

    def make(module: str) -> Any:
        def send(to: str) -> str:
            calls.append(module)
            return module

        send.__module__ = module
        return idempotent(store=store)(send)

    first, second = make("app.email"), make("app.sms")
    assert first("x") == "app.email"
    assert second("x") == "app.sms"
    assert calls == ["app.email", "app.sms"]


# --------------------------------------------------------------------------- decorator


def test_duplicate_call_returns_stored_result_without_running(
    store: MemoryStore, clock: FakeClock
) -> None:
    """The second call with the same arguments returns the first result; the body ran once."""
    runs: list[int] = []

    @idempotent(store=store, clock=clock)
    def charge(order_id: int, amount: int) -> dict[str, Any]:
        runs.append(order_id)
        return {"charged": amount, "ids": (order_id,)}

    assert charge(1, 10) == {"charged": 10, "ids": (1,)}
    # The duplicate's result is decoded from JSON: the tuple comes back as a list.
    assert charge(1, amount=10) == {"charged": 10, "ids": [1]}
    assert charge(2, 10) == {"charged": 10, "ids": (2,)}
    assert runs == [1, 2]


def test_decorator_keeps_the_signature_name_and_doc(store: MemoryStore) -> None:
    """The wrapper looks like the function: signature, name, qualname, doc, __wrapped__."""

    def fn(a: int, /, b: str = "x", *, c: float = 1.0) -> str:
        """Doc."""
        return f"{a}{b}{c}"

    wrapped = idempotent(store=store)(fn)
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert (wrapped.__name__, wrapped.__qualname__, wrapped.__doc__) == (
        fn.__name__,
        fn.__qualname__,
        "Doc.",
    )
    assert wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
    assert wrapped(1) == "1x1.0"


def test_bare_decorator_uses_the_default_store_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """@idempotent without options opens RESILIENCE_STORE_URL on first call, not at import."""
    monkeypatch.setenv("RESILIENCE_STORE_URL", "memory://")
    runs: list[int] = []

    @idempotent
    def job(n: int) -> int:
        runs.append(n)
        return n * 2

    assert job(3) == 6
    assert job(3) == 6
    assert runs == [3]


def test_bad_store_url_raises_configuration_error_at_first_call() -> None:
    """A malformed store URL is a ConfigurationError (not a store outage) on first use."""
    guard = IdempotencyGuard("nosuch://x")
    with pytest.raises(ConfigurationError) as info, guard.claim("k"):
        pass
    assert info.value.key == "url"


def test_failed_run_releases_the_key_so_the_retry_runs(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Lesson 22: a failure is never cached; the retry runs the body and its result is stored."""
    from celery.exceptions import Retry

    attempts: list[int] = []

    @idempotent(store=store, clock=clock, key="send:{to}")
    def send(to: str) -> str:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            raise Retry("retry in 10s", when=10)
        return "sent"

    for _ in range(2):
        with pytest.raises(Retry):
            send("a@example.com")
        record = store.idempotency.get("send:a@example.com", now=clock.time())
        assert record is not None
        assert record.state is IdempotencyState.FAILED
    assert send("a@example.com") == "sent"
    assert send("a@example.com") == "sent"
    assert len(attempts) == 3


def test_base_exceptions_release_the_key_too(store: MemoryStore, clock: FakeClock) -> None:
    """A KeyboardInterrupt inside the body releases the key (no 5-minute lock-out)."""
    guard = IdempotencyGuard(store, clock=clock)
    with pytest.raises(KeyboardInterrupt), guard.claim("k") as claim:
        raise KeyboardInterrupt
    assert claim.owned is False
    with guard.claim("k") as again:
        assert again.owned


def test_ttl_expiry_lets_the_body_run_again(store: MemoryStore, clock: FakeClock) -> None:
    """After the category's TTL the key no longer counts and the body runs again."""
    runs: list[str] = []

    @idempotent(store=store, clock=clock, category="email")
    def notify(user: str) -> str:
        runs.append(user)
        return user

    notify("u")
    clock.advance(DEFAULT_TTLS["email"] - 1)
    notify("u")
    assert runs == ["u"]
    clock.advance(1)
    notify("u")
    assert runs == ["u", "u"]


def test_ttl_override_and_category_defaults() -> None:
    """The seed's categories keep their TTLs; ttl= overrides them per use."""
    assert DEFAULT_TTLS["default"] == 3600
    assert DEFAULT_TTLS["critical"] == 4 * 3600
    assert DEFAULT_TTLS["report"] == 24 * 3600
    assert DEFAULT_TTLS["email"] == 2 * 3600
    assert IdempotencyGuard(MemoryStore(), category="report").ttl == 24 * 3600
    guard = IdempotencyGuard(MemoryStore(), ttl=timedelta(minutes=10), lease=60)
    assert (guard.ttl, guard.lease) == (600.0, 60.0)


def test_claim_ttl_override_applies_to_that_key(store: MemoryStore, clock: FakeClock) -> None:
    """claim(ttl=) stores that key for its own TTL, not the guard's."""
    guard = IdempotencyGuard(store, clock=clock, lease=10)
    with guard.claim("short", ttl=30) as claim:
        claim.complete("done")
    clock.advance(30)
    with guard.claim("short") as again:
        assert again.owned


def test_template_key_with_other_payload_is_a_mismatch(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Same key, different arguments: IdempotencyKeyMismatch, and the body does not run."""
    runs: list[int] = []

    @idempotent(store=store, clock=clock, key="charge:{order_id}")
    def charge(order_id: int, amount: int) -> int:
        runs.append(amount)
        return amount

    assert charge(1, 10) == 10
    with pytest.raises(IdempotencyKeyMismatch) as info:
        charge(1, 20)
    assert info.value.key == "charge:1"
    assert isinstance(info.value, ValueError)
    assert charge(1, 10) == 10
    assert runs == [10]


def test_non_json_result_is_stored_tagged_with_a_warning(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Lesson 28: a Decimal or datetime result never fails the call after the side effect."""
    when = datetime(2024, 1, 2, tzinfo=UTC)

    @idempotent(store=store, clock=clock)
    def invoice(n: int) -> dict[str, object]:
        return {"total": Decimal("9.99"), "at": when}

    with caplog.at_level(logging.WARNING, logger="resilience.idempotency"):
        first = invoice(1)
    assert first == {"total": Decimal("9.99"), "at": when}
    assert "not plain JSON" in caplog.text
    duplicate = invoice(1)
    assert duplicate["total"] == {"__repr__": "Decimal('9.99')", "__type__": "decimal.Decimal"}
    assert duplicate["at"]["__type__"] == "datetime.datetime"


def test_async_functions_stay_coroutines_and_deduplicate(
    store: MemoryStore, clock: FakeClock
) -> None:
    """An async function is wrapped as a coroutine function; duplicates skip the body."""
    runs: list[int] = []

    @idempotent(store=store, clock=clock)
    async def fetch(n: int) -> int:
        runs.append(n)
        await asyncio.sleep(0)
        return n + 1

    @idempotent(store=store, clock=clock)
    async def broken(n: int) -> int:
        runs.append(-n)
        raise ValueError(n)

    assert inspect.iscoroutinefunction(fetch)

    async def scenario() -> list[int]:
        out = [await fetch(1), await fetch(1)]
        for _ in range(2):
            with pytest.raises(ValueError, match="5"):
                await broken(5)
        return out

    assert asyncio.run(scenario()) == [2, 2]
    assert runs == [1, -5, -5]


# --------------------------------------------------------------------------- guard and claim


def test_concurrent_duplicates_run_the_body_exactly_once(store: MemoryStore) -> None:
    """16 threads released together on one key: one owner, 15 told it is in progress."""
    guard = IdempotencyGuard(store, clock=FakeClock(start=START))
    parties = 16
    start, tried = threading.Barrier(parties, timeout=30), threading.Barrier(parties, timeout=30)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        start.wait()
        try:
            with guard.claim("job", fingerprint="fp") as claim:
                tried.wait()  # hold the key until every other thread has tried
                claim.complete("ok")
                outcome = "ran"
        except IdempotencyInProgress:
            tried.wait()
            outcome = "in_progress"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["in_progress"] * (parties - 1) + ["ran"]


def test_in_progress_reports_the_remaining_lease(store: MemoryStore, clock: FakeClock) -> None:
    """A duplicate during a run gets IdempotencyInProgress with the lease's remaining time."""
    guard = IdempotencyGuard(store, clock=clock, lease=300)
    with guard.claim("k") as owner:
        clock.advance(100)
        with pytest.raises(IdempotencyInProgress) as info, guard.claim("k"):
            pass
        assert info.value.retry_after == 200.0
        assert info.value.key == "k"
        owner.complete(1)


def test_expired_lease_is_taken_over_and_the_late_finisher_is_fenced(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After the lease a new run owns the key; the old one can neither complete nor release."""
    guard = IdempotencyGuard(store, clock=clock, lease=60)
    late = guard.claim("k", fingerprint="fp")
    late.__enter__()
    clock.advance(61)
    with guard.claim("k", fingerprint="fp") as new:
        assert new.owned
        assert new.record is not None
        assert late.record is not None
        assert new.record.token == late.record.token + 1
        with caplog.at_level(logging.WARNING, logger="resilience.idempotency"):
            assert late.complete("stale") is False
        assert "another run owns the key" in caplog.text
        assert new.complete("fresh") is True
    with guard.claim("k", fingerprint="fp") as duplicate:
        assert duplicate.duplicate
        assert duplicate.result == "fresh"


def test_late_release_cannot_free_the_new_owners_key(store: MemoryStore, clock: FakeClock) -> None:
    """A fenced run's release is refused, so the new owner keeps its key."""
    guard = IdempotencyGuard(store, clock=clock, lease=60)
    late = guard.claim("k")
    late.__enter__()
    clock.advance(61)
    with guard.claim("k") as new:
        assert late.release() is False
        record = store.idempotency.get("k", now=clock.time())
        assert record is not None
        assert record.state is IdempotencyState.IN_PROGRESS
        assert new.owned


def test_renew_extends_the_lease_until_it_is_lost(store: MemoryStore, clock: FakeClock) -> None:
    """renew() keeps a long run's key; once taken over, renew() says so with False."""
    guard = IdempotencyGuard(store, clock=clock, lease=60)
    long = guard.claim("k")
    long.__enter__()
    clock.advance(50)
    assert long.renew() is True
    clock.advance(50)
    with pytest.raises(IdempotencyInProgress) as info, guard.claim("k"):
        pass
    assert info.value.retry_after == 10.0
    clock.advance(11)
    with guard.claim("k") as thief:
        assert thief.owned
        assert long.renew(timedelta(minutes=5)) is False


def test_normal_exit_without_complete_completes_with_none(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Leaving the block normally is completion: a later duplicate sees result None."""
    guard = IdempotencyGuard(store, clock=clock)
    with guard.claim("k") as claim:
        assert claim.owned
    assert claim.owned is False
    with guard.claim("k") as again:
        assert again.duplicate
        assert again.result is None
        assert again.complete("ignored") is False
    record = store.idempotency.get("k", now=clock.time())
    assert record is not None
    assert record.result == "null"


def test_claim_misuse_is_loud(store: MemoryStore) -> None:
    """Completing before entering, or entering twice, is a RuntimeError."""
    guard = IdempotencyGuard(store)
    claim = guard.claim("k")
    with pytest.raises(RuntimeError, match="enter"):
        claim.complete(1)
    with claim, pytest.raises(RuntimeError, match="once"), claim:
        pass


def test_get_and_forget(store: MemoryStore, clock: FakeClock) -> None:
    """get() reads the live record; forget() deletes it so the next call runs."""
    guard = IdempotencyGuard(store, clock=clock)
    assert guard.get("k") is None
    with guard.claim("k") as claim:
        claim.complete([1])
    record = guard.get("k")
    assert record is not None
    assert record.state is IdempotencyState.COMPLETED
    assert guard.forget("k") is True
    assert guard.forget("k") is False
    with guard.claim("k") as again:
        assert again.owned


def test_guard_accepts_a_bare_idempotency_store(clock: FakeClock) -> None:
    """A role object (not a whole Store) is accepted as the store."""
    guard = IdempotencyGuard(MemoryIdempotencyStore(), clock=clock)
    with guard.claim("k") as claim:
        assert claim.owned
    assert "MemoryIdempotencyStore" in repr(guard)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"category": "nope"}, "category"),
        ({"lease": 0}, "lease"),
        ({"lease": -1}, "lease"),
        ({"ttl": float("nan")}, "ttl"),
        ({"ttl": "1h"}, "ttl"),
        ({"lease": 7200}, "lease"),
        ({"on_store_error": "ignore"}, "on_store_error"),
    ],
)
def test_invalid_settings_raise_configuration_error(options: dict[str, Any], key: str) -> None:
    """Bad settings fail at construction with ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError) as info:
        IdempotencyGuard(MemoryStore(), **options)
    assert info.value.key == key


def test_invalid_store_and_key_raise_configuration_error() -> None:
    """A store that is not a store, or a key that is neither template nor callable, fails."""
    with pytest.raises(ConfigurationError) as info:
        IdempotencyGuard(object())  # type: ignore[arg-type]
    assert info.value.key == "store"
    with pytest.raises(ConfigurationError) as bad_key:
        idempotent(store=MemoryStore(), key=42)  # type: ignore[arg-type]
    assert bad_key.value.key == "key"
    with pytest.raises(ConfigurationError) as empty:
        IdempotencyGuard(MemoryStore()).claim("")
    assert empty.value.key == "key"


# --------------------------------------------------------------------------- store failures


def test_store_failure_fails_closed_by_default(clock: FakeClock) -> None:
    """A store outage raises StorageUnavailable before the body runs (the task retries later)."""
    flaky = FlakyStore()
    flaky.down = True
    runs: list[int] = []

    @idempotent(store=flaky, clock=clock)
    def job(n: int) -> int:
        runs.append(n)
        return n

    with pytest.raises(StorageUnavailable) as info:
        job(1)
    assert info.value.role == "idempotency"
    assert isinstance(info.value.__cause__, RedisLikeConnectionError)
    assert runs == []
    flaky.down = False
    assert job(1) == 1
    assert runs == [1]


def test_fail_open_runs_unprotected_and_warns_once_per_outage(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """fail_open runs the body during an outage, warns once, and protects again afterwards."""
    flaky = FlakyStore()
    runs: list[int] = []

    @idempotent(store=flaky, clock=clock, on_store_error="fail_open")
    def job(n: int) -> int:
        runs.append(n)
        return n

    def outage_warnings() -> int:
        return sum("without duplicate protection" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="resilience.idempotency"):
        flaky.down = True
        assert [job(1), job(1), job(1)] == [1, 1, 1]
        assert outage_warnings() == 1
        flaky.down = False
        job(2)
        job(2)
        assert runs == [1, 1, 1, 2]
        flaky.down = True
        job(2)
        assert outage_warnings() == 2
    assert IdempotencyGuard(flaky, on_store_error="fail_open").on_store_error is (
        OnStoreError.FAIL_OPEN
    )


def test_store_failure_on_complete_never_fails_the_finished_work(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """When complete() cannot be stored the result is still returned, with an error logged."""
    flaky = FlakyStore()
    flaky.fail_on = {"complete"}

    @idempotent(store=flaky, clock=clock)
    def job(n: int) -> int:
        return n * 10

    with caplog.at_level(logging.ERROR, logger="resilience.idempotency"):
        assert job(1) == 10
    assert "complete not stored" in caplog.text
    # The key stays in progress until its lease passes, then a redelivery runs.
    with pytest.raises(IdempotencyInProgress):
        job(1)
    clock.advance(DEFAULT_LEASE)
    flaky.fail_on = set()
    assert job(1) == 10


def test_store_failure_on_release_keeps_the_original_exception(clock: FakeClock) -> None:
    """A release that cannot be stored does not mask the body's own exception."""
    flaky = FlakyStore()
    flaky.fail_on = {"release"}
    guard = IdempotencyGuard(flaky, clock=clock)
    with pytest.raises(ZeroDivisionError), guard.claim("k"):
        _ = 1 / 0


def test_get_raises_storage_unavailable_even_when_failing_open(clock: FakeClock) -> None:
    """Operator reads never pretend: get() raises StorageUnavailable during an outage."""
    flaky = FlakyStore()
    flaky.down = True
    guard = IdempotencyGuard(flaky, clock=clock, on_store_error="fail_open")
    with pytest.raises(StorageUnavailable):
        guard.get("k")
    with guard.claim("k") as claim:
        assert claim.protected is False
        assert claim.complete(1) is False


def test_explicit_keys_are_used_verbatim_across_functions() -> None:
    """An explicit key names the request itself: two functions using it share one record."""
    store = MemoryStore()
    a = idempotent(store=store, key="same")(lambda: "a")
    b = idempotent(store=store, key="same")(lambda: "b")
    assert a() == "a"
    assert b() == "a"
    assert isinstance(a, types.FunctionType)


def test_window_makes_each_period_of_a_periodic_task_its_own_request(
    store: MemoryStore, clock: FakeClock
) -> None:
    """Lesson 27: with window=, an argument-less periodic task runs once per period."""
    runs: list[float] = []

    @idempotent(store=store, clock=clock, category="report", window=timedelta(hours=1))
    def hourly_report() -> int:
        runs.append(clock.time())
        return len(runs)

    clock.advance(3600 - START % 3600)  # the start of an hour
    assert hourly_report() == 1
    clock.advance(3599)
    assert hourly_report() == 1  # a redelivery within the same hour
    clock.advance(1)
    assert hourly_report() == 2  # the next hour is a new request, within the 24 h TTL
    assert len(runs) == 2
    with pytest.raises(ConfigurationError) as info:
        idempotent(store=store, window=0)
    assert info.value.key == "window"


# --------------------------------------------------------------------------- cached binding


def _sig_plain(a: int, b: int = 2, c: int = 3) -> None:
    """Plain parameters, two with defaults."""


def _sig_required(a: int, b: int, c: int) -> None:
    """Plain required parameters."""


def _sig_mixed(a: int, /, b: int, *args: int, c: int, d: int = 4, **kw: int) -> None:
    """Every parameter kind, with a required keyword-only one."""


def _sig_keyword_only(a: int, *, c: int = 1) -> None:
    """A positional parameter and an optional keyword-only one."""


def _sig_var(*args: int, **kwargs: int) -> None:
    """Anything goes."""


def _sig_rest(a: int, b: int = 2, *rest: int) -> None:
    """Positional parameters then *rest."""


def _sig_none() -> None:
    """No parameters."""


_SIGNATURES = [
    _sig_plain, _sig_required, _sig_mixed, _sig_keyword_only, _sig_var, _sig_rest, _sig_none,
]  # fmt: skip


def _reference_bind(func: Callable[..., None], args: list[int], kwargs: dict[str, int]) -> object:
    """What inspect.signature(func).bind gives: (args, kwargs, fields) or the TypeError text."""
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    fields: dict[str, object] = dict(kwargs)
    for name, value in bound.arguments.items():
        if bound.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            fields.update(value)
        else:
            fields[name] = value
    return bound.args, bound.kwargs, fields


@settings(max_examples=400, deadline=None)
@given(
    func=st.sampled_from(_SIGNATURES),
    args=st.lists(st.integers(0, 9), max_size=5),
    kwargs=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e", "args", "kw", "rest"]),
        st.integers(0, 9),
        max_size=4,
    ),
)
def test_cached_binding_matches_inspect_bind(
    func: Callable[..., None], args: list[int], kwargs: dict[str, int]
) -> None:
    """Property: the cached binder's args, kwargs, fields and TypeErrors are Signature.bind's."""
    binder = Binder(func)
    expected = _reference_bind(func, args, kwargs)
    for _ in range(2):  # the first call reads the signature, the second reuses it
        try:
            got: object = (*binder.bind(args, kwargs), binder.fields(args, kwargs))
        except TypeError as exc:
            got = str(exc)
        assert got == expected


@settings(max_examples=150, deadline=None)
@given(
    extra=st.lists(st.integers() | st.text(max_size=3) | st.none(), max_size=3),
    b=st.integers() | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2),
    by_keyword=st.booleans(),
)
def test_decorator_key_and_fingerprint_match_the_public_functions(
    extra: list[object], b: object, by_keyword: bool
) -> None:
    """Property: the decorator claims idempotency_key(...) with payload_fingerprint(...)."""
    store, clock = MemoryStore(), FakeClock(start=START)

    def target(a: object, b: object = 2, *rest: object) -> None:
        del a, b, rest

    wrapped = idempotent(store=store, clock=clock, name="prop.target")(target)
    args: list[object] = [0] if by_keyword else [0, b, *extra]
    kwargs: dict[str, object] = {"b": b} if by_keyword else {}
    wrapped(*args, **kwargs)
    key = idempotency_key("prop.target", args, kwargs, func=target)
    record = store.idempotency.get(key, now=clock.time())
    assert record is not None
    assert record.fingerprint == payload_fingerprint(args, kwargs, func=target)


def test_signature_is_read_only_when_a_key_needs_it() -> None:
    """A callable key never reads the function's signature; the default key reads it per call."""

    class Unreadable:
        __signature__ = "not a signature"

        def __call__(self, order_id: int) -> int:
            return order_id

    func = Unreadable()
    assert idempotency_key("t", [7], key=lambda order_id: order_id, func=func) == "7"
    for _ in range(2):  # not cached as a failure: read (and refused) at every call
        with pytest.raises(TypeError):
            idempotency_key("t", [7], func=func)


def test_plain_and_tagged_payloads_hash_like_the_canonical_json() -> None:
    """The plain-payload shortcut and the tagged path both hash the canonical payload JSON."""
    assert payload_fingerprint([1, "a", None, True], {"b": 2}) == canonical_sha(
        [[1, "a", None, True], {"b": 2}]
    )
    tagged = payload_fingerprint([Decimal("1.5")], {})
    expected = [[{"__repr__": "Decimal('1.5')", "__type__": "decimal.Decimal"}], {}]
    assert tagged == canonical_sha(expected)
    # A float is not in the shortcut: it goes through to_jsonable and hashes the same.
    assert payload_fingerprint([1.5], {}) == canonical_sha([[1.5], {}])


# --------------------------------------------------------------------------- to_jsonable


def _reference_jsonable(value: object) -> tuple[Any, bool]:
    """The specification of to_jsonable, written plainly (ancestors as immutable sets)."""
    lossy = False

    def tag(obj: object, text: str | None = None) -> dict[str, str]:
        nonlocal lossy
        lossy = True
        kind = type(obj)
        return {
            "__repr__": (repr(obj) if text is None else text)[:1000],
            "__type__": f"{kind.__module__}.{kind.__qualname__}",
        }

    def walk(obj: object, depth: int, seen: frozenset[int]) -> Any:
        nonlocal lossy
        if obj is None or isinstance(obj, bool | int | str):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else tag(obj)
        if isinstance(obj, dict | list | tuple) and (depth >= 64 or id(obj) in seen):
            return tag(obj, "<cycle>" if id(obj) in seen else "<nested too deep>")
        if isinstance(obj, dict):
            out = {}
            for key, item in obj.items():
                if isinstance(key, str):
                    name = key
                else:
                    name = json.dumps(walk(key, depth + 1, seen | {id(obj)}), sort_keys=True)
                    lossy = True
                out[name] = walk(item, depth + 1, seen | {id(obj)})
            return out
        if isinstance(obj, list | tuple):
            return [walk(item, depth + 1, seen | {id(obj)}) for item in obj]
        return tag(obj)

    return walk(value, 0, frozenset()), lossy


_JSONABLE_KEYS = st.text(max_size=3) | st.integers(-2, 2) | st.booleans() | st.none()
_JSONABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.floats()
    | st.decimals(allow_nan=False, places=1)
    | st.sampled_from([IdempotencyState.COMPLETED, Decimal("2")]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(_JSONABLE_KEYS, inner, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSONABLE)
def test_to_jsonable_matches_its_specification(value: object) -> None:
    """Property: the fast walk gives the reference's data and lossy flag (same JSON text)."""
    data, lossy = to_jsonable(value)
    expected, expected_lossy = _reference_jsonable(value)
    assert lossy == expected_lossy
    assert json.dumps(data, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_to_jsonable_cuts_cycles_but_keeps_shared_values() -> None:
    """A container met again on its own path is a cycle; one shared by siblings is not."""
    shared = [1]
    loop: list[object] = [shared, shared]
    loop.append(loop)
    data, lossy = to_jsonable({"a": loop, "b": (shared, shared)})
    assert lossy
    assert data["a"][:2] == [[1], [1]]
    assert data["a"][2] == {"__repr__": "<cycle>", "__type__": "builtins.list"}
    assert data["b"] == [[1], [1]]
    deep: list[object] = []
    cursor = deep
    for _ in range(70):
        cursor.append([])
        cursor = cursor[0]  # type: ignore[assignment]
    text = json.dumps(to_jsonable(deep)[0])
    assert text.count("[") == 64
    assert "<nested too deep>" in text

"""Redis storage: state shared by every worker on every machine that reaches one Redis.

``RedisStore(client, prefix=...)`` takes any client matching :class:`RedisClient`
(``redis.Redis``, ``fakeredis.FakeRedis``); ``RedisStore.from_url(url)`` builds a
redis-py client, which is the only place redis-py is imported. Every multi-step
update is one Lua script (see ``_redis_scripts``), so concurrent workers never lose
an update. Values are JSON or delimited text, or hashes of strings; nothing is pickled.

Key layout (``P`` is the prefix, ``"resilience:"`` by default)::

    P breaker:{name}              breaker record JSON (its version inside)
    P idem:{key}                  idempotency record, one string (format in _redis_scripts)
    P idem-token:{key}            the key's last fencing token
    P dlq:rec:{id}                dead letter JSON
    P dlq:meta                    hash id -> [version, status, index members, due]
    P dlq:newest:{STATUS}         lex index: last_failed_at, then id
    P dlq:replay:{STATUS}         lex index: priority desc, first_failed_at, then id
    P dlq:due                     next_retry_at -> id
    P outcomes:buckets:{task}     minute buckets that hold counts
    P outcomes:count:{bucket}:{task}  hash "{failure_type}:s|f" -> count

Expiry is garbage collection only: an idempotency record is kept a minute past
the later of its TTL and its lease (decisions come from the caller's ``now``, so a
fake clock far from real time still works), and its token counter 30 days past
that, so the fencing token keeps growing after the record is collected. Deleting
a key (an operator's action) forgets both, exactly like the memory reference.

The scripts touch keys they compute from the prefix, so the backend needs a
single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from resilience.errors import ConfigurationError
from resilience.storage import _redis_scripts as scripts
from resilience.storage._open import mask_url
from resilience.storage._redis_common import (
    RedisClient,
    ScriptRunner,
    Shared,
    glob_escape,
    number,
    text,
)
from resilience.storage._redis_dead_letters import RedisDeadLetterStore
from resilience.storage.base import BreakerRecord
from resilience.storage.memory import (
    GC_GRACE_SECONDS,
    OUTCOME_BUCKET_SECONDS,
    OUTCOME_RETENTION_SECONDS,
    TOKEN_HORIZON_SECONDS,
)
from resilience.storage.records import (
    Acquisition,
    IdempotencyRecord,
    IdempotencyState,
    OutcomeCounts,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PREFIX",
    "GC_GRACE_SECONDS",
    "TOKEN_HORIZON_SECONDS",
    "RedisBreakerStore",
    "RedisClient",
    "RedisDeadLetterStore",
    "RedisIdempotencyStore",
    "RedisOutcomeStore",
    "RedisStore",
]

DEFAULT_PREFIX = "resilience:"
"""The key prefix when none is given."""

# GC_GRACE_SECONDS and TOKEN_HORIZON_SECONDS (shared with the SQL and memory
# stores, which sweep on the same horizons) are re-exported from here.

_HORIZON_CACHE = 64
_OUTCOME_RETENTION_BUCKETS = int(OUTCOME_RETENTION_SECONDS / OUTCOME_BUCKET_SECONDS)
# A count's hash outlives the retention by one bucket: EXPIRE takes whole seconds.
_OUTCOME_KEY_TTL = int(OUTCOME_RETENTION_SECONDS + OUTCOME_BUCKET_SECONDS)
_MAX_EXPIRE_MS = 10**15


def _gc_ms(seconds: float) -> str:
    # "0" tells the scripts to keep the key forever (an infinite TTL).
    if math.isinf(seconds):
        return "0"
    return str(min(max(math.ceil(seconds * 1000), 1), _MAX_EXPIRE_MS))


class RedisBreakerStore:
    """Breaker records as JSON strings; compare-and-set is one Lua script."""

    __slots__ = ("_cas", "_shared")

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._cas = shared.client.register_script(scripts.BREAKER_COMPARE_AND_SET)

    def load(self, name: str) -> BreakerRecord | None:
        """The record of breaker ``name``, or ``None`` if never written."""
        with self._shared:
            raw = self._shared.client.get(f"{self._shared.prefix}breaker:{name}")
        return None if raw is None else BreakerRecord.from_json(raw)

    def names(self) -> list[str]:
        """The names of every stored breaker, sorted (``SCAN``: an operator's listing).

        Raises:
            StorageUnavailable: Redis cannot be reached.
        """
        head = f"{self._shared.prefix}breaker:"
        with self._shared:
            keys = list(self._shared.client.scan_iter(match=f"{glob_escape(head)}*", count=1000))
        return sorted({text(key)[len(head) :] for key in keys})

    def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is still ``expected_version``.

        Raises:
            ValueError: ``record.version`` is not ``expected_version + 1``.
            StorageUnavailable: Redis cannot be reached.
        """
        if record.version != (expected_version or 0) + 1:
            raise ValueError(
                f"record.version must be {(expected_version or 0) + 1} to replace version "
                f"{expected_version!r}, got {record.version}"
            )
        expected = "" if expected_version is None else str(expected_version)
        with self._shared:
            stored = self._cas(
                keys=[f"{self._shared.prefix}breaker:{name}"], args=[expected, record.to_json()]
            )
        return bool(stored)


class RedisIdempotencyStore:
    """Idempotency records as one string each; every change is one small script.

    A claim of a fresh key is one ``EVALSHA`` that does a ``GET`` and two ``SET``s
    (record and token counter); the returned record is built in Python from what
    was sent rather than read back. See ``_redis_scripts`` for the record format.
    """

    __slots__ = ("_acquire", "_complete", "_delete", "_horizons", "_release", "_renew", "_shared")

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._horizons: dict[tuple[float, float], tuple[str, str]] = {}
        client = shared.client
        self._acquire = ScriptRunner(client, scripts.IDEMPOTENCY_ACQUIRE, numkeys=2)
        self._complete = ScriptRunner(client, scripts.IDEMPOTENCY_COMPLETE, numkeys=2)
        self._release = ScriptRunner(client, scripts.IDEMPOTENCY_RELEASE, numkeys=1)
        self._renew = ScriptRunner(client, scripts.IDEMPOTENCY_RENEW, numkeys=2)
        self._delete = ScriptRunner(client, scripts.IDEMPOTENCY_DELETE, numkeys=2)

    def _keys(self, key: str) -> list[str]:
        prefix = self._shared.prefix
        return [f"{prefix}idem:{key}", f"{prefix}idem-token:{key}"]

    def acquire(
        self, key: str, *, fingerprint: str, lease: float, ttl: float, now: float
    ) -> Acquisition:
        """Try to claim ``key`` in one round trip (rules in ``IdempotencyStore``).

        Raises:
            ValueError: a NaN time or duration.
            StorageUnavailable: Redis cannot be reached.
        """
        lease_until, expires_at = now + lease, now + ttl
        if lease_until != lease_until or expires_at != expires_at:  # noqa: PLR0124 - NaN test
            raise ValueError("NaN is not a time or a duration")
        moment = repr(float(now))
        horizons = self._horizons.get((ttl, lease))
        if horizons is None:
            horizons = self._horizon(ttl, lease)
        shared = self._shared
        prefix = shared.prefix
        tail = (
            f"|{moment}|{len(fingerprint.encode())}|{fingerprint}"
            f"|{float(lease_until)!r}|{float(expires_at)!r}|{moment}|"
        )
        if shared.lifecycle.closed:
            shared.refuse()
        try:
            found = self._acquire(
                f"{prefix}idem:{key}",
                f"{prefix}idem-token:{key}",
                fingerprint,
                moment,
                *horizons,
                tail,
            )
        except shared.unavailable as exc:
            raise shared.failure(exc) from exc
        if found.__class__ is int:
            record = IdempotencyRecord(
                key=key,
                state=IdempotencyState.IN_PROGRESS,
                fingerprint=fingerprint,
                token=found,
                lease_until=lease_until,
                expires_at=expires_at,
                result=None,
                created_at=now,
                updated_at=now,
            )
            return Acquisition(acquired=True, record=record)
        return Acquisition(acquired=False, record=_record(key, found))

    def _horizon(self, ttl: float, lease: float) -> tuple[str, str]:
        # The guard passes the same (ttl, lease) on every call: format them once.
        record_gc = max(ttl, lease) + GC_GRACE_SECONDS
        horizons = (_gc_ms(record_gc), _gc_ms(record_gc + TOKEN_HORIZON_SECONDS))
        if len(self._horizons) >= _HORIZON_CACHE:
            self._horizons.clear()
        self._horizons[ttl, lease] = horizons
        return horizons

    def complete(self, key: str, *, token: int, result: str, ttl: float, now: float) -> bool:
        """Mark ``COMPLETED`` with ``result`` if ``token`` still owns the key.

        Raises:
            ValueError: a NaN time or duration.
            StorageUnavailable: Redis cannot be reached.
        """
        owner = str(token) if token.__class__ is int else _token_text(token)
        if owner is None:
            return False
        expires_at = now + ttl
        if expires_at != expires_at:  # noqa: PLR0124 - NaN test
            raise ValueError("NaN is not a time or a duration")
        horizons = self._horizons.get((ttl, 0.0))
        if horizons is None:
            horizons = self._horizon(ttl, 0.0)
        shared = self._shared
        prefix = shared.prefix
        if shared.lifecycle.closed:
            shared.refuse()
        try:
            done = self._complete(
                f"{prefix}idem:{key}",
                f"{prefix}idem-token:{key}",
                f"IN_PROGRESS|{owner}|",
                f"COMPLETED|{owner}|",
                f"||{float(expires_at)!r}|{float(now)!r}|{result}",
                *horizons,
            )
        except shared.unavailable as exc:
            raise shared.failure(exc) from exc
        return bool(done)

    def release(self, key: str, *, token: int, now: float) -> bool:
        """Mark ``FAILED`` if ``token`` still owns the key."""
        owner = _token_text(token)
        if owner is None:
            return False
        args = (f"IN_PROGRESS|{owner}|", f"FAILED|{owner}|", number(now))
        with self._shared:
            return bool(self._release(self._keys(key)[0], *args))

    def renew(self, key: str, *, token: int, lease: float, now: float) -> bool:
        """Extend the lease to ``now + lease`` if ``token`` still owns the key."""
        owner = _token_text(token)
        if owner is None:
            return False
        args = (
            f"IN_PROGRESS|{owner}|",
            number(now + lease),
            number(now),
            number(GC_GRACE_SECONDS),
            number(TOKEN_HORIZON_SECONDS),
        )
        with self._shared:
            return bool(self._renew(*self._keys(key), *args))

    def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        """The live record of ``key``, or ``None`` (absent or past its TTL at ``now``)."""
        with self._shared:
            raw = self._shared.client.get(self._keys(key)[0])
        if raw is None:
            return None
        record = _record(key, raw)
        return record if record.live(now) else None

    def delete(self, key: str) -> bool:
        """Forget ``key`` and its token counter; ``True`` if a record was removed."""
        with self._shared:
            return bool(self._delete(*self._keys(key)))


def _token_text(token: object) -> str | None:
    # Ownership is a byte comparison of "IN_PROGRESS|<token>|" in the script, so the
    # token is written the way the script wrote it. As in the reference, an equal
    # number (1.0, True) owns the key; a non-integral one owns nothing.
    if isinstance(token, int):
        return str(int(token))
    if isinstance(token, float) and token.is_integer():
        return str(int(token))
    return None


def _record(key: str, raw: bytes | str) -> IdempotencyRecord:
    data = raw if isinstance(raw, bytes) else raw.encode()
    state, token, created, size, rest = data.split(b"|", 4)
    length = int(size)
    lease, expires, updated, result = rest[length + 1 :].split(b"|", 3)
    parsed = IdempotencyState(state.decode())
    return IdempotencyRecord(
        key=key,
        state=parsed,
        fingerprint=rest[:length].decode(),
        token=int(token),
        lease_until=float(lease) if lease else None,
        expires_at=float(expires),
        result=result.decode() if parsed is IdempotencyState.COMPLETED else None,
        created_at=float(created),
        updated_at=float(updated),
    )


class RedisOutcomeStore:
    """Outcome counters: one ``HINCRBY`` per outcome in a hash per (minute bucket, task)."""

    __slots__ = ("_shared",)

    def __init__(self, shared: Shared) -> None:
        self._shared = shared

    def add(self, task_name: str, failure_type: str, *, success: bool, now: float) -> None:
        """Count one outcome (an atomic increment; the rest is garbage collection)."""
        bucket = math.floor(now / OUTCOME_BUCKET_SECONDS)
        prefix = self._shared.prefix
        counts = f"{prefix}outcomes:count:{bucket}:{task_name}"
        buckets = f"{prefix}outcomes:buckets:{task_name}"
        with self._shared:
            pipe = self._shared.client.pipeline(transaction=False)
            pipe.hincrby(counts, f"{failure_type}:{'s' if success else 'f'}", 1)
            pipe.expire(counts, _OUTCOME_KEY_TTL)
            pipe.zadd(buckets, {str(bucket): bucket})
            pipe.zremrangebyscore(buckets, "-inf", f"({bucket - _OUTCOME_RETENTION_BUCKETS}")
            pipe.expire(buckets, _OUTCOME_KEY_TTL)
            pipe.execute()

    def counts(self, task_name: str, *, since: float) -> Mapping[str, OutcomeCounts]:
        """Outcomes per failure type from the bucket holding ``since`` on (two round trips)."""
        first = math.floor(since / OUTCOME_BUCKET_SECONDS)
        prefix = self._shared.prefix
        with self._shared:
            found = self._shared.client.zrangebyscore(
                f"{prefix}outcomes:buckets:{task_name}", first, "+inf"
            )
            if not found:
                return {}
            pipe = self._shared.client.pipeline(transaction=False)
            for bucket in found:
                pipe.hgetall(f"{prefix}outcomes:count:{text(bucket)}:{task_name}")
            cells = pipe.execute()
        totals: dict[str, list[int]] = {}
        for cell in cells:
            for field, value in cell.items():
                failure_type, _, kind = text(field).rpartition(":")
                pair = totals.setdefault(failure_type, [0, 0])
                pair[0 if kind == "s" else 1] += int(value)
        return {ft: OutcomeCounts(successes=ok, failures=bad) for ft, (ok, bad) in totals.items()}

    def task_names(self, *, since: float) -> list[str]:
        """The tasks with outcomes from the bucket holding ``since`` on, sorted (``SCAN``).

        Raises:
            StorageUnavailable: Redis cannot be reached.
        """
        first = math.floor(since / OUTCOME_BUCKET_SECONDS)
        head = f"{self._shared.prefix}outcomes:buckets:"
        with self._shared:
            keys = [
                text(key)
                for key in self._shared.client.scan_iter(match=f"{glob_escape(head)}*", count=1000)
            ]
            if not keys:
                return []
            pipe = self._shared.client.pipeline(transaction=False)
            for key in keys:
                pipe.zcount(key, first, "+inf")
            recent = pipe.execute()
        return sorted({key[len(head) :] for key, n in zip(keys, recent, strict=True) if int(n)})


class RedisStore:
    """All four roles on one Redis (``redis://`` and ``rediss://`` URLs).

    Example:
        >>> import fakeredis
        >>> store = RedisStore(fakeredis.FakeRedis(), prefix="app:")
        >>> store.idempotency.acquire("k", fingerprint="f", lease=30, ttl=60, now=0.0).acquired
        True
    """

    __slots__ = (
        "_breakers",
        "_client",
        "_dead_letters",
        "_idempotency",
        "_lifecycle",
        "_outcomes",
        "_owns_client",
        "_prefix",
        "_url",
    )

    def __init__(self, client: RedisClient, *, prefix: str = DEFAULT_PREFIX) -> None:
        """Use ``client`` for every role, with every key under ``prefix``.

        Args:
            client: a redis-py client or anything matching :class:`RedisClient`. The
                store does not close a client it was given.
            prefix: prepended to every key, so several applications (or tests) can
                share one Redis database without seeing each other's state.

        Raises:
            ConfigurationError: ``prefix`` is not a non-empty string.
        """
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"RedisStore prefix must be a non-empty string, got {prefix!r}",
                key="prefix",
                value=prefix,
            )
        self._setup(client, prefix=prefix, url=_describe(client), owns_client=False)

    def _setup(self, client: RedisClient, *, prefix: str, url: str, owns_client: bool) -> None:
        self._client = client
        self._prefix = prefix
        self._url = url
        self._owns_client = owns_client
        shared = Shared(client, prefix=prefix, url=url, role="store", unavailable=_unavailable())
        self._lifecycle = shared.lifecycle
        self._breakers = RedisBreakerStore(shared.for_role("breakers"))
        self._idempotency = RedisIdempotencyStore(shared.for_role("idempotency"))
        self._dead_letters = RedisDeadLetterStore(shared.for_role("dead_letters"))
        self._outcomes = RedisOutcomeStore(shared.for_role("outcomes"))

    @classmethod
    def from_url(cls, url: str, *, prefix: str | None = None) -> RedisStore:
        """Open a store on the Redis a URL names (this imports redis-py).

        Args:
            url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` for
                TLS, or ``unix:///path.sock?db=N``; a ``prefix`` query parameter sets
                the key prefix (``redis://host/0?prefix=billing:``).
            prefix: the key prefix; overrides the URL's, defaults to ``"resilience:"``.

        Returns:
            The store, which owns its client: ``close()`` releases its connections.

        Raises:
            ConfigurationError: a malformed URL, or redis-py is not installed (the
                message shows the URL with its password masked).
        """
        masked = mask_url(url)
        try:
            import redis  # noqa: PLC0415 - optional dependency, imported only when used
        except ImportError:
            raise ConfigurationError(
                f"store URL {masked!r} needs redis-py: pip install 'pytest-taskchaos[redis]'",
                key="url",
                value=masked,
            ) from None
        try:
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
            prefixes = [value for name, value in query if name == "prefix"]
            rest = urlencode([(name, value) for name, value in query if name != "prefix"])
            _check_db(parts.scheme, parts.path)
            client = redis.Redis.from_url(urlunsplit(parts._replace(query=rest)))
        except ValueError as exc:
            detail = str(exc)
            password = _password(url)
            if password:
                detail = detail.replace(password, "***")
            raise ConfigurationError(
                f"Redis URL {masked!r} is malformed: {detail}", key="url", value=masked
            ) from None
        chosen = prefix if prefix is not None else (prefixes[-1] if prefixes else DEFAULT_PREFIX)
        store = cls(client, prefix=chosen)
        store._setup(client, prefix=chosen, url=masked, owns_client=True)
        return store

    @property
    def url(self) -> str:
        """The Redis URL, password masked (derived from the client when not opened by URL)."""
        return self._url

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    @property
    def breakers(self) -> RedisBreakerStore:
        """Breaker state."""
        return self._breakers

    @property
    def idempotency(self) -> RedisIdempotencyStore:
        """Idempotency records."""
        return self._idempotency

    @property
    def dead_letters(self) -> RedisDeadLetterStore:
        """Dead letters."""
        return self._dead_letters

    @property
    def outcomes(self) -> RedisOutcomeStore:
        """Outcome counters."""
        return self._outcomes

    def close(self) -> None:
        """Stop using the store (later calls raise ``StorageUnavailable``).

        The client is closed too if this store opened it (``from_url``); a client
        that was given to the store stays open for its owner.
        """
        if self._lifecycle.closed:
            return
        self._lifecycle.closed = True
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore(url={self._url!r}, prefix={self._prefix!r})"


def _unavailable() -> tuple[type[BaseException], ...]:
    # redis-py's ConnectionError is not the builtin one (lesson 24 of the original):
    # catch both, importing redis-py only if it is there.
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from redis import exceptions  # noqa: PLC0415 - optional dependency
    except ImportError:
        return tuple(kinds)
    kinds += [exceptions.ConnectionError, exceptions.TimeoutError]
    return tuple(kinds)


def _describe(client: object) -> str:
    pool = getattr(client, "connection_pool", None)
    kwargs: Any = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return f"redis://({type(client).__name__})"
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    connection = getattr(pool, "connection_class", None)
    scheme = "rediss" if "SSL" in getattr(connection, "__name__", "") else "redis"
    user = kwargs.get("username") or ""
    auth = f"{user}:***@" if kwargs.get("password") else (f"{user}@" if user else "")
    return f"{scheme}://{auth}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def _check_db(scheme: str, path: str) -> None:
    # redis-py silently ignores a database path that is not a number.
    if scheme.lower() in ("redis", "rediss"):
        db = path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"database {db!r} is not a number")


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None

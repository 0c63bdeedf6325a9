"""``open_store(url)``: one URL picks the backend; credentials never leak into messages."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from resilience.errors import ConfigurationError
from resilience.storage.memory import MemoryStore

if TYPE_CHECKING:
    from resilience.storage.base import Store

__all__ = ["DEFAULT_STORE_URL", "ENV_VAR", "mask_url", "open_store"]

DEFAULT_STORE_URL = "sqlite:///resilience.sqlite3"
"""The embedded default: a SQLite file in the working directory."""

ENV_VAR = "RESILIENCE_STORE_URL"
"""The environment variable read when ``open_store`` is given no URL."""

_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)[^/?#]*@")

_SCHEMES = {
    "memory": "memory://",
    "sqlite": "sqlite:///relative/path.db or sqlite:////absolute/path.db",
    "redis": "redis://[:password@]host[:port][/db]",
    "rediss": "rediss://[:password@]host[:port][/db] (TLS)",
    "postgresql": "postgresql://[user[:password]@]host[:port]/dbname",
    "postgres": "postgres://[user[:password]@]host[:port]/dbname",
}


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs, errors and reprs).

    Works on malformed URLs too (a bad port must not leak the password in the
    error that reports it).
    """
    return _PASSWORD.sub(r"\1***@", url)


def open_store(url: str | None = None) -> Store:
    """Open the store a URL names (the four roles of one backend).

    Args:
        url: ``memory://``, ``sqlite:///relative.db`` / ``sqlite:////abs/path.db``,
            ``redis://host:port/db`` (``rediss://`` for TLS), ``postgresql://...``.
            Defaults to ``$RESILIENCE_STORE_URL``, then :data:`DEFAULT_STORE_URL`.

    Returns:
        The store; call ``close()`` when done.

    Raises:
        ConfigurationError: a malformed URL or an unknown scheme (``key="url"``; the
            message shows the URL with its password masked).
    """
    raw = url if url is not None else os.environ.get(ENV_VAR) or DEFAULT_STORE_URL
    masked = mask_url(raw)
    if not isinstance(raw, str) or "://" not in raw:
        raise ConfigurationError(
            f"store URL {masked!r} is not a URL; expected one of: {_expected()}",
            key="url",
            value=masked,
        )
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ConfigurationError(
            f"store URL {masked!r} is malformed ({_scrub(str(exc), raw)})",
            key="url",
            value=masked,
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"store URL {masked!r} has unknown scheme {scheme!r}; expected one of: {_expected()}",
            key="url",
            value=masked,
        )
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc or not path:
            raise ConfigurationError(
                f"store URL {masked!r}: expected {_SCHEMES['sqlite']}", key="url", value=masked
            )
        module = importlib.import_module("resilience.storage.sqlite")
        store: Store = module.SQLiteStore(path)
        return store
    if not parts.hostname:
        raise ConfigurationError(
            f"store URL {masked!r} names no host; expected {_SCHEMES[scheme]}",
            key="url",
            value=masked,
        )
    if scheme in ("redis", "rediss"):
        module = importlib.import_module("resilience.storage.redis")
        redis_store: Store = module.RedisStore.from_url(raw)
        return redis_store
    try:
        module = importlib.import_module("resilience.storage.postgres")
    except ImportError as missing:
        if missing.name != "psycopg":
            raise
        raise ConfigurationError(
            f"store URL {masked!r} needs psycopg 3: pip install 'pytest-taskchaos[postgres]'",
            key="url",
            value=masked,
        ) from None
    postgres_store: Store = module.PostgresStore(raw)
    return postgres_store


def _expected() -> str:
    return "; ".join(_SCHEMES.values())


def _scrub(text: str, raw: str) -> str:
    password = None
    with contextlib.suppress(ValueError):
        password = urlsplit(raw).password
    return text.replace(password, "***") if password else text

"""The builtin dependency points: patchers for the client libraries of ``db``, ``http``, ``redis``.

:func:`install_builtin` registers a hook on every installed library of one
builtin point; a library that is not installed is skipped. What each point
covers, and what it does not, is described in :mod:`pytest_taskchaos._points`,
which holds the public API; the wrapping itself is
:mod:`pytest_taskchaos._points_channel`. Details passed to the hook never
include SQL text, query parameters, Redis arguments, URL credentials or query
strings, which can hold secrets.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pytest_taskchaos._points_channel import (
    CLAIMED,
    IN_CALL,
    LOCK,
    Args,
    Channel,
    Describe,
    Entry,
    Hook,
    Kwargs,
    add_to_attribute,
    add_to_channel,
    call_hooked,
    raw_member,
)

if TYPE_CHECKING:
    import contextlib
    import types
    from collections.abc import Callable, Mapping

__all__ = ["install_builtin"]


# --------------------------------------------------------------------------- details


def _public_url(url: object) -> str:
    """``url`` without credentials, query string or fragment (they can hold secrets)."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<invalid url>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _library_op(library: str) -> Describe:
    def describe(op: str, args: Args, kwargs: Kwargs) -> str:
        return f"{library} {op}"

    return describe


def _send_detail(library: str) -> Describe:
    def describe(op: str, args: Args, kwargs: Kwargs) -> str:
        request = args[1] if len(args) > 1 else kwargs["request"]
        return f"{library} {request.method} {_public_url(request.url)}"

    return describe


def _urllib_detail(op: str, args: Args, kwargs: Kwargs) -> str:
    fullurl = args[1] if len(args) > 1 else kwargs["fullurl"]
    data = args[2] if len(args) > 2 else kwargs.get("data")
    if isinstance(fullurl, str):
        url, method = fullurl, ("GET" if data is None else "POST")
    else:
        url = fullurl.full_url
        has_data = data is not None or fullurl.data is not None
        method = getattr(fullurl, "method", None) or ("POST" if has_data else "GET")
    return f"urllib {method} {_public_url(url)}"


def _redis_detail(op: str, args: Args, kwargs: Kwargs) -> str:
    command = args[1]
    if isinstance(command, bytes):
        command = command.decode(errors="replace")
    return f"redis {str(command).upper()}"


def _redis_pipeline_detail(op: str, args: Args, kwargs: Kwargs) -> str:
    return "redis PIPELINE"


# --------------------------------------------------------------------------- builtins

# (module, class, methods, detail) patched by each builtin, when the module imports.
_BUILTIN_ATTRIBUTES: Mapping[str, tuple[tuple[str, str, tuple[str, ...], Describe], ...]] = {
    "db": (
        ("psycopg", "Cursor", ("execute", "executemany"), _library_op("psycopg")),
        ("psycopg", "AsyncCursor", ("execute", "executemany"), _library_op("psycopg")),
        ("psycopg", "ServerCursor", ("execute",), _library_op("psycopg")),
        ("psycopg", "AsyncServerCursor", ("execute",), _library_op("psycopg")),
        (
            "django.db.backends.utils",
            "CursorWrapper",
            ("execute", "executemany"),
            _library_op("django"),
        ),
    ),
    "http": (
        ("requests", "Session", ("send",), _send_detail("requests")),
        ("httpx", "Client", ("send",), _send_detail("httpx")),
        ("httpx", "AsyncClient", ("send",), _send_detail("httpx")),
        ("urllib.request", "OpenerDirector", ("open",), _urllib_detail),
    ),
    "redis": (
        ("redis", "Redis", ("execute_command",), _redis_detail),
        ("redis.asyncio", "Redis", ("execute_command",), _redis_detail),
        ("redis.client", "Pipeline", ("execute",), _redis_pipeline_detail),
        ("redis.asyncio.client", "Pipeline", ("execute",), _redis_pipeline_detail),
    ),
}


def _optional_module(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def install_builtin(spec: str, point: str, hook: Hook, undo: contextlib.ExitStack) -> None:
    """Register ``hook`` on every installed library of the builtin ``point``.

    Args:
        spec: the point as the user wrote it; ``hook`` receives it.
        point: the normalised builtin point: ``"db"``, ``"http"`` or ``"redis"``.
        hook: called as ``hook(spec, detail)`` before each call through the point.
        undo: receives one callback per registration; closing it removes them all.
    """
    for module_name, class_name, methods, describe in _BUILTIN_ATTRIBUTES[point]:
        module = _optional_module(module_name)
        owner = getattr(module, class_name, None)
        if owner is None:
            continue
        entry = Entry(spec=spec, hook=hook, family=point, describe=describe)
        for method in methods:
            if raw_member(owner, method) is not None:
                undo.callback(add_to_attribute(owner, method, entry))
    if point == "db":
        _install_sqlite(spec, hook, undo)
        _install_sqlalchemy(spec, hook, undo)


# sqlite3 ------------------------------------------------------------------------------

_SQLITE_OPS = ("execute", "executemany", "executescript")
_HOOKED_MARK = "_taskchaos_hooked"
_SQLITE_HOOKED: dict[type, type] = {}


def _no_setup(channel: Channel) -> Callable[[], None]:
    return lambda: None


_SQLITE = Channel(_no_setup)
"""Hooks of sqlite3 queries; connections opened while patched call them until they close."""


def _sqlite_method(base: type, op: str) -> Callable[..., Any]:
    original = getattr(base, op)

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return call_hooked(_SQLITE, op, original, (self, *args), kwargs)

    return method


def _hooked_sqlite_class(base: object, *, connection: bool) -> object:
    """A subclass of ``base`` whose queries call the sqlite3 hooks (``base`` if it cannot be)."""
    import sqlite3  # noqa: PLC0415 - only needed while a "db" point is patched

    root = sqlite3.Connection if connection else sqlite3.Cursor
    if not isinstance(base, type) or not issubclass(base, root) or vars(base).get(_HOOKED_MARK):
        return base
    with LOCK:
        hooked = _SQLITE_HOOKED.get(base)
        if hooked is None:
            namespace: dict[str, Any] = {op: _sqlite_method(base, op) for op in _SQLITE_OPS}
            namespace.update({_HOOKED_MARK: True, "__module__": __name__})
            if connection:
                namespace["cursor"] = _sqlite_cursor_method(base)
            hooked = type(base.__name__, (base,), namespace)
            _SQLITE_HOOKED[base] = hooked
    return hooked


def _sqlite_cursor_method(base: type[Any]) -> Callable[..., Any]:
    import sqlite3  # noqa: PLC0415 - only needed while a "db" point is patched

    original = base.cursor
    default: object = sqlite3.Cursor
    if original is not sqlite3.Connection.cursor:
        # A factory class with its own cursor(): keep its default cursor class, if it says.
        try:
            parameter = inspect.signature(original).parameters.get("factory")
        except (TypeError, ValueError):
            parameter = None
        default = None if parameter is None else parameter.default
        if not (isinstance(default, type) and issubclass(default, sqlite3.Cursor)):
            default = None  # no usable default: its cursors are not hooked

    @functools.wraps(original)
    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args:
            args = (_hooked_sqlite_class(args[0], connection=False), *args[1:])
        elif "factory" in kwargs:
            kwargs["factory"] = _hooked_sqlite_class(kwargs["factory"], connection=False)
        elif default is not None:
            kwargs["factory"] = _hooked_sqlite_class(default, connection=False)
        return original(self, *args, **kwargs)

    return cursor


_CONNECT_FACTORY_POSITION = 6  # connect(database, timeout, detect_types, isolation_level,
# check_same_thread, factory, ...): the sixth positional argument.


def _sqlite_connect_rewrite(args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs]:
    import sqlite3  # noqa: PLC0415 - only needed while a "db" point is patched

    position = _CONNECT_FACTORY_POSITION
    if len(args) >= position:
        factory = _hooked_sqlite_class(args[position - 1], connection=True)
        return (*args[: position - 1], factory, *args[position:]), kwargs
    factory = _hooked_sqlite_class(kwargs.get("factory", sqlite3.Connection), connection=True)
    return args, {**kwargs, "factory": factory}


def _install_sqlite(spec: str, hook: Hook, undo: contextlib.ExitStack) -> None:
    sqlite3 = _optional_module("sqlite3")
    if sqlite3 is None:
        return
    rewrite = Entry(spec=spec, rewrite=_sqlite_connect_rewrite)
    # sqlite3.connect and sqlite3.dbapi2.connect are separate names: SQLAlchemy and
    # Django look up the second one.
    owners = [sqlite3, *filter(None, [_optional_module("sqlite3.dbapi2")])]
    for owner in owners:
        undo.callback(add_to_attribute(owner, "connect", rewrite))
    entry = Entry(spec=spec, hook=hook, family="db", describe=_library_op("sqlite3"))
    undo.callback(add_to_channel(_SQLITE, entry))


# SQLAlchemy ---------------------------------------------------------------------------


def _sqlalchemy_setup(channel: Channel) -> Callable[[], None]:
    from sqlalchemy import event  # noqa: PLC0415 - optional; imported only when installed
    from sqlalchemy.engine import Engine  # noqa: PLC0415

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", _sqlalchemy_before),
        ("after_cursor_execute", _sqlalchemy_done),
        ("handle_error", _sqlalchemy_done),
    ]
    for name, listener in listeners:
        event.listen(Engine, name, listener)

    def undo() -> None:
        for name, listener in listeners:
            event.remove(Engine, name, listener)

    return undo


_SQLALCHEMY = Channel(_sqlalchemy_setup)


def _sqlalchemy_before(*args: Any) -> None:
    # (conn, cursor, statement, parameters, context, executemany)
    if "db" in IN_CALL.get():
        return
    op = "executemany" if args[5] else "execute"
    for entry in _SQLALCHEMY.entries:
        if entry.hook is not None:
            entry.hook(entry.spec, f"sqlalchemy {op}")
    # The driver call that follows is this same query: its layer must not call the hook again.
    CLAIMED.set(CLAIMED.get() | {"db"})


def _sqlalchemy_done(*args: Any) -> None:
    claimed = CLAIMED.get()
    if "db" in claimed:
        CLAIMED.set(claimed - {"db"})


def _install_sqlalchemy(spec: str, hook: Hook, undo: contextlib.ExitStack) -> None:
    if _optional_module("sqlalchemy") is None:
        return
    entry = Entry(spec=spec, hook=hook, family="db")
    undo.callback(add_to_channel(_SQLALCHEMY, entry))

"""Dependency points: make the calls a task body makes to a dependency reach a hook.

A *point* names where a dependency fault can fire. It is either a builtin
family of client libraries or the import path of one callable:

- ``"db"``: SQL queries through sqlite3, psycopg 3, SQLAlchemy engines and
  Django cursors;
- ``"http"``: requests through requests, httpx (sync and async) and
  ``urllib.request``;
- ``"redis"``: commands through redis-py clients (sync and asyncio, fakeredis
  included, which subclasses them) and their pipelines;
- ``"pkg.mod.func"``, ``"pkg.mod.Class.method"`` or ``"pkg.mod:Class.method"``:
  one function or method of the project.

:func:`patch_point` patches a point until an :class:`contextlib.ExitStack`
closes; every call that reaches it first calls ``hook(spec, detail)``. The hook
raises to inject a fault (the caller sees exactly that exception) or returns
to let the real call proceed (after advancing virtual time, for latency)::

    with ExitStack() as stack:
        patch_point(stack, "http", hook)
        requests.get("https://api.example.com/x")   # hook("http", "requests GET https://api.example.com/x")

:func:`check_point` validates a point without patching anything, so a typo
fails at collection with a message naming it.

Where a point is patched, and what it does not cover:

- **An import path is patched where it is looked up.** Patching
  ``myapp.payments.charge`` replaces the attribute ``charge`` of the module
  ``myapp.payments``; a module that ran ``from myapp.payments import charge``
  before the patch holds the original function and is not affected. Name the
  point where the task looks it up (``myapp.tasks.charge`` in that case). A
  method is patched on the class the path names, so calls through that class
  and its subclasses reach the hook.
- **sqlite3** connections and cursors are C types that cannot be patched:
  ``sqlite3.connect`` is replaced by a function that opens the connection with
  a subclass of the requested ``factory`` whose ``execute``, ``executemany``,
  ``executescript`` and ``cursor()`` (and the cursors it makes) go through the
  hook. Connections opened before the patch are not covered, and such a
  connection's class is that subclass, not ``sqlite3.Connection`` itself.
- **psycopg2** cursors are C types as well: only psycopg 3 is patched directly.
  psycopg2 queries run through SQLAlchemy or Django still reach the hook
  through those layers. psycopg 3's ``copy()`` and ``stream()`` are not covered.
- **SQLAlchemy** is hooked with a ``before_cursor_execute`` listener on
  :class:`sqlalchemy.engine.Engine`. SQLAlchemy handles an exception raised
  there like one raised by the driver: an error of the engine's own DB-API
  module (``sqlite3.OperationalError`` on a SQLite engine) reaches the caller
  wrapped in the matching ``sqlalchemy.exc.DBAPIError`` with the hook's
  exception as ``.orig``, exactly as a real driver error would; any other
  exception reaches the caller unchanged.
- **Redis**: ``execute_command`` of ``redis.Redis`` and ``redis.asyncio.Redis``
  and ``execute`` of their pipelines (one hook call per pipeline, detail
  ``"redis PIPELINE"``). ``RedisCluster`` is not covered.

One logical call reaches the hook of a builtin point once, even when it passes
through several patched layers (a Django cursor over sqlite3, an SQLAlchemy
engine over psycopg): the outermost layer calls the hook and the layers inside
it do not. Details never include SQL text, query parameters, Redis arguments,
URL credentials or query strings, which can hold secrets.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from resilience.errors import ConfigurationError

__all__ = ["BUILTIN_POINTS", "Hook", "check_point", "patch_point"]

Hook = Callable[[str, str], None]
"""``hook(spec, detail)``: ``spec`` is the point as given to :func:`patch_point`
(``"db"``, ``"http"``, ``"redis"`` or the import path); ``detail`` says what call
reached it (``"sqlite3 execute"``, ``"requests GET http://x/y"``, ``"redis SET"``,
``"myapp.payments.charge"``). The hook raises to inject, returns to let the call through."""

BUILTIN_POINTS: Mapping[str, str] = MappingProxyType(
    {
        "db": "SQL queries: sqlite3, psycopg 3, SQLAlchemy engines, Django cursors",
        "http": "HTTP requests: requests, httpx (sync and async), urllib.request",
        "redis": "Redis commands: redis-py clients (sync and asyncio, fakeredis too), pipelines",
    }
)
"""The builtin points, each with a one-line description of what it covers."""

_EXAMPLE = "'myapp.payments.charge'"
_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: setattr on the type raises TypeError

_Args = tuple[Any, ...]
_Kwargs = dict[str, Any]
_Describe = Callable[[str, _Args, _Kwargs], str]
_Rewrite = Callable[[_Args, _Kwargs], tuple[_Args, _Kwargs]]
_Wrapping = Literal["plain", "static", "class", "callable"]
_BINDING_TYPES = (types.FunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)
"""Class members that bind to the instance the way a plain function does."""


# --------------------------------------------------------------------------- channels


@dataclass(frozen=True, slots=True, eq=False)
class _Entry:
    """One registration on a channel: a hook to call, or arguments to rewrite."""

    spec: str
    hook: Hook | None = None
    family: str | None = None
    """The builtin point it belongs to (``None`` for import paths): one call per family."""
    describe: _Describe | None = None
    rewrite: _Rewrite | None = None


class _Channel:
    """The entries sharing one patch; the patch exists while the channel has entries.

    Every patch stack that names the same attribute shares its channel, so the
    attribute is wrapped once and restored when the last stack closes, whatever
    the order in which the stacks close.
    """

    __slots__ = ("_setup", "_undo", "entries", "families")

    def __init__(self, setup: Callable[[_Channel], Callable[[], None]]) -> None:
        self._setup = setup
        self._undo: Callable[[], None] | None = None
        # Replaced, never mutated: wrappers read them without taking the lock.
        self.entries: tuple[_Entry, ...] = ()
        self.families: frozenset[str] = frozenset()

    def add(self, entry: _Entry) -> None:
        """Register ``entry``, installing the patch first if it is the first one."""
        if not self.entries:
            self._undo = self._setup(self)
        self._set((*self.entries, entry))

    def discard(self, entry: _Entry) -> bool:
        """Unregister ``entry``; remove the patch and return True when none is left."""
        self._set(tuple(e for e in self.entries if e is not entry))
        if self.entries:
            return False
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()
        return True

    def _set(self, entries: tuple[_Entry, ...]) -> None:
        self.families = frozenset(e.family for e in entries if e.family is not None)
        self.entries = entries


_LOCK = threading.RLock()
_ATTRIBUTE_CHANNELS: dict[tuple[int, str], _Channel] = {}
_STACKS: weakref.WeakKeyDictionary[contextlib.ExitStack, dict[str, Hook]] = (
    weakref.WeakKeyDictionary()
)

_IN_CALL: ContextVar[frozenset[str]] = ContextVar("taskchaos_points_in_call", default=frozenset())
"""Builtin families with a hooked call in progress: layers inside it do not call the hook again."""
_CLAIMED: ContextVar[frozenset[str]] = ContextVar("taskchaos_points_claimed", default=frozenset())
"""Families whose next driver call was already announced (by SQLAlchemy's event)."""


def _enter(
    channel: _Channel, op: str, args: _Args, kwargs: _Kwargs
) -> tuple[_Args, _Kwargs, frozenset[str] | None]:
    """Call the hooks of one call and rewrite its arguments.

    Returns:
        The arguments to call with, and the in-call set to put back after the
        call (``None`` when it was not changed).
    """
    entries, families = channel.entries, channel.families
    if not families:  # import paths only: every call reaches every hook
        for entry in entries:
            if entry.rewrite is not None:
                args, kwargs = entry.rewrite(args, kwargs)
            elif entry.hook is not None:
                entry.hook(entry.spec, _detail(entry, op, args, kwargs))
        return args, kwargs, None
    in_call = _IN_CALL.get()
    claimed = _CLAIMED.get()
    taken = (families & claimed) - in_call
    if taken:
        _CLAIMED.set(claimed - taken)
    skip = families & (in_call | claimed)
    for entry in entries:
        if entry.rewrite is not None:
            args, kwargs = entry.rewrite(args, kwargs)
        elif entry.hook is not None and entry.family not in skip:
            entry.hook(entry.spec, _detail(entry, op, args, kwargs))
    new = families - in_call
    if not new:
        return args, kwargs, None
    _IN_CALL.set(in_call | new)
    return args, kwargs, in_call


def _detail(entry: _Entry, op: str, args: _Args, kwargs: _Kwargs) -> str:
    if entry.describe is None:
        return entry.spec
    try:
        return entry.describe(op, args, kwargs)
    except Exception:  # noqa: BLE001 - an odd call shape must not fail the user's call
        return f"{entry.spec} {op}"


def _call(
    channel: _Channel, op: str, func: Callable[..., Any], args: _Args, kwargs: _Kwargs
) -> Any:
    args, kwargs, previous = _enter(channel, op, args, kwargs)
    if previous is None:
        return func(*args, **kwargs)
    try:
        return func(*args, **kwargs)
    finally:
        _IN_CALL.set(previous)


async def _acall(
    channel: _Channel, op: str, func: Callable[..., Any], args: _Args, kwargs: _Kwargs
) -> Any:
    args, kwargs, previous = _enter(channel, op, args, kwargs)
    try:
        return await func(*args, **kwargs)
    finally:
        if previous is not None:
            _IN_CALL.set(previous)


def _wrap(channel: _Channel, op: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A function calling the channel's hooks, then ``func`` (a coroutine function for one)."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await _acall(channel, op, func, args, kwargs)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _call(channel, op, func, args, kwargs)

    return wrapper


# --------------------------------------------------------------------------- attributes


def _raw_member(owner: object, name: str) -> tuple[bool, object] | None:
    """What ``owner.name`` holds before binding, and whether ``owner`` holds it itself.

    Returns ``None`` when a class gets the attribute from somewhere other than
    its own or its bases' namespaces (its metaclass, ``__getattr__``).
    """
    namespace = getattr(owner, "__dict__", None)
    own = isinstance(namespace, Mapping) and name in namespace
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if name in vars(klass):
                return own, vars(klass)[name]
        return None
    if own:
        return True, vars(owner)[name]
    return False, getattr(owner, name)


def _wrapping(raw: object, *, on_class: bool) -> _Wrapping | None:
    """How to wrap ``raw`` so that it keeps binding the way it did (None: it cannot be)."""
    if not on_class:
        return "plain"
    if isinstance(raw, staticmethod):
        return "static"
    if isinstance(raw, classmethod):
        return "class"
    if isinstance(raw, _BINDING_TYPES):
        return "plain"
    if callable(raw) and not hasattr(type(raw), "__get__"):
        return "callable"  # a builtin or callable object: it never received self
    return None


def _replacement(channel: _Channel, name: str, raw: object, how: _Wrapping) -> object:
    if how == "static":
        return staticmethod(_wrap(channel, name, raw.__func__))  # type: ignore[attr-defined]
    if how == "class":
        return classmethod(_wrap(channel, name, raw.__func__))  # type: ignore[attr-defined]
    wrapper = _wrap(channel, name, raw)  # type: ignore[arg-type]
    return staticmethod(wrapper) if how == "callable" else wrapper


def _install_attribute(owner: object, name: str) -> Callable[[_Channel], Callable[[], None]]:
    def setup(channel: _Channel) -> Callable[[], None]:
        member = _raw_member(owner, name)
        how = None if member is None else _wrapping(member[1], on_class=isinstance(owner, type))
        if member is None or how is None:
            raise ConfigurationError(
                f"{_qualname(owner)}.{name} cannot be wrapped", key="at", value=name
            )
        own, raw = member
        setattr(owner, name, _replacement(channel, name, raw, how))

        def undo() -> None:
            if own:
                setattr(owner, name, raw)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(owner, name)

        return undo

    return setup


def _add_to_attribute(owner: object, name: str, entry: _Entry) -> Callable[[], None]:
    """Register ``entry`` on ``owner.name`` (wrapping it if needed); return the undo."""
    key = (id(owner), name)  # the channel holds `owner`, so the id stays its own
    with _LOCK:
        channel = _ATTRIBUTE_CHANNELS.get(key)
        if channel is None:
            channel = _Channel(_install_attribute(owner, name))
        channel.add(entry)
        _ATTRIBUTE_CHANNELS[key] = channel

    def remove() -> None:
        with _LOCK:
            if channel.discard(entry) and _ATTRIBUTE_CHANNELS.get(key) is channel:
                del _ATTRIBUTE_CHANNELS[key]

    return remove


def _add_to_channel(channel: _Channel, entry: _Entry) -> Callable[[], None]:
    with _LOCK:
        channel.add(entry)

    def remove() -> None:
        with _LOCK:
            channel.discard(entry)

    return remove


# --------------------------------------------------------------------------- import paths


@dataclass(frozen=True, slots=True)
class _Target:
    """A resolved import path: patch ``owner.name``."""

    owner: object
    name: str
    path: str


def _error(spec: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"dependency point {spec!r}: {problem}", key="at", value=spec)


def _qualname(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"


def _describe_owner(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__!r}"
    if isinstance(obj, type):
        return f"class {_qualname(obj)!r}"
    return f"{type(obj).__qualname__!r} object"


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _import(spec: str, module_name: str) -> types.ModuleType | None:
    """Import ``module_name``; None when it (or a parent) does not exist."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            return None
        raise _error(spec, f"importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        problem = f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        raise _error(spec, problem) from exc


def _no_module(spec: str, module_name: str) -> ConfigurationError:
    top = module_name.partition(".")[0]
    if top != module_name and importlib.util.find_spec(top) is not None:
        parent, _, child = module_name.rpartition(".")
        return _error(spec, f"no module named {module_name!r} ({parent!r} has no {child!r})")
    names = sorted({m.name for m in pkgutil.iter_modules()} | set(sys.builtin_module_names))
    hint = _did_you_mean(top, names)
    return _error(spec, f"no module named {top!r}{hint}")


def _split(spec: str) -> tuple[types.ModuleType, list[str]]:
    """Import the module part of an import path; return it and the attribute names left."""
    syntax = (
        f"not an import path (expected 'package.module.function', "
        f"'package.module.Class.method' or 'package.module:Class.method', like {_EXAMPLE})"
    )
    module_part, colon, attr_part = spec.partition(":")
    names = module_part.split(".")
    attrs = attr_part.split(".") if colon else []
    if any(not n.isidentifier() for n in (*names, *attrs)) or (colon and not attr_part):
        raise _error(spec, syntax)
    if colon:
        module = _import(spec, module_part)
        if module is None:
            raise _no_module(spec, module_part)
        return module, attrs
    # The longest importable prefix is the module; what follows are attributes.
    found: types.ModuleType | None = None
    used = 0
    for end in range(1, len(names) + 1):
        if found is not None and not hasattr(found, "__path__"):
            break  # a plain module has no submodules
        module = _import(spec, ".".join(names[:end]))
        if module is None:
            break
        found, used = module, end
    if found is None:
        raise _no_module(spec, names[0])
    return found, names[used:]


def _candidates(owner: object) -> list[str]:
    names = set(dir(owner))
    search = getattr(owner, "__path__", None)
    if isinstance(owner, types.ModuleType) and search is not None:
        names.update(m.name for m in pkgutil.iter_modules(search))
    return sorted(names)


def _resolve(spec: str) -> _Target:
    """Resolve an import path to the attribute to patch, checking that it can be patched."""
    module, attrs = _split(spec)
    path = spec.replace(":", ".")  # as written: "os.path.join", not "posixpath.join"
    if not attrs:
        raise _error(spec, f"{path!r} is a module, not a callable; name a function in it")
    obj: object = module
    owner: object = module
    for attr in attrs:
        owner = obj
        try:
            obj = getattr(owner, attr)
        except AttributeError:
            hint = _did_you_mean(attr, _candidates(owner))
            raise _error(
                spec, f"{_describe_owner(owner)} has no attribute {attr!r}{hint}"
            ) from None
    name = attrs[-1]
    if isinstance(obj, type):
        raise _error(
            spec,
            f"{path!r} is a class; name the method the task calls (such as '{path}.__init__')",
        )
    if not callable(obj):
        raise _error(spec, f"{path!r} is not callable (it is of type {type(obj).__name__!r})")
    _check_patchable(spec, owner, name, path)
    return _Target(owner=owner, name=name, path=path)


def _check_patchable(spec: str, owner: object, name: str, path: str) -> None:
    if isinstance(owner, type) and owner.__flags__ & _IMMUTABLE_TYPE:
        raise _error(
            spec,
            f"cannot patch {path!r}: {_qualname(owner)!r} is a built-in (C) type whose "
            f"attributes cannot be replaced; patch the Python function that makes the call, "
            f"or use a builtin point ({', '.join(BUILTIN_POINTS)})",
        )
    if not isinstance(owner, type | types.ModuleType) and not isinstance(
        getattr(owner, "__dict__", None), dict
    ):
        raise _error(spec, f"cannot patch {path!r}: its owner has no instance dictionary")
    member = _raw_member(owner, name)
    if member is None:
        raise _error(
            spec,
            f"cannot patch {path!r}: it is not defined in the body of {_qualname(owner)!r} or "
            f"its bases (it comes from a metaclass or __getattr__)",
        )
    if _wrapping(member[1], on_class=isinstance(owner, type)) is None:
        raise _error(
            spec,
            f"cannot patch {path!r}: it is a {type(member[1]).__name__}, which cannot be "
            f"wrapped; patch the function it calls",
        )


# --------------------------------------------------------------------------- details


def _public_url(url: object) -> str:
    """``url`` without credentials, query string or fragment (they can hold secrets)."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<invalid url>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _library_op(library: str) -> _Describe:
    def describe(op: str, args: _Args, kwargs: _Kwargs) -> str:
        return f"{library} {op}"

    return describe


def _send_detail(library: str) -> _Describe:
    def describe(op: str, args: _Args, kwargs: _Kwargs) -> str:
        request = args[1] if len(args) > 1 else kwargs["request"]
        return f"{library} {request.method} {_public_url(request.url)}"

    return describe


def _urllib_detail(op: str, args: _Args, kwargs: _Kwargs) -> str:
    fullurl = args[1] if len(args) > 1 else kwargs["fullurl"]
    data = args[2] if len(args) > 2 else kwargs.get("data")
    if isinstance(fullurl, str):
        url, method = fullurl, ("GET" if data is None else "POST")
    else:
        url = fullurl.full_url
        has_data = data is not None or fullurl.data is not None
        method = getattr(fullurl, "method", None) or ("POST" if has_data else "GET")
    return f"urllib {method} {_public_url(url)}"


def _redis_detail(op: str, args: _Args, kwargs: _Kwargs) -> str:
    command = args[1]
    if isinstance(command, bytes):
        command = command.decode(errors="replace")
    return f"redis {str(command).upper()}"


def _redis_pipeline_detail(op: str, args: _Args, kwargs: _Kwargs) -> str:
    return "redis PIPELINE"


# --------------------------------------------------------------------------- builtins

# (module, class, methods, detail) patched by each builtin, when the module imports.
_BUILTIN_ATTRIBUTES: Mapping[str, tuple[tuple[str, str, tuple[str, ...], _Describe], ...]] = {
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


def _install_builtin(spec: str, point: str, hook: Hook, undo: contextlib.ExitStack) -> None:
    """Register ``hook`` on every installed library of the builtin ``point``."""
    for module_name, class_name, methods, describe in _BUILTIN_ATTRIBUTES[point]:
        module = _optional_module(module_name)
        owner = getattr(module, class_name, None)
        if owner is None:
            continue
        entry = _Entry(spec=spec, hook=hook, family=point, describe=describe)
        for method in methods:
            if _raw_member(owner, method) is not None:
                undo.callback(_add_to_attribute(owner, method, entry))
    if point == "db":
        _install_sqlite(spec, hook, undo)
        _install_sqlalchemy(spec, hook, undo)


# sqlite3 ------------------------------------------------------------------------------

_SQLITE_OPS = ("execute", "executemany", "executescript")
_HOOKED_MARK = "_taskchaos_hooked"
_SQLITE_HOOKED: dict[type, type] = {}


def _no_setup(channel: _Channel) -> Callable[[], None]:
    return lambda: None


_SQLITE = _Channel(_no_setup)
"""Hooks of sqlite3 queries; connections opened while patched call them until they close."""


def _sqlite_method(base: type, op: str) -> Callable[..., Any]:
    original = getattr(base, op)

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _call(_SQLITE, op, original, (self, *args), kwargs)

    return method


def _hooked_sqlite_class(base: object, *, connection: bool) -> object:
    """A subclass of ``base`` whose queries call the sqlite3 hooks (``base`` if it cannot be)."""
    import sqlite3  # noqa: PLC0415 - only needed while a "db" point is patched

    root = sqlite3.Connection if connection else sqlite3.Cursor
    if not isinstance(base, type) or not issubclass(base, root) or vars(base).get(_HOOKED_MARK):
        return base
    with _LOCK:
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


def _sqlite_connect_rewrite(args: _Args, kwargs: _Kwargs) -> tuple[_Args, _Kwargs]:
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
    rewrite = _Entry(spec=spec, rewrite=_sqlite_connect_rewrite)
    # sqlite3.connect and sqlite3.dbapi2.connect are separate names: SQLAlchemy and
    # Django look up the second one.
    owners = [sqlite3, *filter(None, [_optional_module("sqlite3.dbapi2")])]
    for owner in owners:
        undo.callback(_add_to_attribute(owner, "connect", rewrite))
    entry = _Entry(spec=spec, hook=hook, family="db", describe=_library_op("sqlite3"))
    undo.callback(_add_to_channel(_SQLITE, entry))


# SQLAlchemy ---------------------------------------------------------------------------


def _sqlalchemy_setup(channel: _Channel) -> Callable[[], None]:
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


_SQLALCHEMY = _Channel(_sqlalchemy_setup)


def _sqlalchemy_before(*args: Any) -> None:
    # (conn, cursor, statement, parameters, context, executemany)
    if "db" in _IN_CALL.get():
        return
    op = "executemany" if args[5] else "execute"
    for entry in _SQLALCHEMY.entries:
        if entry.hook is not None:
            entry.hook(entry.spec, f"sqlalchemy {op}")
    # The driver call that follows is this same query: its layer must not call the hook again.
    _CLAIMED.set(_CLAIMED.get() | {"db"})


def _sqlalchemy_done(*args: Any) -> None:
    claimed = _CLAIMED.get()
    if "db" in claimed:
        _CLAIMED.set(claimed - {"db"})


def _install_sqlalchemy(spec: str, hook: Hook, undo: contextlib.ExitStack) -> None:
    if _optional_module("sqlalchemy") is None:
        return
    entry = _Entry(spec=spec, hook=hook, family="db")
    undo.callback(_add_to_channel(_SQLALCHEMY, entry))


# --------------------------------------------------------------------------- public API


def _normalise(spec: str) -> str:
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"dependency point must be a string, got {spec!r}", key="at", value=spec
        )
    point = spec.strip()
    if not point:
        raise ConfigurationError(
            f"dependency point is empty: use one of the builtin points "
            f"({', '.join(BUILTIN_POINTS)}) or an import path like {_EXAMPLE}",
            key="at",
            value=spec,
        )
    if "." in point or ":" in point:
        return point
    name = point.lower()
    if name in BUILTIN_POINTS:
        return name
    hint = _did_you_mean(name, list(BUILTIN_POINTS))
    choices = ", ".join(repr(p) for p in BUILTIN_POINTS)
    raise ConfigurationError(
        f"unknown dependency point {spec!r}{hint} Valid points: {choices}, "
        f"or an import path like {_EXAMPLE}",
        key="at",
        value=spec,
    )


def check_point(spec: str) -> str:
    """Validate a dependency point without patching anything.

    An import path is resolved (its modules are imported) and must name a
    function or method that can be patched.

    >>> check_point(" DB ")
    'db'

    Args:
        spec: a builtin point (``"db"``, ``"http"``, ``"redis"``) or an import
            path (``"pkg.mod.func"``, ``"pkg.mod.Class.method"``,
            ``"pkg.mod:Class.method"``).

    Returns:
        The normalised point: a builtin in lower case, an import path stripped
        of surrounding blanks.

    Raises:
        ConfigurationError: (``key="at"``) naming the point and what is wrong:
            an unknown builtin (listing them, with a suggestion), a module that
            cannot be imported (naming it), a missing attribute (naming it, with
            a suggestion), something that is not callable or cannot be patched.
    """
    point = _normalise(spec)
    if point not in BUILTIN_POINTS:
        _resolve(point)
    return point


def patch_point(stack: contextlib.ExitStack, spec: str, hook: Hook) -> None:
    """Make calls through a dependency point call ``hook`` first, until ``stack`` closes.

    Closing ``stack`` restores every patched attribute and listener exactly,
    also when the test failed. Patching the same point twice on one stack with
    the same hook does nothing the second time; several stacks may patch the
    same point, and each stack's hook is called.

    Args:
        stack: the exit stack that undoes the patch.
        spec: the point, as for :func:`check_point`; ``hook`` receives it as given.
        hook: called as ``hook(spec, detail)`` before each real call; it raises to
            inject a fault, or returns to let the call proceed.

    Raises:
        ConfigurationError: (``key="at"``) for an invalid point, or a point
            already patched on ``stack`` with a different hook.
    """
    point = check_point(spec)
    with _LOCK:
        patched = _STACKS.setdefault(stack, {})
        previous = patched.get(point)
        if previous is not None:
            if previous is hook or previous == hook:
                return
            raise ConfigurationError(
                f"dependency point {spec!r} is already patched on this stack with another "
                f"hook ({previous!r}); one stack takes one hook per point",
                key="at",
                value=spec,
            )
        with contextlib.ExitStack() as undo:
            if point in BUILTIN_POINTS:
                _install_builtin(spec, point, hook, undo)
            else:
                target = _resolve(point)
                entry = _Entry(spec=spec, hook=hook, describe=_constant(target.path))
                undo.callback(_add_to_attribute(target.owner, target.name, entry))
            patched[point] = hook
            undo.callback(patched.pop, point, None)
            stack.push(undo.pop_all())


def _constant(detail: str) -> _Describe:
    def describe(op: str, args: _Args, kwargs: _Kwargs) -> str:
        return detail

    return describe

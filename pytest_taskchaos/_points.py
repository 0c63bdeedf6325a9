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
import importlib
import importlib.util
import pkgutil
import sys
import types
import weakref
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from pytest_taskchaos._points_builtin import install_builtin
from pytest_taskchaos._points_channel import (
    LOCK,
    Args,
    Describe,
    Entry,
    Hook,
    Kwargs,
    add_to_attribute,
    qualname,
    raw_member,
    wrapping,
)
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

# Hook is defined beside the channels whose entries hold hooks, and is part of this API.
__all__ = ["BUILTIN_POINTS", "Hook", "check_point", "patch_point"]

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

_STACKS: weakref.WeakKeyDictionary[contextlib.ExitStack, dict[str, Hook]] = (
    weakref.WeakKeyDictionary()
)
"""The hook each point was patched with, per exit stack (one hook per point and stack)."""


# --------------------------------------------------------------------------- import paths


@dataclass(frozen=True, slots=True)
class _Target:
    """A resolved import path: patch ``owner.name``."""

    owner: object
    name: str
    path: str


def _error(spec: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"dependency point {spec!r}: {problem}", key="at", value=spec)


def _describe_owner(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__!r}"
    if isinstance(obj, type):
        return f"class {qualname(obj)!r}"
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
            f"cannot patch {path!r}: {qualname(owner)!r} is a built-in (C) type whose "
            f"attributes cannot be replaced; patch the Python function that makes the call, "
            f"or use a builtin point ({', '.join(BUILTIN_POINTS)})",
        )
    if not isinstance(owner, type | types.ModuleType) and not isinstance(
        getattr(owner, "__dict__", None), dict
    ):
        raise _error(spec, f"cannot patch {path!r}: its owner has no instance dictionary")
    member = raw_member(owner, name)
    if member is None:
        raise _error(
            spec,
            f"cannot patch {path!r}: it is not defined in the body of {qualname(owner)!r} or "
            f"its bases (it comes from a metaclass or __getattr__)",
        )
    if wrapping(member[1], on_class=isinstance(owner, type)) is None:
        raise _error(
            spec,
            f"cannot patch {path!r}: it is a {type(member[1]).__name__}, which cannot be "
            f"wrapped; patch the function it calls",
        )


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
    with LOCK:
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
                install_builtin(spec, point, hook, undo)
            else:
                target = _resolve(point)
                entry = Entry(spec=spec, hook=hook, describe=_constant(target.path))
                undo.callback(add_to_attribute(target.owner, target.name, entry))
            patched[point] = hook
            undo.callback(patched.pop, point, None)
            stack.push(undo.pop_all())


def _constant(detail: str) -> Describe:
    def describe(op: str, args: Args, kwargs: Kwargs) -> str:
        return detail

    return describe

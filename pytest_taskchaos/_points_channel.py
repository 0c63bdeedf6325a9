"""Patch channels: the shared wrappers through which a dependency call reaches its hooks.

A :class:`Channel` holds the hooks registered on one patch. The first entry
installs the patch (wraps a method or function so every call goes through
:func:`call_hooked`) and the last one removed restores the original exactly;
every patch stack naming the same attribute shares one channel. Hooks of the
same builtin family (``"db"``, ``"http"``, ``"redis"``) run once per logical
call, however many patched layers it passes through (:data:`IN_CALL`,
:data:`CLAIMED`).

This is the machinery behind :mod:`pytest_taskchaos._points`, which holds the
public API; the library patchers are in :mod:`pytest_taskchaos._points_builtin`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import types
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from resilience.errors import ConfigurationError

__all__ = [
    "CLAIMED",
    "IN_CALL",
    "LOCK",
    "Args",
    "Channel",
    "Describe",
    "Entry",
    "Hook",
    "Kwargs",
    "add_to_attribute",
    "add_to_channel",
    "call_hooked",
    "qualname",
    "raw_member",
    "wrapping",
]

Hook = Callable[[str, str], None]
"""``hook(spec, detail)``: ``spec`` is the point as given to
:func:`~pytest_taskchaos._points.patch_point`
(``"db"``, ``"http"``, ``"redis"`` or the import path); ``detail`` says what call
reached it (``"sqlite3 execute"``, ``"requests GET http://x/y"``, ``"redis SET"``,
``"myapp.payments.charge"``). The hook raises to inject, returns to let the call through."""

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
Describe = Callable[[str, Args, Kwargs], str]
_Rewrite = Callable[[Args, Kwargs], tuple[Args, Kwargs]]
_Wrapping = Literal["plain", "static", "class", "callable"]
_BINDING_TYPES = (types.FunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)
"""Class members that bind to the instance the way a plain function does."""


# --------------------------------------------------------------------------- channels


@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    """One registration on a channel: a hook to call, or arguments to rewrite."""

    spec: str
    hook: Hook | None = None
    family: str | None = None
    """The builtin point it belongs to (``None`` for import paths): one call per family."""
    describe: Describe | None = None
    rewrite: _Rewrite | None = None


class Channel:
    """The entries sharing one patch; the patch exists while the channel has entries.

    Every patch stack that names the same attribute shares its channel, so the
    attribute is wrapped once and restored when the last stack closes, whatever
    the order in which the stacks close.
    """

    __slots__ = ("_setup", "_undo", "entries", "families")

    def __init__(self, setup: Callable[[Channel], Callable[[], None]]) -> None:
        self._setup = setup
        self._undo: Callable[[], None] | None = None
        # Replaced, never mutated: wrappers read them without taking the lock.
        self.entries: tuple[Entry, ...] = ()
        self.families: frozenset[str] = frozenset()

    def add(self, entry: Entry) -> None:
        """Register ``entry``, installing the patch first if it is the first one."""
        if not self.entries:
            self._undo = self._setup(self)
        self._set((*self.entries, entry))

    def discard(self, entry: Entry) -> bool:
        """Unregister ``entry``; remove the patch and return True when none is left."""
        self._set(tuple(e for e in self.entries if e is not entry))
        if self.entries:
            return False
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()
        return True

    def _set(self, entries: tuple[Entry, ...]) -> None:
        self.families = frozenset(e.family for e in entries if e.family is not None)
        self.entries = entries


LOCK = threading.RLock()
"""Guards registrations on channels and the points modules' shared caches."""
_ATTRIBUTE_CHANNELS: dict[tuple[int, str], Channel] = {}

IN_CALL: ContextVar[frozenset[str]] = ContextVar("taskchaos_points_in_call", default=frozenset())
"""Builtin families with a hooked call in progress: layers inside it do not call the hook again."""
CLAIMED: ContextVar[frozenset[str]] = ContextVar("taskchaos_points_claimed", default=frozenset())
"""Families whose next driver call was already announced (by SQLAlchemy's event)."""


def _enter(
    channel: Channel, op: str, args: Args, kwargs: Kwargs
) -> tuple[Args, Kwargs, frozenset[str] | None]:
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
    in_call = IN_CALL.get()
    claimed = CLAIMED.get()
    taken = (families & claimed) - in_call
    if taken:
        CLAIMED.set(claimed - taken)
    skip = families & (in_call | claimed)
    for entry in entries:
        if entry.rewrite is not None:
            args, kwargs = entry.rewrite(args, kwargs)
        elif entry.hook is not None and entry.family not in skip:
            entry.hook(entry.spec, _detail(entry, op, args, kwargs))
    new = families - in_call
    if not new:
        return args, kwargs, None
    IN_CALL.set(in_call | new)
    return args, kwargs, in_call


def _detail(entry: Entry, op: str, args: Args, kwargs: Kwargs) -> str:
    if entry.describe is None:
        return entry.spec
    try:
        return entry.describe(op, args, kwargs)
    except Exception:  # noqa: BLE001 - an odd call shape must not fail the user's call
        return f"{entry.spec} {op}"


def call_hooked(
    channel: Channel, op: str, func: Callable[..., Any], args: Args, kwargs: Kwargs
) -> Any:
    """Call the channel's hooks (which may raise), then ``func(*args, **kwargs)``."""
    args, kwargs, previous = _enter(channel, op, args, kwargs)
    if previous is None:
        return func(*args, **kwargs)
    try:
        return func(*args, **kwargs)
    finally:
        IN_CALL.set(previous)


async def _acall(
    channel: Channel, op: str, func: Callable[..., Any], args: Args, kwargs: Kwargs
) -> Any:
    args, kwargs, previous = _enter(channel, op, args, kwargs)
    try:
        return await func(*args, **kwargs)
    finally:
        if previous is not None:
            IN_CALL.set(previous)


def _wrap(channel: Channel, op: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A function calling the channel's hooks, then ``func`` (a coroutine function for one)."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await _acall(channel, op, func, args, kwargs)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call_hooked(channel, op, func, args, kwargs)

    return wrapper


# --------------------------------------------------------------------------- attributes


def raw_member(owner: object, name: str) -> tuple[bool, object] | None:
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


def wrapping(raw: object, *, on_class: bool) -> _Wrapping | None:
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


def _replacement(channel: Channel, name: str, raw: object, how: _Wrapping) -> object:
    if how == "static":
        return staticmethod(_wrap(channel, name, raw.__func__))  # type: ignore[attr-defined]
    if how == "class":
        return classmethod(_wrap(channel, name, raw.__func__))  # type: ignore[attr-defined]
    wrapper = _wrap(channel, name, raw)  # type: ignore[arg-type]
    return staticmethod(wrapper) if how == "callable" else wrapper


def _install_attribute(owner: object, name: str) -> Callable[[Channel], Callable[[], None]]:
    def setup(channel: Channel) -> Callable[[], None]:
        member = raw_member(owner, name)
        how = None if member is None else wrapping(member[1], on_class=isinstance(owner, type))
        if member is None or how is None:
            raise ConfigurationError(
                f"{qualname(owner)}.{name} cannot be wrapped", key="at", value=name
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


def add_to_attribute(owner: object, name: str, entry: Entry) -> Callable[[], None]:
    """Register ``entry`` on ``owner.name`` (wrapping it if needed); return the undo."""
    key = (id(owner), name)  # the channel holds `owner`, so the id stays its own
    with LOCK:
        channel = _ATTRIBUTE_CHANNELS.get(key)
        if channel is None:
            channel = Channel(_install_attribute(owner, name))
        channel.add(entry)
        _ATTRIBUTE_CHANNELS[key] = channel

    def remove() -> None:
        with LOCK:
            if channel.discard(entry) and _ATTRIBUTE_CHANNELS.get(key) is channel:
                del _ATTRIBUTE_CHANNELS[key]

    return remove


def add_to_channel(channel: Channel, entry: Entry) -> Callable[[], None]:
    """Register ``entry`` on ``channel`` (installing its patch if needed); return the undo."""
    with LOCK:
        channel.add(entry)

    def remove() -> None:
        with LOCK:
            channel.discard(entry)

    return remove


def qualname(obj: object) -> str:
    """``obj``'s dotted name, for messages."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"

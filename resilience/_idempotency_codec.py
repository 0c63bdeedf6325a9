"""How calls and results become stored text: idempotency keys, fingerprints, results.

A key names a request; the fingerprint names its payload. Both are computed from
the canonical JSON of the call's arguments (``resilience._serialization``), never
from Python's per-process ``hash()`` nor from reprs holding memory addresses, so
every worker on every machine derives the same key for the same call. Keys too
long for the backends are hashed, never cut. Results are stored as JSON text; a
result JSON cannot hold is stored as a tagged repr, never an error.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from resilience._serialization import REPR_TAG, to_jsonable
from resilience.errors import ConfigurationError
from resilience.storage.records import MAX_KEY_LENGTH

__all__ = [
    "KeySpec",
    "decode_result",
    "encode_result",
    "fit_key",
    "idempotency_key",
    "payload_fingerprint",
]

_logger = logging.getLogger("resilience.idempotency")

KeySpec = str | Callable[..., object]
"""What ``key=`` accepts: a template string or a callable receiving the call's arguments."""

_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")
# A hashed key keeps a readable prefix, then "#" and the 64 hex digits of the digest.
_HASHED_PREFIX: Final = MAX_KEY_LENGTH - 64 - 1
# What json.dumps builds on every call with these options, built once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_RESULT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_TAGGED = json.JSONEncoder(separators=(",", ":"))

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def payload_fingerprint(
    args: Sequence[object] = (),
    kwargs: Mapping[str, object] | None = None,
    *,
    func: Callable[..., object] | None = None,
) -> str:
    """SHA-256 (hex) of the canonical JSON of a call's arguments, stored with its key.

    With ``func`` the arguments are first bound to its signature, so ``f(1, b=2)``
    and ``f(1, 2)`` give the same fingerprint. Objects whose repr holds a memory
    address count by their type only, so the fingerprint is the same in every process.

    Args:
        args: the positional arguments.
        kwargs: the keyword arguments.
        func: the function called, to normalise how arguments were passed.

    Returns:
        64 hex characters.

    Raises:
        TypeError: the arguments do not fit ``func``'s signature.
    """
    data, _ = _stable_payload(args, kwargs, None if func is None else Binder(func))
    return _sha256(data)


def idempotency_key(
    task_name: str,
    args: Sequence[object] = (),
    kwargs: Mapping[str, object] | None = None,
    *,
    key: KeySpec | None = None,
    func: Callable[..., object] | None = None,
) -> str:
    """The idempotency key of one call.

    Args:
        task_name: the task's name; for functions, ``module.qualname`` (two functions
            of the same name in different modules must not share keys).
        args: the positional arguments.
        kwargs: the keyword arguments.
        key: ``None`` for ``"<task_name>:<sha256 of the arguments>"``; a template
            formatted with the arguments (``"charge:{order_id}"``; ``{0}`` is the first
            positional argument, ``{task_name}`` the task's name); or a callable called
            with the arguments, returning a ``str`` or ``int``.
        func: the function called: binds positional arguments to their names for a
            template, and normalises how arguments were passed for the default key.

    Returns:
        The key; keys longer than ``MAX_KEY_LENGTH`` become a readable prefix plus
        the SHA-256 of the whole key (distinct keys stay distinct).

    Raises:
        ConfigurationError: a template names a field the call lacks (``key`` is the
            field), a callable returned something else than a non-empty str or int,
            or (default key) an argument has no stable representation across
            processes (its repr holds a memory address: pass ``key=``).
        TypeError: the arguments do not fit ``func``'s signature.
    """
    binder = None if func is None else Binder(func)
    derived, _ = call_key(task_name, args, {} if kwargs is None else kwargs, key=key, binder=binder)
    return derived


def call_key(
    task_name: str,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    key: KeySpec | None,
    binder: Binder | None,
) -> tuple[str, str | None]:
    """:func:`idempotency_key` with a prepared binder, and the fingerprint when known.

    Returns:
        ``(key, fingerprint)``: the fingerprint is the default key's own digest (the
        same canonical payload :func:`payload_fingerprint` hashes), else ``None``.
    """
    fingerprint = None
    if key is None:
        data, opaque = _stable_payload(args, kwargs, binder)
        if opaque:
            raise ConfigurationError(
                f"{task_name}: an argument has no stable representation across processes "
                f"({opaque}); pass key= (a template or a callable) to name the request",
                key="key",
                value=opaque,
            )
        fingerprint = _sha256(data)
        raw = f"{task_name}:{fingerprint}"
    elif isinstance(key, str):
        raw = _format_template(key, task_name, args, kwargs, binder)
    elif callable(key):
        value = key(*args, **kwargs)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise ConfigurationError(
                f"{task_name}: the key callable must return a non-empty str or int, got {value!r}",
                key="key",
                value=value,
            )
        raw = str(value)
    else:
        raise ConfigurationError(
            f"key must be None, a template string or a callable, got {key!r}", key="key", value=key
        )
    return fit_key(raw), fingerprint


def call_fingerprint(
    args: Sequence[object], kwargs: Mapping[str, object], binder: Binder | None
) -> str:
    """:func:`payload_fingerprint` with a prepared binder."""
    data, _ = _stable_payload(args, kwargs, binder)
    return _sha256(data)


def fit_key(raw: str) -> str:
    """``raw`` if it fits the backends, else a readable prefix plus its SHA-256.

    Raises:
        ConfigurationError: ``raw`` is empty.
    """
    if not raw:
        raise ConfigurationError("an idempotency key must not be empty", key="key", value=raw)
    if len(raw) <= MAX_KEY_LENGTH:
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{raw[:_HASHED_PREFIX]}#{digest}"


class Binder:
    """Binds calls to one function's signature, as ``inspect.signature(func).bind`` does.

    The signature is read at the first call that needs it (an error reading it is
    raised then, and again at the next call). Calls it maps trivially (positional
    arguments only, or keywords on a function of plain parameters) are bound
    without building a ``BoundArguments``; every other call, and every call that
    does not fit, goes through ``Signature.bind`` (which raises its ``TypeError``).
    """

    __slots__ = ("_func", "_shape")

    def __init__(self, func: Callable[..., object]) -> None:
        self._func = func
        self._shape: _Shape | None = None

    def bind(
        self, args: Sequence[object], kwargs: Mapping[str, object]
    ) -> tuple[tuple[object, ...], dict[str, object]]:
        """``(bound.args, bound.kwargs)`` of the call.

        Raises:
            TypeError: the arguments do not fit the signature.
        """
        shape = self._shape or self._read()
        arguments = shape.trivial(args, kwargs)
        if arguments is None:
            bound = shape.signature.bind(*args, **kwargs)
            return bound.args, bound.kwargs
        return arguments

    def fields(self, args: Sequence[object], kwargs: Mapping[str, object]) -> dict[str, object]:
        """The keywords given, then every bound argument by name (``**kwargs`` spread out).

        Raises:
            TypeError: the arguments do not fit the signature.
        """
        shape = self._shape or self._read()
        fields: dict[str, object] = dict(kwargs)
        if shape.trivial(args, kwargs) is not None:
            names = shape.positional
            fields.update(zip(names, args, strict=False))
            if shape.varargs is not None and len(args) > len(names):
                fields[shape.varargs] = tuple(args[len(names) :])
            return fields
        bound = shape.signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            if bound.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                fields.update(value)
            else:
                fields[name] = value
        return fields

    def _read(self) -> _Shape:
        shape = self._shape = _Shape(inspect.signature(self._func))
        return shape


class _Shape:
    """What binding needs to know of one signature."""

    __slots__ = (
        "fewest",
        "most",
        "names",
        "plain",
        "positional",
        "required",
        "signature",
        "varargs",
    )

    def __init__(self, signature: inspect.Signature) -> None:
        params = tuple(signature.parameters.values())
        positional = [p for p in params if p.kind in _POSITIONAL]
        varargs = [p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL]
        self.signature = signature
        self.positional = tuple(p.name for p in positional)
        self.varargs = varargs[0] if varargs else None
        self.fewest: int | None = sum(1 for p in positional if p.default is p.empty)
        if any(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty for p in params):
            self.fewest = None  # a required keyword-only parameter: no call without keywords fits
        self.most = None if varargs else len(positional)
        self.plain = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        self.names = tuple(p.name for p in params)
        self.required = tuple(p.default is p.empty for p in params)

    def trivial(
        self, args: Sequence[object], kwargs: Mapping[str, object]
    ) -> tuple[tuple[object, ...], dict[str, object]] | None:
        """``(bound.args, bound.kwargs)`` when bind() needs no bookkeeping, else ``None``.

        Positional arguments only, filling the required positional parameters and no
        more than there are: bind() keeps them all positional. Keywords on plain
        parameters: the positional arguments, then the parameters given by keyword up
        to the first one left to its default, stay positional; the later ones are
        keywords. Anything else (bind() may raise) is left to bind().
        """
        count = len(args)
        if not kwargs:
            fewest, most = self.fewest, self.most
            if fewest is not None and fewest <= count and (most is None or count <= most):
                return tuple(args), {}
            return None
        names = self.names
        if not self.plain or count > len(names):
            return None
        positional = list(args)
        named: dict[str, object] = {}
        used = 0
        gap = False
        for index in range(count, len(names)):
            name = names[index]
            if name in kwargs:
                used += 1
                if gap:
                    named[name] = kwargs[name]
                else:
                    positional.append(kwargs[name])
            elif self.required[index]:
                return None
            else:
                gap = True
        if used != len(kwargs):  # an unknown keyword, or one naming a positional argument
            return None
        return tuple(positional), named


def _stable_payload(
    args: Sequence[object], kwargs: Mapping[str, object] | None, binder: Binder | None
) -> tuple[Any, str | None]:
    named_in = {} if kwargs is None else kwargs
    if binder is None:
        positional, named = tuple(args), dict(named_in)
    else:
        positional, named = binder.bind(args, named_in)
    if _all_plain(positional, named):
        # What to_jsonable would build: scalars of these exact types are kept as they are.
        return [list(positional), named], None
    data, lossy = to_jsonable([list(positional), named])
    if not lossy:
        return data, None
    opaque: list[str] = []

    def scrub(value: Any) -> Any:
        if isinstance(value, list):
            return [scrub(item) for item in value]
        if isinstance(value, dict):
            text = value.get(REPR_TAG)
            if isinstance(text, str) and _ADDRESS.search(text):
                # The address differs in every process: key on the type, never the repr.
                opaque.append(text)
                return {"__type__": value.get("__type__")}
            return {name: scrub(item) for name, item in value.items()}
        return value

    data = scrub(data)
    return data, (opaque[0] if opaque else None)


_PLAIN_TYPES: Final = frozenset({str, int, bool, type(None)})


def _all_plain(positional: tuple[object, ...], named: dict[str, object]) -> bool:
    plain = _PLAIN_TYPES
    for value in positional:
        if type(value) not in plain:
            return False
    for name, value in named.items():
        if type(name) is not str or type(value) not in plain:
            return False
    return True


def _sha256(data: Any) -> str:
    text = _CANONICAL.encode(data)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _MissingField(Exception):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class _Formatter(string.Formatter):
    """``str.format`` that reports which top-level field is missing, positional or named."""

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            if key >= len(args):
                raise _MissingField(str(key))
            return args[key]
        if key not in kwargs:
            raise _MissingField(key)
        return kwargs[key]


def _format_template(
    template: str,
    task_name: str,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    binder: Binder | None,
) -> str:
    fields = dict(kwargs) if binder is None else binder.fields(args, kwargs)
    fields.setdefault("task_name", task_name)
    try:
        return _Formatter().vformat(template, tuple(args), fields)
    except _MissingField as exc:
        raise ConfigurationError(
            f"{task_name}: key template {template!r} names {exc.field!r}, "
            f"which this call does not have (fields: {', '.join(sorted(fields))})",
            key=exc.field,
            value=template,
        ) from None
    except (ValueError, AttributeError, LookupError) as exc:
        raise ConfigurationError(
            f"{task_name}: key template {template!r} is malformed: {exc}",
            key="key",
            value=template,
        ) from None


def encode_result(result: object, key: str) -> str:
    """JSON text of ``result``; never raises (the work it describes is already done).

    A value JSON cannot hold is stored as a tagged repr, with a warning logged.
    """
    if result is None:
        return "null"
    data, lossy = to_jsonable(result)
    if lossy:
        _logger.warning(
            "idempotency key %r: the result (%s) is not plain JSON; duplicates will get a "
            "tagged repr of it",
            key,
            type(result).__qualname__,
        )
    try:
        # ASCII escapes keep lone surrogates storable in every backend's text column.
        return _RESULT.encode(data)
    except ValueError as exc:  # an int beyond the interpreter's digit limit, say
        _logger.warning("idempotency key %r: the result cannot be encoded (%s)", key, exc)
        kind = type(result)
        tagged = {REPR_TAG: "<unencodable>", "__type__": f"{kind.__module__}.{kind.__qualname__}"}
        return _TAGGED.encode(tagged)


def decode_result(text: str | None) -> Any:
    """The stored result, decoded from JSON (``None`` when nothing was stored)."""
    return None if text is None else json.loads(text)

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
from typing import Any, Final, cast

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
    data, _ = _stable_payload(args, kwargs, func)
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
    kwargs = {} if kwargs is None else kwargs
    if key is None:
        data, opaque = _stable_payload(args, kwargs, func)
        if opaque:
            raise ConfigurationError(
                f"{task_name}: an argument has no stable representation across processes "
                f"({opaque}); pass key= (a template or a callable) to name the request",
                key="key",
                value=opaque,
            )
        raw = f"{task_name}:{_sha256(data)}"
    elif isinstance(key, str):
        raw = _format_template(key, task_name, args, kwargs, func)
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
    return fit_key(raw)


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


def _bind(
    args: Sequence[object], kwargs: Mapping[str, object], func: Callable[..., object] | None
) -> tuple[tuple[object, ...], dict[str, object]]:
    if func is None:
        return tuple(args), dict(kwargs)
    bound = inspect.signature(func).bind(*args, **kwargs)
    return bound.args, bound.kwargs


def _stable_payload(
    args: Sequence[object], kwargs: Mapping[str, object] | None, func: Callable[..., object] | None
) -> tuple[Any, str | None]:
    positional, named = _bind(args, {} if kwargs is None else kwargs, func)
    data, lossy = to_jsonable([list(positional), named])
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

    if lossy:
        data = scrub(data)
    return data, (opaque[0] if opaque else None)


def _sha256(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
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
    func: Callable[..., object] | None,
) -> str:
    fields: dict[str, object] = dict(kwargs)
    if func is not None:
        bound = inspect.signature(func).bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            kind = bound.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                fields.update(cast("dict[str, object]", value))
            else:
                fields[name] = value
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
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # an int beyond the interpreter's digit limit, say
        _logger.warning("idempotency key %r: the result cannot be encoded (%s)", key, exc)
        kind = type(result)
        tagged = {REPR_TAG: "<unencodable>", "__type__": f"{kind.__module__}.{kind.__qualname__}"}
        return json.dumps(tagged, separators=(",", ":"))


def decode_result(text: str | None) -> Any:
    """The stored result, decoded from JSON (``None`` when nothing was stored)."""
    return None if text is None else json.loads(text)

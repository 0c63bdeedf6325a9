"""JSON in and out of storage: canonical text, fingerprints, and lossless-or-flagged encoding.

Nothing stored by `resilience` is ever pickled. Values that JSON cannot hold
(a ``datetime``, a ``Decimal``, a model instance) are stored as a tagged repr,
``{"__repr__": "Decimal('9.99')", "__type__": "decimal.Decimal"}``, and the caller
is told, so the record says its payload is not exactly replayable.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, cast

__all__ = ["REPR_TAG", "canonical_json", "fingerprint", "to_jsonable"]

REPR_TAG = "__repr__"
"""The key marking a value that JSON could not hold and was stored as its repr."""

_MAX_DEPTH = 64
_isfinite = math.isfinite
# What json.dumps builds on every call with these options, built once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_jsonable(value: object) -> tuple[Any, bool]:
    """Turn ``value`` into JSON-compatible data, tagging what JSON cannot hold.

    Dict keys become strings (non-string keys are tagged too), tuples become
    lists, non-finite floats and unknown objects become tagged reprs. Cycles and
    nesting deeper than 64 levels are cut with a tagged marker, never an error.

    Args:
        value: any Python value.

    Returns:
        ``(data, lossy)``: JSON-compatible data, and whether anything was tagged.
    """
    lossy = False
    # The containers being walked (the path from the root): one met again is a cycle.
    ancestors: set[int] = set()

    def tag(obj: object, text: str | None = None) -> dict[str, str]:
        nonlocal lossy
        lossy = True
        kind = type(obj)
        if text is None:
            try:
                text = repr(obj)
            except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not lose the record
                text = f"<unrepresentable {kind.__qualname__}: {type(exc).__name__}>"
        return {REPR_TAG: text[:1000], "__type__": f"{kind.__module__}.{kind.__qualname__}"}

    def walk(obj: object, depth: int) -> Any:
        nonlocal lossy
        kind = type(obj)
        # Exact types first: the common case, without the isinstance chain.
        if kind is str or kind is int or kind is bool or obj is None:
            return obj
        if kind is not list and kind is not dict and kind is not tuple:
            if isinstance(obj, bool | int | str):
                return obj
            if isinstance(obj, float):
                return obj if _isfinite(obj) else tag(obj)
            if not isinstance(obj, dict | list | tuple):
                return tag(obj)
        ident = id(obj)
        if depth >= _MAX_DEPTH or ident in ancestors:
            return tag(obj, "<cycle>" if ident in ancestors else "<nested too deep>")
        ancestors.add(ident)
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for key, item in obj.items():
                if isinstance(key, str):
                    name = key
                else:  # JSON keys are strings: 1 and "1" would collide on the way back
                    name = json.dumps(walk(key, depth + 1), sort_keys=True)
                    lossy = True
                out[name] = walk(item, depth + 1)
            result: Any = out
        else:
            result = [walk(item, depth + 1) for item in cast("list[object]", obj)]
        ancestors.discard(ident)
        return result

    data = walk(value, 0)
    return data, lossy


def canonical_json(value: object) -> str:
    """Compact JSON with sorted keys: equal data always gives equal text.

    Values JSON cannot hold are tagged as in :func:`to_jsonable`.
    """
    data, _ = to_jsonable(value)
    return _CANONICAL.encode(data)


def fingerprint(value: object) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8", "surrogatepass")).hexdigest()

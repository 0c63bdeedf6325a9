"""Redaction of secrets before a dead letter is stored, and size caps with explicit markers.

Two passes, in this order:

1. **Keys.** In kwargs and in every dict nested anywhere in args or kwargs, the
   value of a key that matches one of :attr:`Redaction.keys` becomes the
   replacement. A key matches when a configured name is a substring of the key
   after normalisation (case folded, camelCase split, ``-``/``.``/space turned
   into ``_``): ``password`` matches ``db_password`` and ``newPassword``,
   ``api_key`` matches ``X-Api-Key``. Substring matching errs on the side of
   hiding: ``session`` also hides ``session_count``.
2. **Values and patterns.** Every value hidden in pass 1 (each of its scalar
   leaves, when at least :attr:`Redaction.min_secret_length` characters long) is
   scrubbed wherever else it appears: strings in args and kwargs, the exception
   message and the traceback. Then :attr:`Redaction.patterns` catch secret
   shapes in text that no key announced (``Bearer <token>``, ``password=...``,
   ``Authorization: ...``, credentials in URLs). A pattern with a group named
   ``secret`` replaces only that group; otherwise the whole match is replaced.

Truncation (:func:`truncate_text`, :func:`truncate_data`) keeps the head and the
tail of a text and marks the cut with ``[truncated N bytes]``; data keeps its
shape by shortening its longest strings first, and only when that cannot fit is
it replaced by a marker object holding a preview. Nothing is rejected and
nothing disappears without a marker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from resilience.errors import ConfigurationError

__all__ = [
    "DEFAULT_REDACTED_KEYS",
    "DEFAULT_SECRET_PATTERNS",
    "TRUNCATED_TAG",
    "Redaction",
    "json_size",
    "truncate_data",
    "truncate_text",
]

DEFAULT_REDACTED_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "session",
    "credit_card",
    "card_number",
    "cvv",
)
"""Key names whose values are never stored (matched as substrings of normalised keys)."""

_NAME_SHAPES = r"[A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|cvv)[A-Za-z0-9_.-]*"  # noqa: E501 - one alternation reads best on one line

DEFAULT_SECRET_PATTERNS: tuple[str, ...] = (
    # "Bearer eyJhbGciOi..." in headers, logs and messages.
    r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]+=*)",
    # "Authorization: Basic dXNlcjpwYXNz" / "Cookie: sid=..." up to the end of the line or quote.
    r"(?i)\b(?:proxy-)?(?:authorization|cookie|set-cookie)\b['\"]?\s*[:=]\s*['\"]?(?P<secret>[^'\"\r\n]+)",
    # password=hunter2, 'api_key': 'abc', token: "xyz", ?access_token=...&
    r"(?i)['\"]?\b"
    + _NAME_SHAPES
    + r"\b['\"]?\s*[:=]\s*(?P<secret>'[^']*'|\"[^\"]*\"|[^\s,;&'\")}\]]+)",
    # postgresql://user:password@host
    r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/@]*:(?P<secret>[^\s/@]+)@",
)
"""Secret shapes scrubbed from every stored text, whatever the keys."""

TRUNCATED_TAG = "__truncated__"
"""The key of the marker object that replaces args or kwargs too large to keep in shape."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s.\-]+")
_CARD = re.compile(r"(?<![\d-])[3-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
# Every card match starts with these four digits: a text without them is left as it is,
# and this search has a literal-class prefix the engine scans fast (the lookbehind has none).
_CARD_GATE = re.compile(r"[3-6]\d{3}")

# A gate says whether a default pattern *may* match a text: it never answers False for a
# text the pattern matches, so skipping the pattern on False changes nothing, and most texts
# (tracebacks above all) skip the backtracking scans. Arguments: the text, and the text
# lowercased when it is ASCII (else None). The lowercase test is exact only for ASCII: under
# (?i) the long s (U+017F) matches "s" and the dotless i (U+0131) matches "i", so other
# texts always run the pattern.
_Gate = Callable[[str, str | None], bool]


def _bearer_gate(text: str, folded: str | None) -> bool:
    del text
    return folded is None or "bearer" in folded


def _header_gate(text: str, folded: str | None) -> bool:
    if ":" not in text and "=" not in text:
        return False
    return folded is None or "cookie" in folded or "authorization" in folded


# The names of _NAME_SHAPES: "passw" stands for password and passwd; the *key names only
# matter in a text that holds "key" at all.
_NAME_NEEDLES = ("passw", "pwd", "secret", "token", "cvv")
_KEY_NEEDLES = tuple(
    f"{stem}{glue}key" for stem in ("api", "access", "private") for glue in ("", "_", "-")
)


def _name_gate(text: str, folded: str | None) -> bool:
    if ":" not in text and "=" not in text:
        return False
    if folded is None:
        return True
    for needle in _NAME_NEEDLES:
        if needle in folded:
            return True
    if "key" in folded:
        for needle in _KEY_NEEDLES:
            if needle in folded:
                return True
    return False


def _url_gate(text: str, folded: str | None) -> bool:
    del folded
    return "://" in text and "@" in text


# Keyed by the pattern's text, so a default pattern keeps its gate in any custom tuple.
_GATES: dict[str, _Gate] = {
    DEFAULT_SECRET_PATTERNS[0]: _bearer_gate,
    DEFAULT_SECRET_PATTERNS[1]: _header_gate,
    DEFAULT_SECRET_PATTERNS[2]: _name_gate,
    DEFAULT_SECRET_PATTERNS[3]: _url_gate,
}
# Key verdicts are remembered per Redaction: kwargs keys repeat from call to call.
_KEY_VERDICTS_MAX = 4096
_KEY_VERDICT_LENGTH = 256
# What json.dumps builds on every call with these options, built once.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Redaction:
    """Which secrets are removed from a dead letter before it is stored.

    Args:
        keys: names matched (case-insensitively, as substrings of the normalised
            key) against dict keys in kwargs and nested anywhere in args/kwargs.
        patterns: regular expressions scrubbed from every stored text; a group
            named ``secret`` limits the replacement to that group.
        replacement: what a hidden value becomes.
        min_secret_length: values hidden by key are scrubbed from other texts only
            when at least this long (a 2-character value would shred tracebacks).
        card_numbers: also scrub 13-19 digit numbers that pass the Luhn check.

    Raises:
        ConfigurationError: an empty key, a pattern that does not compile, or a
            ``min_secret_length`` below 1 (``key`` names the field).

    Example:
        >>> Redaction().apply(kwargs={"user": "ann", "password": "hunter22"}).kwargs
        {'user': 'ann', 'password': '[REDACTED]'}
    """

    keys: tuple[str, ...] = DEFAULT_REDACTED_KEYS
    patterns: tuple[str, ...] = DEFAULT_SECRET_PATTERNS
    replacement: str = "[REDACTED]"
    min_secret_length: int = 4
    card_numbers: bool = True
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _gated: tuple[tuple[re.Pattern[str], _Gate | None], ...] = field(
        init=False, repr=False, compare=False
    )
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _verdicts: dict[str, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys: object = self.keys
        if isinstance(keys, str) or not all(isinstance(k, str) and k.strip() for k in self.keys):
            raise ConfigurationError(
                f"Redaction.keys must be a tuple of non-empty strings, got {self.keys!r}",
                key="keys",
                value=self.keys,
            )
        patterns: object = self.patterns
        if isinstance(patterns, str):
            raise ConfigurationError(
                f"Redaction.patterns must be a tuple of regular expressions, got {self.patterns!r}",
                key="patterns",
                value=self.patterns,
            )
        compiled = []
        for pattern in self.patterns:
            try:
                compiled.append(re.compile(pattern))
            except (re.error, TypeError) as exc:
                raise ConfigurationError(
                    f"Redaction.patterns has an invalid regular expression {pattern!r}: {exc}",
                    key="patterns",
                    value=pattern,
                ) from exc
        if not isinstance(self.replacement, str):
            raise ConfigurationError(
                f"Redaction.replacement must be a string, got {self.replacement!r}",
                key="replacement",
                value=self.replacement,
            )
        length = self.min_secret_length
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigurationError(
                f"Redaction.min_secret_length must be an int >= 1, got {length!r}",
                key="min_secret_length",
                value=length,
            )
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "patterns", tuple(self.patterns))
        object.__setattr__(self, "_compiled", tuple(compiled))
        gated = tuple((regex, _GATES.get(regex.pattern)) for regex in compiled)
        object.__setattr__(self, "_gated", gated)
        object.__setattr__(self, "_names", tuple(_normalise(k) for k in self.keys))
        object.__setattr__(self, "_verdicts", {})

    def matches_key(self, key: str) -> bool:
        """Whether the value under dict key ``key`` is hidden."""
        verdicts = self._verdicts
        verdict = verdicts.get(key)
        if verdict is None:
            normalised = _normalise(key)
            verdict = any(name in normalised for name in self._names)
            if len(key) <= _KEY_VERDICT_LENGTH:
                if len(verdicts) >= _KEY_VERDICTS_MAX:
                    verdicts.clear()  # keys repeat; a flood of distinct ones must not grow it
                verdicts[key] = verdict
        return verdict

    def apply(
        self,
        *,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        texts: tuple[str, ...] = (),
    ) -> Redacted:
        """Redact JSON data (args, kwargs) and scrub texts (message, traceback).

        Args:
            args: positional arguments as JSON data.
            kwargs: keyword arguments as JSON data.
            texts: free texts to scrub, returned in the same order.

        Returns:
            The redacted copies and whether anything changed.
        """
        secrets: set[str] = set()
        hidden_args = self._hide(args or [], secrets)
        hidden_kwargs = self._hide(kwargs or {}, secrets)
        # Longest first, so a secret that contains another is replaced whole.
        values = sorted(
            (s for s in secrets if len(s) >= self.min_secret_length and s != self.replacement),
            key=len,
            reverse=True,
        )
        scrubbed_args = self._scrub_data(hidden_args, values)
        scrubbed_kwargs = self._scrub_data(hidden_kwargs, values)
        scrubbed_texts = tuple(self.scrub(text, values) for text in texts)
        changed = (
            scrubbed_args != (args or [])
            or scrubbed_kwargs != (kwargs or {})
            or scrubbed_texts != texts
        )
        return Redacted(
            args=scrubbed_args, kwargs=scrubbed_kwargs, texts=scrubbed_texts, changed=changed
        )

    def scrub(self, text: str, values: list[str] | tuple[str, ...] = ()) -> str:
        """``text`` with each of ``values`` and every pattern match replaced.

        Args:
            text: any text.
            values: known secret values to remove wherever they appear.

        Returns:
            The scrubbed text.
        """
        for value in values:
            if value in text:
                text = text.replace(value, self.replacement)
        folded: str | None = None
        folded_for: str | None = None
        for pattern, gate in self._gated:
            if gate is not None:
                if folded_for is not text:
                    folded_for = text
                    folded = text.lower() if text.isascii() else None
                if not gate(text, folded):
                    continue
            text = pattern.sub(self._replacer, text)
        if self.card_numbers and _CARD_GATE.search(text) is not None:
            text = _CARD.sub(self._card_replacer, text)
        return text

    def _replacer(self, match: re.Match[str]) -> str:
        if "secret" not in match.re.groupindex or match.group("secret") is None:
            return match.group(0) if match.group(0) == self.replacement else self.replacement
        start, end = match.span("secret")
        if match.string.startswith(self.replacement, start):
            return match.group(0)  # already hidden (by value, or by an earlier pattern)
        whole = match.group(0)
        offset = match.start(0)
        return whole[: start - offset] + self.replacement + whole[end - offset :]

    def _card_replacer(self, match: re.Match[str]) -> str:
        digits = [int(ch) for ch in match.group(0) if ch.isdigit()]
        return self.replacement if _luhn_ok(digits) else match.group(0)

    def _hide(self, data: Any, secrets: set[str]) -> Any:
        if isinstance(data, dict):
            out: dict[str, Any] = {}
            for key, value in data.items():
                if isinstance(key, str) and self.matches_key(key):
                    _collect(value, secrets)
                    out[key] = self.replacement
                else:
                    out[key] = self._hide(value, secrets)
            return out
        if isinstance(data, list):
            return [self._hide(item, secrets) for item in data]
        return data

    def _scrub_data(self, data: Any, values: list[str]) -> Any:
        if isinstance(data, str):
            return self.scrub(data, values)
        if isinstance(data, dict):
            return {key: self._scrub_data(value, values) for key, value in data.items()}
        if isinstance(data, list):
            return [self._scrub_data(item, values) for item in data]
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Redacted:
    """What :meth:`Redaction.apply` produced.

    Attributes:
        args: redacted positional arguments.
        kwargs: redacted keyword arguments.
        texts: the scrubbed texts, in the order given.
        changed: whether anything was hidden or scrubbed.
    """

    args: Any
    kwargs: Any
    texts: tuple[str, ...]
    changed: bool


def _normalise(key: str) -> str:
    return _SEPARATORS.sub("_", _CAMEL.sub("_", key)).casefold()


def _collect(value: Any, secrets: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, secrets)
    elif isinstance(value, list):
        for item in value:
            _collect(item, secrets)
    elif isinstance(value, str):
        secrets.add(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        secrets.add(str(value))


def _luhn_ok(digits: list[int]) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            doubled = digit * 2
            total += doubled - 9 if doubled > 9 else doubled
        else:
            total += digit
    return total % 10 == 0


# --------------------------------------------------------------------------- truncation


def truncate_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """Cap ``text`` at ``max_bytes`` UTF-8 bytes, keeping its head and tail.

    The cut is marked ``...[truncated N bytes]...`` (N counts the bytes removed); the
    tail is kept because the last lines of a traceback name the exception.

    Args:
        text: any text.
        max_bytes: the largest result size in UTF-8 bytes (at least 64).

    Returns:
        ``(text, truncated)``.
    """
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text, False
    # The marker's own size depends on N; reserve room for the widest N.
    marker_room = len(f"\n...[truncated {len(encoded)} bytes]...\n".encode())
    keep = max(0, max_bytes - marker_room)
    head_bytes = keep * 2 // 3
    tail_bytes = keep - head_bytes
    head = encoded[:head_bytes].decode("utf-8", "ignore")
    tail = encoded[len(encoded) - tail_bytes :].decode("utf-8", "ignore") if tail_bytes else ""
    removed = (
        len(encoded)
        - len(head.encode("utf-8", "surrogatepass"))
        - len(tail.encode("utf-8", "surrogatepass"))
    )
    return f"{head}\n...[truncated {removed} bytes]...\n{tail}", True


def json_size(data: Any) -> int:
    """The size in UTF-8 bytes of ``data`` as stored (compact JSON)."""
    return len(_COMPACT.encode(data).encode("utf-8", "surrogatepass"))


_MIN_LEAF = 64


def truncate_data(data: Any, max_bytes: int) -> tuple[Any, bool]:
    """Cap JSON ``data`` (a list or dict) at ``max_bytes`` of compact JSON.

    The longest strings are shortened first (each with a truncation marker), so
    the structure stays replayable-looking; when even that cannot fit (many small
    items), the whole value becomes a marker: ``[{"__truncated__": ..., "preview":
    ...}]`` for a list, ``{"__truncated__": ..., "preview": ...}`` for a dict.

    Args:
        data: JSON-compatible data.
        max_bytes: the largest compact-JSON size (at least 256).

    Returns:
        ``(data, truncated)``.
    """
    size = json_size(data)
    if size <= max_bytes:
        return data, False
    longest = _longest_string(data)
    if longest > _MIN_LEAF:
        # Binary search for the largest per-string cap that fits.
        low, high = _MIN_LEAF, longest
        best: Any = None
        while low <= high:
            middle = (low + high) // 2
            candidate = _cap_strings(data, middle)
            if json_size(candidate) <= max_bytes:
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        if best is not None:
            return best, True
    marker = f"{size} bytes of JSON exceeded the {max_bytes}-byte limit"
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    preview_room = max(0, max_bytes - len(marker.encode()) - 64)
    preview, _ = truncate_text(text, max(preview_room, 64))
    replacement: dict[str, Any] = {TRUNCATED_TAG: marker, "preview": preview}
    shaped: Any = [replacement] if isinstance(data, list) else replacement
    # Escaping can make the preview's JSON longer than its text: shrink until it fits.
    while json_size(shaped) > max_bytes and replacement["preview"]:
        replacement["preview"] = replacement["preview"][: len(replacement["preview"]) // 2]
    return shaped, True


def _longest_string(data: Any) -> int:
    if isinstance(data, str):
        return len(data.encode("utf-8", "surrogatepass"))
    if isinstance(data, dict):
        return max((_longest_string(v) for v in data.values()), default=0)
    if isinstance(data, list):
        return max((_longest_string(v) for v in data), default=0)
    return 0


def _cap_strings(data: Any, cap: int) -> Any:
    if isinstance(data, str):
        return truncate_text(data, cap)[0]
    if isinstance(data, dict):
        return {key: _cap_strings(value, cap) for key, value in data.items()}
    if isinstance(data, list):
        return [_cap_strings(item, cap) for item in data]
    return data

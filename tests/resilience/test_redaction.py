"""Redaction of secrets and size caps, before a dead letter is stored."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from resilience._redaction import (
    DEFAULT_REDACTED_KEYS,
    TRUNCATED_TAG,
    json_size,
    truncate_data,
    truncate_text,
)
from resilience.clock import FakeClock
from resilience.dead_letter import DeadLetterQueue, Redaction
from resilience.errors import ConfigurationError
from resilience.storage import MemoryStore

R = "[REDACTED]"


def test_default_keys_are_the_documented_list() -> None:
    """The default key list is exactly the one the issue names."""
    assert DEFAULT_REDACTED_KEYS == (
        "password", "passwd", "secret", "token", "api_key", "apikey", "authorization",
        "cookie", "session", "credit_card", "card_number", "cvv",
    )  # fmt: skip


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWORD", "db_password", "newPassword", "X-Api-Key", "apiKey",
        "accessToken", "client.secret", "Authorization", "session_id", "creditCard",
        "card-number", "CVV",
    ],
)  # fmt: skip
def test_sensitive_keys_match_after_normalisation(key: str) -> None:
    """Keys match case-insensitively as substrings, across camelCase, dashes and dots."""
    assert Redaction().matches_key(key)


@pytest.mark.parametrize("key", ["user", "amount", "order_id", "email", "pass_count"])
def test_ordinary_keys_do_not_match(key: str) -> None:
    """Keys naming no secret are kept."""
    assert not Redaction().matches_key(key)


def test_nested_keys_are_redacted_in_kwargs_and_args() -> None:
    """Sensitive keys are hidden at any depth, in kwargs and in dicts inside args."""
    result = Redaction().apply(
        args=[{"user": {"name": "ann", "password": "pw-1234"}}, [{"token": "t-5678"}]],
        kwargs={"config": {"db": {"Api-Key": "k-0000"}}, "amount": 5},
    )
    assert result.args == [{"user": {"name": "ann", "password": R}}, [{"token": R}]]
    assert result.kwargs == {"config": {"db": {"Api-Key": R}}, "amount": 5}
    assert result.changed


def test_whole_containers_under_a_sensitive_key_are_hidden() -> None:
    """A dict or list under a sensitive key is replaced whole, and its leaves scrubbed elsewhere."""
    result = Redaction().apply(
        kwargs={"session": {"id": "sess-abcdef", "n": 12345}},
        texts=("lost sess-abcdef after 12345 tries",),
    )
    assert result.kwargs == {"session": R}
    assert result.texts == (f"lost {R} after {R} tries",)


def test_hidden_values_are_scrubbed_from_args_message_and_traceback() -> None:
    """A value hidden by key is removed wherever else it appears (lesson 20)."""
    result = Redaction().apply(
        args=["login hunter2222 failed", 7],
        kwargs={"password": "hunter2222"},
        texts=("bad credentials hunter2222", 'File "x.py"\n  login("hunter2222")\n'),
    )
    assert result.args == [f"login {R} failed", 7]
    assert result.texts == (f"bad credentials {R}", f'File "x.py"\n  login("{R}")\n')


def test_short_values_are_not_scrubbed_from_other_texts() -> None:
    """Values shorter than min_secret_length are hidden under their key only."""
    result = Redaction().apply(kwargs={"cvv": "123"}, texts=("line 123, in charge",))
    assert result.kwargs == {"cvv": R}
    assert result.texts == ("line 123, in charge",)
    strict = Redaction(min_secret_length=3).apply(kwargs={"cvv": "123"}, texts=("line 123",))
    assert strict.texts == (f"line {R}",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc-def", f"Authorization: {R}"),
        ("sent Bearer abc.def to the API", f"sent Bearer {R} to the API"),
        ("password=hunter2 user=ann", f"password={R} user=ann"),
        ("{'api_key': 'abc123', 'n': 1}", f"{{'api_key': {R}, 'n': 1}}"),
        ('token: "xyz"', f"token: {R}"),
        ("GET /cb?access_token=abc&page=2", f"GET /cb?access_token={R}&page=2"),
        ("postgresql://app:s3cret@db:5432/x", f"postgresql://app:{R}@db:5432/x"),
        ("Cookie: sid=1; theme=dark", f"Cookie: {R}"),
        ("card 4111 1111 1111 1111 declined", f"card {R} declined"),
        ("card 4111-1111-1111-1112 declined", "card 4111-1111-1111-1112 declined"),
        ("at 1700000000000 ms", "at 1700000000000 ms"),
        ("in check_password(user)", "in check_password(user)"),
        (f"password={R}", f"password={R}"),
    ],
)
def test_default_patterns_scrub_secret_shapes(text: str, expected: str) -> None:
    """Bearer tokens, auth headers, key=value secrets, URL passwords and card numbers go."""
    assert Redaction().scrub(text) == expected


def test_custom_keys_patterns_and_replacement() -> None:
    """Keys, patterns (with a 'secret' group) and the replacement are configurable."""
    redaction = Redaction(
        keys=("pin",), patterns=(r"ssn (?P<secret>\d{3}-\d{2}-\d{4})", r"ACME-\w+"),
        replacement="<hidden>", card_numbers=False,
    )  # fmt: skip
    result = redaction.apply(
        kwargs={"pin": "9876", "password": "kept"},
        texts=("ssn 123-45-6789 and ACME-KEY1 and 9876 and 4111111111111111",),
    )
    assert result.kwargs == {"pin": "<hidden>", "password": "kept"}
    assert result.texts == ("ssn <hidden> and <hidden> and <hidden> and 4111111111111111",)


def test_disabled_redaction_changes_nothing() -> None:
    """No keys, no patterns and no card check: payloads are stored as given."""
    off = Redaction(keys=(), patterns=(), card_numbers=False)
    result = off.apply(kwargs={"password": "x"}, texts=("Bearer abc",))
    assert result.kwargs == {"password": "x"}
    assert result.texts == ("Bearer abc",)
    assert not result.changed


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"keys": "password"}, "keys"),
        ({"keys": ("",)}, "keys"),
        ({"patterns": ("(unclosed",)}, "patterns"),
        ({"patterns": "abc"}, "patterns"),
        ({"replacement": None}, "replacement"),
        ({"min_secret_length": 0}, "min_secret_length"),
    ],
)
def test_bad_configuration_is_rejected(options: dict[str, object], key: str) -> None:
    """Invalid Redaction fields raise ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError) as info:
        Redaction(**options)  # type: ignore[arg-type]
    assert info.value.key == key


@settings(max_examples=60, deadline=None)
@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=24),
    key=st.sampled_from(DEFAULT_REDACTED_KEYS),
    nested=st.booleans(),
)
def test_a_secret_under_a_sensitive_key_never_reaches_storage(
    secret: str, key: str, nested: bool
) -> None:
    """Property: the stored record's JSON never contains a value passed under a secret key."""
    dlq = DeadLetterQueue(MemoryStore(), clock=FakeClock(start=1_700_000_000.0))
    baseline = dlq.add(task_name="t", exc=ValueError("placeholder"), kwargs={key: "v"}).to_json()
    assume(secret not in baseline)
    kwargs = {"outer": {key: secret}} if nested else {key: secret}
    record = dlq.add(
        task_name="t",
        exc=ValueError(f"could not use {secret} for the request"),
        args=[f"prefix {secret} suffix"],
        kwargs=kwargs,
    )
    assert secret not in record.to_json()
    assert "redacted" in record.flags


# --------------------------------------------------------------------------- truncation


@settings(max_examples=80, deadline=None)
@given(text=st.text(min_size=0, max_size=3000), cap=st.integers(min_value=64, max_value=2000))
def test_truncated_text_fits_and_says_so(text: str, cap: int) -> None:
    """Property: the result fits in the cap, and is marked exactly when it was cut."""
    result, cut = truncate_text(text, cap)
    assert len(result.encode("utf-8", "surrogatepass")) <= cap
    if cut:
        assert "[truncated " in result
    else:
        assert result == text


def test_truncated_text_keeps_head_and_tail_and_counts_removed_bytes() -> None:
    """The head and the tail survive; the marker counts the bytes removed."""
    text = "HEAD" + "é" * 1000 + "TAIL"
    result, cut = truncate_text(text, 200)
    assert cut
    assert result.startswith("HEAD")
    assert result.endswith("TAIL")
    head, rest = result.split("\n...[truncated ", 1)
    removed = int(rest.split(" bytes]", 1)[0])
    tail = rest.split("...\n", 1)[1]
    assert len(head.encode()) + removed + len(tail.encode()) == len(text.encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=200),
    lambda children: (
        st.lists(children, max_size=30)
        | st.dictionaries(st.text(max_size=10), children, max_size=30)
    ),
    max_leaves=100,
)


@settings(max_examples=80, deadline=None)
@given(
    data=st.lists(json_values, max_size=20)
    | st.dictionaries(st.text(max_size=30), json_values, max_size=20),
    cap=st.integers(min_value=256, max_value=4096),
)
def test_truncated_data_fits_and_is_marked(
    data: list[object] | dict[str, object], cap: int
) -> None:
    """Property: capped args/kwargs fit in the cap, keep their type, and cuts are marked."""
    result, cut = truncate_data(data, cap)
    assert json_size(result) <= cap
    assert type(result) is type(data)
    if cut:
        text = json.dumps(result, ensure_ascii=False)
        assert "[truncated " in text or TRUNCATED_TAG in text
    else:
        assert result == data


def test_truncated_dict_becomes_a_marker_dict() -> None:
    """A kwargs dict too large to shorten becomes one marker object with a preview."""
    data = {f"k{i}": i for i in range(2000)}
    result, cut = truncate_data(data, 512)
    assert cut
    assert set(result) == {TRUNCATED_TAG, "preview"}
    assert result["preview"].startswith('{"k0":0')
    assert json_size(result) <= 512


# --------------------------------------------------------------------------- pattern gates

# Pieces that make the default patterns match, miss by a hair, or case-fold across scripts:
# under (?i) the long s (U+017F) matches "s", the dotless i (U+0131) "i", the Kelvin sign "k".
_PIECES = st.sampled_from(
    [
        *"abeiks:=@/ _-.'\"\n\t0123456789",
        "\u017f", "\u0131", "\u212a", "\u0130",
        "Bearer ", "bearer\t", "password", "PASSWD", "pwd", "secret", "token", "cvv",
        "api_key", "Api-Key", "ApiKey", "access_key", "privateKey", "key", "KeyError",
        "Authorization", "cookie", "Set-Cookie", "proxy-authorization", "://", "https://u",
        "4111 1111 1111 1111", "4111111111111111", "5500-0000-0000-0004",
    ]
)  # fmt: skip


def _ungated(redaction: Redaction) -> Redaction:
    """The same redaction with each pattern spelled differently, so no shortcut applies."""
    return dataclasses.replace(redaction, patterns=tuple(f"{p}(?:)" for p in redaction.patterns))


@settings(max_examples=600, deadline=None)
@given(
    text=st.lists(_PIECES, max_size=24).map("".join),
    values=st.lists(st.text(max_size=6), max_size=3),
    replacement=st.sampled_from([R, "password=x", "Bearer zz", "*"]),
)
def test_skipping_patterns_that_cannot_match_changes_nothing(
    text: str, values: list[str], replacement: str
) -> None:
    """Property: scrub() gives what running every default pattern on every text gives."""
    redaction = Redaction(replacement=replacement)
    assert redaction.scrub(text, values) == _ungated(redaction).scrub(text, values)


@settings(max_examples=300, deadline=None)
@given(text=st.lists(_PIECES, max_size=24).map("".join))
def test_card_numbers_always_contain_the_cheap_prefix(text: str) -> None:
    """Property: every card-number match holds the four-digit run the quick search looks for."""
    from resilience._redaction import _CARD, _CARD_GATE

    if _CARD.search(text):
        assert _CARD_GATE.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "pa\u017f\u017fword=hunter22",  # long s: the lowercase shortcut would miss it
        "\u0130 have password=hunter22",  # non-ASCII elsewhere in the text
        "auth=Bearer\u00a0abc.def",  # a non-ASCII space
        "x-api-\u212aey: k-123456",  # the Kelvin sign folds to k
    ],
)
def test_non_ascii_texts_are_scrubbed_like_ascii_ones(text: str) -> None:
    """Texts outside ASCII always run the patterns, so case folding across scripts still hides."""
    scrubbed = Redaction().scrub(text)
    assert scrubbed.endswith(R)
    assert scrubbed == _ungated(Redaction()).scrub(text)


def test_key_verdicts_stay_right_past_the_cache_bound() -> None:
    """Key matching is cached per Redaction, bounded, and never changes a verdict."""
    redaction = Redaction()
    keys = [f"field_{n}" for n in range(5000)] + ["db_password", "newPassword", "amount"]
    first = [redaction.matches_key(key) for key in keys]
    again = [redaction.matches_key(key) for key in reversed(keys)]
    assert first == list(reversed(again))
    assert first[-3:] == [True, True, False]
    assert not any(first[:-3])
    other = Redaction(keys=("field_1",))  # its own cache: another key list, other verdicts
    assert other.matches_key("field_1")
    assert not other.matches_key("db_password")

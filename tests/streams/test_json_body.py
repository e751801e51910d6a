"""The bounds on JSON bodies, checked without a server: exact counts, whatever the strings hold.

A body's values are counted before it is parsed. The count must be exact
(commas and brackets inside strings are not values), or text would be refused
for its punctuation and crafted bodies could hide values from the limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.streams import json_body
from tether.streams.json_body import JsonLimits, JsonTooDeep, JsonTooLarge
from tether.streams.wire import WireError

#: Strings made of what confuses a naive count: separators, quotes, escapes.
TRICKY = st.text(alphabet=st.sampled_from(list(',[]{}"\\:ab\n\u00e9')), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | TRICKY,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=40,
)


def structure(value: Any) -> int:
    """Commas and opening brackets of ``value`` written as JSON, strings aside."""
    if isinstance(value, list):
        return 1 + max(len(value) - 1, 0) + sum(structure(v) for v in value)
    if isinstance(value, dict):
        return 1 + max(len(value) - 1, 0) + sum(structure(v) for v in value.values())
    return 0


def limits(max_values: int) -> JsonLimits:
    return JsonLimits(max_values=max_values, max_depth=64, max_batch=10_000)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.booleans(), st.booleans())
def test_the_count_is_exact_whatever_the_strings_hold(
    value: Any, ascii_only: bool, indented: bool
) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only, indent=1 if indented else None).encode()
    exact = structure(value)
    assert json_body.parse(body, limits(max(exact, 1))) == value
    if exact > 1:
        with pytest.raises(JsonTooLarge):
            json_body.parse(body, limits(exact - 1))


def test_text_full_of_commas_is_one_value() -> None:
    body = json.dumps({"text": "a, b, [c], {d}, " * 10_000}).encode()
    assert json_body.parse(body, limits(10))["text"].startswith("a, b")


def test_an_escape_outside_a_string_cannot_hide_values() -> None:
    """A stray backslash would shift which quotes open strings; the body is refused as invalid."""
    body = b'["x", \\", ' + b",".join([b"1"] * 50) + b', "]'
    with pytest.raises(WireError):
        json_body.parse(body, limits(10))


def test_a_batch_past_max_batch_is_refused_and_one_at_it_is_split() -> None:
    body = b"[" + b",".join([b'{"n":1}'] * 5) + b"]"
    messages, was_array = json_body.split(body, JsonLimits(max_batch=5))
    assert was_array and messages == [b'{"n":1}'] * 5
    with pytest.raises(JsonTooLarge, match="at most 4 messages"):
        json_body.split(body, JsonLimits(max_batch=4))


def test_nesting_is_bounded_by_max_depth() -> None:
    assert json_body.parse(b"[" * 8 + b"]" * 8, JsonLimits(max_depth=8)) is not None
    with pytest.raises(JsonTooDeep):
        json_body.parse(b"[" * 9 + b"]" * 9, JsonLimits(max_depth=8))


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (2**63 - 1, False),
        (-(2**63), False),
        (2**64 - 1, False),
        (2**64, True),
        (-(2**63) - 1, True),
        ("caf\u00e9", False),
        ("\ud800", True),
        ({"k": [[["deep"]]]}, False),
    ],
)
def test_check_value_refuses_what_an_event_cannot_carry(value: Any, refused: bool) -> None:
    if refused:
        with pytest.raises(WireError):
            json_body.check_value(value, JsonLimits())
    else:
        json_body.check_value(value, JsonLimits())

"""JSON request bodies, parsed within bounds.

A JSON body costs far more than its size once parsed: a 2 MB array of a
million small numbers became a million messages, each re-serialised into a
bytes object that orjson leaves holding 4 KiB, and peaked at 4.3 GB. So the
work is bounded before and while parsing:

- ``max_values``: values in one body (array elements and object members at
  any depth). Commas and opening brackets are counted before anything is
  parsed (C speed); when strings may hold some of them, strings are struck
  out first and the count repeated, so text full of commas is not refused.
- ``max_depth``: how deeply containers nest.
- ``max_batch``: messages in one append (the elements of a top-level array).

Parsing uses msgspec: exact integers of any size, lone surrogates and invalid
UTF-8 refused, and output bytes of their own size. An append of one message
that nests no deeper than the limit is never built into objects at all: it is
checked and compacted in one pass, which costs about its size, whatever it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tether.streams.wire import WireError

_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class JsonTooLarge(WireError):
    """More values or messages than the limits allow: answered 413."""

    status = 413
    code = "json_too_large"


class JsonTooDeep(WireError):
    status = 400
    code = "json_too_deep"


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_values: int = 100_000
    max_depth: int = 64
    max_batch: int = 10_000


def parse(body: bytes, limits: JsonLimits) -> Any:
    """The value of a JSON body, or WireError (a 4xx) if it is invalid or past a limit."""
    _check_size(body, limits)
    try:
        value = _DECODER.decode(body)
    except RecursionError:
        raise JsonTooDeep(f"JSON nests deeper than {limits.max_depth} levels") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise WireError(f"body is not valid JSON: {err}") from None
    if body.count(b"[") + body.count(b"{") > limits.max_depth:
        _check_depth(value, limits.max_depth)
    return value


def split(body: bytes, limits: JsonLimits) -> tuple[list[bytes], bool]:
    """Messages of a JSON append, re-serialised compactly; the flag says it was an array.

    Compact re-serialisation guarantees a message has no raw line breaks, so it
    is one SSE data line, and gives every reader the same bytes.
    """
    if body.count(b"[") + body.count(b"{") <= limits.max_depth and body.lstrip()[:1] != b"[":
        return [_compact(body)], False  # one message, checked and compacted without building it
    value = parse(body, limits)
    if not isinstance(value, list):
        return [_ENCODER.encode(value)], False
    if len(value) > limits.max_batch:
        raise JsonTooLarge(
            f"an append holds at most {limits.max_batch} messages; this one has {len(value)}"
        )
    encode = _ENCODER.encode
    return [encode(v) for v in value], True


def _compact(body: bytes) -> bytes:
    """``body`` without whitespace outside strings, if it is one JSON value in UTF-8."""
    try:
        compact = msgspec.json.format(body, indent=-1)
        if not body.isascii():
            body.decode("utf-8")
    except msgspec.DecodeError as err:
        raise WireError(f"body is not valid JSON: {err}") from None
    except UnicodeDecodeError:
        raise WireError("body is not valid JSON: it is not UTF-8") from None
    return compact


def check_value(value: Any, limits: JsonLimits) -> None:
    """Refuse (WireError) what tether's own events cannot carry.

    For JSON parsed elsewhere (a request model's free-form field): nesting
    within ``max_depth``, integers within 64 bits and strings that are valid
    Unicode, so that serialising the event it goes into cannot fail.
    """
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if not v.isascii():
                _check_unicode(v)
            continue
        if isinstance(v, bool) or v is None or isinstance(v, float):
            continue
        if isinstance(v, int):
            if not _INT_MIN <= v <= _INT_MAX:
                raise WireError("integers must fit in 64 bits")
            continue
        if depth > limits.max_depth:
            raise JsonTooDeep(f"JSON nests deeper than {limits.max_depth} levels")
        if isinstance(v, dict):
            stack.extend((k, depth) for k in v)
            stack.extend((c, depth + 1) for c in v.values())
        elif isinstance(v, list):
            stack.extend((c, depth + 1) for c in v)


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise WireError("strings must be valid Unicode (no lone surrogates)") from None


def _check_size(body: bytes, limits: JsonLimits) -> None:
    """Refuse a body with more than ``max_values`` values, before parsing it.

    Commas and opening brackets are counted at C speed. Only when there are too
    many are strings struck out and the count repeated (text full of commas is
    one value); a body with escapes is first checked to be JSON, without
    building it, so that a stray backslash cannot hide commas from the count.
    """
    if _structure(body) <= limits.max_values:
        return
    if b"\\" in body:
        try:
            msgspec.json.format(body, indent=-1)
        except RecursionError:
            raise JsonTooDeep(f"JSON nests deeper than {limits.max_depth} levels") from None
        except msgspec.DecodeError as err:
            raise WireError(f"body is not valid JSON: {err}") from None
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Every quote left opens or closes a string. A member is at most four of
    # them (a key and a string value): with more, there are too many values anyway.
    quotes = body.count(b'"')
    if 0 < quotes <= 4 * limits.max_values and (
        _structure(b"".join(body.split(b'"')[::2])) <= limits.max_values
    ):
        return
    raise JsonTooLarge(f"a JSON body holds at most {limits.max_values} values")


def _structure(text: bytes) -> int:
    return text.count(b",") + text.count(b"[") + text.count(b"{")


def _check_depth(value: Any, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        if depth > max_depth:
            raise JsonTooDeep(f"JSON nests deeper than {max_depth} levels")
        stack.extend((c, depth + 1) for c in v if isinstance(c, (dict, list)))

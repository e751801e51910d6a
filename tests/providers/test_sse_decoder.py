"""SSEDecoder reads the same events from raw bytes, however they are split, as iter_sse."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from tether.providers._http import SSEDecoder, SSEEvent, iter_sse

BODY = (
    b": keep-alive\r\n\r\n"
    b'data: {"a": 1}\n\n'
    b"event: delta\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"data:no space\r\rdata: caf\xc3\xa9\n\n"
    b"data: [DONE]\n\n"
    b"data: last without blank line"
)


async def _lines(body: bytes) -> AsyncIterator[str]:
    text = body.decode()
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        yield line


async def _reference(body: bytes) -> list[SSEEvent]:
    return [e async for e in iter_sse(_lines(body))]


def _decode(body: bytes, cuts: list[int]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    out: list[SSEEvent] = []
    last = 0
    for cut in [*sorted(cuts), len(body)]:
        out += decoder.feed(body[last:cut])
        last = cut
    return out + decoder.close()


async def test_same_events_as_iter_sse() -> None:
    expected = await _reference(BODY)
    assert [e.data for e in expected][-2:] == ["[DONE]", "last without blank line"]
    assert _decode(BODY, []) == expected


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    whole = _decode(BODY, [])
    assert _decode(BODY, cuts) == whole

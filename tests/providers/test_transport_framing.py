"""The transport's pure steps: de-chunking a read buffer, and a response's framing."""

from __future__ import annotations

import httpx
import pytest

from tether.providers._transport import _framing, _take_chunks

REQ = httpx.Request("POST", "http://upstream.test/v1")


def test_take_chunks_moves_complete_chunks_and_leaves_the_rest() -> None:
    buf = bytearray(b"3\r\nabc\r\n2;ext=1\r\nde\r\n4\r\nfg")
    out: list[bytes] = []
    assert _take_chunks(buf, out, REQ) is False
    assert out == [b"abc", b"de"]
    assert buf == bytearray(b"4\r\nfg")  # incomplete: for the next read


def test_take_chunks_sees_the_end_only_once_trailers_are_complete() -> None:
    buf = bytearray(b"1\r\nx\r\n0\r\nX-T: 1\r\n")
    out: list[bytes] = []
    assert _take_chunks(buf, out, REQ) is False
    assert out == [b"x"]
    buf += b"\r\nleftover"
    out = []
    assert _take_chunks(buf, out, REQ) is True
    assert out == []
    assert buf == bytearray(b"leftover")


def test_take_chunks_rejects_a_bad_size() -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="bad chunk size"):
        _take_chunks(bytearray(b"zz\r\nab\r\n"), [], REQ)


@pytest.mark.parametrize(
    ("version", "status", "headers", "framing"),
    [
        (b"HTTP/1.1", 200, [(b"Content-Length", b"5")], (5, False, True)),
        (b"HTTP/1.1", 200, [(b"Transfer-Encoding", b"chunked")], (None, True, True)),
        (b"HTTP/1.1", 200, [(b"Connection", b"close")], (None, False, False)),
        (b"HTTP/1.0", 200, [], (None, False, False)),
        (b"HTTP/1.0", 200, [(b"Connection", b"Keep-Alive")], (None, False, True)),
        (b"HTTP/1.1", 204, [(b"Transfer-Encoding", b"chunked")], (0, False, True)),
        (
            b"HTTP/1.1",
            200,
            [(b"Content-Length", b"9"), (b"Transfer-Encoding", b"chunked")],
            (None, True, True),
        ),
    ],
)
def test_framing(
    version: bytes,
    status: int,
    headers: list[tuple[bytes, bytes]],
    framing: tuple[int | None, bool, bool],
) -> None:
    assert _framing(REQ, status, version, headers) == framing


def test_framing_of_a_head_request_and_of_a_request_that_closes() -> None:
    head = httpx.Request("HEAD", "http://upstream.test/")
    assert _framing(head, 200, b"HTTP/1.1", [(b"Content-Length", b"5")]) == (0, False, True)
    closing = httpx.Request("GET", "http://upstream.test/", headers={"Connection": "close"})
    assert _framing(closing, 200, b"HTTP/1.1", []) == (None, False, False)


def test_framing_rejects_a_bad_content_length() -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="bad content-length"):
        _framing(REQ, 200, b"HTTP/1.1", [(b"Content-Length", b"five")])

"""A streamed HTTP/1.1 response read from a plain socket, at the test's pace.

Slow-reader tests need a client that stops reading: a socket with a small
receive buffer, read only when the test says so, its chunked body decoded by
hand. SSE events (``id:`` and ``data:`` lines) can be taken from the body.
"""

from __future__ import annotations

import contextlib
import re
import socket

import httpx
import orjson


class RawResponse:
    """A GET of ``url`` (or a POST of the JSON ``body``) whose chunked answer is read on demand."""

    def __init__(
        self,
        url: str,
        rcvbuf: int | None = None,
        *,
        body: bytes | None = None,
        timeout: float = 60.0,
    ) -> None:
        parsed = httpx.URL(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((parsed.host, parsed.port))
        posted = (
            b"" if body is None
            else b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        )  # fmt: skip
        self.sock.sendall(
            f"{'GET' if body is None else 'POST'} {parsed.raw_path.decode()} HTTP/1.1\r\n"
            f"Host: {parsed.host}:{parsed.port}\r\n".encode()
            + posted + b"\r\n" + (body or b"")
        )  # fmt: skip
        self.raw = b""
        #: The response's status line and headers, once read.
        self.head = b""
        self.head_read = False
        self.body = b""
        self.ended = False  # the response's last chunk was read

    def read_some(self) -> None:
        data = self.sock.recv(1 << 16)
        assert data, "the server closed the connection before the response ended"
        self.raw += data
        if not self.head_read:
            head, sep, rest = self.raw.partition(b"\r\n\r\n")
            if not sep:
                return
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"transfer-encoding: chunked" in head.lower(), head
            self.head, self.head_read, self.raw = head, True, rest
        while not self.ended:
            size_line, sep, rest = self.raw.partition(b"\r\n")
            if not sep or len(rest) < int(size_line, 16) + 2:
                return
            size = int(size_line, 16)
            self.ended = size == 0
            self.body += rest[:size]
            self.raw = rest[size + 2 :]

    def read_until(self, marker: bytes) -> None:
        while marker not in self.body:
            self.read_some()

    def read_to_end(self) -> None:
        while not self.ended:
            self.read_some()

    def events(self) -> list[tuple[str, dict[str, object]]]:
        """(offset, event) of each complete SSE event with an ``id:``, in order."""
        found = re.finditer(rb"^id: (\S+)\ndata: (.*)\n\n", self.body, re.M)
        return [(m.group(1).decode(), orjson.loads(m.group(2))) for m in found]

    def ids(self) -> list[str]:
        return [str(e["id"]) for _, e in self.events()]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        self.sock.close()

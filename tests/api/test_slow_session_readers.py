"""A session's event stream or WebSocket whose client stops reading is cut off at its bound.

Over a real ``tether serve``: one reader of a session (a small receive buffer)
stops reading while another reads on; once more than ``--sse-send-buffer`` bytes
of the session wait for it, the server cuts it off (the event stream ends with a
comment saying why, the WebSocket closes with code 1008 and the reason), counts
it in ``tether_readers_cut_off_total``, and holds nothing of the session for it
any more; the other reader gets everything, and the stalled client resumes from
the last offset it received with nothing lost or repeated.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

import httpx
import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers.catch_up import read_to_tail
from helpers.raw_http import RawResponse
from helpers.server import ServerFactory, TetherServer

BUFFER = 64 * 1024
#: A message and its demo run: ~125 KB of events, so the kernel's socket buffers fill and
#: the cut comes after ~20 messages (4 s here): well inside the 40 s after which uvicorn's
#: WebSocket keepalive would close a client that answers no ping. With 4 KB messages a
#: loaded machine reached that first, and the stalled reader was closed without a cut.
PAD = "x" * 120_000
WAIT = 60.0  # generous bound on every wait (a loaded machine is slow)


def metric(server: TetherServer, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def new_session(server: TetherServer) -> tuple[str, str]:
    """A session, and the URL of its stream (read-only: tether writes it)."""
    session = httpx.post(f"{server.base_url}/v1/sessions", json={}).json()
    return session["id"], server.base_url + session["stream_url"]


def send_until_cut(
    server: TetherServer, sid: str, transport: str, reader_at: Callable[[], str]
) -> None:
    """Send big messages until one reader is cut off, then a few more.

    Each waits for the reader that reads (``reader_at``: the last offset it got) to
    have the session's events so far, so that only the stalled one falls behind.
    """
    cut = f'tether_readers_cut_off_total{{transport="{transport}"}}'
    url = f"{server.base_url}/v1/sessions/{sid}/messages"
    stream = (
        server.base_url + httpx.get(f"{server.base_url}/v1/sessions/{sid}").json()["stream_url"]
    )

    def send(n: int) -> None:
        r = httpx.post(url, json={"content": f"{n} {PAD}"}, timeout=WAIT)
        assert r.status_code == 202, r.text
        wait_for(
            lambda: reader_at() >= httpx.head(stream).headers["stream-next-offset"],
            "the reading reader keeps up",
        )

    sent = 0
    deadline = time.monotonic() + 3 * WAIT
    while metric(server, cut) < 1:
        assert sent < 2_000 and time.monotonic() < deadline, f"no cut after {sent} messages"
        send(sent)
        sent += 1
    for n in range(5):  # after the cut: not held for the stalled reader
        send(sent + n)
    assert metric(server, cut) == 1


def read_from(stream: str, offset: str) -> list[str]:
    """The ids of the session's events after ``offset``."""
    return [e["id"] for e in read_to_tail(stream, offset)]


def in_background(step: Callable[[], None], stop: threading.Event) -> threading.Thread:
    """Call ``step`` until ``stop`` is set (errors after it are the test closing things)."""

    def loop() -> None:
        while not stop.is_set():
            try:
                step()
            except (OSError, AssertionError, ConnectionClosed):
                if stop.is_set():
                    return
                raise

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_stalled_session_event_stream_is_cut_off_and_resumes_with_nothing_lost(
    tether_server: ServerFactory,
) -> None:
    server = tether_server(extra_args=["--sse-send-buffer", str(BUFFER)])
    sid, stream = new_session(server)
    events_url = f"{server.base_url}/v1/sessions/{sid}/events?offset=-1"
    stalled = RawResponse(events_url, rcvbuf=4096, timeout=WAIT)
    other = RawResponse(events_url, timeout=WAIT)
    stop = threading.Event()
    reading = in_background(other.read_some, stop)
    time.sleep(0.5)  # both are live (a reader that joins late catches up all the same)

    send_until_cut(server, sid, "sse", lambda: ([""] + [o for o, _ in other.events()])[-1])
    wait_for(lambda: other.ids() == read_from(stream, "-1"), "the other reader got everything")

    # The stalled client reads again: events up to the cut, the reason, the end.
    while not stalled.ended:
        stalled.read_some()
    got = stalled.ids()
    everything = read_from(stream, "-1")
    assert got == everything[: len(got)] and len(got) < len(everything)
    resume = stalled.events()[-1][0]
    assert f": cut off: more than {BUFFER} bytes were waiting; resume from offset {resume}\n\n" in (
        stalled.body.decode()
    )
    stalled.close()
    assert got + read_from(stream, resume) == everything
    stop.set()
    other.close()
    reading.join(WAIT)


class RawWebSocket:
    """A WebSocket client on a plain socket that reads only when the test says so."""

    def __init__(self, server: TetherServer, path: str, rcvbuf: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
        self.sock.settimeout(WAIT)
        self.sock.connect((server.host, server.port))
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )  # fmt: skip
        self.raw = b""
        while b"\r\n\r\n" not in self.raw:
            self.raw += self._recv()
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 16)
        assert data, "the server closed the connection without a close frame"
        return data

    def _take(self, n: int) -> bytes:
        while len(self.raw) < n:
            self.raw += self._recv()
        out, self.raw = self.raw[:n], self.raw[n:]
        return out

    def read_to_close(self) -> tuple[list[dict[str, object]], int, str]:
        """The text messages up to the server's close frame, its code and its reason."""
        messages: list[dict[str, object]] = []
        while True:
            first, second = self._take(2)
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(self._take(2), "big")
            elif size == 127:
                size = int.from_bytes(self._take(8), "big")
            payload = self._take(size)  # a server's frames are not masked
            opcode = first & 0x0F
            if opcode == 0x1:
                messages.append(orjson.loads(payload))
            elif opcode == 0x8:
                return messages, int.from_bytes(payload[:2], "big"), payload[2:].decode()

    def close(self) -> None:
        self.sock.close()


def test_a_stalled_websocket_is_closed_with_the_reason_and_resumes_with_nothing_lost(
    tether_server: ServerFactory,
) -> None:
    server = tether_server(extra_args=["--sse-send-buffer", str(BUFFER)])
    sid, stream = new_session(server)
    path = f"/v1/sessions/{sid}/ws?offset=-1"
    stalled = RawWebSocket(server, path, rcvbuf=4096)
    other = connect(f"ws://{server.host}:{server.port}{path}")
    other_got: list[dict[str, object]] = []
    stop = threading.Event()
    reading = in_background(lambda: other_got.append(orjson.loads(other.recv(WAIT))), stop)
    time.sleep(0.5)

    send_until_cut(
        server, sid, "websocket", lambda: str(([{"offset": ""}, *other_got])[-1]["offset"])
    )
    wait_for(
        lambda: [m["event"]["id"] for m in other_got] == read_from(stream, "-1"),  # type: ignore[index]
        "the other reader got everything",
    )

    # The stalled client reads again: messages up to the cut, then the close and why.
    got, code, reason = stalled.read_to_close()
    stalled.close()
    ids = [m["event"]["id"] for m in got]  # type: ignore[index]
    everything = read_from(stream, "-1")
    assert ids == everything[: len(ids)] and len(ids) < len(everything)
    resume = str(got[-1]["offset"])
    assert code == 1008
    assert reason == f"cut off: more than {BUFFER} bytes were waiting; resume from offset {resume}"
    assert ids + read_from(stream, resume) == everything
    stop.set()
    other.close()
    reading.join(WAIT)

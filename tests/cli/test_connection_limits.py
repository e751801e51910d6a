"""Connections that send nothing, or send slowly, cannot lock out the clients that do.

Every test floods or starves a real ``tether serve`` over loopback TCP with raw
sockets, and checks what a real client (httpx, a WebSocket) then gets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from websockets.sync.client import connect

from helpers.server import ServerFactory, TetherServer

JSON = {"Content-Type": "application/json"}
WAIT = 10.0  # bound on every read that should end sooner; a failure, not a measurement


class FdLimitedServer(TetherServer):
    """``tether serve`` started with a small open-files limit (soft and hard), via prlimit."""

    def __init__(self, data_dir: Path, nofile: int, log_path: Path) -> None:
        super().__init__(data_dir, log_path=log_path)
        self.nofile = nofile

    def command(self) -> list[str]:
        return ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *super().command()]


@contextlib.contextmanager
def idle_connections(server: TetherServer, count: int) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections to the server that never send a byte."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection((server.host, server.port), timeout=WAIT))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def read_until_closed(sock: socket.socket, wait: float = WAIT) -> bytes:
    """Everything the server sends until it closes the connection (or ``wait`` passes: fails)."""
    sock.settimeout(wait)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def send_slowly(sock: socket.socket, data: bytes, chunk: int, interval: float) -> bytes:
    """Send ``data`` ``chunk`` bytes every ``interval`` s, stopping if the server answers;
    return the answer (up to the server's close)."""
    for i in range(0, len(data), chunk):
        try:
            sock.sendall(data[i : i + chunk])
        except OSError:  # the server answered and closed while we were sending
            break
        if select.select([sock], [], [], interval)[0]:
            break
    return read_until_closed(sock)


def status_and_error(response: bytes) -> tuple[int, str]:
    """The status of a raw HTTP/1.1 response and its JSON error code."""
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]["code"]


def post_head(path: str, length: int) -> bytes:
    """The head of a JSON POST whose connection closes after its answer."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The payloads of a Durable Streams SSE response's ``data`` events."""
    event = None
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "data":
            yield line[5:].strip()


def test_idle_connections_beyond_the_fd_limit_lock_out_no_client_and_end_no_sse_reader(
    tmp_path: Path,
) -> None:
    """With no option given, the cap is sized from the open-files limit: 400 idle
    connections against a limit of 256 files make room for a new client (the oldest
    idle ones are closed), and the SSE reader that was open before them keeps going."""
    server = FdLimitedServer(tmp_path / "data", nofile=256, log_path=tmp_path / "log")
    with server, httpx.Client(timeout=WAIT) as reader:
        url = server.stream_url("flood")
        assert httpx.put(url, headers=JSON).status_code == 201
        with reader.stream("GET", url, params={"offset": "-1", "live": "sse"}) as sse:
            lines = sse.iter_lines()
            with idle_connections(server, 400) as flood:
                # A client arriving after the flood, on a connection of its own.
                with httpx.Client(timeout=WAIT) as client:
                    assert client.get(f"{server.base_url}/healthz").status_code == 200
                    appended = client.post(url, headers=JSON, content=b'{"after": "flood"}')
                    assert appended.status_code == 204
                assert json.loads(next(sse_data(lines))) == [{"after": "flood"}]
                # The room was made by closing the oldest idle connection (the head timeout,
                # 10 s, is still far off).
                assert read_until_closed(flood[0], wait=3) == b""


def test_at_the_cap_idle_connections_make_room_and_sse_and_websocket_readers_stay(
    tether_server: ServerFactory,
) -> None:
    """Readers are never closed to make room, nor timed out: a newcomer gets in past a
    flood three times the cap, and the readers see its run, then another after both
    timeouts have passed."""
    server = tether_server(
        extra_args=["--max-connections", "10", "--header-timeout", "1", "--body-timeout", "1"]
    )
    with httpx.Client(base_url=server.base_url, timeout=WAIT) as setup:
        sid = setup.post("/v1/sessions", json={}).json()["id"]
    events_url = f"{server.base_url}/v1/sessions/{sid}/events"
    ws_url = f"{server.base_url.replace('http://', 'ws://')}/v1/sessions/{sid}/ws?offset=-1"
    with (
        connect(ws_url) as ws,
        httpx.Client(timeout=WAIT) as reader,
        reader.stream("GET", events_url) as sse,
    ):
        assert sse.status_code == 200
        sse_events = (json.loads(line[6:]) for line in sse.iter_lines() if line[:6] == "data: ")

        def newcomer_runs_and_readers_see_it() -> None:
            with httpx.Client(base_url=server.base_url, timeout=WAIT) as client:
                sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 3"})
            assert sent.status_code == 202
            run_id = sent.json()["run_id"]

            def ends_the_run(event: dict[str, object]) -> bool:
                return event["type"] == "run-end" and event["run_id"] == run_id

            while not ends_the_run(json.loads(ws.recv(timeout=WAIT))["event"]):
                pass
            assert any(ends_the_run(event) for event in sse_events)

        with idle_connections(server, 30):
            newcomer_runs_and_readers_see_it()
            time.sleep(2.5)  # beyond both timeouts, and two sweeps
            newcomer_runs_and_readers_see_it()


def test_beyond_the_cap_a_connection_is_refused_with_503_only_while_all_are_busy(
    tether_server: ServerFactory,
) -> None:
    server = tether_server(extra_args=["--max-connections", "3"])
    url = server.stream_url("busy")
    assert httpx.put(url, headers=JSON).status_code == 201
    with contextlib.ExitStack() as readers:
        for _ in range(3):
            client = readers.enter_context(httpx.Client(timeout=WAIT))
            sse = readers.enter_context(
                client.stream("GET", url, params={"offset": "-1", "live": "sse"})
            )
            assert sse.status_code == 200
        refused = httpx.get(f"{server.base_url}/healthz", timeout=WAIT)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_connections"
    # The readers are gone: the next connection is let in (once the server has seen them go).
    deadline = time.monotonic() + WAIT
    while httpx.get(f"{server.base_url}/healthz", timeout=WAIT).status_code != 200:
        assert time.monotonic() < deadline, "still refused after every reader left"
        time.sleep(0.05)


def test_a_request_head_that_does_not_arrive_whole_is_closed_after_the_header_timeout(
    tether_server: ServerFactory,
) -> None:
    """Counted from the connection, or from the first byte of a keep-alive request."""
    server = tether_server(extra_args=["--header-timeout", "1"])
    silent = socket.create_connection((server.host, server.port))
    partial = socket.create_connection((server.host, server.port))
    partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    keep_alive = http.client.HTTPConnection(server.host, server.port, timeout=WAIT)
    keep_alive.request("GET", "/healthz")
    assert keep_alive.getresponse().read() == b'{"status":"ok"}'
    assert keep_alive.sock is not None
    keep_alive.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
    for sock in (silent, partial, keep_alive.sock):
        assert read_until_closed(sock) == b""
        sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_five_seconds_and_one_in_use_is_not(
    tether_server: ServerFactory,
) -> None:
    """Counted from the connection's last answer; the sweep runs once a second."""
    server = tether_server()
    idle = http.client.HTTPConnection(server.host, server.port, timeout=WAIT)
    busy = http.client.HTTPConnection(server.host, server.port, timeout=WAIT)
    for connection in (idle, busy):
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b'{"status":"ok"}'
    answered = time.monotonic()
    assert idle.sock is not None and busy.sock is not None
    busy_sock = busy.sock
    closed_after = None
    while closed_after is None and time.monotonic() - answered < 9.0:
        busy.request("GET", "/healthz")  # a request every 0.2 s keeps it in use
        assert busy.getresponse().read() == b'{"status":"ok"}'
        if select.select([idle.sock], [], [], 0.2)[0]:
            closed_after = time.monotonic() - answered
            assert idle.sock.recv(1) == b""  # closed, with nothing said
    assert closed_after is not None, "the idle connection was never closed"
    assert 4.9 <= closed_after <= 7.5
    busy.request("GET", "/healthz")
    assert busy.getresponse().read() == b'{"status":"ok"}'
    assert busy.sock is busy_sock  # the same connection all along


def test_a_stalled_request_body_gets_408_closes_its_connection_and_appends_nothing(
    tether_server: ServerFactory,
) -> None:
    server = tether_server(extra_args=["--body-timeout", "1"])
    url = server.stream_url("stalled")
    assert httpx.put(url, headers=JSON).status_code == 201
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(post_head("/v1/stream/stalled", 100) + b'{"half": ')
        answer = read_until_closed(sock)
    assert status_and_error(answer) == (408, "request_timeout")
    assert httpx.get(url, params={"offset": "-1"}).json() == []


def test_a_body_slower_than_the_minimum_rate_gets_408_and_a_steady_one_is_appended(
    tether_server: ServerFactory,
) -> None:
    """Once its first --body-timeout seconds are over, a body must average
    --body-min-rate bytes/s: a byte every 0.25 s never stalls, yet is cut off."""
    server = tether_server(extra_args=["--body-timeout", "1", "--body-min-rate", "200"])
    url = server.stream_url("rate")
    assert httpx.put(url, headers=JSON).status_code == 201
    small = json.dumps({"pad": "x" * 50}).encode()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(post_head("/v1/stream/rate", len(small)))
        dripped = send_slowly(sock, small, chunk=1, interval=0.25)  # 4 bytes/s
    assert status_and_error(dripped) == (408, "request_timeout")
    body = json.dumps({"pad": "x" * 980}).encode()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(post_head("/v1/stream/rate", len(body)))
        steady = send_slowly(sock, body, chunk=100, interval=0.2)  # 500 bytes/s, for 2 s
    assert steady.startswith(b"HTTP/1.1 204 "), steady
    assert httpx.get(url, params={"offset": "-1"}).json() == [json.loads(body)]

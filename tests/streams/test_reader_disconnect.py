"""A live SSE reader whose client goes away is gone at once, not at its next write.

Over a real ``tether serve``: three SSE readers of a quiet stream; two clients
close their sockets. Nothing is written to them (the stream is quiet and the
first keep-alive is 15 s away), so only the server's disconnect notice can end
them: the ``tether_readers{transport="sse"}`` gauge falls to one well before that,
and the third reader still gets what is appended next.
"""

from __future__ import annotations

import re
import socket
import time

import httpx

from helpers.server import ServerFactory, TetherServer

JSON = {"Content-Type": "application/json"}
#: Well under the 15 s keep-alive, which would find a gone client by writing to it.
PROMPT = 10.0


def readers(server: TetherServer) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    found = re.search(r'^tether_readers\{transport="sse"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def open_reader(url: str) -> socket.socket:
    """An SSE reader of ``url`` from its start, its response head read."""
    parsed = httpx.URL(url)
    sock = socket.create_connection((parsed.host, parsed.port), timeout=60)
    sock.sendall(
        f"GET {parsed.raw_path.decode()}?offset=-1&live=sse HTTP/1.1\r\n"
        f"Host: {parsed.host}:{parsed.port}\r\n\r\n".encode()
    )
    got = b""
    while b"event: control" not in got:
        data = sock.recv(1 << 16)
        assert data, "the server closed the reader"
        got += data
    return sock


def test_a_reader_whose_client_leaves_is_gone_before_anything_is_written_to_it(
    tether_server: ServerFactory,
) -> None:
    server = tether_server()
    url = server.stream_url("quiet")
    assert httpx.put(url, headers=JSON).status_code == 201
    socks = [open_reader(url) for _ in range(3)]
    assert readers(server) == 3

    for sock in socks[:2]:
        sock.close()
    left = time.monotonic()
    while readers(server) > 1:
        assert time.monotonic() - left < PROMPT, "the readers of closed clients live on"
        time.sleep(0.05)

    assert httpx.post(url, json=["after"]).status_code in (200, 204)
    got = b""
    while b'"after"' not in got:
        got += socks[2].recv(1 << 16)
    socks[2].close()


def test_a_reader_after_another_on_the_same_connection_is_not_taken_for_gone(
    tether_server: ServerFactory,
) -> None:
    """The end of one SSE response does not mark the next on its keep-alive connection as
    disconnected: the second reader gets what is appended while it waits."""
    server = tether_server()
    done, live = server.stream_url("done"), server.stream_url("live")
    assert httpx.put(done, headers={**JSON, "Stream-Closed": "true"}).status_code == 201
    assert httpx.put(live, headers=JSON).status_code == 201
    with httpx.Client(timeout=PROMPT) as client:  # one keep-alive connection
        first = client.get(done, params={"offset": "-1", "live": "sse"})
        assert '"streamClosed":true' in first.text
        with client.stream("GET", live, params={"offset": "-1", "live": "sse"}) as second:
            lines = second.iter_lines()
            assert next(line for line in lines if line.startswith("event: control"))
            appended = httpx.post(live, json={"n": 1}, headers={"Stream-Closed": "true"})
            assert appended.status_code == 204
            rest = "\n".join(lines)
    assert '{"n":1}' in rest.replace(" ", "")
    assert '"streamClosed":true' in rest

"""A backend that stops reading its /interact answers is cut off at the send buffer.

Over a real ``tether serve``: a backend puts a batch of requests to a session's
clients and stops reading the answers (a small receive buffer), while a client
answers each with a big result and another reader follows the session. Once the
unread answers fill the sockets, the /interact stream holds the session's later
events for its caller; past ``--sse-send-buffer`` bytes of them the server cuts
it off, counts it in ``tether_readers_cut_off_total``, and holds nothing of the
session for it any more. The caller reads its answers up to the cut, then why
and the offset of its own requests: the session's events from there map
tether's request ids to its own, and hold every answer, none lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from api.test_slow_session_readers import (
    BUFFER,
    WAIT,
    in_background,
    metric,
    new_session,
    read_from,
    wait_for,
)
from helpers.catch_up import read_to_tail
from helpers.raw_http import RawResponse
from helpers.server import ServerFactory

CUT = 'tether_readers_cut_off_total{transport="sse"}'
RSS = "process_resident_memory_bytes"
REQUESTS = 100  # a whole batch: room for the answers that fill the sockets, and more
#: A client's answer: a file's contents, say. The unread ones fill the kernel's
#: socket buffers (a few MB) in about 15 answers, after which the caller is cut.
ANSWER = "x" * 256_000


def sent_at(reader: RawResponse) -> str:
    """The offset after the last event ``reader`` got ("" before any)."""
    body = reader.body
    at = body.rfind(b"id: ")  # (the events' JSON has no ": ")
    return "" if at < 0 else body[at + 4 : body.index(b"\n", at)].decode()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT) as client:
        yield client


def test_a_stalled_interact_caller_is_cut_off_and_resumes_from_its_requests_with_nothing_lost(
    tether_server: ServerFactory, http: httpx.Client
) -> None:
    server = tether_server(extra_args=["--sse-send-buffer", str(BUFFER)])
    sid, stream = new_session(server)
    other = RawResponse(f"{server.base_url}/v1/sessions/{sid}/events?offset=-1", timeout=WAIT)
    stop = threading.Event()
    reading = in_background(other.read_some, stop)
    resume = http.head(stream).headers["stream-next-offset"]  # where the caller's requests go
    calls = [{"jsonrpc": "2.0", "id": n, "method": "files/read"} for n in range(REQUESTS)]
    stalled = RawResponse(
        f"{server.base_url}/v1/sessions/{sid}/interact",
        rcvbuf=4096, body=orjson.dumps(calls), timeout=WAIT,
    )  # fmt: skip
    while not stalled.head_read:
        stalled.read_some()
    asked = read_to_tail(stream, resume)
    assert [e["type"] for e in asked] == ["client-request"] * REQUESTS

    def answer(n: int) -> None:
        r = http.post(
            f"{server.base_url}/v1/sessions/{sid}/client-responses",
            json={"request_id": asked[n]["request_id"], "result": {"n": n, "text": ANSWER}},
        )
        assert r.status_code == 202, r.text
        tail = http.head(stream).headers["stream-next-offset"]
        deadline = time.monotonic() + WAIT
        while sent_at(other) < tail:  # (polled often: a hundred answers wait so)
            assert time.monotonic() < deadline, "the other reader does not keep up"
            time.sleep(0.005)

    answered = 0
    while metric(server, CUT) < 1:
        assert answered < REQUESTS, "the caller that stopped reading was never cut off"
        answer(answered)
        answered += 1
    # After the cut the session goes on (~20 MB more) and nothing holds it for the caller:
    # the server keeps each answer once (in the session's snapshot), not twice.
    before = metric(server, RSS)
    for n in range(answered, REQUESTS):
        answer(n)
    grown, more = metric(server, RSS) - before, (REQUESTS - answered) * len(ANSWER)
    assert grown < 1.5 * more, f"the server grew by {grown} bytes for {more} more"
    assert metric(server, CUT) == 1
    wait_for(lambda: other.ids() == read_from(stream, "-1"), "the other reader got everything")

    # The caller reads again: the answers up to the cut, in order, then why and where to resume.
    stalled.read_to_end()
    stalled.close()
    replies = [
        orjson.loads(line[len(b"data: ") :])
        for line in stalled.body.split(b"\n\n")
        if line.startswith(b"data: ")
    ]
    got = [reply["id"] for reply in replies]
    assert got == list(range(len(got))) and len(got) < answered
    assert all(reply["result"] == {"n": reply["id"], "text": ANSWER} for reply in replies)
    reason = f"cut off: more than {BUFFER} bytes were waiting; resume from offset {resume}"
    assert stalled.body.endswith(f": {reason}\n\n".encode())
    # From there: its requests in the order it sent them, then every answer.
    events = read_to_tail(stream, resume)
    mine = {e["request_id"]: calls[n]["id"] for n, e in enumerate(events[:REQUESTS])}
    assert [e["type"] for e in events[:REQUESTS]] == ["client-request"] * REQUESTS
    answers = {mine[e["request_id"]]: e["result"] for e in events if e["type"] == "client-response"}
    assert answers == {n: {"n": n, "text": ANSWER} for n in range(REQUESTS)}
    stop.set()
    other.close()
    reading.join(WAIT)

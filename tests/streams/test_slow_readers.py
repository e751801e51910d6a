"""A live SSE reader whose client stops reading is cut off at its send buffer's bound.

Over a real ``tether serve``: one reader's socket (a small receive buffer) stops
reading while others read on; once more than ``--sse-send-buffer`` bytes wait
for it, the server drops what it queued for it and stops handing it appends,
the others keep receiving everything, and the stalled client, when it reads
again, finds the events up to the cut, a comment saying why, and the end of
the response; it resumes from its last offset with nothing lost or repeated.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import orjson

from helpers.catch_up import read_to_tail
from helpers.raw_http import RawResponse
from helpers.server import ServerFactory, TetherServer

JSON = {"Content-Type": "application/json"}
BUFFER = 16 * 1024
PAD = "x" * 2000  # ~2 KiB a message: the socket buffers fill in a few hundred
WAIT = 60.0  # generous bound on every wait (a loaded machine is slow)


def events(body: bytes) -> Iterator[tuple[str, bytes]]:
    """(event, data) of each complete event; comments as ("comment", text)."""
    for block in body.split(b"\n\n"):
        if block.startswith(b":"):
            yield "comment", block[1:].strip()
            continue
        kind = re.search(rb"^event: ?(\w+)", block, re.M)
        data = b"\n".join(m.group(1) for m in re.finditer(rb"^data: ?(.*)$", block, re.M))
        if kind is not None:
            yield kind.group(1).decode(), data


def seqs_and_last_offset(body: bytes) -> tuple[list[int], str | None]:
    seqs: list[int] = []
    offset = None
    for kind, data in events(body):
        if kind == "data":
            seqs += [m["seq"] for m in orjson.loads(data)]
        elif kind == "control":
            offset = orjson.loads(data)["streamNextOffset"]
    return seqs, offset


def metric(server: TetherServer, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


CUT = 'tether_readers_cut_off_total{transport="sse"}'
SSE = 'tether_readers{transport="sse"}'


def append(url: str, first: int, count: int) -> None:
    batch = [{"seq": n, "pad": PAD} for n in range(first, first + count)]
    assert httpx.post(url, headers=JSON, content=orjson.dumps(batch)).status_code in (200, 204)


def read_from(url: str, offset: str) -> list[int]:
    """The sequence numbers after ``offset``."""
    return [m["seq"] for m in read_to_tail(url, offset)]


def test_a_stalled_reader_is_cut_off_and_resumes_with_nothing_lost(
    tether_server: ServerFactory,
) -> None:
    server = tether_server(extra_args=["--sse-send-buffer", str(BUFFER)])
    url = server.stream_url("slow")
    assert httpx.put(url, headers=JSON).status_code == 201

    stalled = RawResponse(f"{url}?offset=-1&live=sse", rcvbuf=4096, timeout=WAIT)
    stalled.read_until(b"event: control")  # live; from now on it does not read
    others = [RawResponse(f"{url}?offset=-1&live=sse", timeout=WAIT) for _ in range(2)]
    for reader in others:
        reader.read_until(b"event: control")
    stop = threading.Event()

    def keep_reading(reader: RawResponse) -> None:
        while not stop.is_set() and not reader.ended:
            try:
                reader.read_some()
            except (OSError, AssertionError):
                if stop.is_set():  # the test closed it
                    return
                raise

    threads = [threading.Thread(target=keep_reading, args=(r,), daemon=True) for r in others]
    for t in threads:
        t.start()

    # Append until the server cuts the stalled reader off (the socket buffers
    # on both sides take an unknown amount first; bounded all the same).
    sent = 0
    deadline = time.monotonic() + WAIT
    while metric(server, CUT) < 1:
        assert sent < 20_000, f"no reader cut off after {sent} messages"
        assert time.monotonic() < deadline, f"no reader cut off after {sent} messages"
        append(url, sent, 20)
        sent += 20
    cut_at = sent
    # Appends after the cut: the stalled reader is not handed them any more.
    for _ in range(5):
        append(url, sent, 20)
        sent += 20

    # The other readers got everything, in order, once.
    deadline = time.monotonic() + WAIT
    while any(seqs_and_last_offset(r.body)[0] != list(range(sent)) for r in others):
        assert time.monotonic() < deadline, [len(seqs_and_last_offset(r.body)[0]) for r in others]
        time.sleep(0.05)
    assert metric(server, CUT) == 1

    # The stalled client reads again: events up to the cut, the reason, the end.
    stalled.read_to_end()
    got, resume = seqs_and_last_offset(stalled.body)
    comments = [text for kind, text in events(stalled.body) if kind == "comment"]
    assert any(c.startswith(b"cut off: more than 16384 bytes") for c in comments), comments
    assert resume is not None and f"resume from offset {resume}".encode() in comments[-1]
    assert got == list(range(len(got)))
    assert len(got) <= cut_at  # nothing appended after the cut was kept for it
    stalled.close()

    # It resumes from its last offset: the rest, nothing lost, nothing twice.
    assert got + read_from(url, resume) == list(range(sent))

    # Its response is over on the server too: only the two others are live readers.
    stop.set()
    deadline = time.monotonic() + WAIT
    while metric(server, SSE) != 2:
        assert time.monotonic() < deadline, metric(server, SSE)
        time.sleep(0.05)
    for reader in others:
        reader.close()

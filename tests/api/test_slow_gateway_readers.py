"""A gateway front's streamed answer whose client stops reading is cut off at its bound.

Over a real ``tether serve long_answers:app``: a Chat Completions client (a
small receive buffer) asks an agent for an 8 MiB streamed answer (more than the
kernel buffers of a loopback socket hold) and stops reading; a second client
reads the same answer from its ``X-Tether-Stream-Url``. Once more than
``--sse-send-buffer`` bytes of the session wait for the stalled client, the
server cuts it off: its event stream ends with a comment saying why and no
``data: [DONE]``, and the cut is counted in ``tether_readers_cut_off_total``.
The run goes on (a cut client may come back within the grace period): the
other reader gets the whole answer, and the stalled client resumes from the
last ``id:`` it received with nothing lost or repeated.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from api.apps.long_answers import PIECES
from api.test_slow_session_readers import (
    BUFFER,
    WAIT,
    metric,
)
from helpers.raw_http import RawResponse
from helpers.server import TetherServer

APPS = Path(__file__).parent / "apps"

CUT = 'tether_readers_cut_off_total{transport="sse"}'
DONE = b"data: [DONE]\n\n"


def header(reader: RawResponse, name: str) -> str:
    for line in reader.head.decode().split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name} in {reader.head!r}")


def chunks(reader: RawResponse) -> list[tuple[str, str]]:
    """(id, the delta's text) of each chunk the reader got."""
    out = []
    for offset, chunk in reader.events():
        choices = chunk.get("choices") or [{"delta": {}}]  # none: usage, or the run's error
        assert isinstance(choices, list)
        out.append((offset, str(choices[0]["delta"].get("content") or "")))
    return out


@contextlib.contextmanager
def serve(tmp_path: Path, *args: str) -> Iterator[TetherServer]:
    """``tether serve long_answers:app`` with the send buffer at :data:`BUFFER`."""
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS), env.get("PYTHONPATH")) if p)
    with TetherServer(
        tmp_path / "data", log_path=tmp_path / "server.log", env=env,
        extra_args=["long_answers:app", "--sse-send-buffer", str(BUFFER), *args],
    ) as server:  # fmt: skip
        yield server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TetherServer]:
    with serve(tmp_path) as server:
        yield server


@pytest.fixture
def graceless_server(tmp_path: Path) -> Iterator[TetherServer]:
    """A run nobody reads is cancelled at once."""
    with serve(tmp_path, "--gateway-detach-grace", "0") as server:
        yield server


def start_stalled(server: TetherServer) -> tuple[RawResponse, str]:
    """A streamed completion of ``agent:long`` read through its head, and its stream URL."""
    body = orjson.dumps(
        {
            "model": "agent:long",
            "stream": True,
            "messages": [{"role": "user", "content": "at length"}],
        }
    )
    stalled = RawResponse(
        f"{server.base_url}/v1/chat/completions", rcvbuf=4096, body=body, timeout=WAIT
    )
    while not stalled.head_read:
        stalled.read_some()
    return stalled, server.base_url + header(stalled, "x-tether-stream-url")


def test_a_stalled_chat_completion_stream_is_cut_off_and_resumes_with_nothing_lost(
    server: TetherServer,
) -> None:
    stalled, stream_url = start_stalled(server)
    other = RawResponse(stream_url, timeout=WAIT)
    reading = threading.Thread(target=other.read_to_end, daemon=True)
    reading.start()

    reading.join(WAIT)
    assert other.ended, "the other reader got the whole answer"
    assert other.body.endswith(DONE)
    assert metric(server, CUT) == 1

    # The stalled client reads again: chunks up to the cut, the reason, the end.
    stalled.read_to_end()
    stalled.close()
    got, everything = chunks(stalled), chunks(other)
    assert got == everything[: len(got)] and len(got) < len(everything)
    resume = got[-1][0]
    assert stalled.body.endswith(
        f": cut off: more than {BUFFER} bytes were waiting; resume from offset {resume}\n\n"
        .encode()
    )  # fmt: skip
    rest = RawResponse(str(httpx.URL(stream_url).copy_set_param("offset", resume)), timeout=WAIT)
    rest.read_to_end()
    rest.close()
    assert got + chunks(rest) == everything
    assert rest.body.endswith(DONE)
    other.close()


def test_a_cut_off_reader_counts_as_gone_so_its_unread_run_is_cancelled(
    graceless_server: TetherServer,
) -> None:
    """The request's own reader, the only one of its run, is cut off: as for a client that
    left, the run waits the grace period (here none) for a reader and is cancelled."""
    server = graceless_server
    stalled, stream_url = start_stalled(server)
    deadline = time.monotonic() + WAIT
    while metric(server, CUT) < 1:
        assert time.monotonic() < deadline, "the stalled reader was never cut off"
        time.sleep(0.05)
    stalled.close()
    rest = RawResponse(stream_url, timeout=WAIT)
    rest.read_to_end()
    rest.close()
    last = rest.events()[-1][1]
    assert last["error"]["code"] == "run_cancelled", last  # type: ignore[index]
    assert not rest.body.endswith(DONE)
    assert len([text for _, text in chunks(rest) if text]) < PIECES

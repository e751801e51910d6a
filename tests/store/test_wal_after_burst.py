"""After a burst of writes, the SQLite WAL file shrinks again while the server runs.

SQLite reuses a WAL file from its start without shrinking it, so a burst
(one message to the demo model made 354 MB) used to leave it that big until
shutdown. A real ``tether serve`` is burst at over HTTP, and its ``-wal``
file is watched on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from helpers.server import ServerFactory, TetherServer
from tether.providers.demo import MAX_COUNT
from tether.store.sqlite import JOURNAL_SIZE_LIMIT, _Checkpointer

BYTES = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def server(tether_server: ServerFactory) -> TetherServer:
    return tether_server()


@pytest.fixture
def client(server: TetherServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


def wal_bytes(server: TetherServer) -> int:
    wal = server.data_dir / "tether.db-wal"
    return wal.stat().st_size if wal.exists() else 0


def test_the_wal_is_truncated_once_writes_go_quiet_after_a_burst(
    server: TetherServer, client: httpx.Client
) -> None:
    """A quiet WAL file over ``TRUNCATE_BYTES`` is cut to nothing within a few seconds.

    The burst is the longest answer one message to the demo model may make.
    """
    sid = client.post("/v1/sessions", json={}).json()["id"]
    sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": f"/count {MAX_COUNT} 0"})
    assert sent.status_code == 202, sent.text
    peak = 0
    while client.get(f"/v1/sessions/{sid}").json()["active_run"] is not None:
        peak = max(peak, wal_bytes(server))
    peak = max(peak, wal_bytes(server))
    assert peak > _Checkpointer.TRUNCATE_BYTES, peak  # else this shows nothing

    deadline = time.monotonic() + 15
    while wal_bytes(server) > _Checkpointer.TRUNCATE_BYTES and time.monotonic() < deadline:
        time.sleep(0.1)
    assert wal_bytes(server) <= _Checkpointer.TRUNCATE_BYTES, (peak, wal_bytes(server))

    # The server runs on, its log whole.
    text = client.get(f"/v1/sessions/{sid}").json()["messages"][-1]["parts"][0]["text"]
    assert text == " ".join(str(n) for n in range(1, MAX_COUNT + 1))
    again = client.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 3 0"})
    assert again.status_code == 202, again.text


def test_a_wal_a_burst_made_big_shrinks_to_the_limit_even_if_writes_never_pause(
    tether_server: ServerFactory,
) -> None:
    """Writes that never leave the WAL quiet: the writer cuts the file at its next start-over."""
    big = JOURNAL_SIZE_LIMIT + (8 << 20)  # one append, one commit: the WAL outgrows the limit
    server = tether_server(extra_args=["--max-body", str(big)])
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        assert client.put("/v1/stream/burst", headers=BYTES).status_code == 201
        assert client.post("/v1/stream/burst", content=b"x" * big, headers=BYTES).is_success
        appended = big
        peak = wal_bytes(server)
        assert peak > JOURNAL_SIZE_LIMIT, peak

        # An append well within every checkpoint interval, so the WAL is never quiet.
        deadline = time.monotonic() + 15
        while wal_bytes(server) > JOURNAL_SIZE_LIMIT and time.monotonic() < deadline:
            assert client.post("/v1/stream/burst", content=b"tick", headers=BYTES).is_success
            appended += 4
            time.sleep(_Checkpointer.INTERVAL / 5)
        assert wal_bytes(server) <= JOURNAL_SIZE_LIMIT, (peak, wal_bytes(server))
        head = client.head("/v1/stream/burst")
        assert head.headers["stream-next-offset"] == f"{0:016d}_{appended:016d}"

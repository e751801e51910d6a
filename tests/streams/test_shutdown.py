"""SIGTERM ends open SSE and long-poll responses cleanly and exits within seconds."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from helpers.server import ServerFactory

JSON = {"Content-Type": "application/json"}


def test_sigterm_ends_live_reads_and_exits_promptly(tether_server: ServerFactory) -> None:
    server = tether_server(extra_args=["--long-poll-timeout", "30"])
    url = server.stream_url("shutdown")
    assert httpx.put(url, headers=JSON, content=b'[{"n": 1}]').status_code == 201
    tail = httpx.get(url, params={"offset": "now"}).headers["stream-next-offset"]

    outcome: dict[str, object] = {}

    def sse() -> None:
        with (
            httpx.Client(timeout=30) as client,
            client.stream("GET", url, params={"offset": "-1", "live": "sse"}) as r,
        ):
            outcome["sse_status"] = r.status_code
            outcome["sse_body"] = b"".join(r.iter_bytes())  # ends when the server ends it

    def long_poll() -> None:
        r = httpx.get(url, params={"offset": tail, "live": "long-poll"}, timeout=30)
        outcome["poll_status"] = r.status_code

    readers = [threading.Thread(target=sse), threading.Thread(target=long_poll)]
    for t in readers:
        t.start()
    time.sleep(0.5)  # let both reach their waits

    started = time.monotonic()
    code = server.terminate(timeout=10)
    elapsed = time.monotonic() - started
    for t in readers:
        t.join(5)

    # uvicorn re-raises the signal once shutdown is complete, as servers conventionally do.
    assert code in (0, -signal.SIGTERM), server.output()
    assert "Application shutdown complete" in server.output()
    assert elapsed < 5, f"shutdown took {elapsed:.1f}s"
    assert outcome["sse_status"] == 200
    assert b'"streamNextOffset"' in outcome["sse_body"]  # type: ignore[operator]
    assert outcome["poll_status"] == 204

    restarted = tether_server(server.data_dir)
    assert httpx.get(restarted.stream_url("shutdown"), params={"offset": "-1"}).json() == [{"n": 1}]

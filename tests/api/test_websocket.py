"""The session's events over a WebSocket: the same events, each with its offset."""

from __future__ import annotations

import json

import httpx
from websockets.sync.client import connect

from helpers.server import ServerFactory


def test_websocket_delivers_events_with_offsets_and_resumes(tether_server: ServerFactory) -> None:
    server = tether_server()
    ws_base = server.base_url.replace("http://", "ws://")
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
        run = c.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 8 5"}).json()

    frames = []
    with connect(f"{ws_base}/v1/sessions/{sid}/ws?offset=-1") as ws:
        while True:
            frame = json.loads(ws.recv(timeout=10))
            frames.append(frame)
            if frame["event"]["type"] == "run-end" and frame["event"]["run_id"] == run["run_id"]:
                break
    offsets = [f["offset"] for f in frames]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    text = "".join(f["event"]["delta"] for f in frames if f["event"]["type"] == "part-delta")
    assert text == "1 2 3 4 5 6 7 8"

    middle = offsets[len(offsets) // 2]
    with connect(f"{ws_base}/v1/sessions/{sid}/ws?offset={middle}") as ws:
        rest = [
            json.loads(ws.recv(timeout=10)) for _ in range(len(offsets) - len(offsets) // 2 - 1)
        ]
    assert [f["offset"] for f in rest] == offsets[len(offsets) // 2 + 1 :]


def test_websocket_refuses_unknown_sessions(tether_server: ServerFactory) -> None:
    server = tether_server()
    ws_base = server.base_url.replace("http://", "ws://")
    try:
        with connect(f"{ws_base}/v1/sessions/ses_nope/ws") as ws:
            ws.recv(timeout=5)
    except Exception as err:  # the server closes before accepting
        assert "4404" in str(err) or "403" in str(err) or "rejected" in str(err).lower()
    else:
        raise AssertionError("an unknown session's socket was accepted")

"""``agent:<name>`` as a session's model: what ``/v1/models`` lists, the session API accepts.

A real ``tether serve`` with the agents of tests/web/agents.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from helpers.server import TetherServer
from web.support import agents_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("agent-model")
    srv = TetherServer(
        base / "data", log_path=base / "server.log", extra_args=["web.agents:app"], env=agents_env()
    )
    with srv:
        yield srv


def test_a_listed_agent_names_the_session_agent(server: TetherServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        listed = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert "agent:flaky" in listed
        r = c.post("/v1/sessions", json={"model": "agent:flaky"})
        assert r.status_code == 201, r.text
        record = r.json()
        assert record["agent"] == "flaky" and record["model"] is None
        run = c.post(f"/v1/sessions/{record['id']}/messages", json={"content": "hi"})
        assert run.status_code == 202, run.text
        with c.stream("GET", f"/v1/sessions/{record['id']}/events") as events:
            ends = (json.loads(line[6:]) for line in events.iter_lines() if line[:6] == "data: ")
            end = next(e for e in ends if e["type"] == "run-end")
        assert end["reason"] == "complete"
        answer = c.get(f"/v1/sessions/{record['id']}").json()["messages"][-1]
        assert answer["parts"][-1]["text"] == "The answer."


def test_an_unknown_agent_is_refused_with_the_agents_listed(server: TetherServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        before = c.get("/v1/sessions").json()["sessions"]
        r = c.post("/v1/sessions", json={"model": "agent:nobody"})
        both = c.post("/v1/sessions", json={"model": "agent:flaky", "agent": "brief"})
        after = c.get("/v1/sessions").json()["sessions"]
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "nobody" in message
    assert all(name in message for name in ("approver", "brief", "flaky", "fragile"))
    assert both.status_code == 400
    assert after == before

"""ACP agents that will not start, and config files that are wrong.

A real ``tether serve``: an agent whose process exits at once is restarted with
backoff up to its limit, then ``failed`` (in /readyz and the metrics), and a run
says so; one that never answers ``initialize`` fails on its start-up timeout.
A bad ``[[agents]]`` table stops ``tether serve`` with a message naming the
file, the table and the field.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from helpers.server import TetherServer, find_free_port, tether_command
from helpers.session_events import Events
from tether.agents.acp.config import read_acp_agents
from tether.providers.registry import ConfigError

CONFIG = f"""
[[agents]]
name = "broken"
kind = "acp"
command = "{sys.executable}"
args = ["-c", "import sys; sys.exit(3)"]
restart_initial = 0.05
restart_limit = 2

[[agents]]
name = "mute"
kind = "acp"
command = "{sys.executable}"
args = ["-c", "import time; time.sleep(60)"]
startup_timeout = 0.3
restart_limit = 0
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TetherServer]:
    path = tmp_path / "tether.toml"
    path.write_text(CONFIG)
    env = {**os.environ, "TETHER_CONFIG": str(path)}
    srv = TetherServer(tmp_path / "data", log_path=tmp_path / "server.log", env=env)
    await asyncio.to_thread(srv.start)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


async def test_an_agent_that_will_not_start_fails_after_its_restarts(server: TetherServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        deadline = time.monotonic() + 20
        while True:  # the supervisors work in the background: no event to await over HTTP
            agents = (await c.get("/readyz")).json()["agents"]
            if all(a["state"] == "failed" for a in agents.values()):
                break
            assert time.monotonic() < deadline, agents
            await asyncio.sleep(0.1)
        assert agents == {
            "broken": {"state": "failed", "error": "exited with status 3"},
            "mute": {"state": "failed", "error": "no answer to initialize within 0.3 s"},
        }
        assert (await c.get("/readyz")).status_code == 200  # an agent never fails readiness
        metrics = (await c.get("/metrics")).text
        assert 'tether_acp_agent_state{agent="broken",state="failed"} 1.0' in metrics

        r = await c.post("/v1/sessions", json={"agent": "broken"})
        sid = r.json()["id"]
        events = Events(c, sid)
        r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": "hi"})
        end = await events.run_end(r.json()["run_id"])
        await events.aclose()
        assert end["reason"] == "error"
        error = next(e for e in events.seen if e["type"] == "error")
        assert error == {
            **error,
            "code": "agent_unavailable",
            "message": "agent 'broken' failed: exited with status 3",
        }
    states = re.findall(r"acp agent broken: \w+ -> (\w+)", server.output())
    # The first start, two restarts, failed; the run's one more try, failed again.
    assert states == ["starting", "reconnecting", "failed", "starting", "reconnecting", "failed"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "a"\nkind = "mcp"\ncommand = "x"', "agents[0] (a): 'kind' must be \"acp\""),
        ('name = "a"\nkind = "acp"', "agents[0] (a): 'command' must be a non-empty string"),
        ('name = "a"\nkind = "acp"\ncommand = "x"\ncwd = "rel"', "'cwd' must be an absolute path"),
        ('name = "a"\nkind = "acp"\ncommand = "x"\nfs = "no"', "'fs' must be true or false"),
        ('name = "a"\nkind = "acp"\ncommand = "x"\nrestart_max = 0', "'restart_max' must be a"),
        (
            'name = "a"\nkind = "acp"\ncommand = "x"\nenv = { K = "${NOPE_X}" }',
            "agents[0] (a): env.K: environment variable NOPE_X is not set",
        ),
        ('name = "a"\nkind = "acp"\ncommand = "x"\nport = 1', "unknown field(s) port"),
        ('name = "a b"\nkind = "acp"\ncommand = "x"', "agents[0]: 'name' must be"),
    ],
)
def test_a_bad_table_is_named(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "tether.toml"
    path.write_text(f"[[agents]]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        read_acp_agents(path, {})
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_tether_serve_refuses_a_bad_agents_table(tmp_path: Path) -> None:
    path = tmp_path / "tether.toml"
    path.write_text('[[agents]]\nname = "a"\nkind = "acp"\ncommand = "x"\nrestart_limit = -1\n')
    done = subprocess.run(
        [
            *tether_command(),
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(find_free_port()),
        ],
        env={**os.environ, "TETHER_CONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"{path}: agents[0] (a): 'restart_limit' must be a whole number" in done.stderr

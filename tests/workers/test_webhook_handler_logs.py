"""The webhook handler's log holds no secret it knows, as ``tether serve``'s and
``tether worker``'s do not.

Real processes: ``tether serve`` delivering the agent's wakes to tether's webhook
handler in a uvicorn child, whose app (tests/workers/apps/leaky_app.py) logs secrets
of the handler's environment at debug level through a log handler of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from helpers.session_events import Events
from workers.test_webhook_mode import _env
from workers.test_worker_parity import MCP_CALC, hooked
from workers.test_workers import new_session

PROVIDER_KEY = "sk-proj-Hk3vQ8xLm2NwR7tZ5bYc"
MCP_TOKEN = "calc-tok-9Fq2Lx7Wm4Zp"


def mcp_config(tmp_path: Path) -> Path:
    """The calculator MCP server, given ``CALC_TOKEN`` through a ``${VAR}`` reference."""
    path = tmp_path / "tether.toml"
    path.write_text(
        f'[[mcp_servers]]\nname = "calc"\ncommand = "{sys.executable}"\nargs = ["{MCP_CALC}"]\n'
        'env = { CALC_TOKEN = "${CALC_TOKEN}" }\n'
    )
    return path


async def test_the_handler_redacts_provider_keys_and_mcp_secrets_from_every_log_line(
    tmp_path: Path,
) -> None:
    """What the handler's app logs at debug, at import and in a run, shows ``***`` where
    the handler's provider key and its MCP config's ``${VAR}`` value were."""
    handler_env = {
        "TETHER_OPENAI_API_KEY": PROVIDER_KEY,
        "CALC_TOKEN": MCP_TOKEN,
        "TETHER_CONFIG": str(mcp_config(tmp_path)),
    }
    async with hooked(tmp_path, "leaky", "leaky_app:app", _env(), **handler_env) as (
        server,
        handler,
    ):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            session_id = await new_session(c, {"agent": "leaky"})
            events = Events(c, session_id)
            r = await c.post(f"/v1/sessions/{session_id}/messages", json={"content": "go"})
            end = await events.run_end(r.json()["run_id"])
            await events.aclose()
        assert end["reason"] == "complete", server.output() + handler.output()
    log = handler.output()
    assert "imported with key ***\n" in log, log
    assert "running with key *** and the calculator's token ***\n" in log, log
    assert PROVIDER_KEY not in log and MCP_TOKEN not in log

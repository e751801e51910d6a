"""A published ACP agent under tether's supervisor, offline: Zed's Claude Code adapter
(npm ``@zed-industries/claude-code-acp``, installed from ``published/package.json`` by
``make test``) completes ``initialize`` and ``session/new`` without network access.

Its prompts need Anthropic's API, so no run is made. ``IS_SANDBOX=1``: Claude Code
refuses to skip its own permission prompts as root unless told it runs in a sandbox
(the tests run as root in CI), and ``session/new`` fails without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tether.agents.acp.client import ACPClient
from tether.agents.acp.config import ACPAgentConfig
from tether.agents.acp.supervisor import AgentState, Supervisor

PUBLISHED = Path(__file__).parent / "published"
ADAPTER = PUBLISHED / "node_modules" / ".bin" / "claude-code-acp"


def _installed() -> Path:
    if shutil.which("node") is None:
        reason = "the published ACP agent needs Node.js: `node` not found on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)
    if not ADAPTER.exists():
        pytest.fail(f"{ADAPTER} is not installed: run `make test`, or `npm ci` in {PUBLISHED}")
    return ADAPTER


async def test_claude_code_acp_initializes_and_opens_a_session_offline(tmp_path: Path) -> None:
    adapter = _installed()
    home = tmp_path / "home"
    home.mkdir()
    config = ACPAgentConfig(
        "claude",
        str(adapter),
        env={"HOME": str(home), "IS_SANDBOX": "1"},
        startup_timeout=60.0,
        restart_limit=0,
    )
    supervisor = Supervisor(config, ACPClient)
    try:
        proc = await supervisor.ready()
        assert supervisor.state is AgentState.READY
        assert proc.init.agent_info is not None
        assert proc.init.agent_info.name == "@zed-industries/claude-code-acp"
        workspace = tmp_path / "workspace"
        workspace.mkdir()
        opened = await proc.conn.new_session(cwd=str(workspace), mcp_servers=[])
        assert opened.session_id
    finally:
        await supervisor.aclose()
    assert supervisor.state is AgentState.CLOSED
    assert proc.process.returncode is not None  # terminated and reaped

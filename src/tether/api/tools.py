"""``GET /v1/tools``: the server's tools a key may declare, and its MCP servers' state.

Every key may use every server tool: the app's Python functions (source
``app``) and the tools of the MCP servers of the config file (source
``mcp:<server>``, named ``server.tool``). How a server is reached (its
command, URL or headers) is never shown: only its name, its transport and
whether it is connected now.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from tether.agents.mcp import MCPTool, MCPToolsets
from tether.agents.tools import ServerTool, ToolRegistry
from tether.api.auth import Unauthorized
from tether.api.sessions import Who


class ToolInfo(BaseModel):
    name: str
    description: str
    #: The JSON Schema of the tool's arguments.
    parameters: dict[str, Any]
    #: Each call waits for a ``/tool-approvals`` answer before it runs.
    approval: bool
    #: ``app`` (an ``@app.tool`` function) or ``mcp:<server>``.
    source: str


class MCPServerInfo(BaseModel):
    name: str
    transport: Literal["stdio", "http"]
    connected: bool
    #: Times the server was connected again after its first connection.
    restarts: int


class ToolList(BaseModel):
    tools: list[ToolInfo]
    mcp_servers: list[MCPServerInfo]


def build_tools_router(registry: ToolRegistry, mcp: MCPToolsets) -> APIRouter:
    router = APIRouter(tags=["tools"])

    @router.get("/v1/tools")
    async def list_tools(who: Who) -> ToolList:
        """The server tools and MCP tools a session or message may declare by name."""
        if who.read_only:
            raise Unauthorized("a read token can only read its session or stream")
        tools = [_info(tool) for tool in registry.server.values()]
        servers = [
            MCPServerInfo(
                name=s.name,
                transport="stdio" if s.config.command is not None else "http",
                connected=s.connected,
                restarts=max(s.connections - 1, 0),
            )
            for s in mcp.servers
        ]
        return ToolList(tools=tools, mcp_servers=servers)

    return router


def _info(tool: ServerTool) -> ToolInfo:
    source = f"mcp:{tool.connection.name}" if isinstance(tool, MCPTool) else "app"
    spec = tool.spec
    return ToolInfo(
        name=spec.name,
        description=spec.description,
        parameters=spec.parameters,
        approval=tool.approval,
        source=source,
    )

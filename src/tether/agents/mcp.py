"""MCP servers' tools as server tools, each server kept connected by a supervisor.

Every server of the config file (:mod:`tether.agents.mcp_config`) gets one
:class:`MCPConnection`, whose task (owned by :class:`MCPToolsets`, hence by
the app) connects through the official ``mcp`` SDK's client, lists the
server's tools into the app's ``ToolRegistry`` as ``server.tool``, and then
watches the connection: a call that finds it gone, or a periodic listing that
fails, ends it, and the task connects again after a backoff (0.5 s, doubling
up to 30 s while attempts keep failing). A stdio server is a child process,
stopped and reaped with its connection.

A call made while its server is away is an error the model is given
(:class:`MCPUnavailable`), and so is a tool's own failure (:class:`MCPToolError`):
a run never crashes on an MCP server. A tool's result becomes the call's
outcome: its structured content if it has some, else its content as text, an
image or audio as a short description of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import httpx2
import mcp_types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client.streamable_http import streamable_http_client

from tether import __version__
from tether.agents.mcp_config import MCPServerConfig
from tether.agents.tools import ToolRegistry
from tether.providers.base import ToolSpec

log = logging.getLogger(__name__)

#: Seconds a connection (start, handshake, first listing) may take.
CONNECT_TIMEOUT = 20.0
#: Seconds between listings of a connected server's tools (which also tell it is alive).
PROBE_INTERVAL = 15.0
#: Seconds the server's start waits for its MCP servers' first connections.
STARTUP_WAIT = 10.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
#: Pages of a tool listing read at most (a server that pages forever is cut off).
MAX_PAGES = 50


class MCPUnavailable(RuntimeError):
    """The tool's MCP server is not connected (it is being restarted)."""


class MCPToolError(RuntimeError):
    """The MCP server ran the tool and reports that it failed."""


class MCPTool:
    """One tool of an MCP server, as a ``ServerTool`` named ``server.tool``."""

    approval = False

    def __init__(self, connection: MCPConnection, tool: mcp_types.Tool) -> None:
        self.connection = connection
        #: The tool's name at its server.
        self.remote_name = tool.name
        parameters = dict(tool.input_schema)
        parameters.setdefault("type", "object")
        name = f"{connection.config.name}.{tool.name}"
        self.spec = ToolSpec(name, tool.description or "", parameters)

    async def __call__(self, arguments: dict[str, Any]) -> Any:
        return await self.connection.call(self.remote_name, arguments)

    def __repr__(self) -> str:
        return f"MCPTool({self.spec.name!r})"


class MCPConnection:
    """One configured MCP server: its connection while there is one, and its supervisor."""

    def __init__(self, config: MCPServerConfig, registry: ToolRegistry) -> None:
        self.config = config
        self._registry = registry
        self._client: Client | None = None
        #: Set by a call that found the connection gone; the supervisor reconnects.
        self._lost = asyncio.Event()
        #: Set once the first attempt to connect has succeeded or failed.
        self.tried = asyncio.Event()
        #: Connections made so far (the first, then one per restart).
        self.connections = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool`` on the server: its output, or MCPUnavailable / MCPToolError."""
        client = self._client
        if client is None:
            raise MCPUnavailable(f"MCP server {self.name!r} is not connected; it is restarting")
        try:
            result = await client.call_tool(tool, arguments, self.config.timeout)
        except MCPError as err:
            if err.error.code != mcp_types.CONNECTION_CLOSED:
                raise MCPToolError(err.error.message) from None
            self._lost.set()
            raise MCPUnavailable(f"MCP server {self.name!r} went away during the call") from None
        except Exception as err:  # the transport broke: connect again
            self._lost.set()
            raise MCPUnavailable(
                f"MCP server {self.name!r} failed during the call ({type(err).__name__})"
            ) from None
        if result.is_error:
            raise MCPToolError(content_text(result.content) or "the tool failed")
        return tool_output(result)

    async def supervise(self) -> None:
        """Keep the server connected, until cancelled (see the module)."""
        failures = 0
        while True:
            try:
                await self._connect_and_watch()
                failures = 0
            except Exception as err:
                failures += 1
                log.warning("mcp server %s: %s", self.name, _describe(err))
            finally:
                self._client = None
                self.tried.set()
            delay = min(BACKOFF_BASE * 2 ** max(failures - 1, 0), BACKOFF_MAX)
            log.info("mcp server %s: connecting again in %.1f s", self.name, delay)
            await asyncio.sleep(delay)

    async def _connect_and_watch(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                server = await self._server(stack)
                client = Client(
                    server,
                    client_info=mcp_types.Implementation(name="tether", version=__version__),
                    cache=None,
                )
                await stack.enter_async_context(client)
                self._publish(await self._list(client))
            self._lost.clear()
            self._client = client
            self.connections += 1
            self.tried.set()
            log.info("mcp server %s: connected (%d tools)", self.name, self._tool_count())
            await self._watch(client)
            log.warning("mcp server %s: the connection was lost", self.name)

    async def _server(self, stack: contextlib.AsyncExitStack) -> StdioServerParameters | Transport:
        config = self.config
        if config.command is not None:
            env = dict(config.env) or None
            return StdioServerParameters(command=config.command, args=list(config.args), env=env)
        assert config.url is not None
        http = httpx2.AsyncClient(
            headers=dict(config.headers), timeout=httpx2.Timeout(30.0, read=config.timeout)
        )
        await stack.enter_async_context(http)
        return streamable_http_client(config.url, http_client=http)

    async def _watch(self, client: Client) -> None:
        """Return when the connection is found gone; list the tools now and then meanwhile."""
        while not self._lost.is_set():
            try:
                await asyncio.wait_for(self._lost.wait(), PROBE_INTERVAL)
            except TimeoutError:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    self._publish(await self._list(client))

    async def _list(self, client: Client) -> list[MCPTool]:
        tools: list[MCPTool] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(MCPTool(self, tool) for tool in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    def _publish(self, tools: Iterable[MCPTool]) -> None:
        self._registry.replace_namespace(self.name, tools)

    def _tool_count(self) -> int:
        return sum(1 for name in self._registry.server if name.startswith(self.name + "."))


class MCPToolsets:
    """The app's MCP servers and their supervisor tasks (started and stopped with it)."""

    def __init__(self, configs: Iterable[MCPServerConfig], registry: ToolRegistry) -> None:
        self.servers = [MCPConnection(config, registry) for config in configs]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, wait: float = STARTUP_WAIT) -> None:
        """Start the supervisors; wait (at most ``wait`` s) for each first attempt to end."""
        self._tasks = [
            asyncio.create_task(s.supervise(), name=f"mcp-{s.name}") for s in self.servers
        ]
        if self.servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await asyncio.gather(*(s.tried.wait() for s in self.servers))

    async def aclose(self) -> None:
        """Stop the supervisors: connections closed, stdio children stopped and reaped."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


def tool_output(result: mcp_types.CallToolResult) -> Any:
    """A tool's result as the call's outcome: structured content, else the content as text."""
    if result.structured_content is not None:
        return result.structured_content
    return content_text(result.content)


def content_text(blocks: Iterable[mcp_types.ContentBlock]) -> str:
    """Content blocks as text: text as it is, anything else as a short description."""
    return "\n".join(_block_text(block) for block in blocks)


def _block_text(block: mcp_types.ContentBlock) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        return f"[{block.type}: {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource: {block.uri}]"
    resource = block.resource
    if isinstance(resource, mcp_types.TextResourceContents):
        return resource.text
    return f"[resource: {resource.uri}, {_decoded_size(resource.blob)} bytes]"


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except ValueError:
        return len(data)


def _describe(err: BaseException) -> str:
    """An exception (or group of them) in a line; no credential is ever in one of ours."""
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in err.exceptions)
    if isinstance(err, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:.0f} s"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__

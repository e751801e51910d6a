"""An MCP server written with the ``mcp`` package's own server API, for the e2e tests.

tether runs it as a child process over stdio (``python mcp_calc.py``); a test
serves the same tools over streamable HTTP (:func:`build`).
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer


def build() -> MCPServer:
    server = MCPServer("calc", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """The text in capitals."""
        return text.upper()

    @server.tool()
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    @server.tool()
    def fail() -> str:
        """Always fails."""
        raise ValueError("the calculator is broken")

    return server


if __name__ == "__main__":
    build().run("stdio")

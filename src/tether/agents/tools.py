"""The tools a run offers its model, and who runs each of them.

A session (``tools`` on create and update) and a user message (``tools`` on
send) declare tools as a list whose items are either the name of a tool the
server runs (a Python function registered with ``@app.tool``, or an MCP
server's tool) or a client tool's definition ``{name, description,
parameters}``, which the model may call and any client answers with
``/tool-results``. A message's tools join the session's; a definition of the
same name replaces the session's for that message.

:class:`ToolRegistry` knows the server's tools and checks declarations before
anything is stored (a bad one is :class:`InvalidInput`), so that a run never
meets one it cannot resolve.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tether.providers.base import ToolSpec
from tether.runtime.errors import InvalidInput

#: What a client tool may be called: what OpenAI and Anthropic both accept.
CLIENT_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Tools one declaration may list.
MAX_TOOLS = 128
MAX_DESCRIPTION = 10_000

Declared = str | dict[str, Any]


class ServerTool(Protocol):
    """A tool the server runs when a model calls it."""

    spec: ToolSpec
    #: A person must approve each call (``/tool-approvals``) before it runs.
    approval: bool

    async def __call__(self, arguments: dict[str, Any]) -> Any:
        """Run the tool; an exception is the call's error, which the model is given."""
        ...


@dataclass(slots=True, frozen=True)
class Toolset:
    """The tools of one run, by name in the order they were declared."""

    #: Every tool's definition, as the model is offered them.
    specs: tuple[ToolSpec, ...] = ()
    #: The server's tools among them; a name not here is a client's tool.
    server: Mapping[str, ServerTool] | None = None

    def server_tool(self, name: str) -> ServerTool | None:
        return (self.server or {}).get(name)

    def needs_approval(self, name: str) -> bool:
        tool = self.server_tool(name)
        return tool is not None and tool.approval

    def __bool__(self) -> bool:
        return bool(self.specs)


class ToolRegistry:
    """The server's tools, and the resolution of declarations into toolsets."""

    def __init__(self, server_tools: Iterable[ServerTool] = ()) -> None:
        self.server: dict[str, ServerTool] = {}
        for tool in server_tools:
            self.add(tool)

    def add(self, tool: ServerTool) -> None:
        if tool.spec.name in self.server:
            raise ValueError(f"tool {tool.spec.name!r} is registered twice")
        self.server[tool.spec.name] = tool

    def replace_namespace(self, namespace: str, tools: Iterable[ServerTool]) -> None:
        """Make ``tools`` the tools named ``namespace.*`` (an MCP server's, listed anew)."""
        prefix = namespace + "."
        for name in [n for n in self.server if n.startswith(prefix)]:
            del self.server[name]
        for tool in tools:
            if not tool.spec.name.startswith(prefix):
                raise ValueError(f"tool {tool.spec.name!r} is not in namespace {namespace!r}")
            self.add(tool)

    def check(self, declared: Any) -> list[Declared]:
        """``declared`` (from a request body) as a list of declarations, or InvalidInput."""
        if not isinstance(declared, list):
            raise InvalidInput("tools must be a list of tool names and tool definitions")
        if len(declared) > MAX_TOOLS:
            raise InvalidInput(f"at most {MAX_TOOLS} tools may be declared at once")
        names: set[str] = set()
        out: list[Declared] = []
        for i, item in enumerate(declared):
            spec = self._spec(item, f"tools[{i}]")
            if spec.name in names:
                raise InvalidInput(f"tools[{i}]: {spec.name!r} is declared twice")
            names.add(spec.name)
            out.append(item)
        return out

    def resolve(self, *declarations: Iterable[Declared] | None) -> Toolset:
        """The toolset of the declarations, later ones replacing earlier ones by name."""
        specs: dict[str, ToolSpec] = {}
        server: dict[str, ServerTool] = {}
        for declared in declarations:
            for item in declared or ():
                spec = self._spec(item, "tools")
                specs.pop(spec.name, None)  # re-declared: it moves to the end
                specs[spec.name] = spec
                tool = self.server.get(item) if isinstance(item, str) else None
                if tool is not None:
                    server[spec.name] = tool
                else:
                    server.pop(spec.name, None)
        return Toolset(tuple(specs.values()), server)

    def _spec(self, item: Any, where: str) -> ToolSpec:
        if isinstance(item, str):
            tool = self.server.get(item)
            if tool is None:
                known = ", ".join(sorted(self.server)) or "none"
                raise InvalidInput(f"{where}: no server tool {item!r} (server tools: {known})")
            return tool.spec
        return client_tool_spec(item, where)


def client_tool_spec(item: Any, where: str = "tool") -> ToolSpec:
    """A client tool's definition ``{name, description?, parameters?}`` checked, as a ToolSpec."""
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: a tool is a server tool's name or a definition object")
    unknown = sorted(set(item) - {"name", "description", "parameters"})
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not CLIENT_TOOL_NAME.match(name):
        raise InvalidInput(f"{where}: 'name' must be 1 to 64 letters, digits, '_' or '-'")
    description = item.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"{where}: 'description' must be a string of at most 10000 characters")
    parameters = item.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise InvalidInput(f"{where}: 'parameters' must be a JSON Schema of type object")
    return ToolSpec(name, description, parameters)

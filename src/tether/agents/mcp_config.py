"""The MCP servers of the config file (``TETHER_CONFIG``): ``[[mcp_servers]]`` tables.

::

    [[mcp_servers]]                 # a server tether runs as a child process (stdio)
    name = "files"                  # its tools are offered as files.<tool>
    command = "npx"
    args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
    env = { ROOT = "/srv/docs" }    # values may reference the environment: "${VAR}"

    [[mcp_servers]]                 # a server reached over streamable HTTP
    name = "search"
    url = "https://mcp.example.com/mcp"
    headers = { Authorization = "Bearer ${SEARCH_TOKEN}" }
    # optional for both: timeout = 120.0 (seconds one tool call may take)

A ``${VAR}`` is replaced by the variable's value when the file is read (a
variable that is not set is an error naming it). Those values are credentials:
no API returns them, and the server's logs redact them (:meth:`MCPServerConfig.secrets`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tether.providers.redaction import check_credential
from tether.providers.registry import ConfigError, config_tables

#: An MCP server's name: the namespace of its tools (``name.tool``).
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: Seconds one tool call may take, unless the server's table says otherwise.
CALL_TIMEOUT = 120.0
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STDIO_KEYS = {"name", "command", "args", "env", "timeout"}
_HTTP_KEYS = {"name", "url", "headers", "timeout"}


@dataclass(slots=True, frozen=True)
class MCPServerConfig:
    """One MCP server: a command to run (stdio) or a URL (streamable HTTP)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = CALL_TIMEOUT
    #: The values that came from ``${VAR}`` references (never shown).
    secret_values: tuple[str, ...] = field(default=(), repr=False)

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def secrets(self) -> list[str]:
        """What the logs must redact: every value taken from the environment."""
        return list(self.secret_values)


def load_mcp_servers(env: Mapping[str, str] | None = None) -> list[MCPServerConfig]:
    """The ``[[mcp_servers]]`` of ``$TETHER_CONFIG`` (none without the variable)."""
    env = os.environ if env is None else env
    path = env.get("TETHER_CONFIG")
    return read_mcp_servers(Path(path), env) if path else []


def read_mcp_servers(path: Path, env: Mapping[str, str]) -> list[MCPServerConfig]:
    """The ``[[mcp_servers]]`` of the TOML file ``path``; ConfigError if one is invalid."""
    return read_named_tables(path, "mcp_servers", env, parse_server)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Named = TypeVar("Named", bound=_Named)


def read_named_tables(
    path: Path,
    key: str,
    env: Mapping[str, str],
    parse: Callable[[str, dict[str, Any], Mapping[str, str]], Named],
) -> list[Named]:
    """The ``[[key]]`` tables of ``path``, each parsed; a name used twice is a ConfigError."""
    parsed: list[Named] = []
    for i, table in enumerate(config_tables(path, key)):
        item = parse(f"{path}: {key}[{i}]", table, env)
        if any(p.name == item.name for p in parsed):
            raise ConfigError(f"{path}: {key}[{i}]: the name {item.name!r} is taken")
        parsed.append(item)
    return parsed


def parse_server(where: str, table: dict[str, Any], env: Mapping[str, str]) -> MCPServerConfig:
    """One ``[[mcp_servers]]`` table, checked and with its ``${VAR}`` references filled in."""
    name = table.get("name")
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise ConfigError(f"{where}: 'name' must be 1 to 32 letters, digits, '_' or '-'")
    where = f"{where} ({name})"
    if ("command" in table) == ("url" in table):
        raise ConfigError(f"{where}: give 'command' (stdio) or 'url' (streamable HTTP)")
    allowed = _STDIO_KEYS if "command" in table else _HTTP_KEYS
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    timeout = table.get("timeout", CALL_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: 'timeout' must be a positive number of seconds")
    secrets: list[str] = []
    if "command" in table:
        command, args = table["command"], table.get("args", [])
        if not isinstance(command, str) or not command:
            raise ConfigError(f"{where}: 'command' must be a non-empty string")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ConfigError(f"{where}: 'args' must be a list of strings")
        variables = _table_of_strings(where, "env", table.get("env", {}), env, secrets)
        return MCPServerConfig(
            name, command=command, args=tuple(args), env=variables, timeout=float(timeout),
            secret_values=tuple(secrets),
        )  # fmt: skip
    url = table["url"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'url' must be an http:// or https:// URL")
    headers = _table_of_strings(where, "headers", table.get("headers", {}), env, secrets)
    return MCPServerConfig(
        name, url=url, headers=headers, timeout=float(timeout), secret_values=tuple(secrets)
    )


def _table_of_strings(
    where: str, key: str, value: Any, env: Mapping[str, str], secrets: list[str]
) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{where}: '{key}' must be a table of strings")
    return {k: _expand(f"{where}: {key}.{k}", v, env, secrets) for k, v in value.items()}


def _expand(where: str, value: str, env: Mapping[str, str], secrets: list[str]) -> str:
    """``value`` with each ``${VAR}`` replaced by the variable's value (kept in ``secrets``)."""

    def fill(match: re.Match[str]) -> str:
        var = match.group(1)
        found = env.get(var)
        if found is None:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        try:
            check_credential(var, found)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if found:
            secrets.append(found)
        return found

    expanded = _REFERENCE.sub(fill, value)
    if expanded != value and expanded not in secrets:
        secrets.append(expanded)  # "Bearer <token>" as sent, as well as the token
    return expanded

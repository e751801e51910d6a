"""The ACP agents of the config file (``TETHER_CONFIG``): ``[[agents]]`` tables.

::

    [[agents]]
    name = "gemini"                 # served as agent:gemini
    kind = "acp"                    # an agent process spoken to over ACP (stdio)
    command = "gemini"
    args = ["--experimental-acp"]
    env = { GEMINI_API_KEY = "${GEMINI_API_KEY}" }   # "${VAR}": from the environment
    # optional:
    # cwd = "/srv/repo"             # every session's workspace; else one directory
    #                               # per session: <data dir>/workspaces/<name>/<session>/
    # fs = true                     # serve fs/read_text_file and fs/write_text_file
    # terminal = true               # serve terminal/*
    # startup_timeout = 30.0        # seconds for the process to answer `initialize`
    # restart_initial = 0.5         # seconds before the first restart, doubled each time
    # restart_max = 30.0            # the longest wait between restarts
    # restart_limit = 5             # failed starts in a row (or deaths within restart_max
    #                               # seconds of a start): then failed

``env`` is the process's environment besides a few basics (PATH, HOME, ...): never
the server's own. Its values take ``${VAR}`` references as ``[[mcp_servers]]`` do;
those read from the environment are credentials (:meth:`ACPAgentConfig.secrets`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.agents.mcp_config import SERVER_NAME, _table_of_strings, read_named_tables
from tether.providers.registry import ConfigError

KIND = "acp"
_KEYS = {
    "name", "kind", "command", "args", "env", "cwd", "fs", "terminal", "startup_timeout",
    "restart_initial", "restart_max", "restart_limit",
}  # fmt: skip


@dataclass(slots=True, frozen=True)
class ACPAgentConfig:
    """One agent process: how to start it, where its sessions work, how to keep it alive."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: One directory for every session; None: a directory per session under the data dir.
    cwd: Path | None = None
    fs: bool = True
    terminal: bool = True
    startup_timeout: float = 30.0
    restart_initial: float = 0.5
    restart_max: float = 30.0
    restart_limit: int = 5
    secret_values: tuple[str, ...] = field(default=(), repr=False)

    def secrets(self) -> list[str]:
        """What the logs must redact: every value taken from the environment."""
        return list(self.secret_values)

    def restart_delay(self, attempt: int) -> float:
        """Seconds before restart ``attempt`` (1, 2, ...): exponential, capped."""
        return float(min(self.restart_max, self.restart_initial * 2 ** (attempt - 1)))


def load_acp_agents(env: Mapping[str, str] | None = None) -> list[ACPAgentConfig]:
    """The ``[[agents]]`` of ``$TETHER_CONFIG`` (none without the variable)."""
    env = os.environ if env is None else env
    path = env.get("TETHER_CONFIG")
    return read_acp_agents(Path(path), env) if path else []


def read_acp_agents(path: Path, env: Mapping[str, str]) -> list[ACPAgentConfig]:
    """The ``[[agents]]`` of the TOML file ``path``; ConfigError naming the table and field."""
    return read_named_tables(path, "agents", env, parse_agent)


def parse_agent(where: str, table: dict[str, Any], env: Mapping[str, str]) -> ACPAgentConfig:
    """One ``[[agents]]`` table, checked, with its ``${VAR}`` references filled in."""
    name = table.get("name")
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise ConfigError(f"{where}: 'name' must be 1 to 32 letters, digits, '_' or '-'")
    where = f"{where} ({name})"
    if table.get("kind") != KIND:
        raise ConfigError(f"{where}: 'kind' must be \"{KIND}\" (the only kind served)")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    command, args = table.get("command"), table.get("args", [])
    if not isinstance(command, str) or not command:
        raise ConfigError(f"{where}: 'command' must be a non-empty string")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: 'args' must be a list of strings")
    cwd = table.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not Path(cwd).is_absolute()):
        raise ConfigError(f"{where}: 'cwd' must be an absolute path")
    for flag in ("fs", "terminal"):
        if not isinstance(table.get(flag, True), bool):
            raise ConfigError(f"{where}: '{flag}' must be true or false")
    secrets: list[str] = []
    variables = _table_of_strings(where, "env", table.get("env", {}), env, secrets)
    return ACPAgentConfig(
        name,
        command,
        tuple(args),
        variables,
        cwd=Path(cwd) if cwd is not None else None,
        fs=table.get("fs", True),
        terminal=table.get("terminal", True),
        startup_timeout=_seconds(where, table, "startup_timeout", 30.0),
        restart_initial=_seconds(where, table, "restart_initial", 0.5),
        restart_max=_seconds(where, table, "restart_max", 30.0),
        restart_limit=_count(where, table, "restart_limit", 5),
        secret_values=tuple(secrets),
    )


def _seconds(where: str, table: dict[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: '{key}' must be a positive number of seconds")
    return float(value)


def _count(where: str, table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: '{key}' must be a whole number, 0 or more")
    return value

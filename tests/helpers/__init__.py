"""Test-only helpers shared across the suite (kept out of src/ so they never ship)."""

from .server import (
    ServerError,
    ServerFactory,
    TetherServer,
    find_free_port,
    running_server,
    tether_command,
)

__all__ = [
    "ServerError",
    "ServerFactory",
    "TetherServer",
    "find_free_port",
    "running_server",
    "tether_command",
]

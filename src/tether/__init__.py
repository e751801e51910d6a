"""tether: durable transport for AI agent sessions."""

__version__ = "0.1.0"

from tether.agents.app import App

__all__ = ["App", "__version__"]

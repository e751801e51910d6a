"""tether: durable transport for AI agent sessions."""

__version__ = "0.1.0"

from tether.agents.app import App
from tether.agents.context import AgentContext
from tether.agents.llm import Reply, Retrying, ServerModel
from tether.providers.base import (
    ChatMessage,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    Usage,
)
from tether.runtime.context import Approval, ToolOutcome

__all__ = [
    "AgentContext",
    "App",
    "Approval",
    "ChatMessage",
    "ReasoningDelta",
    "Reply",
    "Retrying",
    "ServerModel",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallItem",
    "ToolOutcome",
    "Usage",
    "__version__",
]

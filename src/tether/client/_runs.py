"""Small pieces shared by the sync and async run handles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.client.models import ToolCall

Verdict = bool | tuple[bool, str | None]
#: How tool calls that need approval are answered.
Approve = bool | Callable[[ToolCall], Any]


@dataclass(slots=True)
class ReadToken:
    token: str
    #: Seconds since the epoch.
    expires_at: float

    def __repr__(self) -> str:
        return f"ReadToken(token=<redacted>, expires_at={self.expires_at!r})"


def content_json(content: str | list[Any]) -> str | list[Any]:
    """Message content as the API takes it: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": p} if isinstance(p, str) else p for p in content]


def tool_verdict(value: Any) -> tuple[bool, str | None]:
    if isinstance(value, tuple):
        approved, reason = value
        return bool(approved), reason
    return bool(value), None


def tool_error_text(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__

"""Shared by the provider tests."""

from __future__ import annotations

from tether.providers.base import ModelRequest, Provider, StreamItem, TextDelta, ToolCallDelta

#: A credential shaped like a real one, so a leak anywhere is easy to spot.
KEY = "sk-test-SUPERSECRET-4f1c9e0b7a2d"


async def collect(provider: Provider, request: ModelRequest) -> list[StreamItem]:
    return [item async for item in provider.stream(request)]


def text_of(items: list[StreamItem]) -> str:
    return "".join(i.text for i in items if isinstance(i, TextDelta))


def argument_deltas(call_id: str, name: str, arguments: str, size: int) -> list[ToolCallDelta]:
    """The ToolCallDeltas of arguments a fake upstream streams in pieces of ``size``."""
    return [
        ToolCallDelta(call_id, name, arguments[i : i + size])
        for i in range(0, len(arguments), size)
    ]

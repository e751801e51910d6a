"""The model side's contract: a provider streams one model response.

The runtime calls ``stream`` once per attempt and consumes the iterator; to
cancel, it cancels the consuming task, and the provider's ``async with`` blocks
close the upstream request. Providers raise ``ProviderError`` with
``transient=True`` for what is worth retrying (timeouts, 429, 5xx).

Errors, each with the wire ``code`` a run's error event carries (declared here,
so renaming a class never changes what clients see)::

    ProviderError                   an upstream failure
     +-- UpstreamInvalidRequest     the upstream refused the request (400, 413, 422)
     +-- UpstreamNotFound           the upstream answered 404 (no such model)
     +-- UpstreamRateLimited        the upstream kept answering 429

A provider whose request depends on the :class:`ModelRequest` alone may offer
to start it before its run exists: :class:`PrefetchingProvider`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    #: JSON text of the arguments, as the model produced it.
    arguments: str


@dataclass(slots=True)
class ChatMessage:
    role: str  # system | user | assistant | tool
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: For role "tool": the call this message answers.
    tool_call_id: str | None = None
    #: For role "tool": the result was an error.
    is_error: bool = False


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


#: The sampling options a request may carry (OpenAI's names and value forms).
#: Providers send those their upstream understands, in its format, and drop the
#: rest; nothing outside this set is ever sent upstream from a request.
SAMPLING_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "parallel_tool_calls",
        "reasoning_effort",
    }
)


@dataclass(slots=True)
class ModelRequest:
    model: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    #: 1 for the first attempt of a run's model call, 2 for its first retry...
    attempt: int = 1
    run_id: str = ""
    #: How the model may use ``tools``, in OpenAI's form: ``"auto"``, ``"none"``,
    #: ``"required"`` or ``{"type": "function", "function": {"name": ...}}``;
    #: None leaves it to the upstream. Ignored without tools.
    tool_choice: str | dict[str, Any] | None = None
    #: Sampling options, keys from SAMPLING_OPTIONS (others are ignored).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True)
class ToolCallItem:
    """A complete tool call (providers assemble streamed argument fragments)."""

    call: ToolCall


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


StreamItem = TextDelta | ReasoningDelta | ToolCallItem | Usage


class ProviderError(Exception):
    """An upstream failure; the message must never contain a credential."""

    #: The ``code`` of the error event of a run that fails with it.
    code: ClassVar[str] = "ProviderError"

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class UpstreamInvalidRequest(ProviderError):
    """The upstream refused the request as invalid (HTTP 400, 413, 422)."""

    code = "UpstreamInvalidRequest"


class UpstreamNotFound(ProviderError):
    """The upstream answered 404 (typically: it has no such model)."""

    code = "UpstreamNotFound"


class UpstreamRateLimited(ProviderError):
    """The upstream kept answering 429 after the retries."""

    code = "UpstreamRateLimited"


class Provider(Protocol):
    #: Prefix of the model names it serves ("demo", "openai", "anthropic", ...).
    name: str

    def models(self) -> list[str]:
        """Model names it serves, without the provider prefix."""
        ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]: ...

    async def aclose(self) -> None: ...

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

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeGuard


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    #: JSON text of the arguments, as the model produced it.
    arguments: str


@dataclass(slots=True)
class Attachment:
    """An image or file of a user message, as providers send it on."""

    #: "image" or "file".
    kind: str
    media_type: str = ""
    #: The bytes, base64; empty when ``url`` is given, or while ``stream`` is unread.
    data: str = ""
    #: An http(s) URL the upstream fetches (images only).
    url: str | None = None
    name: str | None = None
    #: Where the bytes are stored when they are not inline (read before sending).
    stream: str | None = None


@dataclass(slots=True)
class ChatMessage:
    role: str  # system | user | assistant | tool
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: For role "tool": the call this message answers.
    tool_call_id: str | None = None
    #: For role "tool": the result was an error.
    is_error: bool = False
    #: For role "user": its images and files, sent before its text.
    attachments: list[Attachment] = field(default_factory=list)


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
    #: The request in an upstream's own format, already sanitised, when a client sent
    #: it so (the Messages front's body, for an Anthropic upstream): a provider that
    #: speaks that format sends it as it is, with the model (and streaming) its own;
    #: the others go by the fields above.
    native: dict[str, Any] | None = None


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True)
class ReasoningSignature:
    """The upstream's signature of the reasoning just streamed (Anthropic's ``signature_delta``).

    It ends that reasoning; an upstream that is given the reasoning back (a
    later turn) checks it against the signature.
    """

    signature: str


@dataclass(slots=True)
class RedactedReasoning:
    """Reasoning the upstream hands over encrypted (Anthropic's ``redacted_thinking``)."""

    data: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call's JSON arguments, as the model streams them.

    The call's ``id`` and ``name`` are known from its first piece on; a
    :class:`ToolCallItem` with the whole arguments follows once it is complete.
    """

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class ToolCallItem:
    """A complete tool call (providers assemble streamed argument fragments)."""

    call: ToolCall


@dataclass(slots=True)
class Usage:
    """Token counts of one model call, as the upstream reported them.

    ``input_tokens`` counts the whole prompt, cached parts included (OpenAI's
    ``prompt_tokens``; Anthropic's three input counts added up); the cache and
    reasoning counts are the parts of it (and of ``output_tokens``) the upstream
    broke out, 0 when it did not.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def counts(self) -> dict[str, int]:
        """The counts a message's usage records: input and output always, the rest when known."""
        out = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        for key in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
            n = getattr(self, key)
            if n:
                out[key] = n
        return out


StreamItem = (
    TextDelta
    | ReasoningDelta
    | ReasoningSignature
    | RedactedReasoning
    | ToolCallDelta
    | ToolCallItem
    | Usage
)
#: What a provider streams: a generator, so that a caller can close it (and its request) early.
ItemStream = AsyncGenerator[StreamItem, None]


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


#: An upstream's HTTP status -> the error it means for the request.
_BY_STATUS: dict[int, type[ProviderError]] = {
    400: UpstreamInvalidRequest,
    404: UpstreamNotFound,
    413: UpstreamInvalidRequest,
    422: UpstreamInvalidRequest,
    429: UpstreamRateLimited,
}


def classified(err: ProviderError) -> ProviderError:
    """``err`` as the class its upstream status means (itself for other statuses)."""
    cls = _BY_STATUS.get(err.status or 0)
    if cls is None:
        return err
    return cls(str(err), transient=err.transient, status=err.status)


class Provider(Protocol):
    #: Prefix of the model names it serves ("demo", "openai", "anthropic", ...).
    name: str

    def models(self) -> list[str]:
        """Model names it serves, without the provider prefix."""
        ...

    def stream(self, request: ModelRequest) -> ItemStream: ...

    async def aclose(self) -> None: ...


class SentRequest(Protocol):
    """An upstream request already written, whose response its stream reads later."""

    #: The response's status once its head has been read; 0 if there will be
    #: none (aborted, or the exchange failed).
    answered: asyncio.Future[int]

    def abort(self) -> None:
        """Nobody will read the response: drop it (and its connection)."""
        ...


class PrefetchingProvider(Provider, Protocol):
    """A provider whose upstream request depends on the :class:`ModelRequest` alone.

    Not on the run (the demo model's answer is seeded by the run id), so the
    request may be started before its run exists: the gateway's pipelining.
    """

    def begin(self, request: ModelRequest) -> tuple[ItemStream, SentRequest | None]:
        """Like ``stream``, with the request written now if that can be done at once.

        Returns the stream and what was sent (None if nothing was: the stream
        then sends the request when first iterated). Whoever does not iterate
        the stream must :meth:`SentRequest.abort` what was sent.
        """
        ...


def prefetching(provider: Provider) -> TypeGuard[PrefetchingProvider]:
    """Whether ``provider`` is a :class:`PrefetchingProvider`.

    A look-up, not ``isinstance`` with a runtime-checkable protocol: that took
    7 to 26 us on Python 3.11, on every completion's way to its upstream.
    """
    return callable(getattr(provider, "begin", None))

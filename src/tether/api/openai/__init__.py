"""An OpenAI-compatible Chat Completions endpoint in front of tether's models.

``POST /v1/chat/completions`` takes OpenAI's request and answers with OpenAI's
``chat.completion`` object or, streamed, ``chat.completion.chunk`` objects and
``data: [DONE]``; errors come in OpenAI's shape, ``{"error": {"message",
"type", "param", "code"}}``. Clients authenticate with a tether key; the
upstream's key stays on the server, and of a request's fields only the
messages, the tools, ``tool_choice`` and the whitelisted sampling options
(``providers.base.SAMPLING_OPTIONS``) are used. Everything else (client
credentials, base URLs, unknown fields) is dropped and never reaches an
upstream.

Each completion is a run in a session of its own, owned by the caller: the
request's earlier turns are seeded into a new session, the last user message is
sent (or, when the request ends with tool results, the run continues the
conversation), and the answer is read from the session's events. A completion
is therefore durable and resumable: the response's ``X-Tether-Stream-Url``
(``GET /v1/chat/completions/{session_id}/stream?offset=...``) serves the same
chunks, byte for byte, from any offset. Each SSE event's ``id:`` is the
session-stream offset after the event it came from, so a client that lost the
connection reads the rest from the last id it saw (``?offset=`` or
``Last-Event-ID``), with nothing repeated or missing.

Like OpenAI's API the gateway is stateless: when the model asks for tools, the
answer ends with ``tool_calls`` (finish_reason ``tool_calls``) and so does the
run; the client runs them and sends a new request with ``role: tool`` messages.
Reasoning, when a model streams it, comes as ``reasoning_content`` (the field
vLLM and DeepSeek use).

The package: :mod:`.request` parses and validates a request (pure),
:mod:`.chunks` translates a session's events into OpenAI's chunks (pure, the
relay's translator), :mod:`.errors` gives errors OpenAI's shape, and
:mod:`.routes` holds the routes; the front-neutral half (auth, the
completion's session and run, stop on disconnect) is :mod:`tether.api.gateway`.
"""

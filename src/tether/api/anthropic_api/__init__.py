"""An Anthropic Messages API front in front of tether's models.

``POST /v1/messages`` takes Anthropic's request and answers with its
``message`` object or, streamed, its server-sent events (``message_start``,
content blocks, ``message_delta``, ``message_stop``, ``error``); errors come
in Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``.
Clients authenticate with a tether key (``x-api-key`` or ``Authorization:
Bearer``); the upstream's key stays on the server. To an Anthropic upstream
the request goes as the client wrote it, cut down to the documented fields
(thinking signatures and ``cache_control`` intact); to any other it is
translated. Each message is a run in a session of its own: the response's
``X-Tether-Stream-Url`` serves the same stream again from any offset.

The package: :mod:`.request` parses a request (pure), :mod:`.events`
translates a session's events into Anthropic's stream (pure, the relay's
translator), :mod:`.errors` gives errors Anthropic's shape, :mod:`.count`
counts a request's tokens, and :mod:`.routes` holds the routes.
"""

from tether.api.anthropic_api.routes import MESSAGES_PATH, MessagesRoutes

__all__ = ["MESSAGES_PATH", "MessagesRoutes"]

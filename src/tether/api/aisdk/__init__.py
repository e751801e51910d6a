"""The Vercel AI SDK front: ``useChat``'s transport, answered by tether sessions.

``POST /v1/aisdk/chat`` takes the body the AI SDK's ``DefaultChatTransport``
sends (``{id, messages, trigger, messageId, ...body}``) and answers with the UI
message stream protocol (SSE, ``x-vercel-ai-ui-message-stream: v1``).
``GET /v1/aisdk/chat/{id}/stream`` is the transport's ``reconnectToStream``:
204 when the chat has no active run, else that run's stream from its start
(``useChat({resume: true})`` replays it into a fresh assistant message).

A chat id maps to one tether session, created on first use and owned by the
caller; the mapping (and, for user messages, client message id -> tether
message id) is a record in the store, keyed by caller and chat id, so two
callers never share a chat. What the client sends is matched to the session:

- ``submit-message`` whose last message is new: that message is sent
  (``runtime.send``), after the client's previous message. Earlier messages are
  not sent again.
- ``submit-message`` whose last message the session already has (useChat's
  ``sendMessage({text, messageId})``): an edit, a new branch answered afresh.
- ``regenerate-message``: ``runtime.regenerate`` of ``messageId`` (or of the
  last message of ``messages``).
- History the session does not have: a chat seen for the first time is seeded
  with it (user and assistant messages, text, reasoning and tool calls with
  their results, appended as one batch before the new message), so an app can
  move an existing conversation onto tether. For a chat that already has a
  session, every earlier message must be one the session knows or one sent
  here (empty assistant messages aside), else 409: tether's log is the source
  of truth and is never rewritten. A client that sends only the new message
  continues the session's current branch.

Each run's stream is the session's events of that run, translated: the same
translation serves the POST and the replay, so both give the same message.
The ``start`` chunk names tether's assistant message id (so the client's
assistant messages carry tether ids) and carries ``messageMetadata.tether`` =
``{sessionId, runId}``: a client answers tool calls, approvals and cancels with
the native session API under that session id. Runs are detached from the HTTP
request: a client that goes away does not stop the run.

The package: :mod:`.request` is the request and the UI messages in tether's
terms (pure), :mod:`.translate` a run's events as UI message chunks (pure; the
relay's translator), :mod:`.chats` the chat id -> session records, and
:mod:`.routes` the routes.
"""

from tether.api.aisdk.chats import chat_key
from tether.api.aisdk.request import ChatRequest
from tether.api.aisdk.routes import AISDKRoutes
from tether.api.aisdk.translate import RunTranslator

__all__ = ["AISDKRoutes", "ChatRequest", "RunTranslator", "chat_key"]

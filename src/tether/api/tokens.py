"""``POST /v1/read-tokens``: a read token for one stream.

A browser's EventSource cannot send an ``Authorization`` header, so a key
holder mints a token that reads one stream through ``?token=`` (sessions have
their own ``POST /v1/sessions/{id}/read-token``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from tether.api.access import SESSIONS, StreamPolicy, not_found
from tether.api.auth import TOKEN_TTL, Unauthorized, session_resource, stream_resource
from tether.api.bodies import CheckedJSONRoute, StrictBody
from tether.api.sessions import Who
from tether.store.base import Store
from tether.store.errors import StreamGone, StreamNotFound
from tether.streams.app import StreamsApp


class StreamTokenRequest(StrictBody):
    #: The stream's path as in its URL after ``/v1/stream/``.
    stream: str = Field(min_length=1, max_length=1024)
    #: Seconds the token lives; an hour at most.
    ttl: float = Field(default=TOKEN_TTL, gt=0, le=TOKEN_TTL)


def build_token_router(policy: StreamPolicy, streams: StreamsApp, store: Store) -> APIRouter:
    router = APIRouter(tags=["streams"], route_class=CheckedJSONRoute)

    @router.post("/v1/read-tokens")
    async def stream_read_token(body: StreamTokenRequest, who: Who) -> dict[str, Any]:
        """A token that lets ``?token=`` read (GET, HEAD) one stream the caller can read."""
        if who.read_only:
            raise Unauthorized("a read token can only read")
        name = streams.stream_name(body.stream)
        view = policy.view(who)
        if name.startswith(SESSIONS):
            await policy.check_session_read(who, name)
            resource = session_resource(name.removeprefix(SESSIONS))
        else:
            try:
                await store.head(view.path(name))
            except (StreamNotFound, StreamGone):
                raise not_found(name) from None
            resource = stream_resource(view.path(name))
        token, expires = policy.auth.read_token(resource, who.owner, body.ttl)
        return {"token": token, "expires_at": expires}

    return router

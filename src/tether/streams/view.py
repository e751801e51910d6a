"""Where a request's stream names live: the hook the layer above the routes decides with.

Without a hook a stream's name is its store path; tether's API gives each key
a namespace of its own and checks who may read a fork's source.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Scope = MutableMapping[str, Any]


class StreamView(Protocol):
    """What the layer above decided about one request: where its stream names live."""

    def path(self, name: str) -> str:
        """The store path of the stream the request names."""

    async def source(self, name: str) -> str:
        """The store path of a fork's source; raises HTTPError if the caller may not read it."""

    def shown(self, message: str) -> str:
        """``message`` with store paths written as the caller names them."""

    async def created(self, path: str) -> None:
        """The request made a new stream at ``path``."""

    async def deleted(self, path: str) -> None:
        """The request deleted the stream at ``path``."""


class WholeStore:
    """No authorize hook: a stream's name is its store path."""

    def path(self, name: str) -> str:
        return name

    async def source(self, name: str) -> str:
        return name

    def shown(self, message: str) -> str:
        return message

    async def created(self, path: str) -> None:
        pass

    async def deleted(self, path: str) -> None:
        pass


WHOLE_STORE = WholeStore()

#: Called with (scope, stream name, request headers) before every request; it
#: raises HTTPError to refuse, else says where the request's names live. The
#: layer above decides who may touch what.
Authorize = Callable[[Scope, str, dict[str, str]], Awaitable[StreamView]]

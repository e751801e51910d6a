"""Closing a stream client, and the names closing had before (deprecated, kept one release).

As in httpx, ``close()`` (sync) and ``aclose()`` (async) close the client's
connections, and ``close_stream(path)`` closes a stream. Before, the sync
client spelt these ``close_client()`` and ``close(path)``, and the async one
``aclose()`` and ``close(path)``. The old names still work, with a
``DeprecationWarning``. Because the sync ``close`` must take both forms, this
is the one part of the stream clients that differs between the flavours: it
is written by hand for each here, and the clients (``_async_streams`` and the
``_sync_streams`` generated from it) inherit it.
"""

from __future__ import annotations

import warnings
from typing import Protocol, overload

import httpx

from tether.client._stream_wire import AppendResult


def deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


class _AsyncStreams(Protocol):
    _owns_http: bool
    _http: httpx.AsyncClient

    async def close_stream(self, path: str) -> AppendResult: ...


class _Streams(Protocol):
    _owns_http: bool
    _http: httpx.Client

    def close_stream(self, path: str) -> AppendResult: ...


class AsyncStreamClientClosing:
    """``aclose()``, and the deprecated ``close(path)``, of :class:`AsyncStreamClient`."""

    async def aclose(self: _AsyncStreams) -> None:
        """Close the client's connections (unless its ``http_client`` was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def close(self: _AsyncStreams, path: str) -> AppendResult:
        """Deprecated name of :meth:`close_stream`."""
        deprecated("AsyncStreamClient.close(path)", "close_stream(path)")
        return await self.close_stream(path)


class StreamClientClosing:
    """``close()``, and the deprecated ``close(path)`` and ``close_client()``, of
    :class:`StreamClient`."""

    @overload
    def close(self) -> None: ...
    @overload
    def close(self, path: str) -> AppendResult: ...

    def close(self: _Streams, path: str | None = None) -> AppendResult | None:
        """Close the client's connections (unless its ``http_client`` was passed in).

        ``close(path)`` is the deprecated name of :meth:`close_stream`.
        """
        if path is not None:
            deprecated("StreamClient.close(path)", "close_stream(path)")
            return self.close_stream(path)
        if self._owns_http:
            self._http.close()
        return None

    def close_client(self: _Streams) -> None:
        """Deprecated name of :meth:`close`."""
        deprecated("StreamClient.close_client()", "close()")
        if self._owns_http:
            self._http.close()

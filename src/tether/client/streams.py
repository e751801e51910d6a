"""A low-level client of the Durable Streams protocol, as tether serves it.

``StreamClient`` (sync) and ``AsyncStreamClient`` (async) create, append to,
read, tail, close (``close_stream``) and delete streams under ``/v1/stream/``.
Offsets are the opaque strings the server hands out (``Stream-Next-Offset``);
``"-1"`` is the beginning of a stream and ``"now"`` its current end.

- ``read`` catches up: it follows ``Stream-Next-Offset`` until the server says
  ``Stream-Up-To-Date``, and returns everything read.
- ``tail`` follows live (SSE by default, or long-poll) and yields batches as
  they come; when a connection drops (or an SSE response ends, as tether's do
  every 60 s) it reconnects from the offset after the last batch it yielded,
  so every byte is seen exactly once. It ends when the stream is closed.
- ``producer`` gives an idempotent :class:`Producer`: appends carry
  ``Producer-Id``/``-Epoch``/``-Seq``, so resending one after a network error
  can never duplicate it (the server recognises the sequence number).

This module is the public face: the async clients are in ``_async_streams``,
the sync ones in ``_sync_streams`` (generated from the async ones by
``scripts/unasync.py``), and what both send and read in ``_stream_wire``.
"""

from tether.client._async_streams import AsyncProducer, AsyncStreamClient
from tether.client._stream_wire import (
    AppendResult,
    Batch,
    CreateResult,
    ReadResult,
    StreamInfo,
    is_json_type,
)
from tether.client._sync_streams import Producer, StreamClient

__all__ = [
    "AppendResult",
    "AsyncProducer",
    "AsyncStreamClient",
    "Batch",
    "CreateResult",
    "Producer",
    "ReadResult",
    "StreamClient",
    "StreamInfo",
    "is_json_type",
]

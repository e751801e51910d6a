"""What a local store checks before it appends: pure rules, no I/O.

The Redis store applies the same rules inside its append script; these are the
rules for the stores that keep the log in this process (memory and SQLite).
"""

from __future__ import annotations

from dataclasses import replace

from tether.store.base import AppendRequest, AppendResult, Producer, StreamMeta, media_type
from tether.store.errors import (
    BadRequest,
    ContentTypeMismatch,
    SeqConflict,
    SequenceGap,
    StaleEpoch,
)


def check_producer(
    meta: StreamMeta, p: Producer, state: tuple[int, int] | None
) -> AppendResult | None:
    """Refuse an out-of-order producer append; a duplicate gets the earlier result.

    ``state`` is the producer's last ``(epoch, seq)`` on the stream, if it wrote before.
    """
    if state is None:
        if p.seq != 0:
            raise SequenceGap(0, p.seq)
        return None
    epoch, last = state
    if p.epoch < epoch:
        raise StaleEpoch(epoch)
    if p.epoch == epoch and p.seq <= last:
        return AppendResult(meta.tail, meta.closed, False, epoch, last)
    if p.epoch > epoch and p.seq != 0:
        raise BadRequest("a new producer epoch must start at sequence 0")
    if p.epoch == epoch and p.seq != last + 1:
        raise SequenceGap(last + 1, p.seq)
    return None


def normalized(meta: StreamMeta, req: AppendRequest) -> AppendRequest:
    """``req`` without empty byte messages, after checking its content type."""
    if not meta.json and req.messages and not all(req.messages):
        req = replace(req, messages=[m for m in req.messages if m])
    if (
        req.messages
        and req.content_type is not None
        and (media_type(req.content_type) != media_type(meta.content_type))
    ):
        raise ContentTypeMismatch(
            f"content type {req.content_type!r} does not match the stream's {meta.content_type!r}"
        )
    return req


def check_sequence(meta: StreamMeta, req: AppendRequest) -> None:
    """Refuse a ``Stream-Seq`` that does not grow, and an append with nothing in it."""
    if req.seq is not None and meta.last_seq is not None and req.seq <= meta.last_seq:
        raise SeqConflict(
            f"Stream-Seq {req.seq!r} is not greater than the last one, {meta.last_seq!r}"
        )
    if not req.messages and not req.close:
        raise BadRequest("an append needs a non-empty body or Stream-Closed: true")

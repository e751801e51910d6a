"""An append joins its group and awaits the group's commit future itself.

Every coroutine between the event loop and the future is resumed when the commit
answers the append, so the store awaits the future that ``join`` hands back (no
coroutine of the group's around it). That future is answered, and the append's
notice published, by the one commit of its group, as ``wait``'s is.
"""

from __future__ import annotations

import asyncio

from store.test_group_commit_unit import Harness, meta


async def test_a_joined_append_awaits_the_commit_future_itself() -> None:
    """``join`` returns a plain future, answered and published only by the group's commit."""
    h = Harness()
    event = h.watch("s1")
    h.group.write(meta(1, 0), [meta(1, 1)], [], [])
    answer = h.group.join("s1", (0, 1, [b"a"], False))
    assert isinstance(answer, asyncio.Future)
    assert not answer.done() and not event.done()
    await answer
    assert h.db.calls == ["write [1]", "commit"]
    got = await event
    assert (got.start, got.end, got.chunks) == (0, 1, [b"a"])

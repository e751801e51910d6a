"""The asynchronous Durable Streams client (``AsyncStreamClient``) against a real server.

The same specification as ``test_streams_client.py`` (the sync ``StreamClient``,
generated from this client), test for test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from client.conftest import KEY, Server
from client.proxy import TcpProxy
from tether.client import (
    AsyncStreamClient,
    Conflict,
    NotFound,
    SeqConflict,
    SequenceGap,
    StaleEpoch,
    StreamClosed,
    TetherConnectionError,
)
from tether.client.streams import Batch


def name() -> str:
    return f"t/{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def ac(stream_server: Server) -> AsyncIterator[AsyncStreamClient]:
    async with AsyncStreamClient(stream_server.url, api_key=KEY) as client:
        yield client


async def collect(batches: AsyncIterator[Batch]) -> list[Batch]:
    return [b async for b in batches]


# -- create, append, head, close, delete -------------------------------------------


async def test_create_is_idempotent_and_reports_settings(ac: AsyncStreamClient) -> None:
    path = name()
    first = await ac.create(path, content_type="text/plain", ttl=600)
    assert first.created and first.next_offset == "0000000000000000_0000000000000000"
    again = await ac.create(path, content_type="text/plain", ttl=600)
    assert not again.created
    with pytest.raises(Conflict):
        await ac.create(path, content_type="application/json")
    info = await ac.head(path)
    assert info.content_type.startswith("text/plain") and info.ttl == 600 and not info.closed


async def test_expires_at_and_created_closed(ac: AsyncStreamClient) -> None:
    path = name()
    when = datetime.now(UTC) + timedelta(hours=1)
    await ac.create(path, expires_at=when)
    assert (await ac.head(path)).expires_at is not None
    closed = name()
    await ac.create(closed, content_type="text/plain", closed=True, data="all there is")
    assert (await ac.head(closed)).closed
    with pytest.raises(StreamClosed):
        await ac.append(closed, "more")
    assert (await ac.read(closed)).text() == "all there is"


async def test_append_bytes_text_and_json(ac: AsyncStreamClient) -> None:
    raw, text, js = name(), name(), name()
    await ac.create(raw)
    await ac.append(raw, b"\x00\x01")
    r = await ac.append(raw, b"\x02")
    assert r.next_offset == "0000000000000000_0000000000000003"
    assert (await ac.read(raw)).data == b"\x00\x01\x02"

    await ac.create(text, content_type="text/plain; charset=utf-8")
    await ac.append(text, "héllo ")
    await ac.append(text, "wörld")
    assert (await ac.read(text)).text() == "héllo wörld"

    await ac.create(js, content_type="application/json")
    await ac.append(js, json={"a": 1})
    await ac.append(js, json=[{"b": 2}, {"c": 3}])  # a list appends each item
    await ac.append(js, json=[[1, 2]])  # ...so a list message is wrapped once more
    assert (await ac.read(js)).items == [{"a": 1}, {"b": 2}, {"c": 3}, [1, 2]]


async def test_content_type_is_learned_for_appends(stream_server: Server) -> None:
    path = name()
    async with AsyncStreamClient(stream_server.url, api_key=KEY) as a:
        await a.create(path, content_type="text/csv")
    async with AsyncStreamClient(stream_server.url, api_key=KEY) as b:  # never saw the create
        await b.append(path, "x,y\n")
        assert (await b.read(path)).text() == "x,y\n"


async def test_stream_seq_must_grow(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="text/plain")
    await ac.append(path, "a", seq="001")
    await ac.append(path, "b", seq="002")
    with pytest.raises(SeqConflict) as err:
        await ac.append(path, "c", seq="002")
    assert err.value.status == 409 and err.value.code == "sequence_conflict"
    assert (await ac.read(path)).text() == "ab"


async def test_close_and_delete(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="text/plain")
    await ac.append(path, "x")
    assert (await ac.close_stream(path)).closed
    assert (await ac.head(path)).closed
    await ac.delete(path)
    with pytest.raises(NotFound) as err:
        await ac.head(path)
    assert err.value.status in (404, 410)
    with pytest.raises(NotFound):
        await ac.read(path)


# -- reads ---------------------------------------------------------------------------


async def test_read_follows_next_offset_until_up_to_date(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="application/json")
    items = [{"i": i, "pad": "x" * 100} for i in range(40)]  # ~5 KiB: several 1 KiB reads
    await ac.append(path, json=items)
    result = await ac.read(path)
    assert len(result.batches) > 2
    assert result.items == items and result.up_to_date
    assert result.next_offset == "0000000000000000_0000000000000040"
    # Reading from an offset in the middle gives exactly the rest.
    mid = result.batches[1].offset
    rest = await ac.read(path, mid)
    assert rest.items == items[items.index(result.batches[1].items[0]) :]
    # From "now": nothing, but the current end.
    now = await ac.read(path, "now")
    assert now.items == [] and now.next_offset == result.next_offset


async def test_read_once_is_one_response(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path)
    await ac.append(path, b"x" * 3000)
    await ac.append(path, b"y" * 3000)
    first = await ac.read_once(path)
    assert first.data and not first.up_to_date
    assert (await ac.read(path)).data == b"x" * 3000 + b"y" * 3000


# -- tails ---------------------------------------------------------------------------


def append_later(
    ac: AsyncStreamClient, path: str, items: list[object], gap: float = 0.03
) -> asyncio.Task[None]:
    """Append each of ``items`` (JSON, or text when a str) ``gap`` seconds apart, then close."""

    async def work() -> None:
        for item in items:
            await asyncio.sleep(gap)
            if isinstance(item, str):
                await ac.append(path, item)
            else:
                await ac.append(path, json=item)
        await ac.close_stream(path)

    return asyncio.create_task(work())


@pytest.mark.parametrize("live", ["sse", "long-poll"])
async def test_tail_follows_live_appends_until_closed(ac: AsyncStreamClient, live: str) -> None:
    path = name()
    await ac.create(path, content_type="application/json")
    await ac.append(path, json={"n": 0})
    writer = append_later(ac, path, [{"n": i} for i in range(1, 15)])
    seen = [item["n"] for batch in await collect(ac.tail(path, live=live)) for item in batch.items]
    await writer
    assert seen == list(range(15))


async def test_tail_spans_sse_responses_that_end(ac: AsyncStreamClient) -> None:
    """The server ends SSE responses every second here; the tail carries on from its offset."""
    path = name()
    await ac.create(path, content_type="application/json")
    writer = append_later(ac, path, [{"n": i} for i in range(12)], gap=0.2)  # 2+ responses
    seen = [item["n"] for batch in await collect(ac.tail(path)) for item in batch.items]
    await writer
    assert seen == list(range(12))


async def test_tail_from_now_skips_the_past(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="text/plain")
    await ac.append(path, "old")
    writer = append_later(ac, path, ["new1", "new2"], gap=0.05)
    assert "".join(b.text() for b in await collect(ac.tail(path, "now"))) == "new1new2"
    await writer


async def test_tail_binary_stream_over_sse(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path)
    payload = bytes(range(256))
    await ac.append(path, payload)

    async def work() -> None:
        await asyncio.sleep(0.05)
        await ac.append(path, b"\n\r\x00end")
        await ac.close_stream(path)

    writer = asyncio.create_task(work())
    assert b"".join(b.data for b in await collect(ac.tail(path))) == payload + b"\n\r\x00end"
    await writer


async def test_tail_resumes_after_cuts_without_loss_or_duplicates(
    stream_server: Server, proxy: TcpProxy
) -> None:
    path = name()
    async with (
        AsyncStreamClient(stream_server.url, api_key=KEY) as direct,
        AsyncStreamClient(proxy.url, api_key=KEY) as via_proxy,
    ):
        await direct.create(path, content_type="application/json")
        total = 60

        async def work() -> None:
            for i in range(total):
                await direct.append(path, json={"n": i})
                await asyncio.sleep(0.01)
            await direct.close_stream(path)

        writer = asyncio.create_task(work())
        seen: list[int] = []
        async for batch in via_proxy.tail(path):
            seen += [item["n"] for item in batch.items]
            if len(seen) % 7 < len(batch.items):
                proxy.truncate_next = len(seen) % 2 == 0  # sometimes mid-message
                proxy.cut()
        await writer
        assert seen == list(range(total))
        assert proxy.cuts >= 3


async def test_tail_resumes_after_cuts_mid_message_every_fifth(
    stream_server: Server, proxy: TcpProxy
) -> None:
    path = name()
    async with (
        AsyncStreamClient(stream_server.url, api_key=KEY) as direct,
        AsyncStreamClient(proxy.url, api_key=KEY) as via_proxy,
    ):
        await direct.create(path, content_type="application/json")

        async def work() -> None:
            for i in range(40):
                await direct.append(path, json={"n": i})
                await asyncio.sleep(0.01)
            await direct.close_stream(path)

        task = asyncio.create_task(work())
        seen: list[int] = []
        async for batch in via_proxy.tail(path):
            seen += [item["n"] for item in batch.items]
            if len(seen) % 5 < len(batch.items):
                proxy.truncate_next = True
                proxy.cut()
        await task
        assert seen == list(range(40))


# -- idempotent producers ------------------------------------------------------------


async def test_producer_numbers_appends_and_dedups_retries(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="application/json")
    p = ac.producer(path, "writer-1")
    for i in range(3):
        r = await p.append(json={"i": i})
        assert r.appended and r.producer_seq == i
    assert p.seq == 3
    # A retry of seq 1 (same id and epoch) is recognised and dropped.
    replay = ac.producer(path, "writer-1", seq=1)
    r = await replay.append(json={"i": 1})
    assert not r.appended
    assert (await ac.read(path)).items == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_producer_sequence_gap(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="text/plain")
    p = ac.producer(path, "gappy", seq=5)
    with pytest.raises(SequenceGap) as err:
        await p.append("x")
    assert err.value.expected_seq == 0 and err.value.received_seq == 5
    assert p.pending == 0  # refused, so not kept for a resend


async def test_producer_epochs_fence_and_auto_claim(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="text/plain")
    old = ac.producer(path, "w", epoch=0)
    await old.append("a")
    new = ac.producer(path, "w", epoch=1)
    await new.append("b")
    with pytest.raises(StaleEpoch) as err:
        await old.append("c")
    assert err.value.status == 403 and err.value.current_epoch == 1
    claimer = ac.producer(path, "w", epoch=0, auto_claim=True)
    r = await claimer.append("d")
    assert r.appended and claimer.epoch == 2 and claimer.seq == 1
    with pytest.raises(StaleEpoch):
        await new.append("e")
    assert (await ac.read(path)).text() == "abd"


async def test_producer_retry_after_lost_response_is_not_duplicated(
    stream_server: Server, proxy: TcpProxy
) -> None:
    path = name()
    async with AsyncStreamClient(proxy.url, api_key=KEY) as via_proxy:
        await via_proxy.create(path, content_type="application/json")
        p = via_proxy.producer(path, "retrier")
        await p.append(json={"i": 0})
        proxy.drop_responses = 1  # the next append lands, but its answer is lost
        r = await p.append(json={"i": 1})
        assert not r.appended  # the retry was the duplicate
        await p.append(json={"i": 2})
        assert (await via_proxy.read(path)).items == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_producer_keeps_failed_appends_and_resends_them_first(
    stream_server: Server, proxy: TcpProxy
) -> None:
    path = name()
    async with AsyncStreamClient(proxy.url, api_key=KEY, timeout=2) as via_proxy:
        await via_proxy.create(path, content_type="text/plain")
        p = via_proxy.producer(path, "patient", max_retries=1)
        await p.append("a")
        proxy.refuse = True
        proxy.cut()
        with pytest.raises(TetherConnectionError):
            await p.append("b")
        assert p.pending == 1 and p.seq == 1
        proxy.refuse = False
        await p.append("c")  # sends "b" first, with its original number
        assert p.pending == 0 and p.seq == 3
        assert (await via_proxy.read(path)).text() == "abc"


async def test_connection_error_does_not_leak_the_key() -> None:
    async with AsyncStreamClient("http://127.0.0.1:9", api_key=KEY, timeout=1) as ac:
        with pytest.raises(TetherConnectionError) as err:
            await ac.head("x")
        assert KEY not in str(err.value) and KEY not in repr(err.value)
        assert KEY not in repr(ac)


async def test_one_client_end_to_end(stream_server: Server) -> None:
    """Producers, reads, both tails and delete on one client, with a writer beside it."""
    path = name()
    async with AsyncStreamClient(stream_server.url, api_key=KEY) as ac:
        assert (await ac.create(path, content_type="application/json")).created
        p = ac.producer(path, "async-writer")
        await p.append(json={"i": 0})
        await p.append(json=[{"i": 1}, {"i": 2}])
        assert not (await ac.producer(path, "async-writer", seq=1).append(json={"i": 1})).appended
        assert (await ac.read(path)).items == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert (await ac.head(path)).next_offset == "0000000000000000_0000000000000003"
        writer = append_later(ac, path, [{"i": i} for i in range(3, 8)], gap=0.02)
        for live in ("sse", "long-poll"):
            seen = [item["i"] async for batch in ac.tail(path, live=live) for item in batch.items]
            assert seen == list(range(8))
        await writer
        await ac.delete(path)
        with pytest.raises(NotFound):
            await ac.read(path)


# -- closing, and the names it had before --------------------------------------------


async def test_aclose_closes_the_client_and_not_a_pool_passed_in(stream_server: Server) -> None:
    ac = AsyncStreamClient(stream_server.url, api_key=KEY)
    await ac.aclose()
    with pytest.raises(RuntimeError):  # httpx: the client has been closed
        await ac.head(name())
    async with httpx.AsyncClient() as pool:
        await AsyncStreamClient(stream_server.url, api_key=KEY, http_client=pool).aclose()
        assert not pool.is_closed


async def test_old_close_path_is_a_deprecated_alias(ac: AsyncStreamClient) -> None:
    path = name()
    await ac.create(path, content_type="text/plain")
    with pytest.warns(DeprecationWarning, match=r"close\(path\).*close_stream\(path\)"):
        assert (await ac.close(path)).closed
    assert (await ac.head(path)).closed

"""The low-level Durable Streams client (``StreamClient``) against a real server over loopback.

``test_async_streams_client.py`` is the same specification for ``AsyncStreamClient``.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from client.conftest import KEY, Server
from client.proxy import TcpProxy
from tether.client import (
    Conflict,
    NotFound,
    SeqConflict,
    SequenceGap,
    StaleEpoch,
    StreamClient,
    StreamClosed,
    TetherConnectionError,
)


def name() -> str:
    return f"t/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sc(stream_server: Server) -> StreamClient:
    with StreamClient(stream_server.url, api_key=KEY) as client:
        yield client


# -- create, append, head, close, delete -------------------------------------------


def test_create_is_idempotent_and_reports_settings(sc: StreamClient) -> None:
    path = name()
    first = sc.create(path, content_type="text/plain", ttl=600)
    assert first.created and first.next_offset == "0000000000000000_0000000000000000"
    again = sc.create(path, content_type="text/plain", ttl=600)
    assert not again.created
    with pytest.raises(Conflict):
        sc.create(path, content_type="application/json")
    info = sc.head(path)
    assert info.content_type.startswith("text/plain") and info.ttl == 600 and not info.closed


def test_expires_at_and_created_closed(sc: StreamClient) -> None:
    path = name()
    when = datetime.now(UTC) + timedelta(hours=1)
    sc.create(path, expires_at=when)
    assert sc.head(path).expires_at is not None
    closed = name()
    sc.create(closed, content_type="text/plain", closed=True, data="all there is")
    assert sc.head(closed).closed
    with pytest.raises(StreamClosed):
        sc.append(closed, "more")
    assert sc.read(closed).text() == "all there is"


def test_append_bytes_text_and_json(sc: StreamClient) -> None:
    raw, text, js = name(), name(), name()
    sc.create(raw)
    sc.append(raw, b"\x00\x01")
    r = sc.append(raw, b"\x02")
    assert r.next_offset == "0000000000000000_0000000000000003"
    assert sc.read(raw).data == b"\x00\x01\x02"

    sc.create(text, content_type="text/plain; charset=utf-8")
    sc.append(text, "héllo ")
    sc.append(text, "wörld")
    assert sc.read(text).text() == "héllo wörld"

    sc.create(js, content_type="application/json")
    sc.append(js, json={"a": 1})
    sc.append(js, json=[{"b": 2}, {"c": 3}])  # a list appends each item
    sc.append(js, json=[[1, 2]])  # ...so a list message is wrapped once more
    assert sc.read(js).items == [{"a": 1}, {"b": 2}, {"c": 3}, [1, 2]]


def test_content_type_is_learned_for_appends(stream_server: Server) -> None:
    path = name()
    with StreamClient(stream_server.url, api_key=KEY) as a:
        a.create(path, content_type="text/csv")
    with StreamClient(stream_server.url, api_key=KEY) as b:  # never saw the create
        b.append(path, "x,y\n")
        assert b.read(path).text() == "x,y\n"


def test_stream_seq_must_grow(sc: StreamClient) -> None:
    path = name()
    sc.create(path, content_type="text/plain")
    sc.append(path, "a", seq="001")
    sc.append(path, "b", seq="002")
    with pytest.raises(SeqConflict) as err:
        sc.append(path, "c", seq="002")
    assert err.value.status == 409 and err.value.code == "sequence_conflict"
    assert sc.read(path).text() == "ab"


def test_close_and_delete(sc: StreamClient) -> None:
    path = name()
    sc.create(path, content_type="text/plain")
    sc.append(path, "x")
    assert sc.close_stream(path).closed
    assert sc.head(path).closed
    sc.delete(path)
    with pytest.raises(NotFound) as err:
        sc.head(path)
    assert err.value.status in (404, 410)
    with pytest.raises(NotFound):
        sc.read(path)


# -- reads ---------------------------------------------------------------------------


def test_read_follows_next_offset_until_up_to_date(sc: StreamClient) -> None:
    path = name()
    sc.create(path, content_type="application/json")
    items = [{"i": i, "pad": "x" * 100} for i in range(40)]  # ~5 KiB: several 1 KiB reads
    sc.append(path, json=items)
    result = sc.read(path)
    assert len(result.batches) > 2
    assert result.items == items and result.up_to_date
    assert result.next_offset == "0000000000000000_0000000000000040"
    # Reading from an offset in the middle gives exactly the rest.
    mid = result.batches[1].offset
    rest = sc.read(path, mid)
    assert rest.items == items[items.index(result.batches[1].items[0]) :]
    # From "now": nothing, but the current end.
    now = sc.read(path, "now")
    assert now.items == [] and now.next_offset == result.next_offset


def test_read_once_is_one_response(sc: StreamClient) -> None:
    path = name()
    sc.create(path)
    sc.append(path, b"x" * 3000)
    sc.append(path, b"y" * 3000)
    first = sc.read_once(path)
    assert first.data and not first.up_to_date
    assert sc.read(path).data == b"x" * 3000 + b"y" * 3000


# -- tails ---------------------------------------------------------------------------


def _append_later(
    sc: StreamClient, path: str, items: list[object], gap: float = 0.03
) -> threading.Thread:
    def work() -> None:
        for item in items:
            time.sleep(gap)
            sc.append(path, json=item)
        sc.close_stream(path)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("live", ["sse", "long-poll"])
def test_tail_follows_live_appends_until_closed(sc: StreamClient, live: str) -> None:
    path = name()
    sc.create(path, content_type="application/json")
    sc.append(path, json={"n": 0})
    writer = _append_later(sc, path, [{"n": i} for i in range(1, 15)])
    seen = [item["n"] for batch in sc.tail(path, live=live) for item in batch.items]
    writer.join()
    assert seen == list(range(15))


def test_tail_spans_sse_responses_that_end(sc: StreamClient) -> None:
    """The server ends SSE responses every second here; the tail carries on from its offset."""
    path = name()
    sc.create(path, content_type="application/json")
    writer = _append_later(sc, path, [{"n": i} for i in range(12)], gap=0.2)  # 2+ responses
    seen = [item["n"] for batch in sc.tail(path) for item in batch.items]
    writer.join()
    assert seen == list(range(12))


def test_tail_from_now_skips_the_past(sc: StreamClient) -> None:
    path = name()
    sc.create(path, content_type="text/plain")
    sc.append(path, "old")
    writer = _append_later_text(sc, path, ["new1", "new2"])
    assert "".join(b.text() for b in sc.tail(path, "now")) == "new1new2"
    writer.join()


def _append_later_text(sc: StreamClient, path: str, parts: list[str]) -> threading.Thread:
    def work() -> None:
        for part in parts:
            time.sleep(0.05)
            sc.append(path, part)
        sc.close_stream(path)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_tail_binary_stream_over_sse(sc: StreamClient) -> None:
    path = name()
    sc.create(path)
    payload = bytes(range(256))
    sc.append(path, payload)

    def work() -> None:
        time.sleep(0.05)
        sc.append(path, b"\n\r\x00end")
        sc.close_stream(path)

    writer = threading.Thread(target=work, daemon=True)
    writer.start()
    assert b"".join(b.data for b in sc.tail(path)) == payload + b"\n\r\x00end"
    writer.join()


def test_tail_resumes_after_cuts_without_loss_or_duplicates(
    stream_server: Server, proxy: TcpProxy
) -> None:
    path = name()
    with StreamClient(stream_server.url, api_key=KEY) as direct:
        direct.create(path, content_type="application/json")
        total = 60

        def work() -> None:
            for i in range(total):
                direct.append(path, json={"n": i})
                time.sleep(0.01)
            direct.close_stream(path)

        with StreamClient(proxy.url, api_key=KEY) as via_proxy:
            writer = threading.Thread(target=work, daemon=True)
            writer.start()
            seen: list[int] = []
            for batch in via_proxy.tail(path):
                seen += [item["n"] for item in batch.items]
                if len(seen) % 7 < len(batch.items):
                    proxy.truncate_next = len(seen) % 2 == 0  # sometimes mid-message
                    proxy.cut()
            writer.join()
            assert seen == list(range(total))
            assert proxy.cuts >= 3


# -- idempotent producers ------------------------------------------------------------


def test_producer_numbers_appends_and_dedups_retries(sc: StreamClient) -> None:
    path = name()
    sc.create(path, content_type="application/json")
    p = sc.producer(path, "writer-1")
    for i in range(3):
        r = p.append(json={"i": i})
        assert r.appended and r.producer_seq == i
    assert p.seq == 3
    # A retry of seq 1 (same id and epoch) is recognised and dropped.
    replay = sc.producer(path, "writer-1", seq=1)
    r = replay.append(json={"i": 1})
    assert not r.appended
    assert sc.read(path).items == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_producer_sequence_gap(sc: StreamClient) -> None:
    path = name()
    sc.create(path, content_type="text/plain")
    p = sc.producer(path, "gappy", seq=5)
    with pytest.raises(SequenceGap) as err:
        p.append("x")
    assert err.value.expected_seq == 0 and err.value.received_seq == 5
    assert p.pending == 0  # refused, so not kept for a resend


def test_producer_epochs_fence_and_auto_claim(sc: StreamClient) -> None:
    path = name()
    sc.create(path, content_type="text/plain")
    old = sc.producer(path, "w", epoch=0)
    old.append("a")
    new = sc.producer(path, "w", epoch=1)
    new.append("b")
    with pytest.raises(StaleEpoch) as err:
        old.append("c")
    assert err.value.status == 403 and err.value.current_epoch == 1
    claimer = sc.producer(path, "w", epoch=0, auto_claim=True)
    r = claimer.append("d")
    assert r.appended and claimer.epoch == 2 and claimer.seq == 1
    with pytest.raises(StaleEpoch):
        new.append("e")
    assert sc.read(path).text() == "abd"


def test_producer_retry_after_lost_response_is_not_duplicated(
    stream_server: Server, proxy: TcpProxy
) -> None:
    path = name()
    with StreamClient(proxy.url, api_key=KEY) as via_proxy:
        via_proxy.create(path, content_type="application/json")
        p = via_proxy.producer(path, "retrier")
        p.append(json={"i": 0})
        proxy.drop_responses = 1  # the next append lands, but its answer is lost
        r = p.append(json={"i": 1})
        assert not r.appended  # the retry was the duplicate
        p.append(json={"i": 2})
        assert via_proxy.read(path).items == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_producer_keeps_failed_appends_and_resends_them_first(
    stream_server: Server, proxy: TcpProxy
) -> None:
    path = name()
    with StreamClient(proxy.url, api_key=KEY, timeout=2) as via_proxy:
        via_proxy.create(path, content_type="text/plain")
        p = via_proxy.producer(path, "patient", max_retries=1)
        p.append("a")
        proxy.refuse = True
        proxy.cut()
        with pytest.raises(TetherConnectionError):
            p.append("b")
        assert p.pending == 1 and p.seq == 1
        proxy.refuse = False
        p.append("c")  # sends "b" first, with its original number
        assert p.pending == 0 and p.seq == 3
        assert via_proxy.read(path).text() == "abc"


def test_connection_error_does_not_leak_the_key() -> None:
    with StreamClient("http://127.0.0.1:9", api_key=KEY, timeout=1) as sc:
        with pytest.raises(TetherConnectionError) as err:
            sc.head("x")
        assert KEY not in str(err.value) and KEY not in repr(err.value)
        assert KEY not in repr(sc)


# -- closing, and the names it had before --------------------------------------------


def test_close_closes_the_client_and_not_a_pool_passed_in(stream_server: Server) -> None:
    sc = StreamClient(stream_server.url, api_key=KEY)
    sc.close()
    with pytest.raises(RuntimeError):  # httpx: the client has been closed
        sc.head(name())
    with httpx.Client() as pool:
        StreamClient(stream_server.url, api_key=KEY, http_client=pool).close()
        assert not pool.is_closed


def test_old_closing_names_are_deprecated_aliases(sc: StreamClient, stream_server: Server) -> None:
    path = name()
    sc.create(path, content_type="text/plain")
    with pytest.warns(DeprecationWarning, match=r"close\(path\).*close_stream\(path\)"):
        assert sc.close(path).closed
    assert sc.head(path).closed
    other = StreamClient(stream_server.url, api_key=KEY)
    with pytest.warns(DeprecationWarning, match=r"close_client\(\).*use close\(\)"):
        other.close_client()
    with pytest.raises(RuntimeError):
        other.head(path)

"""The offline demo model: directives, determinism, cancellation, and its bounds."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from helpers.server import ServerFactory
from tether.providers.base import (
    ChatMessage,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallItem,
    Usage,
)
from tether.providers.demo import (
    COUNT_USAGE,
    CUT_NOTE,
    FAIL_USAGE,
    MAX_COUNT,
    MAX_REPLY,
    REASONING,
    TOOL_USAGE,
    DemoModel,
    default_reply,
    words,
)

from .common import collect, text_of


@pytest.fixture
def demo() -> DemoModel:
    return DemoModel(word_delay=0)


def ask(text: str, *, attempt: int = 1, run_id: str = "run-1") -> ModelRequest:
    return ModelRequest("demo", [ChatMessage("user", text)], attempt=attempt, run_id=run_id)


def test_identity(demo: DemoModel) -> None:
    assert demo.name == "demo"
    assert demo.models() == ["demo"]


@pytest.mark.parametrize("text", ["", "a", "a b", "  lead", "trail  ", "x\n\ny  z\t", " ", "one\n"])
def test_words_concatenate_back_exactly(text: str) -> None:
    assert "".join(words(text)) == text
    assert all(p for p in words(text))


async def test_count_streams_one_number_per_delta(demo: DemoModel) -> None:
    items = await collect(demo, ask("/count 5 0"))
    assert items[:-1] == [TextDelta(t) for t in ["1", " 2", " 3", " 4", " 5"]]
    assert isinstance(items[-1], Usage)
    assert items[-1].output_tokens == 5


async def test_count_concatenation_is_exact(demo: DemoModel) -> None:
    items = await collect(demo, ask("/count 1000 0"))
    deltas = [i.text for i in items if isinstance(i, TextDelta)]
    assert len(deltas) == 1000
    assert "".join(deltas) == " ".join(str(n) for n in range(1, 1001))


async def test_count_waits_ms_between_deltas(demo: DemoModel) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    items = await collect(demo, ask("/count 3 30"))
    assert text_of(items) == "1 2 3"
    assert loop.time() - start >= 0.055  # two pauses of 30 ms


@pytest.mark.parametrize(
    "text",
    [
        "/count",
        "/count abc",
        "/count 0",
        "/count -3",
        "/count 10001",
        "/count 50000 0",
        "/count 2.5",
        "/count 5 -1",
        "/count 5 10001",
        "/count 5 nan",
        "/count 5 soon",
        "/count 1 2 3",
    ],
)
async def test_count_bad_arguments_explain(demo: DemoModel, text: str) -> None:
    items = await collect(demo, ask(text))
    assert text_of(items) == COUNT_USAGE
    assert isinstance(items[-1], Usage)


async def test_count_accepts_the_limits(demo: DemoModel) -> None:
    items = await collect(demo, ask(f"/count {MAX_COUNT} 0"))
    assert text_of(items) == " ".join(str(n) for n in range(1, MAX_COUNT + 1))
    items = await collect(demo, ask("/count 1 10000"))  # the MS cap, with N=1
    assert text_of(items) == "1"


async def test_fail_fails_the_first_attempts_before_yielding(demo: DemoModel) -> None:
    for attempt in (1, 2):
        stream = demo.stream(ask("/fail 2 /count 3 0", attempt=attempt))
        with pytest.raises(ProviderError) as info:
            await anext(stream)
        assert info.value.transient is True
        assert info.value.status == 503
    items = await collect(demo, ask("/fail 2 /count 3 0", attempt=3))
    assert text_of(items) == "1 2 3"


async def test_fail_rest_as_plain_text(demo: DemoModel) -> None:
    items = await collect(demo, ask("/fail 1 hello there", attempt=2))
    assert text_of(items) == default_reply("hello there")
    items = await collect(demo, ask("/fail 0", attempt=1))
    assert text_of(items) == default_reply("")


@pytest.mark.parametrize("text", ["/fail", "/fail x hello", "/fail -1 hi", "/fail 1001 hi"])
async def test_fail_bad_arguments_explain(demo: DemoModel, text: str) -> None:
    assert text_of(await collect(demo, ask(text))) == FAIL_USAGE


async def test_reason_streams_reasoning_first(demo: DemoModel) -> None:
    items = await collect(demo, ask("/reason what is 2+2?"))
    kinds = [type(i) for i in items]
    first_text = kinds.index(TextDelta)
    assert kinds[:first_text] == [ReasoningDelta] * first_text
    assert first_text > 1  # a word per delta
    assert "".join(i.text for i in items if isinstance(i, ReasoningDelta)) == REASONING
    assert text_of(items) == default_reply("what is 2+2?")
    assert kinds[-1] is Usage


async def test_reason_alone_and_chained(demo: DemoModel) -> None:
    assert text_of(await collect(demo, ask("/reason"))) == default_reply("")
    items = await collect(demo, ask("/reason /count 3 0"))
    assert text_of(items) == "1 2 3"
    assert isinstance(items[0], ReasoningDelta)


async def test_tool_call_then_answer_with_result(demo: DemoModel) -> None:
    first = await collect(demo, ask('/tool get_time {"tz": "UTC"}', run_id="run-7"))
    *deltas, item, usage = first
    assert isinstance(item, ToolCallItem)
    assert isinstance(usage, Usage)
    call = item.call
    assert call.name == "get_time"
    assert call.arguments == '{"tz": "UTC"}'
    assert call.id.startswith("call_get_time_")
    # The arguments stream first, in pieces, under the call's id and name.
    assert len(deltas) == 2
    assert all(isinstance(d, ToolCallDelta) and (d.id, d.name) == (call.id, call.name)
               for d in deltas)  # fmt: skip
    assert "".join(d.arguments for d in deltas if isinstance(d, ToolCallDelta)) == call.arguments

    again = await collect(demo, ask('/tool get_time {"tz": "UTC"}', run_id="run-7"))
    assert again == first  # deterministic
    other = await collect(demo, ask('/tool get_time {"tz": "UTC"}', run_id="run-8"))
    assert isinstance(other[-2], ToolCallItem)
    assert other[-2].call.id != call.id  # derived from the run

    result = '{"time": "12:00",  "tz": "UTC"}'
    history = [
        ChatMessage("user", '/tool get_time {"tz": "UTC"}'),
        ChatMessage("assistant", "", [call]),
        ChatMessage("tool", result, tool_call_id=call.id),
    ]
    second = await collect(demo, ModelRequest("demo", history, attempt=1, run_id="run-7"))
    assert text_of(second) == f"Tool get_time returned: {result}"
    assert isinstance(second[-1], Usage)


async def test_tool_error_result(demo: DemoModel) -> None:
    call = ToolCall("call_x", "lookup", "{}")
    history = [
        ChatMessage("user", "/tool lookup"),
        ChatMessage("assistant", "", [call]),
        ChatMessage("tool", "not found: 42", tool_call_id="call_x", is_error=True),
    ]
    items = await collect(demo, ModelRequest("demo", history))
    assert text_of(items) == "Tool lookup failed: not found: 42"


async def test_tool_default_arguments(demo: DemoModel) -> None:
    items = await collect(demo, ask("/tool ping"))
    assert isinstance(items[-2], ToolCallItem)
    assert items[-2].call.arguments == "{}"


@pytest.mark.parametrize(
    "text",
    [
        "/tool",
        "/tool bad.name {}",
        "/tool x [1, 2]",
        "/tool x {nope",
        "/tool x 3",
        '/tool x {"a": "%s"}' % ("b" * MAX_REPLY),
    ],
)
async def test_tool_bad_arguments_explain(demo: DemoModel, text: str) -> None:
    assert text_of(await collect(demo, ask(text))) == TOOL_USAGE


async def test_default_reply_answers_the_last_user_message(demo: DemoModel) -> None:
    history = [
        ChatMessage("system", "be nice"),
        ChatMessage("user", "first"),
        ChatMessage("assistant", "You said: first"),
        ChatMessage("user", "second  message"),
    ]
    items = await collect(demo, ModelRequest("demo", history))
    assert text_of(items) == default_reply("second  message")
    assert default_reply("second  message").startswith("You said: second  message")
    deltas = [i for i in items if isinstance(i, TextDelta)]
    assert len(deltas) == len(default_reply("second  message").split())  # a word per delta


async def test_a_long_message_is_echoed_cut_so_that_one_answer_stays_bounded(
    demo: DemoModel,
) -> None:
    """One message makes at most MAX_REPLY characters of text, hence as many deltas."""
    items = await collect(demo, ask("a " * 400_000))
    text = text_of(items)
    assert text == default_reply("a " * 400_000)[:MAX_REPLY] + CUT_NOTE
    assert len([i for i in items if isinstance(i, TextDelta)]) <= MAX_REPLY


async def test_a_long_tool_result_is_cut_too(demo: DemoModel) -> None:
    call = ToolCall("call_x", "dump", "{}")
    history = [
        ChatMessage("user", "/tool dump"),
        ChatMessage("assistant", "", [call]),
        ChatMessage("tool", "z " * 50_000, tool_call_id="call_x"),
    ]
    items = await collect(demo, ModelRequest("demo", history))
    assert text_of(items) == f"Tool dump returned: {'z ' * 50_000}"[:MAX_REPLY] + CUT_NOTE


async def test_unknown_directive_is_plain_text(demo: DemoModel) -> None:
    assert text_of(await collect(demo, ask("/nope 1"))) == default_reply("/nope 1")
    assert text_of(await collect(demo, ask("/counting 3"))) == default_reply("/counting 3")


async def test_no_user_message(demo: DemoModel) -> None:
    items = await collect(demo, ModelRequest("demo", [ChatMessage("system", "hi")]))
    assert text_of(items) == default_reply("")


async def test_usage_is_deterministic(demo: DemoModel) -> None:
    history = [ChatMessage("system", "be brief"), ChatMessage("user", "hello there")]
    a = await collect(demo, ModelRequest("demo", history))
    b = await collect(demo, ModelRequest("demo", history))
    assert a == b
    usage = a[-1]
    assert isinstance(usage, Usage)
    assert usage.input_tokens == 4
    assert usage.output_tokens == len(default_reply("hello there").split())


async def test_cancel_stops_a_count_at_once() -> None:
    demo = DemoModel()
    started = asyncio.Event()
    received: list[str] = []

    async def consume() -> None:
        async for item in demo.stream(ask("/count 1000 10")):
            if isinstance(item, TextDelta):
                received.append(item.text)
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert loop.time() - t0 < 0.05
    assert task.cancelled()
    assert len(received) < 1000


def test_one_message_through_the_session_api_gets_a_bounded_answer(
    tether_server: ServerFactory,
) -> None:
    """Over real HTTP: a /count past the bound gets the usage text, a long message a cut echo."""
    server = tether_server()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        sid = client.post("/v1/sessions", json={}).json()["id"]

        def answer(content: str) -> str:
            sent = client.post(f"/v1/sessions/{sid}/messages", json={"content": content})
            assert sent.status_code == 202, sent.text
            deadline = time.monotonic() + 30
            while (snapshot := client.get(f"/v1/sessions/{sid}").json())["active_run"]:
                assert time.monotonic() < deadline, "the answer did not end in 30 s"
                time.sleep(0.05)
            return str(snapshot["messages"][-1]["parts"][0]["text"])

        assert answer("/count 50000 0") == COUNT_USAGE
        long = "abcdefghi " * 99_000
        assert answer(long) == default_reply(long)[:MAX_REPLY] + CUT_NOTE

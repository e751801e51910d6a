"""The Responses API front, driven by the official ``openai`` package and ``openai-agents``.

One real ``tether serve`` (keys required) sits in front of the fake upstream,
which speaks OpenAI's chat-completions wire and Anthropic's Messages wire;
every test that reaches a model runs against both. They live for the whole
module, on the module's event loop.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from helpers.server import TetherServer
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "sk-upstream-resp-4c1e9a7f2b"
ANTHROPIC_KEY = "sk-ant-upstream-resp-8d3f0b6a"
TETHER_KEY, OTHER_KEY = "tk-resp-2e7c9d1a", "tk-resp-other-6b4f0e3c"
MODEL = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-sonnet-4-5"
BOTH = pytest.mark.parametrize("model", [MODEL, CLAUDE])
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "description": "Look something up.",
    "parameters": {
        "type": "object",
        "properties": {"q": {"type": "string"}},
        "required": ["q"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    base = tmp_path_factory.mktemp("responses")
    async with FakeUpstream() as fake:
        env = {
            **os.environ,
            "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
            "TETHER_OPENAI_API_KEY": KEY,
            "TETHER_OPENAI_MODELS": "gpt-4o-mini",
            "TETHER_ANTHROPIC_BASE_URL": fake.url,
            "TETHER_ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "TETHER_ANTHROPIC_MODELS": "claude-sonnet-4-5",
            "TETHER_API_KEYS": f"{TETHER_KEY},{OTHER_KEY}",
        }
        server = TetherServer(
            base / "data", log_path=base / "server.log", env=env,
            extra_args=["--log-level", "debug"],
        )  # fmt: skip
        async with server:
            yield fake, server


@pytest.fixture
def fake(stack: tuple[FakeUpstream, TetherServer]) -> FakeUpstream:
    upstream = stack[0]
    upstream.script = Script()
    upstream.replies.clear()
    upstream.requests.clear()
    upstream._disconnected.clear()  # wait_disconnect waits for this test's disconnect
    return upstream


@pytest.fixture
def server(stack: tuple[FakeUpstream, TetherServer]) -> TetherServer:
    return stack[1]


@pytest_asyncio.fixture(loop_scope="module")
async def client(server: TetherServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key=TETHER_KEY, max_retries=0, timeout=30
    ) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def other(server: TetherServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key=OTHER_KEY, max_retries=0, timeout=30
    ) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def http(server: TetherServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TETHER_KEY}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as c:
        yield c


async def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The typed events of a Responses event stream, each checked against its ``event:``."""
    out: list[dict[str, Any]] = []
    kind = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            event = json.loads(line[6:])
            assert event["type"] == kind
            out.append(event)
    return out


def text_of(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


# -- create ---------------------------------------------------------------------------


@BOTH
async def test_a_response_not_streamed(
    client: openai.AsyncOpenAI, fake: FakeUpstream, model: str
) -> None:
    fake.script = Script(
        text="Paris is the capital.", reasoning="Recall geography.", usage=(1200, 300),
        cache=(1024, 0), reasoning_tokens=256,
    )  # fmt: skip
    raw = await client.responses.with_raw_response.create(
        model=model,
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Rome."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "And of France?"}]},
        ],
        max_output_tokens=64,
        metadata={"ticket": "42"},
    )
    r = raw.parse()
    assert r.object == "response" and r.status == "completed" and r.model == model
    assert r.output_text == "Paris is the capital."
    assert [i.type for i in r.output] == ["reasoning", "message"]
    assert r.output[0].summary[0].text == "Recall geography."
    assert r.instructions == "Be brief." and r.metadata == {"ticket": "42"}
    assert r.max_output_tokens == 64 and r.store is True
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (1200, 300)
    assert r.usage.input_tokens_details.cached_tokens == 1024
    if model == MODEL:  # Anthropic does not break its reasoning tokens out
        assert r.usage.output_tokens_details.reasoning_tokens == 256
    sid = raw.headers["x-tether-session-id"]
    assert r.id.startswith("resp_") and sid.removeprefix("ses_") in r.id
    assert raw.headers["x-tether-stream-url"] == f"/v1/responses/{r.id}?stream=true"

    sent = fake.requests[-1]
    if model == MODEL:
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        assert sent.body["max_tokens"] == 64
        assert sent.body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome."},
            {"role": "user", "content": "And of France?"},
        ]
    else:
        assert sent.headers["x-api-key"] == ANTHROPIC_KEY
        assert sent.body["max_tokens"] == 64 and "Be brief." in json.dumps(sent.body["system"])
        assert [m["role"] for m in sent.body["messages"]] == ["user", "assistant", "user"]
    again = await client.responses.retrieve(r.id)
    assert again.model_dump() == r.model_dump()
    # Its input, read back a page of one at a time, oldest first.
    items = [i async for i in client.responses.input_items.list(r.id, order="asc", limit=1)]
    assert [i.role for i in items] == ["user", "assistant", "user"]
    assert items[-1].content[0].text == "And of France?"


@BOTH
async def test_a_response_streamed_as_typed_events(
    client: openai.AsyncOpenAI, fake: FakeUpstream, model: str
) -> None:
    fake.script = Script(text="One two three four.", reasoning="Count.")
    stream = await client.responses.create(model=model, input="Count to four.", stream=True)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for needed in (
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.reasoning_summary_text.delta", "response.output_item.done",
    ):  # fmt: skip
        assert needed in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert text_of(events) == "One two three four."
    done = events[-1].response
    assert done.status == "completed" and done.output_text == "One two three four."
    assert done.usage is not None and done.usage.input_tokens == 11


async def test_the_stream_helper_of_the_sdk_accumulates_the_response(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    fake.script = Script(text="Streamed whole.")
    async with client.responses.stream(model=MODEL, input="hi") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "Streamed whole."


# -- function tools, over two requests --------------------------------------------------


@BOTH
async def test_a_function_tool_round_trip_with_previous_response_id(
    client: openai.AsyncOpenAI, fake: FakeUpstream, model: str
) -> None:
    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("lookup", '{"q": "tether"}', id="call_7")]),
            Script(text="tether is a durable log."),
        ]
    )
    first = await client.responses.create(
        model=model, input="What is tether?", tools=[LOOKUP], tool_choice="auto",
        instructions="Use the tool.",
    )  # fmt: skip
    assert first.status == "completed"
    (call,) = [i for i in first.output if i.type == "function_call"]
    assert (call.name, json.loads(call.arguments), call.call_id) == ("lookup", {"q": "tether"},
                                                                     "call_7")  # fmt: skip
    # A follow-up that leaves a call unanswered is refused, naming the call.
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(
            model=model, previous_response_id=first.id, input="Never mind.", tools=[LOOKUP]
        )
    assert "call_7" in refused.value.message
    second = await client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "a log"}],
        tools=[LOOKUP],
        instructions="Use the tool.",
    )
    assert second.output_text == "tether is a durable log."
    assert second.previous_response_id == first.id and second.id != first.id
    # The same session: the upstream got the whole conversation, the tool's output included.
    sent = json.dumps(fake.requests[-1].body)
    assert "What is tether?" in sent and "a log" in sent and "call_7" in sent
    assert (await client.responses.retrieve(first.id)).output[-1].type == "function_call"
    first_input = [i async for i in client.responses.input_items.list(first.id)]
    assert [i.content[0].text for i in first_input] == ["What is tether?"]
    (output,) = [i async for i in client.responses.input_items.list(second.id)]
    assert (output.type, output.call_id, output.output) == ("function_call_output", "call_7",
                                                           "a log")  # fmt: skip


async def test_a_follow_up_of_an_answer_that_was_continued_branches(
    client: openai.AsyncOpenAI, fake: FakeUpstream, http: httpx.AsyncClient
) -> None:
    fake.replies.extend([Script(text="First."), Script(text="Second."), Script(text="Other.")])
    first = await client.responses.create(model=MODEL, input="one")
    await client.responses.create(model=MODEL, previous_response_id=first.id, input="two")
    branch = await client.responses.create(
        model=MODEL, previous_response_id=first.id, input="three"
    )
    assert branch.output_text == "Other."
    messages = fake.requests[-1].body["messages"]
    assert [m["content"] for m in messages] == ["one", "First.", "three"]  # "two" not seen


# -- resume, cancel, delete -----------------------------------------------------------------


@BOTH
async def test_a_cut_stream_resumes_after_its_last_sequence_number(
    client: openai.AsyncOpenAI, fake: FakeUpstream, http: httpx.AsyncClient, model: str
) -> None:
    fake.script = Script(text=" ".join(f"w{i}" for i in range(40)))
    seen: list[Any] = []
    stream = await client.responses.create(model=model, input="Say forty words.", stream=True)
    async for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta" and len(seen) > 6:
            break
    await stream.close()  # the cut
    rid, last = seen[0].response.id, seen[-1].sequence_number
    rest = [e async for e in await client.responses.retrieve(rid, stream=True, starting_after=last)]
    whole = seen + rest
    assert [e.sequence_number for e in whole] == list(range(len(whole)))  # none twice, none lost
    assert text_of(whole) == fake.script.text and whole[-1].type == "response.completed"
    # The raw GET gives the same events, byte for byte the same JSON, from any number.
    async with http.stream(
        "GET", f"/v1/responses/{rid}", params={"stream": "true", "starting_after": "3"}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = await sse_events(r)
    assert raw == [e.model_dump(exclude_unset=True) for e in whole[4:]]


@BOTH
async def test_cancel_stops_the_run_and_its_upstream_request(
    client: openai.AsyncOpenAI, fake: FakeUpstream, model: str
) -> None:
    fake.script = Script(text="never finished " * 20, hang_after=3)
    stream = await client.responses.create(model=model, input="Go on forever.", stream=True)
    events = []
    async for event in stream:
        events.append(event)
        if event.type == "response.output_text.delta":
            break
    rid = events[0].response.id
    cancelled = await client.responses.cancel(rid)
    assert cancelled.id == rid and cancelled.status == "cancelled"
    await fake.wait_disconnect()  # the upstream request was aborted
    rest = [e async for e in stream]
    assert rest[-1].type == "response.incomplete" and rest[-1].response.status == "cancelled"
    assert (await client.responses.retrieve(rid)).status == "cancelled"
    again = await client.responses.cancel(rid)  # an ended response is answered as it is
    assert again.status == "cancelled"


async def test_delete_removes_the_response_and_its_conversation(
    client: openai.AsyncOpenAI, fake: FakeUpstream, http: httpx.AsyncClient
) -> None:
    raw = await client.responses.with_raw_response.create(model=MODEL, input="Forget me.")
    r = raw.parse()
    await client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model=MODEL, previous_response_id=r.id, input="Hello?")
    assert refused.value.code == "previous_response_not_found"
    sid = raw.headers["x-tether-session-id"]
    assert (await http.get(f"/v1/sessions/{sid}")).status_code == 404
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(r.id)


async def test_store_false_is_not_kept(
    client: openai.AsyncOpenAI, fake: FakeUpstream, http: httpx.AsyncClient
) -> None:
    fake.script = Script(text="Ephemeral.")
    raw = await client.responses.with_raw_response.create(model=MODEL, input="hi", store=False)
    r = raw.parse()
    assert r.output_text == "Ephemeral." and r.store is False
    assert "x-tether-stream-url" not in raw.headers
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model=MODEL, previous_response_id=r.id, input="more")
    # Its session went before its answer did (its run had ended, its reader was done).
    assert (await http.get(f"/v1/sessions/{raw.headers['x-tether-session-id']}")).status_code == 404
    stream = await client.responses.create(model=MODEL, input="hi", store=False, stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert (
        await http.get(f"/v1/sessions/{stream.response.headers['x-tether-session-id']}")
    ).status_code == 404


# -- errors and isolation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "x"}, 400, "model"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"model": MODEL, "input": [{"type": "item_reference", "id": "msg_1"}]}, 400,
         "input[0].type"),
        ({"model": "nope/nothing", "input": "x"}, 404, "model"),
        ({"model": MODEL, "input": "x", "previous_response_id": "resp_" + "0" * 44}, 400,
         "previous_response_id"),
    ],
)  # fmt: skip
async def test_bad_requests_are_refused_in_openais_shape_and_change_nothing(
    http: httpx.AsyncClient, fake: FakeUpstream, body: dict[str, Any], status: int, param: str
) -> None:
    before = (await http.get("/v1/sessions", params={"gateway": "true"})).json()
    r = await http.post("/v1/responses", json=body)
    assert r.status_code == status
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"]
    assert (await http.get("/v1/sessions", params={"gateway": "true"})).json() == before
    assert fake.requests == []


async def test_an_upstream_refusal_is_an_http_error_without_the_key(
    client: openai.AsyncOpenAI, fake: FakeUpstream, server: TetherServer
) -> None:
    fake.fail_next(1, 400, f"bad request for key {KEY}")
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model=MODEL, input="hi")
    fake.fail_next(1, 400)
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model=CLAUDE, input="hi", stream=True)
    assert KEY not in str(refused.value.body)
    log = server.output()
    assert KEY not in log and ANTHROPIC_KEY not in log


async def test_no_key_is_401_and_another_keys_response_is_404(
    client: openai.AsyncOpenAI, other: openai.AsyncOpenAI, server: TetherServer
) -> None:
    r = await client.responses.create(model=MODEL, input="mine")
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.cancel(r.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError):
        await other.responses.create(model=MODEL, previous_response_id=r.id, input="yours?")
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        assert (await anonymous.get(f"/v1/responses/{r.id}")).status_code == 401
    assert (await client.responses.retrieve(r.id)).status == "completed"


# -- the OpenAI Agents SDK --------------------------------------------------------------------


@BOTH
async def test_an_openai_agents_agent_runs_its_tool_through_tethers_responses_endpoint(
    client: openai.AsyncOpenAI, fake: FakeUpstream, server: TetherServer, model: str
) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny and 21 C in {city}."

    fake.replies.extend(
        [
            Script(text="", tool_calls=[FakeToolCall("get_weather", '{"city": "Lyon"}')]),
            Script(text="It is sunny in Lyon."),
        ]
    )
    agent = Agent(
        name="Weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=model, openai_client=client),
    )
    result = await Runner.run(agent, "Weather in Lyon?")
    assert result.final_output == "It is sunny in Lyon."
    assert asked == ["Lyon"]
    sent = json.dumps(fake.requests[-1].body)
    assert "Sunny and 21 C in Lyon." in sent  # the tool's output reached the model
    assert KEY not in server.output() and ANTHROPIC_KEY not in server.output()


async def test_a_read_token_of_its_session_reads_a_response_and_changes_nothing(
    client: openai.AsyncOpenAI, fake: FakeUpstream, http: httpx.AsyncClient, server: TetherServer
) -> None:
    raw = await client.responses.with_raw_response.create(model=MODEL, input="x")
    rid, sid = raw.parse().id, raw.headers["x-tether-session-id"]
    token = (await http.post(f"/v1/sessions/{sid}/read-token")).json()["token"]
    async with httpx.AsyncClient(base_url=server.base_url, params={"token": token}) as reader:
        assert (await reader.get(f"/v1/responses/{rid}")).json()["status"] == "completed"
        assert (await reader.post(f"/v1/responses/{rid}/cancel")).status_code == 401
        assert (await reader.delete(f"/v1/responses/{rid}")).status_code == 401
        assert (
            await reader.post("/v1/responses", json={"model": MODEL, "input": "x"})
        ).status_code == 401
    assert (await client.responses.retrieve(rid)).status == "completed"


async def test_a_retry_with_the_same_idempotency_key_gets_the_same_response(
    client: openai.AsyncOpenAI, fake: FakeUpstream
) -> None:
    fake.script = Script(text="Once.")
    key = {"Idempotency-Key": "resp-retry-4f1c"}
    first = await client.responses.create(model=MODEL, input="once", extra_headers=key)
    raw = await client.responses.with_raw_response.create(
        model=MODEL, input="once", extra_headers=key
    )
    assert raw.headers["idempotent-replayed"] == "true"
    assert raw.parse().id == first.id and raw.parse().output_text == "Once."
    assert len(fake.requests) == 1  # one run, one upstream request

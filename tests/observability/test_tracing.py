"""Traces: a span per run, its model calls and tool calls as children, and no content in them.

The app runs in-process (its runtime, a real SQLite file, a FakeUpstream for
the OpenAI dialect), with spans recorded by the OpenTelemetry SDK into its
in-memory exporter.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script
from tether.agents.mcp_config import MCPServerConfig
from tether.api.app import TetherApp
from tether.observability import tracing
from tether.providers.openai import OpenAIProvider
from tether.providers.registry import ProviderRegistry
from tether.sessions.service import stream_name
from tether.store.sqlite import SqliteStore
from tether.streams.tail import tail

APPS = Path(__file__).parents[1] / "agents" / "apps"
#: The upstream key: it must appear in no span.
KEY = "sk-upstream-trace-4e1f7c2a9b"
#: What the user, the model and the tools say: none of it may appear in a span.
SECRET_MESSAGE = "the launch code is 7731-Zanzibar"
SECRET_ARGUMENT = "Ouagadougou-5521"
SECRET_RESULT = "buried-treasure-0c4f"
SECRET_REASON = "kaboom-9d2e"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


@pytest.fixture
def capture(spans: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Spans with content capture on (TETHER_OTEL_CAPTURE_CONTENT=true)."""
    tracing._state.capture = True
    yield spans


@pytest.fixture
def tool_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(APPS))
    return importlib.import_module("tool_app").app


@asynccontextmanager
async def served(
    tmp_path: Path, fake: FakeUpstream, agents: Any = None, mcp: tuple[MCPServerConfig, ...] = ()
) -> AsyncIterator[TetherApp]:
    provider = OpenAIProvider(base_url=fake.openai_base_url, models=["gpt-4o-mini"], api_key=KEY)
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    app = TetherApp(store, registry=ProviderRegistry([provider]), agents=agents, mcp_servers=mcp)
    await app.mcp.start()
    await app.runtime.start()
    try:
        yield app
    finally:
        await app.runtime.aclose()
        await app.mcp.aclose()
        await provider.aclose()
        await store.aclose()


async def until(app: TetherApp, sid: str, check: Callable[[dict[str, Any]], bool]) -> None:
    """Wait until the session's stream holds an event ``check`` accepts."""
    async with asyncio.timeout(15):
        async for batch in tail(app.store, stream_name(sid), 0):
            if batch is not None and any(check(orjson.loads(c)) for c in batch[1]):
                return


def run_ended(run_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "run-end" and e["run_id"] == run_id


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def assert_nothing_secret(spans: tuple[ReadableSpan, ...], secrets: list[str]) -> None:
    """No attribute of any span, nor its status, holds a secret (or a piece of one)."""
    for span in spans:
        values = [str(v) for v in (span.attributes or {}).values()]
        values.append(span.status.description or "")
        for value in values:
            for secret in secrets:
                for piece in secret.split("-"):
                    assert piece not in value, (span.name, value)


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


async def test_a_run_with_a_client_tool_is_a_run_span_over_its_model_calls_and_tool_wait(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    arguments = {"city": SECRET_ARGUMENT, "note": SECRET_MESSAGE}
    message = f"/tool lookup {json.dumps(arguments)}"
    async with FakeUpstream() as fake, served(tmp_path, fake) as app:
        record = await app.sessions.create(
            owner=None, model="demo", agent=None, system=None, title=None
        )
        _, run_id, _ = await app.runtime.send(record.id, [{"type": "text", "text": message}])
        await until(app, record.id, lambda e: e["type"] == "status" and e["status"] == "paused")
        fold = (await app.sessions.state(record.id)).fold
        call = next(p for m in fold.branch() for p in m.parts if p.tool_call_id)
        await app.runtime.tool_result(record.id, call.tool_call_id, {"found": SECRET_RESULT})
        await until(app, record.id, run_ended(run_id))
        await app.runtime.aclose()  # the run's span ends once its run-end is written

    finished = spans.get_finished_spans()
    named = by_name(finished)
    [run] = named["invoke_agent"]
    chats = named["chat demo"]
    [tool] = named["execute_tool lookup"]
    assert len(chats) == 2  # the step that called the tool, the step that answered
    assert run.parent is None
    assert all(child_of(s, run) for s in [*chats, tool])
    assert run.kind is SpanKind.INTERNAL and chats[0].kind is SpanKind.CLIENT

    attrs = dict(run.attributes or {})
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["tether.session.id"] == attrs["gen_ai.conversation.id"] == record.id
    assert attrs["tether.run.id"] == run_id
    assert attrs["gen_ai.request.model"] == "demo"
    assert attrs["tether.run.end_reason"] == "complete"
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert run.status.status_code is StatusCode.UNSET

    first, second = sorted(chats, key=lambda s: s.start_time or 0)
    for chat in (first, second):
        a = dict(chat.attributes or {})
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "demo"
        assert a["gen_ai.request.model"] == "demo"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)  # type: ignore[index]
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)  # type: ignore[index]

    a = dict(tool.attributes or {})
    assert a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "lookup"
    assert a["gen_ai.tool.call.id"] == call.tool_call_id
    assert a["gen_ai.tool.type"] == "function"  # a client runs it
    # The wait is between the two model calls.
    assert first.end_time <= tool.start_time and tool.end_time <= second.start_time  # type: ignore[operator]

    assert_nothing_secret(finished, [SECRET_MESSAGE, SECRET_ARGUMENT, SECRET_RESULT])


async def test_an_agent_app_s_server_tools_are_spans_and_a_failed_one_says_only_its_type(
    tmp_path: Path, spans: InMemorySpanExporter, tool_app: Any
) -> None:
    async with FakeUpstream() as fake, served(tmp_path, fake, tool_app) as app:
        fake.replies.append(
            Script(
                text="",
                tool_calls=[
                    FakeToolCall("get_weather", json.dumps({"city": SECRET_ARGUMENT}), "c_w"),
                    FakeToolCall("explode", json.dumps({"reason": SECRET_REASON}), "c_x"),
                ],
                usage=(31, 9),
            )
        )
        record = await app.sessions.create(
            owner=None, model=None, agent="mathy", system=None, title=None,
            tools=["get_weather", "explode"],
        )  # fmt: skip
        _, run_id, _ = await app.runtime.send(record.id, [{"type": "text", "text": SECRET_MESSAGE}])
        await until(app, record.id, run_ended(run_id))
        await app.runtime.aclose()
        sent = fake.requests[0]

    assert SECRET_MESSAGE in json.dumps(sent.body)  # the model was sent it; spans were not
    finished = spans.get_finished_spans()
    named = by_name(finished)
    [run] = named["invoke_agent mathy"]
    [chat] = named["chat gpt-4o-mini"]
    [weather] = named["execute_tool get_weather"]
    [exploded] = named["execute_tool explode"]
    assert all(child_of(s, run) for s in (chat, weather, exploded))

    assert run.attributes["gen_ai.agent.name"] == "mathy"  # type: ignore[index]
    assert "gen_ai.request.model" not in (run.attributes or {})  # an agent picks its models
    c = dict(chat.attributes or {})
    assert c["gen_ai.provider.name"] == "openai"
    assert c["gen_ai.request.model"] == "gpt-4o-mini"
    assert (c["gen_ai.usage.input_tokens"], c["gen_ai.usage.output_tokens"]) == (31, 9)
    assert c["gen_ai.response.finish_reasons"] == ("tool_calls",)

    assert weather.attributes["gen_ai.tool.type"] == "extension"  # type: ignore[index]
    assert weather.attributes["gen_ai.tool.call.id"] == "c_w"  # type: ignore[index]
    assert weather.status.status_code is StatusCode.UNSET
    assert exploded.status.status_code is StatusCode.ERROR
    assert exploded.attributes["error.type"] == "RuntimeError"  # type: ignore[index]
    assert exploded.status.description == "RuntimeError"  # not "exploded: <its argument>"

    assert_nothing_secret(finished, [KEY, SECRET_MESSAGE, SECRET_ARGUMENT, SECRET_REASON])


async def test_an_mcp_tool_call_of_a_model_session_is_an_execute_tool_span(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    calc = MCPServerConfig("calc", command=sys.executable, args=(str(APPS / "mcp_calc.py"),))
    async with FakeUpstream() as fake, served(tmp_path, fake, mcp=(calc,)) as app:
        arguments = json.dumps({"text": SECRET_ARGUMENT})
        fake.replies.extend(
            [Script(text="", tool_calls=[FakeToolCall("calc__shout", arguments, "c_s")]), Script()]
        )
        record = await app.sessions.create(
            owner=None, model="openai/gpt-4o-mini", agent=None, system=None, title=None,
            tools=["calc.shout"],
        )  # fmt: skip
        _, run_id, _ = await app.runtime.send(record.id, [{"type": "text", "text": SECRET_MESSAGE}])
        await until(app, record.id, run_ended(run_id))
        await app.runtime.aclose()
        shouted = fake.requests[1].body["messages"][-1]["content"]

    assert SECRET_ARGUMENT.upper() in shouted  # the tool ran and the model read its result
    finished = spans.get_finished_spans()
    named = by_name(finished)
    [run] = named["invoke_agent"]
    [shout] = named["execute_tool calc.shout"]
    assert len(named["chat gpt-4o-mini"]) == 2
    assert child_of(shout, run)
    assert shout.attributes["gen_ai.tool.type"] == "extension"  # type: ignore[index]
    assert shout.status.status_code is StatusCode.UNSET
    assert_nothing_secret(finished, [KEY, SECRET_MESSAGE, SECRET_ARGUMENT, SECRET_ARGUMENT.upper()])


async def test_a_failed_model_call_marks_its_span_and_the_run_s_with_the_error_type(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    async with FakeUpstream() as fake, served(tmp_path, fake) as app:
        fake.fail_next(status=400, message=f"bad request near {SECRET_MESSAGE}")
        record = await app.sessions.create(
            owner=None, model="openai/gpt-4o-mini", agent=None, system=None, title=None
        )
        _, run_id, _ = await app.runtime.send(record.id, [{"type": "text", "text": SECRET_MESSAGE}])
        await until(app, record.id, run_ended(run_id))
        await app.runtime.aclose()

    finished = spans.get_finished_spans()
    named = by_name(finished)
    [run] = named["invoke_agent"]
    [chat] = named["chat gpt-4o-mini"]
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.attributes["error.type"] == "400"  # type: ignore[index]  # the upstream's status
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["tether.run.end_reason"] == "error"  # type: ignore[index]
    assert run.attributes["error.type"] == "ProviderError"  # type: ignore[index]  # its error event's code
    assert_nothing_secret(finished, [KEY, SECRET_MESSAGE])


async def test_with_content_capture_on_the_conventions_content_attributes_are_recorded(
    tmp_path: Path, capture: InMemorySpanExporter, tool_app: Any
) -> None:
    async with FakeUpstream() as fake, served(tmp_path, fake, tool_app) as app:
        fake.replies.append(
            Script(text="", tool_calls=[FakeToolCall("add", '{"a": 40, "b": 2}', "c_add")])
        )
        record = await app.sessions.create(
            owner=None, model=None, agent="mathy", system=None, title=None
        )
        _, run_id, _ = await app.runtime.send(record.id, [{"type": "text", "text": SECRET_MESSAGE}])
        await until(app, record.id, run_ended(run_id))
        await app.runtime.aclose()

    named = by_name(capture.get_finished_spans())
    [chat] = named["chat gpt-4o-mini"]
    [add] = named["execute_tool add"]
    sent = json.loads(chat.attributes["gen_ai.input.messages"])  # type: ignore[index, arg-type]
    assert sent == [{"role": "user", "parts": [{"type": "text", "content": SECRET_MESSAGE}]}]
    output = json.loads(chat.attributes["gen_ai.output.messages"])  # type: ignore[index, arg-type]
    assert output[0]["parts"] == [
        {"type": "tool_call", "id": "c_add", "name": "add", "arguments": {"a": 40, "b": 2}}
    ]
    assert json.loads(add.attributes["gen_ai.tool.call.arguments"]) == {"a": 40, "b": 2}  # type: ignore[index, arg-type]
    assert json.loads(add.attributes["gen_ai.tool.call.result"]) == 42  # type: ignore[index, arg-type]


def test_while_tracing_is_off_the_sdk_is_not_loaded_and_the_hooks_make_nothing() -> None:
    """The hooks are in every run's path: off, they load no SDK and make no span object.

    (FastAPI imports the OpenTelemetry API itself when it is installed.)
    """
    code = """if True:
        import sys
        import tether.api.app, tether.cli.main
        from tether.observability import tracing
        assert tracing.model_call("p", "m", 1) is tracing.model_call("q", "n", 2)
        assert tracing.tool_call("t", "c", "x") is tracing.tool_call(None, "d", "y")
        loaded = ("opentelemetry.sdk", "opentelemetry.exporter")
        print(sorted(m for m in sys.modules if m.startswith(loaded)))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

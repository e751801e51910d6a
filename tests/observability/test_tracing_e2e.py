"""Traces from a real ``tether serve``: spans sent over OTLP/HTTP, flushed when it stops.

The receiver is a small HTTP server in the test that takes OTLP/HTTP protobuf
export requests and decodes them with ``opentelemetry-proto`` (the
exporter's own dependency).
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from helpers.server import TetherServer
from helpers.session_events import KEY, is_call, server_env, start
from providers.fake_upstreams import FakeToolCall, FakeUpstream, Script

SECRET_MESSAGE = "what is the weather in Ouagadougou-5521"
SECRET_RESULT = "sunny-over-the-treasure-0c4f"
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}


@dataclass
class ReceivedSpan:
    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    attributes: dict[str, Any]
    resource: dict[str, Any]


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes_of(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


class Receiver:
    """Accepts ``POST /v1/traces`` (OTLP/HTTP, protobuf) and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()

    def take(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for rs in request.resource_spans:
                resource = attributes_of(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            ReceivedSpan(
                                s.name, s.trace_id, s.span_id, s.parent_span_id,
                                attributes_of(s.attributes), resource,
                            )
                        )  # fmt: skip

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


async def test_a_served_run_s_spans_reach_an_otlp_receiver_by_the_time_the_server_stops(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with FakeUpstream() as fake:
        fake.replies.extend(
            [
                Script(text="", tool_calls=[FakeToolCall("get_weather", "{}", "call_W")]),
                Script(text="Sunny."),
            ]
        )
        env = {**server_env(fake), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        server = TetherServer(tmp_path / "data", log_path=tmp_path / "server.log", env=env)
        async with server, httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            session = {"model": "openai/gpt-4o-mini", "tools": [WEATHER]}
            sid, run_id, events = await start(c, session, {"content": SECRET_MESSAGE})
            try:
                await events.until(is_call("get_weather"))
                r = await c.post(
                    f"/v1/sessions/{sid}/tool-results",
                    json={"tool_call_id": "call_W", "output": {"sky": SECRET_RESULT}},
                )
                assert r.status_code == 202, r.text
                assert (await events.run_end(run_id))["reason"] == "complete"
            finally:
                await events.aclose()
        # The server has stopped: what it had batched was sent on its way out.
        assert "tracing: sending spans to" in server.output()

    [run] = [s for s in receiver.spans if s.name == "invoke_agent"]
    assert run.attributes["tether.run.id"] == run_id
    children = [s for s in receiver.spans if s.parent_id == run.span_id]
    assert sorted(s.name for s in children) == [
        "chat gpt-4o-mini", "chat gpt-4o-mini", "execute_tool get_weather",
    ]  # fmt: skip
    assert all(s.trace_id == run.trace_id for s in children)
    assert run.resource["service.name"] == "tether"
    assert run.attributes["tether.session.id"] == sid
    assert run.attributes["tether.run.end_reason"] == "complete"
    chats = [s for s in children if s.name.startswith("chat")]
    assert sorted(s.attributes["gen_ai.response.finish_reasons"][0] for s in chats) == [
        "stop", "tool_calls",
    ]  # fmt: skip
    assert all(s.attributes["gen_ai.usage.input_tokens"] == 11 for s in chats)
    everything = json.dumps([s.attributes for s in receiver.spans])
    for secret in (KEY, "Ouagadougou", "5521", "treasure", "0c4f"):
        assert secret not in everything


async def test_without_the_otel_extra_the_server_says_so_once_and_serves_on(
    tmp_path: Path, receiver: Receiver
) -> None:
    # The SDK made unimportable, as it is where only the API (FastAPI's) is installed.
    shadow = tmp_path / "shadow" / "opentelemetry" / "sdk"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no SDK here')\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "shadow"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
    }
    server = TetherServer(tmp_path / "data", log_path=tmp_path / "server.log", env=env)
    async with server, httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
        _, run_id, events = await start(c, {"model": "demo"}, {"content": "/count 3"})
        try:
            assert (await events.run_end(run_id))["reason"] == "complete"
        finally:
            await events.aclose()
    output = server.output()
    warning = "OTEL_EXPORTER_OTLP_ENDPOINT is set, but the OpenTelemetry SDK is not installed"
    assert output.count(warning) == 1, output
    assert "pip install 'tether[otel]'" in output
    assert receiver.requests == 0

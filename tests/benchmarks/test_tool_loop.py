"""The runtime benchmark's tool loop: its upstream's tool calls, and the scenario end to end.

The upstream's stream is read with the official ``openai`` package, so a
format mistake fails here rather than showing up as a strange figure; the
scenario runs for real (a `tether serve` child in front of the upstream child)
with a few loops, so a change in tether's tool loop that breaks the benchmark
is caught by the suite.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import harness

BENCH = harness.REPO_ROOT / "benchmarks"

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[str]:
    port = harness.free_port()
    argv = [sys.executable, str(BENCH / "upstream.py"), "--port", str(port), "--tokens", "5",
            "--ttft-ms", "0", "--gap-ms", "0", "--tool-steps", "2",
            "--exit-on-stdin-close"]  # fmt: skip
    server = harness.ServerProcess("upstream", argv, port, tmp_path, health_path="/health")
    server.start()
    try:
        await server.wait_ready(20.0)
        yield server.base_url + "/v1"
    finally:
        server.stop()


async def answer(client: openai.AsyncOpenAI, messages: list[Any], **extra: Any) -> Any:
    """The upstream's streamed answer, put together by the openai package."""
    async with client.chat.completions.stream(
        model="bench-model", messages=messages, **extra
    ) as stream:
        async for _ in stream:
            pass
        return await stream.get_final_completion()


async def test_the_upstream_calls_the_first_tool_until_it_has_tool_steps_results(
    upstream: str,
) -> None:
    client = openai.AsyncOpenAI(base_url=upstream, api_key="bench-key")
    messages: list[Any] = [{"role": "user", "content": "go"}]
    steps: list[int] = []
    async with client:
        while True:
            before = asyncio.get_running_loop().time()
            choice = (await answer(client, messages, tools=[TOOL])).choices[0]
            if choice.finish_reason != "tool_calls":
                break
            [call] = choice.message.tool_calls
            assert call.function.name == "lookup" and call.id.startswith("call_")
            arguments = json.loads(call.function.arguments)
            # The request's arrival, on the clock every process of the machine shares.
            assert (
                before * 1e9 <= arguments["arrived_ns"] <= asyncio.get_running_loop().time() * 1e9
            )
            steps.append(arguments["step"])
            messages.append(choice.message.model_dump(exclude_none=True))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "ok"})
        text = choice.message.content
        # Without tools: text, as before.
        plain = (await answer(client, [{"role": "user", "content": "hi"}])).choices[0]
    assert steps == [1, 2]
    assert choice.finish_reason == "stop" and text.startswith(" t0@")
    assert plain.finish_reason == "stop" and plain.message.tool_calls is None


async def test_the_tool_loop_scenario_measures_tether_against_the_upstream() -> None:
    argv = [sys.executable, str(BENCH / "bench_runtime.py"), "--scenarios", "tool-loop",
            "--tool-loops", "2", "--tool-warmup", "1"]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("tool loop: 10 model calls") for line in lines), done.stdout
    # Both ways of answering the calls ran, each measured against the direct loops.
    assert any(line.startswith("  client tool") for line in lines), done.stdout
    assert any(line.startswith("  answered in the server") for line in lines), done.stdout
    assert sum("tether adds per step" in line for line in lines) == 2, done.stdout
    # Only the scenario asked for ran.
    assert not any("sessions x" in line or "idle session" in line for line in lines)

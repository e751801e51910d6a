"""An agent for the runtime benchmark's tool loop: the model agent's loop, tools run in the server.

``tool_loop`` streams the session's first message through ``ctx.model()`` to
``openai/bench-model`` (benchmarks/upstream.py, reached with the server's key)
with the run's declared tools, answers every call the model makes at once in
the server, recorded as a server tool's outcome is (``ctx.tool_result``), and
loops until the model answers with text. It stands in for a server tool
(``@app.tool``) until apps can register one, so that the benchmark measures
tether's own cost per step with no client in the loop.

Its own module, so that ``runtime_agents`` still loads with older commits'
``src/`` (for before/after runs of the other scenarios).
"""

from __future__ import annotations

from tether import App
from tether.agents.context import AgentContext
from tether.providers.base import ChatMessage
from tether.runtime.context import ToolOutcome

app = App()


@app.agent("tool_loop")
async def tool_loop(ctx: AgentContext) -> None:
    model = ctx.model("openai/bench-model")
    messages = [ChatMessage("user", ctx.history[-1].text)]
    while True:
        reply = await model.respond(messages, tools=ctx.tools)
        if not reply.tool_calls:
            return
        messages.append(ChatMessage("assistant", reply.text, reply.tool_calls))
        for call in reply.tool_calls:
            await ctx.tool_result(call.id, ToolOutcome(output="ok"))
            messages.append(ChatMessage("tool", "ok", tool_call_id=call.id))

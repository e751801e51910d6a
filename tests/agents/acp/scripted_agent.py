"""A real ACP agent (the official SDK's agent side over stdio), scripted by the prompt.

The first word of the prompt's last text block (tether's ``[...]`` notes of
attachments left out aside) says what it does:

- ``think``: a thought, then text;
- ``tool``: announces a tool call (pending), updates it (in_progress, with input),
  completes it with content; ``tool-fail``: the same, failed;
- ``plan``: a plan of two entries, then text;
- ``permission``: asks permission (allow once / reject once) and says the outcome;
- ``read PATH``: reads PATH through the client's ``fs/read_text_file`` and says it
  (or the error); ``write PATH TEXT``: writes TEXT there (``fs/write_text_file``);
- ``run COMMAND ARG...``: runs it in a client terminal (``terminal/create``, then
  ``wait_for_exit``, ``output``, ``release``) and says its exit code and output;
- ``slow``: says its pid, then streams a chunk every 20 ms for 30 s, until cancelled;
  the cancelled turn's end is written to ``$ACP_TEST_MARKS`` (a file) if set;
- ``usage``: a usage update, then text;
- ``env NAME``: says the variable's value in its environment, or ``unset``;
- ``blocks``: lists the prompt's blocks (``text``, ``image(TYPE,BYTES)``,
  ``resource(TYPE,BYTES)``), each text block's text after a ``|``;
- ``prompt``: says how many content blocks the prompt had and the first one's text;
- anything else: ``echo: <text>``.

With ``ACP_TEST_MEDIA=1`` it takes images and embedded resources in prompts.
With ``ACP_TEST_LOAD=1`` it advertises ``loadSession`` and keeps each session's
turns in ``$ACP_TEST_STATE`` (a JSON file), so a new process loads them: the load
replays the turns as ``user_message_chunk`` / ``agent_message_chunk`` updates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import acp
from acp import helpers
from acp.schema import (
    AgentCapabilities,
    AllowedOutcome,
    PermissionOption,
    PromptCapabilities,
    PromptResponse,
    ToolCallUpdate,
    UsageUpdate,
)

LOAD = os.environ.get("ACP_TEST_LOAD") == "1"
MEDIA = os.environ.get("ACP_TEST_MEDIA") == "1"
STATE = Path(os.environ.get("ACP_TEST_STATE", "/nonexistent"))
MARKS = os.environ.get("ACP_TEST_MARKS")


class ScriptedAgent:
    def __init__(self) -> None:
        self.conn: acp.Client | None = None
        self.cancelled: set[str] = set()

    def on_connect(self, conn: acp.Client) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, **kwargs: Any) -> acp.InitializeResponse:
        print(f"scripted agent {os.getpid()} initializing", file=sys.stderr, flush=True)
        return acp.InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(
                load_session=LOAD,
                prompt_capabilities=PromptCapabilities(image=MEDIA, embedded_context=MEDIA),
            ),
        )

    async def new_session(self, cwd: str, **kwargs: Any) -> acp.NewSessionResponse:
        session_id = f"sess_{uuid.uuid4().hex[:12]}"
        self._save(session_id, [])
        return acp.NewSessionResponse(session_id=session_id)

    async def load_session(
        self, cwd: str, session_id: str, **kwargs: Any
    ) -> acp.LoadSessionResponse:
        turns = self._state().get(session_id)
        if turns is None:
            raise acp.RequestError.resource_not_found(session_id)
        for user, answer in turns:
            await self._send(session_id, helpers.update_user_message_text(user))
            await self._send(session_id, helpers.update_agent_message_text(answer))
        return acp.LoadSessionResponse()

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        self.cancelled.add(session_id)

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> PromptResponse:
        self.cancelled.discard(session_id)
        texts = [b.text for b in prompt if getattr(b, "type", None) == "text"]
        text = "\n".join(texts)
        commands = [t for t in texts if not t.startswith("[")]  # not tether's notes
        last = commands[-1] if commands else ""
        word, _, rest = last.strip().partition(" ")
        said: list[str] = []

        async def say(chunk: str) -> None:
            said.append(chunk)
            await self._send(session_id, helpers.update_agent_message_text(chunk))

        stop = "end_turn"
        if word == "think":
            await self._send(session_id, helpers.update_agent_thought_text("pondering"))
            await say("thought about it")
        elif word in ("tool", "tool-fail"):
            await self._send(
                session_id,
                helpers.start_tool_call("t1", "Read notes", kind="read", status="pending"),
            )
            await self._send(
                session_id,
                helpers.update_tool_call(
                    "t1", status="in_progress", raw_input={"path": "notes.txt"}
                ),
            )
            failed = word == "tool-fail"
            await self._send(
                session_id,
                helpers.update_tool_call(
                    "t1",
                    status="failed" if failed else "completed",
                    content=[
                        helpers.tool_content(
                            helpers.text_block("no such file" if failed else "the notes")
                        )
                    ],
                    raw_output=None if failed else {"bytes": 9},
                ),
            )
            await say("done with the tool")
        elif word == "plan":
            entries = [helpers.plan_entry("look"), helpers.plan_entry("fix", status="in_progress")]
            await self._send(session_id, helpers.update_plan(entries))
            await say("planned")
        elif word == "permission":
            assert self.conn is not None
            answer = await self.conn.request_permission(
                session_id=session_id,
                tool_call=ToolCallUpdate(tool_call_id="p1", title="Delete build/"),
                options=[
                    PermissionOption(option_id="yes", name="Allow once", kind="allow_once"),
                    PermissionOption(option_id="no", name="Reject once", kind="reject_once"),
                ],
            )
            outcome = answer.outcome
            chosen = outcome.option_id if isinstance(outcome, AllowedOutcome) else "cancelled"
            if session_id in self.cancelled:
                return PromptResponse(stop_reason="cancelled")
            await say(f"permission: {chosen}")
        elif word == "read":
            assert self.conn is not None
            try:
                read = await self.conn.read_text_file(session_id=session_id, path=rest)
                await say(f"file: {read.content}")
            except acp.RequestError as err:
                await say(f"refused: {err}")
        elif word == "write":
            assert self.conn is not None
            path, _, content = rest.partition(" ")
            try:
                await self.conn.write_text_file(session_id=session_id, path=path, content=content)
                await say("written")
            except acp.RequestError as err:
                await say(f"refused: {err}")
        elif word == "run":
            assert self.conn is not None
            command, *args = rest.split()
            try:
                made = await self.conn.create_terminal(
                    session_id=session_id, command=command, args=args
                )
                tid = made.terminal_id
                done = await self.conn.wait_for_terminal_exit(
                    session_id=session_id, terminal_id=tid
                )
                out = await self.conn.terminal_output(session_id=session_id, terminal_id=tid)
                await self.conn.release_terminal(session_id=session_id, terminal_id=tid)
                await say(f"exit {done.exit_code}: {out.output.strip()}")
            except acp.RequestError as err:
                await say(f"refused: {err}")
        elif word == "slow":
            await say(f"pid {os.getpid()}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if session_id in self.cancelled:
                    if MARKS:
                        Path(MARKS).write_text(f"cancelled {time.time()}\n")  # noqa: ASYNC240
                    return PromptResponse(stop_reason="cancelled")
                await say(".")
                await asyncio.sleep(0.02)
        elif word == "usage":
            await self._send(
                session_id, UsageUpdate(session_update="usage_update", used=120, size=1000)
            )
            await say("counted")
        elif word == "env":
            await say(os.environ.get(rest, "unset"))
        elif word == "blocks":
            await say(",".join(_described(b) for b in prompt))
        elif word == "prompt":
            await say(f"{len(prompt)} blocks; first: {prompt[0].text}")
        elif word == "max":
            await say("cut")
            stop = "max_tokens"
        else:
            await say(f"echo: {text}")
        turns = self._state().get(session_id, [])
        self._save(session_id, [*turns, [last, "".join(said)]])
        return PromptResponse(stop_reason=stop)

    async def _send(self, session_id: str, update: Any) -> None:
        assert self.conn is not None
        await self.conn.session_update(session_id=session_id, update=update)

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(STATE.read_text())
        except OSError:
            return {}

    def _save(self, session_id: str, turns: list[Any]) -> None:
        if not LOAD:
            return
        state = self._state()
        state[session_id] = turns
        STATE.write_text(json.dumps(state))


def _described(block: Any) -> str:
    if block.type == "image":
        return f"image({block.mime_type},{len(base64.b64decode(block.data))})"
    if block.type == "resource":
        res = block.resource
        return f"resource({res.mime_type},{len(base64.b64decode(res.blob))})"
    return f"text|{block.text}"


if __name__ == "__main__":
    asyncio.run(acp.run_agent(ScriptedAgent()))

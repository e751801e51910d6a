"""A small ACP agent to try tether's ACP support offline (no model, no key).

It keeps notes in ``notes.md`` of its session's workspace, through the client's
``fs/*`` methods (tether serves them inside the workspace):

- ``note TEXT`` appends TEXT to the notes (``fs/write_text_file``);
- ``notes`` reads them back (``fs/read_text_file``);
- anything else is echoed, a word at a time.

Each file access is announced as a tool call, then completed; a thought comes first.
Served by tether from the config file (README, "ACP agents"):

    [[agents]]
    name = "notes"
    kind = "acp"
    command = "python"
    args = ["examples/acp_notes_agent.py"]
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import acp
from acp import helpers
from acp.schema import PromptResponse


class NotesAgent:
    def __init__(self) -> None:
        self.conn: acp.Client | None = None
        self.workspaces: dict[str, str] = {}  # session id -> its cwd

    def on_connect(self, conn: acp.Client) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, **kwargs: Any) -> acp.InitializeResponse:
        return acp.InitializeResponse(protocol_version=acp.PROTOCOL_VERSION)

    async def new_session(self, cwd: str, **kwargs: Any) -> acp.NewSessionResponse:
        session_id = f"notes_{uuid.uuid4().hex[:12]}"
        self.workspaces[session_id] = cwd
        return acp.NewSessionResponse(session_id=session_id)

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        """Each turn is short: nothing to stop."""

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> PromptResponse:
        text = " ".join(b.text for b in prompt if getattr(b, "type", None) == "text").strip()
        word, _, rest = text.partition(" ")
        await self._send(session_id, helpers.update_agent_thought_text(f"asked: {word}"))
        if word == "note":
            notes = await self._read(session_id)
            await self._write(session_id, f"{notes}- {rest}\n")
            await self._say(session_id, "noted")
        elif word == "notes":
            notes = (await self._read(session_id)).strip()
            await self._say(session_id, notes or "no notes yet")
        else:
            for i, part in enumerate(text.split()):
                await self._say(session_id, part if i == 0 else f" {part}")
        return PromptResponse(stop_reason="end_turn")

    def _path(self, session_id: str) -> str:
        return os.path.join(self.workspaces[session_id], "notes.md")

    async def _read(self, session_id: str) -> str:
        """The notes, or "" before the first one (the client refuses a missing file)."""
        assert self.conn is not None
        call = f"read_{uuid.uuid4().hex[:8]}"
        start = helpers.start_read_tool_call(call, "Read notes.md", "notes.md")
        await self._send(session_id, start)
        path = self._path(session_id)
        try:
            content = (await self.conn.read_text_file(session_id=session_id, path=path)).content
        except acp.RequestError:
            content = ""
        await self._send(session_id, helpers.update_tool_call(call, status="completed"))
        return content

    async def _write(self, session_id: str, content: str) -> None:
        assert self.conn is not None
        call = f"write_{uuid.uuid4().hex[:8]}"
        start = helpers.start_tool_call(call, "Write notes.md", kind="edit", status="pending")
        await self._send(session_id, start)
        path = self._path(session_id)
        await self.conn.write_text_file(session_id=session_id, path=path, content=content)
        await self._send(session_id, helpers.update_tool_call(call, status="completed"))

    async def _say(self, session_id: str, text: str) -> None:
        await self._send(session_id, helpers.update_agent_message_text(text))

    async def _send(self, session_id: str, update: Any) -> None:
        assert self.conn is not None
        await self.conn.session_update(session_id=session_id, update=update)


if __name__ == "__main__":
    asyncio.run(acp.run_agent(NotesAgent()))

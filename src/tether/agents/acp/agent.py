"""An ACP agent as a tether agent: one ACP session per tether session, one prompt per run.

The first run of a tether session opens an ACP session (``session/new``, its
cwd the session's workspace) and records the pair in the store (namespace
``acp-sessions``), so that after the process or the server restarted, the
next run finds it: ``session/load`` when the agent advertises ``loadSession``
(what the load replays is not written again: the log has it), else a new ACP
session whose first prompt carries the earlier turns as text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from pathlib import Path

import acp
import orjson
from acp.schema import (
    AudioContentBlock,
    BlobResourceContents,
    EmbeddedResourceContentBlock,
    ImageContentBlock,
    PromptCapabilities,
    ResourceContentBlock,
    TextContentBlock,
)

from tether.agents.acp.client import ACPClient, Binding
from tether.agents.acp.supervisor import AgentProcess, Supervisor
from tether.agents.acp.turn import Turn
from tether.agents.acp.workspace import Workspace, WorkspacePolicy
from tether.agents.attachments import ReadStream
from tether.runtime.context import RunContext
from tether.sessions import events as ev
from tether.sessions.fold import Message
from tether.store.base import Store

log = logging.getLogger(__name__)

#: What a prompt is made of.
ContentBlock = (
    TextContentBlock
    | ImageContentBlock
    | AudioContentBlock
    | ResourceContentBlock
    | EmbeddedResourceContentBlock
)
#: Store namespace of the tether session -> ACP session records.
NAMESPACE = "acp-sessions"
#: Seconds a cancelled prompt has to come back before the run ends anyway.
CANCEL_GRACE = 2.0


class AgentCrashed(RuntimeError):
    """The agent's process went away in the middle of a run."""

    code = "agent_crashed"


class ACPAgent:
    """The ``Agent`` callable of one ``[[agents]]`` entry (tether.runtime.driver.Agent)."""

    #: A run cannot be continued from a journal: the process holds its state.
    replay = False

    def __init__(
        self,
        supervisor: Supervisor,
        client: ACPClient,
        store: Store,
        data_dir: Path,
        read_attachment: ReadStream,
    ) -> None:
        self.supervisor = supervisor
        self.client = client
        self.store = store
        self._read = read_attachment
        self.config = supervisor.config
        self._data_dir = data_dir
        self._workspaces: dict[str, Workspace] = {}

    async def __call__(self, ctx: RunContext) -> None:
        proc = await self.supervisor.ready()
        session_id, fresh = await self._acp_session(proc, ctx.session_id)
        turn = Turn(ctx)
        binding = self.client.sessions[session_id]
        binding.updates, binding.ask = turn.take, turn.ask
        prompt = _earlier(ctx.history[:-1]) if fresh else []
        prompt += await self._message(ctx.history[-1], proc.prompt_capabilities)
        try:
            await self._prompt(proc, session_id, prompt, turn)
        finally:
            binding.updates = binding.ask = None

    async def _prompt(
        self, proc: AgentProcess, session_id: str, prompt: list[ContentBlock], turn: Turn
    ) -> None:
        asked = asyncio.ensure_future(proc.conn.prompt(session_id=session_id, prompt=prompt))
        try:
            await turn.pump(asked, proc.exited)
        except asyncio.CancelledError:
            turn.cancel_permissions()
            with contextlib.suppress(Exception):
                await proc.conn.cancel(session_id=session_id)
            with contextlib.suppress(Exception):
                await asyncio.wait((asked,), timeout=CANCEL_GRACE)  # its stopReason: cancelled
            raise
        finally:
            if not asked.done():  # the process is gone, or the run cancelled
                asked.cancel()
            await turn.close()  # before the run's end: no approval is waited for after it
        crashed = asked.cancelled() or isinstance(asked.exception(), ConnectionError)
        if crashed:
            status = await asyncio.shield(proc.exited)
            raise AgentCrashed(
                f"agent {self.config.name!r} exited with status {status} during the run"
            )
        await turn.finish(asked.result())

    # -- sessions -----------------------------------------------------------------

    def workspace(self, tether_session: str) -> Workspace:
        """The session's workspace: the configured cwd, else a directory of its own."""
        found = self._workspaces.get(tether_session)
        if found is None:
            name = self.config.name
            root = self.config.cwd or self._data_dir / "workspaces" / name / tether_session
            root.mkdir(parents=True, exist_ok=True)
            policy = WorkspacePolicy(fs=self.config.fs, terminal=self.config.terminal)
            found = self._workspaces[tether_session] = Workspace(root, policy)
        return found

    async def _acp_session(self, proc: AgentProcess, tether_session: str) -> tuple[str, bool]:
        """The ACP session of ``tether_session`` in this process (open, loaded or new),
        and whether it is new (its first prompt carries the earlier turns)."""
        known = proc.sessions.get(tether_session)
        if known is not None:
            return known, False
        workspace = self.workspace(tether_session)
        cwd = str(workspace.root)
        key = f"{self.config.name}:{tether_session}"
        raw = await self.store.get_record(NAMESPACE, key)
        recorded: str | None = orjson.loads(raw)["acp_session_id"] if raw else None
        session_id: str | None = None
        if recorded is not None and proc.can_load:
            self.client.sessions[recorded] = Binding(workspace)  # no sink: the replay is dropped
            try:
                await proc.conn.load_session(cwd=cwd, session_id=recorded, mcp_servers=[])
                session_id = recorded
                log.info("acp agent %s: loaded session %s", self.config.name, recorded)
            except acp.RequestError as err:
                self.client.sessions.pop(recorded, None)
                log.warning("acp agent %s: session/load failed: %s", self.config.name, err)
        if session_id is None:
            opened = await proc.conn.new_session(cwd=cwd, mcp_servers=[])
            session_id = opened.session_id
            self.client.sessions[session_id] = Binding(workspace)
            record = orjson.dumps({"acp_session_id": session_id})
            await self.store.put_record(NAMESPACE, key, record)
        proc.sessions[tether_session] = session_id
        return session_id, session_id != recorded

    async def _message(self, message: Message, caps: PromptCapabilities) -> list[ContentBlock]:
        """The user message's parts as ACP content, as far as the agent takes them.

        Text always; an image when the agent takes images, a file when it takes
        embedded resources (bytes inline, or read from their attachment stream);
        else a line of text saying what was left out.
        """
        blocks: list[ContentBlock] = []
        for part in message.parts:
            a = part.attachment
            if a is None:
                if part.kind == ev.TEXT and part.text:
                    blocks.append(TextContentBlock(type="text", text=part.text))
                continue
            media, name = a.get("media_type") or "", a.get("name") or part.kind
            image = part.kind == "image" and bool(caps.image)
            file = part.kind == "file" and bool(caps.embedded_context)
            if (image or file) and (a.get("data") or a.get("stream")):
                data = a.get("data") or base64.b64encode(await self._read(a["stream"])).decode()
                if image:
                    blocks.append(ImageContentBlock(type="image", data=data, mime_type=media))
                else:
                    blob = BlobResourceContents(blob=data, mime_type=media, uri=f"file:///{name}")
                    blocks.append(EmbeddedResourceContentBlock(type="resource", resource=blob))
            else:
                left = f"[{part.kind} {name} ({media or 'unknown type'}): not sent, "
                blocks.append(TextContentBlock(type="text", text=left + "the agent takes none]"))
        return blocks or [TextContentBlock(type="text", text="")]

    async def aclose(self) -> None:
        """Kill and reap the workspaces' terminals."""
        for workspace in self._workspaces.values():
            with contextlib.suppress(Exception):
                await workspace.aclose()
        self._workspaces.clear()


def _earlier(messages: list[Message]) -> list[ContentBlock]:
    """The earlier turns, as one text block (none without any text)."""
    lines = [f"{m.role}: {m.text}" for m in messages if m.text]
    if not lines:
        return []
    intro = "The conversation so far (for context; answer the message after it):\n"
    return [TextContentBlock(type="text", text=intro + "\n".join(lines))]

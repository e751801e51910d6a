"""tether as the ACP client of one agent process: what the agent may ask of it.

The process serves many tether sessions, one ACP session each; this routes the
agent's notifications and requests by ``sessionId`` to the session's
:class:`Binding`: ``session/update`` to the run being answered (none while a
``session/load`` replays history: the log has it already), permission requests
to the run (which makes them tether approvals), and ``fs/*`` / ``terminal/*``
to the session's workspace (tether.agents.acp.workspace).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import acp
from acp.schema import (
    CreateTerminalResponse,
    DeniedOutcome,
    EnvVariable,
    KillTerminalResponse,
    PermissionOption,
    ReadTextFileResponse,
    ReleaseTerminalResponse,
    RequestPermissionResponse,
    TerminalExitStatus,
    TerminalOutputResponse,
    ToolCallUpdate,
    WaitForTerminalExitResponse,
    WriteTextFileResponse,
)

from tether.agents.acp.workspace import TerminalOutput, Workspace, WorkspaceRefused

T = TypeVar("T")
#: Takes one ``session/update``'s update, in the order they arrived.
UpdateSink = Callable[[Any], None]
AskPermission = Callable[
    [ToolCallUpdate, list[PermissionOption]], Awaitable[RequestPermissionResponse]
]


@dataclass(slots=True)
class Binding:
    """What an ACP session of the process is to tether: its workspace and its live run."""

    workspace: Workspace
    #: The run being answered; None between runs and while history is replayed.
    updates: UpdateSink | None = None
    ask: AskPermission | None = None


def cancelled() -> RequestPermissionResponse:
    return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))


class ACPClient:
    """The ``acp.Client`` of one process: every request is answered for its session."""

    def __init__(self) -> None:
        self.sessions: dict[str, Binding] = {}

    def _binding(self, session_id: str) -> Binding:
        found = self.sessions.get(session_id)
        if found is None:
            raise acp.RequestError.invalid_params({"details": f"unknown session {session_id}"})
        return found

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        found = self.sessions.get(session_id)
        if found is not None and found.updates is not None:
            found.updates(update)  # synchronously: the run sees updates in order

    async def request_permission(
        self,
        session_id: str,
        tool_call: ToolCallUpdate,
        options: list[PermissionOption],
        **kwargs: Any,
    ) -> RequestPermissionResponse:
        found = self.sessions.get(session_id)
        if found is None or found.ask is None:
            return cancelled()  # no run to ask a person in
        return await found.ask(tool_call, options)

    async def read_text_file(
        self,
        session_id: str,
        path: str,
        line: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> ReadTextFileResponse:
        workspace = self._binding(session_id).workspace
        text = await _served(workspace.read_text_file(path, line, limit))
        return ReadTextFileResponse(content=text)

    async def write_text_file(
        self, session_id: str, path: str, content: str, **kwargs: Any
    ) -> WriteTextFileResponse:
        await _served(self._binding(session_id).workspace.write_text_file(path, content))
        return WriteTextFileResponse()

    async def create_terminal(
        self,
        session_id: str,
        command: str,
        args: list[str] | None = None,
        env: list[EnvVariable] | None = None,
        cwd: str | None = None,
        output_byte_limit: int | None = None,
        **kwargs: Any,
    ) -> CreateTerminalResponse:
        workspace = self._binding(session_id).workspace
        variables = {v.name: v.value for v in env or ()}
        terminal_id = await _served(
            workspace.create_terminal(command, args or (), variables, cwd, output_byte_limit)
        )
        return CreateTerminalResponse(terminal_id=terminal_id)

    async def terminal_output(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> TerminalOutputResponse:
        out = await _served(self._binding(session_id).workspace.terminal_output(terminal_id))
        return TerminalOutputResponse(
            output=out.output, truncated=out.truncated, exit_status=_exit(out)
        )

    async def wait_for_terminal_exit(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> WaitForTerminalExitResponse:
        workspace = self._binding(session_id).workspace
        out = await _served(workspace.wait_for_terminal_exit(terminal_id))
        return WaitForTerminalExitResponse(exit_code=out.exit_code, signal=out.signal)

    async def kill_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> KillTerminalResponse:
        await _served(self._binding(session_id).workspace.kill_terminal(terminal_id))
        return KillTerminalResponse()

    async def release_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> ReleaseTerminalResponse:
        await _served(self._binding(session_id).workspace.release_terminal(terminal_id))
        return ReleaseTerminalResponse()

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise acp.RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    def on_connect(self, conn: Any) -> None:
        return None


async def _served(call: Awaitable[T]) -> T:
    """A workspace call; its refusal becomes the JSON-RPC error the agent gets."""
    try:
        return await call
    except WorkspaceRefused as err:
        raise acp.RequestError(-32602, str(err)) from None


def _exit(out: TerminalOutput) -> TerminalExitStatus | None:
    if out.exit_code is None and out.signal is None:
        return None
    return TerminalExitStatus(exit_code=out.exit_code, signal=out.signal)

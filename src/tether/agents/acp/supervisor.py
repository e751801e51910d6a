"""One ACP agent process kept alive: started, watched, restarted with backoff, reaped.

The supervisor owns the child process and its ACP connection (the official SDK's
``ClientSideConnection`` over the child's stdio). Its state changes only through
:meth:`Supervisor._set_state`, which logs each transition and sets the
``tether_acp_agent_state`` gauge::

    STOPPED ─start─▶ STARTING ─initialize answered─▶ READY
                        │  ▲                          │ the process exits
                        ▼  └──── backoff wait ─── RECONNECTING
                      FAILED (restart_limit starts in a row failed; the next run tries again)
    any state ─aclose─▶ CLOSED (final)

A process serves every session of its agent (ACP multiplexes them by sessionId).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import acp
from acp.schema import (
    ClientCapabilities,
    FileSystemCapabilities,
    Implementation,
    PromptCapabilities,
)

from tether import __version__
from tether.agents.acp.config import ACPAgentConfig
from tether.observability import metrics

log = logging.getLogger(__name__)

#: Seconds a process has to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 5.0
#: Longest stderr line mirrored to the log (the rest is cut).
STDERR_LINE_MAX = 2000
#: Bytes one JSON-RPC message from the agent may take.
READ_LIMIT = 50 * 1024 * 1024


class AgentState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


class AgentUnavailable(RuntimeError):
    """The agent's process could not be started (failed, or the server is closing)."""

    code = "agent_unavailable"


@dataclass(eq=False)
class AgentProcess:
    """One run of the agent's process: its connection and what it advertised."""

    process: asyncio.subprocess.Process
    conn: acp.ClientSideConnection
    init: acp.InitializeResponse
    #: Set with the exit status when the process is gone.
    exited: asyncio.Future[int]
    #: tether session id -> ACP session id, for the sessions open in this process.
    sessions: dict[str, str] = field(default_factory=dict)

    @property
    def can_load(self) -> bool:
        return bool(self.init.agent_capabilities and self.init.agent_capabilities.load_session)

    @property
    def prompt_capabilities(self) -> PromptCapabilities:
        caps = self.init.agent_capabilities
        return (caps and caps.prompt_capabilities) or PromptCapabilities()


class Supervisor:
    """Keeps agent ``config.name``'s process running; :meth:`ready` hands it out."""

    def __init__(self, config: ACPAgentConfig, client: Callable[[], acp.Client]) -> None:
        self.config = config
        self._client = client
        self.state = AgentState.STOPPED
        self.last_error: str | None = None
        self._current: AgentProcess | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Mirrors the current process's stderr and records its exit.
        self._reaper: asyncio.Task[None] | None = None
        metrics.acp_agent_state(config.name, self.state.value)

    # -- state -------------------------------------------------------------------

    def _set_state(self, new: AgentState, why: str = "") -> None:
        if self.state is AgentState.CLOSED or new is self.state:
            return
        log.info(
            "acp agent %s: %s -> %s%s", self.config.name, self.state.value, new.value,
            f" ({why})" if why else "",
        )  # fmt: skip
        self.state = new
        metrics.acp_agent_state(self.config.name, new.value)
        self._changed.set()
        self._changed = asyncio.Event()

    def public(self) -> dict[str, object]:
        """What /readyz shows of it."""
        shown: dict[str, object] = {"state": self.state.value}
        if self.state is AgentState.FAILED and self.last_error:
            shown["error"] = self.last_error
        return shown

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start (or, after FAILED, start again) the process in the background."""
        if self._task is None or self._task.done():
            if self.state is AgentState.CLOSED:
                return
            self._task = asyncio.create_task(self._supervise(), name=f"acp:{self.config.name}")

    async def ready(self) -> AgentProcess:
        """The running process; waits for a start or restart.

        A stopped or failed agent is started once more for the caller;
        AgentUnavailable if that fails too, or the server is closing.
        """
        restarted = False
        while True:
            current = self._current
            if self.state is AgentState.READY and current is not None:
                return current
            if self.state is AgentState.CLOSED:
                raise AgentUnavailable(f"agent {self.config.name!r} is shut down")
            idle = self._task is None or self._task.done()
            if idle and self.state in (AgentState.FAILED, AgentState.STOPPED):
                if restarted:
                    raise AgentUnavailable(f"agent {self.config.name!r} failed: {self.last_error}")
                restarted = True
                self.start()
            await self._changed.wait()

    async def _supervise(self) -> None:
        """Start the process; when it exits, start it again after a backoff, up to a limit."""
        failures = 0
        while self.state is not AgentState.CLOSED:
            self._set_state(AgentState.STARTING if failures == 0 else AgentState.RECONNECTING)
            if failures:
                await asyncio.sleep(self.config.restart_delay(failures))
                if self.state is AgentState.CLOSED:
                    return
            try:
                current = await self._spawn()
            except Exception as err:
                self.last_error = str(err)
                log.warning("acp agent %s: could not start: %s", self.config.name, err)
                failures += 1
                if failures > self.config.restart_limit:
                    self._set_state(AgentState.FAILED, self.last_error)
                    return
                continue
            self._current = current
            self._set_state(AgentState.READY, f"pid {current.process.pid}")
            began = time.monotonic()
            status = await asyncio.shield(current.exited)
            self._current = None
            with contextlib.suppress(Exception):
                await current.conn.close()
            if self.state is AgentState.CLOSED:
                return
            self.last_error = f"exited with status {status}"
            log.warning("acp agent %s: process %s", self.config.name, self.last_error)
            # A process that lived restart_max seconds was a working one: the count
            # starts again. One that dies soon after its start counts as a failed start.
            lived = time.monotonic() - began
            failures = 1 if lived >= self.config.restart_max else failures + 1
            if failures > self.config.restart_limit:
                self._set_state(AgentState.FAILED, self.last_error)
                return

    async def _spawn(self) -> AgentProcess:
        config = self.config
        # Not the server's environment, which holds provider keys: the usual few
        # variables (PATH, HOME, ...) and the table's own.
        env = {**acp.default_environment(), **config.env}
        process = await asyncio.create_subprocess_exec(
            config.command,
            *config.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(config.cwd) if config.cwd is not None else None,
            limit=READ_LIMIT,
        )
        assert process.stdin is not None and process.stdout is not None
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reaper = asyncio.create_task(
            self._reap(process, exited), name=f"acp:{config.name}:wait"
        )
        conn = acp.connect_to_agent(self._client(), process.stdin, process.stdout)
        try:
            async with asyncio.timeout(config.startup_timeout):
                init = await conn.initialize(
                    protocol_version=acp.PROTOCOL_VERSION,
                    client_capabilities=ClientCapabilities(
                        fs=FileSystemCapabilities(
                            read_text_file=config.fs, write_text_file=config.fs
                        ),
                        terminal=config.terminal,
                    ),
                    client_info=Implementation(name="tether", version=__version__),
                )
        except BaseException as err:
            await conn.close()
            await self._terminate(process, exited)
            if isinstance(err, TimeoutError):
                raise RuntimeError(
                    f"no answer to initialize within {config.startup_timeout:g} s"
                ) from None
            if isinstance(err, ConnectionError) and exited.done():
                raise RuntimeError(f"exited with status {exited.result()}") from None
            raise
        return AgentProcess(process, conn, init, exited)

    async def _reap(self, process: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> None:
        """Mirror the process's stderr to the log (debug), then record its exit status."""
        assert process.stderr is not None
        pending = b""
        while chunk := await process.stderr.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._mirror(line)
            pending = pending[-STDERR_LINE_MAX:]
        if pending:
            self._mirror(pending)
        status = await process.wait()
        if not exited.done():
            exited.set_result(status)

    def _mirror(self, line: bytes) -> None:
        text = line[:STDERR_LINE_MAX].decode("utf-8", "replace").rstrip()
        if text:
            log.debug("acp agent %s stderr: %s", self.config.name, text)

    async def aclose(self) -> None:
        """Stop for good: SIGTERM the process, SIGKILL it after a grace period, reap it."""
        self._set_state(AgentState.CLOSED, "shutting down")
        self.state = AgentState.CLOSED
        current, self._current = self._current, None
        if current is not None:
            with contextlib.suppress(Exception):
                await current.conn.close()
            await self._terminate(current.process, current.exited)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    async def _terminate(process: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(TERMINATE_GRACE):
                    await asyncio.shield(exited)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.shield(exited)

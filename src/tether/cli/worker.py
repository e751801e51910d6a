"""``tether worker MODULE:APP --server URL --key KEY``: run an app's agents outside the server.

The worker runs the same ``@app.agent`` functions (and ``@app.tool`` server
tools) as ``tether serve MODULE:APP`` would, through the same runtime, over
the server's store reached by the worker API (tether.runtime.remote_store).
It follows the wake stream of each agent it serves (tether.runtime.dispatch),
claims the wake of the agent's workers' subscription when it has room, and
takes the sessions dispatched since the acked offset: taking a session's
lease, it drives it as a replica does, until the session is idle. On SIGTERM
or Ctrl-C it stops its runs without ending them and lets their leases go, so
another worker continues them from their journals.

Its agents get what the server's get: the models of the providers in its own
environment, each reading the user's stored attachments through the worker API
(tether.agents.attachments), and the tools of the app and of the
``[[mcp_servers]]`` of ``$TETHER_CONFIG``, which it runs or connects to itself
for as long as it runs (tether.agents.mcp), as ``tether serve`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import click
import orjson

from tether.agents.app import App, load_app
from tether.agents.attachments import reading_attachments
from tether.agents.context import AgentKit, CustomAgent
from tether.agents.llm import RetryPolicy
from tether.agents.mcp import MCPToolsets
from tether.agents.mcp_config import MCPServerConfig, load_mcp_servers
from tether.agents.tools import ToolRegistry
from tether.api.workers import worker_identity
from tether.cli.log_redaction import configure_logging
from tether.providers.registry import ProviderRegistry
from tether.runtime.dispatch import wake_stream, work_stream
from tether.runtime.driver import Agent
from tether.runtime.remote_store import RemoteSessions, RemoteStore, WorkerRefused, read_result
from tether.runtime.runner import Runtime
from tether.sessions.service import SessionRecord
from tether.streams.tail import tail

log = logging.getLogger("tether.worker")

#: Runs one worker executes at once, unless told otherwise.
DEFAULT_CAPACITY = 16
#: Seconds between claims while dispatched work waits for room here.
STARVED_RETRY = 0.5
#: Bytes of the work stream read at once.
READ_BYTES = 64 * 1024


class Worker:
    """One worker process: its runtime, its heartbeat, and a follower per agent's work."""

    def __init__(
        self,
        app: App,
        registry: ProviderRegistry,
        server: str,
        key: str,
        capacity: int,
        mcp_servers: Sequence[MCPServerConfig] = (),
    ) -> None:
        self.app = app
        self.store = RemoteStore(server, key)
        #: This process's name as a lease holder: the key's identity first, which
        #: is how the server knows the lease is this key's.
        self.owner = f"{worker_identity(key)}/{socket.gethostname()}:{os.getpid()}:"
        self.owner += os.urandom(3).hex()
        self.capacity = capacity
        tools = ToolRegistry(app.tools)
        models = reading_attachments(registry.resolve, self.store.read_attachment)
        self.kit = AgentKit(models, tools, RetryPolicy())
        #: The MCP servers' connections, which add their tools to ``tools``.
        self.mcp = MCPToolsets(mcp_servers, tools)
        #: Sessions being taken over, and those dispatched again meanwhile.
        self._taking: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        #: Agents whose last claim left work for lack of room here.
        self._starved: dict[str, bool] = {}

    def resolve(self, record: SessionRecord) -> Agent:
        fn = self.app.agents.get(record.agent or "")
        if fn is None:
            raise LookupError(f"agent {record.agent!r} is not served by this worker")
        tools = self.app.agent_tools.get(record.agent or "", ())
        return CustomAgent(fn, self.kit, tools, replay=record.agent not in self.app.no_replay)

    async def run(self, stop: asyncio.Event) -> None:
        await self.store.open()
        try:
            hello = await self._hello()
            agents: list[str] = hello["agents"]
            if not agents:
                raise click.ClickException(
                    "the server has none of this app's agents as worker agents "
                    "(TETHER_WORKER_AGENTS): nothing to serve"
                )
            await self.mcp.start()
            try:
                await self._serve_all(agents, float(hello["lease_ttl"]), stop)
            finally:
                await self.mcp.aclose()  # after the runs: they call its tools
        finally:
            await self.store.aclose()

    async def _serve_all(self, agents: list[str], ttl: float, stop: asyncio.Event) -> None:
        """Run the runtime and follow each agent's work until ``stop`` is set."""
        log.info("serving %s (as %s)", ", ".join(agents), self.owner)
        runtime = Runtime(
            RemoteSessions(self.store), self.resolve, lease_ttl=ttl, worker=self.owner,
            reap=False,
        )  # fmt: skip
        await runtime.start()
        tasks = [asyncio.create_task(self._heartbeat(ttl / 3))]
        tasks += [asyncio.create_task(self._serve(runtime, a)) for a in agents]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            await runtime.aclose()

    async def _hello(self) -> dict[str, Any]:
        body = {"owner": self.owner, "agents": sorted(self.app.agents)}
        return await self.store.call("hello", body)

    async def _heartbeat(self, every: float) -> None:
        """Tell the server, now and then, that this worker is alive (for the status)."""
        while True:
            await asyncio.sleep(every)
            try:
                await self._hello()
            except Exception as err:
                log.warning("could not reach the server: %s", err)

    async def _serve(self, runtime: Runtime, agent: str) -> None:
        """Follow ``agent``'s wake stream; on each wake (and, while work is left that
        did not fit, every little while) claim what is pending, up to capacity."""
        wakes = wake_stream(agent)
        while True:
            try:
                position = (await self.store.head(wakes)).tail
                await self._claim_round(runtime, agent)
                async for batch in tail(self.store, wakes, position, heartbeat=STARVED_RETRY):
                    if batch is not None or self._starved.get(agent):
                        await self._claim_round(runtime, agent)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("following the work of %s: %s; trying again", agent, err)
                await asyncio.sleep(1.0)

    def _room(self, runtime: Runtime) -> bool:
        return runtime.active_runs() + len(self._taking) < self.capacity

    async def _claim_round(self, runtime: Runtime, agent: str) -> None:
        """Claim the agent's wake while there is room: take the sessions dispatched since
        the acked offset, ack those taken, let the wake go (the server wakes another
        worker, or this one, if entries remain)."""
        while True:
            if not self._room(runtime):
                self._starved[agent] = True  # the wake waits: claimed once there is room
                return
            try:
                claim = await self.store.call("claim", {"agent": agent, "owner": self.owner})
            except WorkerRefused as err:
                if err.status == 409:
                    return  # another worker holds it: it takes what is pending
                raise
            wake = {k: claim[k] for k in ("wake_id", "generation", "token")}
            try:
                taken, starved = await self._take_pending(runtime, agent, claim)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.store.call("release", {"agent": agent, **wake})
                raise
            self._starved[agent] = starved
            answer = await self.store.call(
                "ack", {"agent": agent, **wake, "offset": taken, "done": True}
            )
            if starved or taken == claim["offset"] or not answer["more"]:
                return

    async def _take_pending(
        self, runtime: Runtime, agent: str, claim: dict[str, Any]
    ) -> tuple[int, bool]:
        """Take the sessions of the work stream's entries from the claim's offset to its
        tail while there is room: (the offset after the last one taken, whether some
        were left for lack of room)."""
        taken = position = int(claim["offset"])
        end = int(claim["tail"])
        # The claim's answer holds the first entries: no read of them.
        first = read_result(claim["work"]) if claim.get("work") else None
        while position < end:
            res = first or await self.store.read(work_stream(agent), position, READ_BYTES)
            first = None
            for i, chunk in enumerate(res.chunks):
                if res.start + i >= end:
                    return taken, False
                if not self._room(runtime):
                    return taken, True
                self._take(runtime, orjson.loads(chunk)["session"])
                taken = res.start + i + 1
            if not res.chunks:
                break
            position = res.next
        return taken, False

    def _take(self, runtime: Runtime, session_id: str) -> None:
        """Take the session over in a task of its own: one at a time per session (a
        dispatch that arrives meanwhile is looked at once that one is done)."""
        if session_id in self._taking:
            self._again.add(session_id)
            return

        async def take() -> None:
            try:
                while True:
                    self._again.discard(session_id)
                    try:
                        await runtime.take_over(session_id)
                    except Exception as err:
                        log.warning("could not take session %s: %s", session_id, err)
                    if session_id not in self._again:
                        return
            finally:
                del self._taking[session_id]

        self._taking[session_id] = asyncio.create_task(take())


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--server",
    default=lambda: os.environ.get("TETHER_URL", "http://127.0.0.1:4437"),
    show_default="http://127.0.0.1:4437 (or $TETHER_URL)",
    help="The tether server whose runs this worker serves.",
)
@click.option(
    "--key",
    default=lambda: os.environ.get("TETHER_WORKER_KEY", ""),
    show_default="none (or $TETHER_WORKER_KEY)",
    help="A worker key (one of the server's TETHER_WORKER_KEYS); prefer the variable.",
)
@click.option("--capacity", type=click.IntRange(min=1), default=DEFAULT_CAPACITY,
              show_default=True, help="Runs this worker executes at once.")  # fmt: skip
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))  # fmt: skip
def worker(app_spec: str, server: str, key: str, capacity: int, log_level: str) -> None:
    """Serve the agents of MODULE:APP for a tether server, from this process."""
    if not key:
        raise click.ClickException("a worker key is required: --key or $TETHER_WORKER_KEY")
    try:
        registry = ProviderRegistry.from_env()
        mcp_servers = load_mcp_servers()
        secrets = [key, *(s.get() for s in registry.secrets())]
        secrets += [secret for server in mcp_servers for secret in server.secrets()]
    except Exception as err:
        raise click.ClickException(str(err)) from err
    configure_logging(log_level, secrets, "text")  # the key never reaches a log line
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call otherwise
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = load_app(app_spec)
        app.check_tools({s.name for s in mcp_servers})
    except Exception as err:
        raise click.ClickException(str(err)) from err
    if mcp_servers:
        log.info("MCP servers: %s", ", ".join(s.name for s in mcp_servers))
    asyncio.run(_main(Worker(app, registry, server, key, capacity, mcp_servers)))


async def _main(worker: Worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)

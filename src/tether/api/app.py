"""The ASGI application: the stream protocol, the session API, and their owners.

``/v1/stream/...`` goes straight to the protocol handler, and so does
``POST /v1/chat/completions`` to the gateway's endpoint (the hot path of
OpenAI clients); everything else is a FastAPI app (with its OpenAPI document
at ``/openapi.json``). The ASGI lifespan opens the store and starts the
runtime, and on shutdown stops them in the reverse order, so whoever runs the
app owns all of tether's background work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from pathlib import Path

from fastapi import FastAPI

from tether import __version__
from tether.agents.acp.config import ACPAgentConfig
from tether.agents.acp.serving import ACPAgents
from tether.agents.app import App
from tether.agents.attachments import AttachmentReading
from tether.agents.context import AgentKit, CustomAgent
from tether.agents.gateway import GatewayAgent, GatewaySpec, Prefetches
from tether.agents.llm import RetryPolicy
from tether.agents.mcp import MCPToolsets
from tether.agents.mcp_config import MCPServerConfig
from tether.agents.model import MAX_STEPS, ModelAgent
from tether.agents.tools import ToolRegistry
from tether.api import subscriptions as subscription_access
from tether.api.access import StreamPolicy
from tether.api.access_log import AccessLog, ASGIApp
from tether.api.aisdk import AISDKRoutes
from tether.api.anthropic_api import MESSAGES_PATH, MessagesRoutes
from tether.api.attachments import Attachments
from tether.api.auth import Auth
from tether.api.client_channel import ClientChannelRoutes
from tether.api.detach import DEFAULT_GRACE, Readers
from tether.api.errors import install_error_handlers
from tether.api.gateway import Gateway
from tether.api.guard import Guard, GuardConfig
from tether.api.idempotency import DEFAULT_RETENTION, Idempotency
from tether.api.openai.routes import COMPLETIONS_PATH, OpenAIRoutes
from tether.api.openapi_docs import document_unrouted
from tether.api.operations import MetricsListener, Readiness, build_operations_router
from tether.api.responses import ERROR_RESPONSES
from tether.api.responses_api.routes import RESPONSES_PATH, ResponsesRoutes
from tether.api.sessions import SessionRoutes
from tether.api.tokens import build_token_router
from tether.api.tools import build_tools_router
from tether.api.wake_tokens import WakeTokens
from tether.api.webui import build_web_router
from tether.api.workers import WorkerCalls, WorkerConfig, build_worker_router
from tether.observability import metrics
from tether.observability.tracing import Exporter
from tether.providers.base import Provider
from tether.providers.registry import ProviderRegistry, UnknownModel
from tether.runtime.dispatch import WorkDispatch
from tether.runtime.runner import LEASE_TTL, Agent, RunPolicy, Runtime
from tether.sessions.attachments import DEFAULT_INLINE_MAX, AttachmentStreams
from tether.sessions.checkpoints import DEFAULT_EVERY
from tether.sessions.service import DEFAULT_FOLD_CACHE_BYTES, SessionRecord, SessionService
from tether.store.base import Store
from tether.store.sqlite import SqliteStore
from tether.streams.app import Receive, Scope, Send, StreamsApp, StreamsConfig
from tether.subscriptions.key_control import KeyControl, socket_path
from tether.subscriptions.routes import SubscriptionRoutes
from tether.subscriptions.service import SubscriptionService

log = logging.getLogger(__name__)


class UnknownAgent(LookupError):
    pass


class TetherApp:
    def __init__(
        self,
        store: Store,
        streams: StreamsConfig | None = None,
        *,
        registry: ProviderRegistry | None = None,
        agents: App | None = None,
        auth: Auth | None = None,
        retry: RetryPolicy | None = None,
        max_steps: int = MAX_STEPS,
        lease_ttl: float = LEASE_TTL,
        retry_lost_runs: bool = False,
        runs: RunPolicy | None = None,
        shared_streams: bool = False,
        guard: GuardConfig | None = None,
        max_sessions: int = 0,
        max_streams: int = 0,
        attachment_inline_max: int = DEFAULT_INLINE_MAX,
        mcp_servers: Sequence[MCPServerConfig] = (),
        idempotency_retention: float = DEFAULT_RETENTION,
        gateway_detach_grace: float = DEFAULT_GRACE,
        access_log: bool = False,
        metrics_listen: tuple[str, int] | None = None,
        acp_agents: Sequence[ACPAgentConfig] = (),
        data_dir: Path = Path(".tether"),
        workers: WorkerConfig | None = None,
        webhook_allow_loopback: bool = False,
        fold_cache_bytes: int = DEFAULT_FOLD_CACHE_BYTES,
        checkpoint_every: int = DEFAULT_EVERY,
    ) -> None:
        """``access_log``: a line per request; ``metrics_listen``: (host, port) of a
        listener that serves /metrics without a key; ``acp_agents``: the config
        file's agent processes (their sessions' workspaces under ``data_dir``)."""
        self.store = store
        self.auth = auth or Auth()
        self.registry = registry or ProviderRegistry()
        self.agents = agents.agents if agents is not None else {}
        self._agent_tools = agents.agent_tools if agents is not None else {}
        self._no_replay = agents.no_replay if agents is not None else set()
        #: The agent processes spoken to over ACP, served beside the app's agents.
        self.acp = ACPAgents(
            acp_agents, store, data_dir, lambda name: self.attachments.streams.read(name)
        )
        if clash := sorted(set(self.acp.agents) & set(self.agents)):
            raise ValueError(f"agent {clash[0]!r} is both an app agent and an [[agents]] entry")
        self.retry = retry or RetryPolicy()
        self.max_steps = max_steps
        #: What every agent is given: the server's models and tools.
        tools = ToolRegistry(agents.tools if agents is not None else ())
        self.kit = AgentKit(self._resolve_model, tools, self.retry)
        #: The MCP servers' connections, which add their tools to ``tools``.
        self.mcp = MCPToolsets(mcp_servers, tools)
        if agents is not None:
            agents.check_tools({s.name for s in mcp_servers})
        self.sessions = SessionService(
            store,
            max_sessions=max_sessions,
            fold_cache_bytes=fold_cache_bytes,
            checkpoint_every=checkpoint_every,
        )
        #: tether workers: their keys, and the agents they serve (docs/workers.md).
        self.workers = workers or WorkerConfig()
        self.dispatch = WorkDispatch(
            store, self.workers.agents, lease_ttl, webhooks=self.workers.webhooks
        )
        #: The gateway's prefetched upstream responses, between its routes and its agents.
        self.prefetches = Prefetches()
        self.runtime = Runtime(
            self.sessions, self._agent_for, lease_ttl=lease_ttl,
            retry_lost_runs=retry_lost_runs, policy=runs,
            dispatch=self.dispatch if self.workers.agents else None,
        )  # fmt: skip
        self.policy = StreamPolicy(
            self.auth, self.sessions, store, shared=shared_streams, max_streams=max_streams
        )
        #: Durable Streams subscriptions (webhook and pull-wake), under the ``__ds`` prefix.
        self.subscriptions = SubscriptionService(
            store,
            allow_loopback=webhook_allow_loopback,
            readable=subscription_access.readable(self.policy),
        )
        #: Answers `tether webhook-keys` while this server owns a SQLite file.
        self.key_control = (
            KeyControl(socket_path(store.path), store, lambda: self.subscriptions.keyring)
            if isinstance(store, SqliteStore)
            else None
        )
        streams = streams or StreamsConfig()
        control = SubscriptionRoutes(
            self.subscriptions, streams.prefix, subscription_access.identify(self.policy)
        )
        self.streams = StreamsApp(store, streams, authorize=self.policy.authorize, control=control)
        self._prefix = self.streams.config.prefix
        self.attachments = Attachments(
            AttachmentStreams(store, attachment_inline_max), self.sessions, self._media_types
        )
        #: Answers kept under requests' Idempotency-Key, and their sweep.
        self.idempotency = Idempotency(store, idempotency_retention)
        #: Who reads each gateway run: one nobody reads for the grace period is cancelled.
        self.readers = Readers(
            self.runtime.cancel, gateway_detach_grace,
            send_buffer=self.streams.config.sse_send_buffer,
        )  # fmt: skip
        self._stop: asyncio.Future[None] | None = None
        #: Sends traces while the app runs, if the environment asks (OTEL_EXPORTER_OTLP_ENDPOINT).
        self.traces: Exporter | None = None
        metrics.upstreams_configured(p.name for p in self.registry.providers)
        upstreams = [p.name for p in self.registry.providers if hasattr(p, "base_url")]  # HTTP
        self.readiness = Readiness(
            store, lambda: self._stop is not None and self._stop.done(), upstreams,
            agents=self.acp.states,
        )  # fmt: skip
        self.metrics_listener = (
            MetricsListener(self.readiness, *metrics_listen) if metrics_listen else None
        )
        guard = guard or GuardConfig(max_body=self.streams.config.max_body)
        self.web = self._build_web(guard.max_body)
        self._front: ASGIApp = Guard(self._route, self.auth, guard, self._prefix)
        if access_log:
            self._front = AccessLog(self._front, self.auth)

    # -- wiring ----------------------------------------------------------------

    def _build_web(self, max_body: int) -> FastAPI:
        # FastAPI stops reading a body past max_body_size (413) while reading it.
        # FastAPI's own /docs loads Swagger UI from a CDN; the web router serves it
        # from the package instead (webui.py).
        web = FastAPI(
            title="tether",
            version=__version__,
            max_body_size=max_body,
            docs_url=None,
            redoc_url=None,
            responses=ERROR_RESPONSES,
        )
        web.state.auth = self.auth
        web.state.json_limits = self.streams.config.json
        web.state.idempotency = self.idempotency
        install_error_handlers(web)
        native = SessionRoutes(
            self.sessions, self.runtime, self.auth, self._check_model, self.stop_future,
            self.kit.tools, attachments=self.attachments,
            waiting=self.dispatch.waiting if self.workers.agents else None,
            worker_agents=self.workers.agents, send_buffer=self.streams.config.sse_send_buffer,
        )  # fmt: skip
        web.include_router(native.router)
        channel = ClientChannelRoutes(
            self.sessions, self.runtime, self.stop_future,
            send_buffer=self.streams.config.sse_send_buffer,
        )  # fmt: skip
        web.include_router(channel.router)  # the client channel: client-responses, interact
        aisdk = AISDKRoutes(
            self.sessions, self.runtime, self._check_model, self.stop_future,
            self.kit.tools, attachments=self.attachments, idempotency=self.idempotency,
            readers=self.readers,
        )  # fmt: skip
        web.include_router(aisdk.router)

        gateway = Gateway(
            self.sessions,
            self.runtime,
            self.auth,
            self.registry,
            self.stop_future,
            self.prefetches,
            max_body=self.streams.config.max_body,
            json_limits=self.streams.config.json,
            agents=lambda: [*self.agents, *self.acp.agents],
            attachments=self.attachments,
            idempotency=self.idempotency,
            readers=self.readers,
        )
        openai = OpenAIRoutes(gateway)
        web.include_router(openai.router)  # the OpenAI-compatible /v1/chat/completions, /v1/models
        responses = ResponsesRoutes(gateway)
        web.include_router(responses.router)  # OpenAI's /v1/responses
        messages = MessagesRoutes(gateway)
        web.include_router(messages.router)  # Anthropic's /v1/messages
        #: The gateway's POSTs served without FastAPI (each stays in the router
        #: for the OpenAPI document): a completion's time to first token pays
        #: for all the work before its upstream request is written.
        self._gateway_posts = {
            COMPLETIONS_PATH: openai.completions,
            RESPONSES_PATH: responses.asgi,
            MESSAGES_PATH: messages.asgi,
        }
        web.include_router(build_token_router(self.policy, self.streams, self.store))
        web.include_router(build_tools_router(self.kit.tools, self.mcp))
        web.include_router(build_web_router())  # the web UI at / and /ui/...
        web.include_router(build_operations_router(self.readiness, self.auth))  # health, metrics
        if self.workers.enabled:
            calls = WorkerCalls(
                self.store, self.sessions, self.workers, self.dispatch, self.stop_future,
                max_attachment=self.streams.config.max_body,
            )  # fmt: skip
            tokens = WakeTokens(self.store, self.dispatch) if self.workers.webhooks else None
            web.include_router(build_worker_router(calls, tokens))
        document_unrouted(web, self._prefix)  # the raw streams and the WebSocket, in /openapi.json
        return web

    def _check_model(self, model: str | None, agent: str | None) -> str | None:
        if model and agent:
            return "give a model or an agent, not both"
        if agent is not None:
            names = {*self.agents, *self.acp.agents, *self.workers.agents}
            known = ", ".join(sorted(names)) or "none"
            return None if agent in names else f"unknown agent {agent!r} (agents: {known})"
        try:
            self.registry.resolve(model or "demo")
        except UnknownModel as err:
            return str(err)
        return None

    def _media_types(self, model: str | None, agent: str | None) -> tuple[str, ...] | None:
        """What attachments a session's model takes; None: any (an agent reads its parts)."""
        if agent is not None:
            return None
        provider, _ = self.registry.resolve(model or "demo")
        return self.registry.media_types(provider)

    def _resolve_model(self, name: str) -> tuple[Provider, str]:
        """A model's provider, reading attachments stored in streams of their own."""
        provider, model = self.registry.resolve(name)
        return AttachmentReading(provider, self.attachments.streams.read), model

    def _agent_for(self, record: SessionRecord) -> Agent:
        if record.agent is not None and record.agent in self.acp.agents:
            return self.acp.agents[record.agent]
        if record.agent is not None:
            fn = self.agents.get(record.agent)
            if fn is None:
                raise UnknownAgent(f"agent {record.agent!r} is not served here")
            tools = self._agent_tools.get(record.agent, ())
            return CustomAgent(fn, self.kit, tools, replay=record.agent not in self._no_replay)
        if record.metadata.get("gateway"):  # a session of the OpenAI-compatible gateway
            provider, model = self._resolve_model(record.model or "demo")
            spec = GatewaySpec.from_metadata(record.metadata["gateway"])
            return GatewayAgent(provider, model, spec, self.prefetches, self.retry)
        provider, model = self.registry.resolve(record.model or "demo")
        budget = self.registry.context_budget(provider, model)
        return ModelAgent(self.kit, max_steps=self.max_steps, context_tokens=budget)

    # -- ASGI ------------------------------------------------------------------

    def stop_future(self) -> asyncio.Future[None]:
        if self._stop is None:
            self._stop = asyncio.get_running_loop().create_future()
        return self._stop

    def shutdown(self) -> None:
        """SIGTERM: end live reads promptly (open SSE, long-polls and sockets), and
        start the runs' grace period (tether.runtime.runner.Runtime.drain)."""
        self.streams.shutdown()
        self.runtime.drain()
        stop = self.stop_future()
        if not stop.done():
            stop.set_result(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._front(scope, receive, send)

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The awaitable of the app that answers ``scope`` (not a coroutine of its own:
        one frame fewer for every request to pass through)."""
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith(self._prefix):
            return self.streams(scope, receive, send)
        if (
            kind == "http"
            and scope["method"] == "POST"
            and (post := self._gateway_posts.get(scope["path"])) is not None
        ):
            metrics.gateway_request_arrived()
            return post(scope, receive, send)
        return self.web(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.traces = Exporter.from_environ()
                try:
                    await self.store.open()
                    await self.sessions.build_indexes()
                    await self.subscriptions.start()
                    if self.key_control is not None:
                        await self.key_control.start()
                    await self.dispatch.open(self.subscriptions)  # the workers' subscriptions
                    await self.mcp.start()
                    self.acp.start()
                    await self.runtime.start()
                    self.idempotency.start()
                    await self.registry.start_discovery()  # upstreams' models; aclose stops it
                    if self.metrics_listener is not None:
                        await self.metrics_listener.start()
                except Exception as err:
                    log.exception("could not start")
                    if self.key_control is not None:
                        await self.key_control.aclose()
                    await self.mcp.aclose()
                    await self.acp.aclose()
                    if self.traces is not None:
                        await self.traces.aclose()
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                if self.metrics_listener is not None:
                    await self.metrics_listener.aclose()
                await self.readers.aclose()
                await self.runtime.aclose()
                await self.sessions.aclose()  # after the runs: their appends start checkpoints
                await self.acp.aclose()  # after the runs: they speak to the processes
                await self.idempotency.aclose()
                if self.key_control is not None:
                    await self.key_control.aclose()
                await self.subscriptions.aclose()
                await self.mcp.aclose()
                await self.registry.aclose()
                await self.store.aclose()
                if self.traces is not None:  # after the runs: their last spans are sent
                    await self.traces.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

"""The ``tether`` command."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import click
import uvicorn

from tether.agents.acp.config import load_acp_agents
from tether.agents.app import App, load_app
from tether.agents.mcp_config import load_mcp_servers
from tether.agents.model import MAX_STEPS
from tether.api.app import TetherApp
from tether.api.auth import Auth
from tether.api.detach import DEFAULT_GRACE
from tether.api.guard import GuardConfig
from tether.api.idempotency import DEFAULT_RETENTION
from tether.api.workers import WorkerConfig
from tether.cli.chat import chat, tail
from tether.cli.connections import (
    ConnectionGuard,
    ConnectionLimits,
    default_max_connections,
    raise_fd_limit,
)
from tether.cli.gc_policy import settle_heap
from tether.cli.log_redaction import configure_logging
from tether.cli.sessions_cmd import sessions
from tether.cli.webhook_keys import webhook_keys
from tether.cli.worker import worker
from tether.providers.redaction import check_credential
from tether.providers.registry import ProviderRegistry
from tether.runtime.policy import SHUTDOWN_GRACE, SUSPEND_AFTER, RunPolicy
from tether.runtime.runner import LEASE_TTL
from tether.sessions.attachments import DEFAULT_INLINE_MAX
from tether.sessions.checkpoints import DEFAULT_EVERY
from tether.sessions.service import DEFAULT_FOLD_CACHE_BYTES
from tether.store.factory import (
    SQLITE_SYNC,
    SqliteSync,
    check_redis,
    describe_store,
    open_store,
)
from tether.streams.app import StreamsConfig
from tether.streams.json_body import JsonLimits
from tether.subscriptions.url_policy import WebhookUrlRejected, check_webhook_url

DEFAULT_PORT = 4437  # the Durable Streams protocol's registered default
#: Requests a second per key, with keys: far above an interactive client's, far
#: below what one key could take from the others on this machine.
DEFAULT_RATE = 1000.0
#: Sessions, and streams, per key: far more than a person makes, a bound for a runaway script.
DEFAULT_QUOTA = 100_000


_JSON_DEFAULTS = JsonLimits()


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


class _Server(uvicorn.Server):
    """Settles the heap once started; ends live reads first on SIGTERM/SIGINT (quick shutdown).

    Its main loop also sweeps the connections' head and body timeouts, once a second.
    """

    def __init__(self, config: uvicorn.Config, app: TetherApp, guard: ConnectionGuard) -> None:
        super().__init__(config)
        self._tether = app
        self._guard = guard
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        settle_heap()
        if not self.should_exit:  # the models, discovered ones included (after the lifespan)
            models = self._tether.registry.list_models()
            click.echo(f"tether: models: {', '.join(models)}", err=True)

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0 and self._loop is not None:  # uvicorn ticks every 0.1 s
            self._guard.sweep(self._loop.time())
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._tether.shutdown)
        super().handle_exit(sig, frame)


class _Commands(click.Group):
    """Ctrl-C ends any command with the shell's status for it, 130, and no "Aborted!"."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise SystemExit(130) from None


@click.group(cls=_Commands)
@click.version_option(package_name="tether", prog_name="tether")
def main() -> None:
    """tether: durable transport for AI agent sessions."""


@main.command()
@click.argument("app_spec", required=False, metavar="[MODULE:APP]")
@click.option(
    "--host",
    default=lambda: os.environ.get("TETHER_HOST", "127.0.0.1"),
    show_default="127.0.0.1 (or $TETHER_HOST)",
    help="Interface to bind.",
)
@click.option(
    "--port",
    default=lambda: os.environ.get("TETHER_PORT", DEFAULT_PORT),  # click checks it
    show_default=f"{DEFAULT_PORT} (or $TETHER_PORT)",
    type=click.IntRange(1, 65535),
)
@click.option(
    "--data-dir",
    default=lambda: os.environ.get("TETHER_DATA_DIR", ".tether"),
    show_default=".tether (or $TETHER_DATA_DIR)",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite log lives.",
)
@click.option(
    "--store",
    "store_spec",
    default=lambda: os.environ.get("TETHER_STORE", "sqlite"),
    show_default="sqlite (or $TETHER_STORE)",
    help="sqlite, memory, sqlite:///PATH, or redis://HOST:PORT/DB (replicas share it).",
)
@click.option(
    "--sqlite-sync",
    default=lambda: os.environ.get("TETHER_SQLITE_SYNC", "normal"),
    show_default="normal (or $TETHER_SQLITE_SYNC)",
    type=click.Choice(SQLITE_SYNC),
    help="SQLite store: 'normal' keeps every acknowledged write through a crash of the "
    "process, 'full' also through a power loss (an fsync per commit: slower appends).",
)
@click.option("--max-body", default=10 * 1024 * 1024, show_default=True, type=int,
              help="Largest request body accepted, in bytes.")  # fmt: skip
@click.option(
    "--max-batch",
    default=_JSON_DEFAULTS.max_batch,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most messages one JSON append may hold.",
)
@click.option(
    "--max-json-values",
    default=_JSON_DEFAULTS.max_values,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most values (elements and members, at any depth) in one JSON body.",
)
@click.option(
    "--max-json-depth",
    default=_JSON_DEFAULTS.max_depth,
    show_default=True,
    type=click.IntRange(min=1, max=200),
    help="Deepest nesting of a JSON body.",
)
@click.option("--long-poll-timeout", default=3.0, show_default=True, type=float,
              help="Seconds a long-poll read waits for new data.")  # fmt: skip
@click.option("--sse-send-buffer", default=256 * 1024, show_default=True,
              type=click.IntRange(min=1),
              help="Bytes a live reader (a stream's SSE, a session's event stream or "
              "WebSocket, a gateway front's or the AI SDK's streamed answer, a backend's "
              "/interact answers) may have waiting for its client (beyond the socket's own "
              "buffers) before it is disconnected; it resumes from its offset.")  # fmt: skip
@click.option(
    "--lease-ttl",
    default=lambda: float(os.environ.get("TETHER_LEASE_TTL", LEASE_TTL)),
    show_default=f"{LEASE_TTL:g} (or $TETHER_LEASE_TTL)",
    type=click.FloatRange(min=0.3),
    help="With a shared store: seconds before another replica takes over the runs "
    "of a replica that died.",
)
@click.option(
    "--retry-lost-runs/--no-retry-lost-runs",
    default=lambda: os.environ.get("TETHER_RETRY_LOST_RUNS", "") in ("1", "true", "yes"),
    show_default="off (or $TETHER_RETRY_LOST_RUNS=1)",
    help="For agents that opt out of replay: answer again (once) a run whose server died "
    "mid-way, besides ending it as interrupted (other runs continue from their journal).",
)
@click.option(
    "--max-steps",
    default=lambda: int(os.environ.get("TETHER_MAX_STEPS", MAX_STEPS)),
    show_default=f"{MAX_STEPS} (or $TETHER_MAX_STEPS)",
    type=click.IntRange(min=1),
    help="Model calls one run of a model session may make (each after the tool calls "
    "of the last) before it ends with an error.",
)
@click.option(
    "--suspend-after",
    default=lambda: float(os.environ.get("TETHER_SUSPEND_AFTER", SUSPEND_AFTER)),
    show_default=f"{SUSPEND_AFTER:g} (or $TETHER_SUSPEND_AFTER)",
    type=click.FloatRange(min=0),
    help="Seconds a run that only waits on a person (a tool result, an approval) keeps "
    "its task; then it is suspended in the log until an answer continues it.",
)
@click.option(
    "--wait-expiry",
    default=lambda: float(os.environ.get("TETHER_WAIT_EXPIRY", 0)),
    show_default="none (or $TETHER_WAIT_EXPIRY)",
    type=click.FloatRange(min=0),
    help="Seconds a run may wait for a tool result or an approval before it ends as "
    "an error (0: no limit; an agent may set its own per wait).",
)
@click.option(
    "--shutdown-grace",
    default=lambda: float(os.environ.get("TETHER_SHUTDOWN_GRACE", SHUTDOWN_GRACE)),
    show_default=f"{SHUTDOWN_GRACE:g} (or $TETHER_SHUTDOWN_GRACE)",
    type=click.FloatRange(min=0),
    help="On SIGTERM, seconds running model calls and tools get to finish; the runs "
    "left then stop unended, and the next start (or another replica) continues them.",
)
@click.option(
    "--shared-streams/--private-streams",
    default=lambda: os.environ.get("TETHER_SHARED_STREAMS", "") in ("1", "true", "yes"),
    show_default="private (or $TETHER_SHARED_STREAMS=1)",
    help="With TETHER_API_KEYS: let every key use every raw stream (sessions stay private).",
)
@click.option(
    "--cors-origins",
    default=lambda: os.environ.get("TETHER_CORS_ORIGINS"),
    show_default="any with TETHER_API_KEYS, none without (or $TETHER_CORS_ORIGINS)",
    help="Comma-separated origins whose web pages may call tether, or '*' for any.",
)
@click.option(
    "--allowed-hosts",
    default=lambda: os.environ.get("TETHER_ALLOWED_HOSTS", ""),
    show_default="loopback and --host (or $TETHER_ALLOWED_HOSTS)",
    help="Without TETHER_API_KEYS: more Host names to answer (comma-separated).",
)
@click.option(
    "--rate-limit",
    default=lambda: float(os.environ.get("TETHER_RATE_LIMIT", DEFAULT_RATE)),
    show_default=f"{DEFAULT_RATE:g} (or $TETHER_RATE_LIMIT)",
    type=click.FloatRange(min=0),
    help="With TETHER_API_KEYS: requests a second per key (0: no limit); "
    "twice as many may come at once.",
)
@click.option(
    "--max-sessions",
    default=lambda: int(os.environ.get("TETHER_MAX_SESSIONS", DEFAULT_QUOTA)),
    show_default=f"{DEFAULT_QUOTA} (or $TETHER_MAX_SESSIONS)",
    type=click.IntRange(min=0),
    help="With TETHER_API_KEYS: sessions one key may have, gateway completions "
    "included (0: no limit).",
)
@click.option(
    "--max-streams",
    default=lambda: int(os.environ.get("TETHER_MAX_STREAMS", DEFAULT_QUOTA)),
    show_default=f"{DEFAULT_QUOTA} (or $TETHER_MAX_STREAMS)",
    type=click.IntRange(min=0),
    help="With TETHER_API_KEYS: raw streams one key may have (0: no limit).",
)
@click.option(
    "--attachment-inline-max",
    default=lambda: int(os.environ.get("TETHER_ATTACHMENT_INLINE_MAX", DEFAULT_INLINE_MAX)),
    show_default=f"{DEFAULT_INLINE_MAX} (or $TETHER_ATTACHMENT_INLINE_MAX)",
    type=click.IntRange(min=0),
    help="Bytes up to which an image or file stays in its message's event; larger ones "
    "are stored in a stream of their own (both within --max-body).",
)
@click.option(
    "--idempotency-retention",
    default=lambda: float(os.environ.get("TETHER_IDEMPOTENCY_RETENTION", DEFAULT_RETENTION)),
    show_default=f"{DEFAULT_RETENTION:g} (or $TETHER_IDEMPOTENCY_RETENTION)",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds the answer to a request with an Idempotency-Key is kept: a retry with "
    "the same key within them gets it again and changes nothing.",
)
@click.option(
    "--models-refresh",
    default=lambda: float(os.environ.get("TETHER_MODELS_REFRESH", 300)),
    show_default="300 (or $TETHER_MODELS_REFRESH)",
    type=click.FloatRange(min=0),
    help="Seconds between asking the upstreams configured without a model list for "
    "their models (0: only at start).",
)
@click.option(
    "--gateway-detach-grace",
    default=lambda: float(os.environ.get("TETHER_GATEWAY_DETACH_GRACE", DEFAULT_GRACE)),
    show_default=f"{DEFAULT_GRACE:g} (or $TETHER_GATEWAY_DETACH_GRACE)",
    type=click.FloatRange(min=0),
    help="Seconds a gateway completion whose readers all left waits for one to come back "
    "before it is cancelled and its upstream request aborted (0: at once). A request with "
    "X-Tether-Detach: true runs to its end.",
)
@click.option(
    "--fold-cache-bytes",
    default=lambda: int(os.environ.get("TETHER_FOLD_CACHE_BYTES", DEFAULT_FOLD_CACHE_BYTES)),
    show_default=f"{DEFAULT_FOLD_CACHE_BYTES} (or $TETHER_FOLD_CACHE_BYTES)",
    type=click.IntRange(min=0),
    help="Bytes the sessions' folds kept in memory may take, as estimated (twice the bytes "
    "of the events folded); beyond them the least recently used are dropped and rebuilt "
    "from their checkpoint when next needed.",
)
@click.option(
    "--fold-checkpoint-every",
    default=lambda: int(os.environ.get("TETHER_FOLD_CHECKPOINT_EVERY", DEFAULT_EVERY)),
    show_default=f"{DEFAULT_EVERY} (or $TETHER_FOLD_CHECKPOINT_EVERY)",
    type=click.IntRange(min=1),
    help="Events between two checkpoints of a session's fold, written in the background; "
    "a cold snapshot folds only the events after the last one.",
)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
# Connection limits and timeouts (src/tether/cli/connections.py).
@click.option("--max-connections", type=click.IntRange(min=1), default=None,
              show_default="3/4 of the open-files limit beyond 128, at most 65536",
              help="Most client connections open at once; at the cap, the longest idle "
              "one is closed for a new one.")  # fmt: skip
@click.option("--header-timeout", default=10.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request head may take to arrive whole.")  # fmt: skip
@click.option("--body-timeout", default=30.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request body may go without a byte (then 408).")  # fmt: skip
@click.option("--body-min-rate", default=4096, show_default=True, type=click.IntRange(min=0),
              help="Bytes/s a request body must average after its first --body-timeout "
              "seconds (then 408); 0 for no minimum.")  # fmt: skip
@click.option("--webhook-allow-loopback/--no-webhook-allow-loopback",
              default=lambda: os.environ.get("TETHER_WEBHOOK_ALLOW_LOOPBACK", "")
              in ("1", "true", "yes"),
              show_default="off (or $TETHER_WEBHOOK_ALLOW_LOOPBACK=1)",
              help="Development only: let subscriptions' webhooks go to http://localhost "
              "and http://127.0.0.x (docs/subscriptions.md).")  # fmt: skip
# Metrics and logs (docs/operations.md).
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535),
              default=lambda: os.environ.get("TETHER_METRICS_PORT") or None,
              show_default="none (or $TETHER_METRICS_PORT)",
              help="Also serve GET /metrics, without a key, on this port of --metrics-host "
              "(on the main port /metrics needs a key when TETHER_API_KEYS is set).")  # fmt: skip
@click.option("--metrics-host", default=lambda: os.environ.get("TETHER_METRICS_HOST", "127.0.0.1"),
              show_default="127.0.0.1 (or $TETHER_METRICS_HOST)",
              help="Interface of the --metrics-port listener.")  # fmt: skip
@click.option("--access-log/--no-access-log",
              default=lambda: os.environ.get("TETHER_ACCESS_LOG", "") in ("1", "true", "yes"),
              show_default="off (or $TETHER_ACCESS_LOG=1)",
              help="Log one line per request: method, path (no query string), status, "
              "duration, key identity.")  # fmt: skip
@click.option("--log-format", type=click.Choice(["text", "json"]),
              default=lambda: os.environ.get("TETHER_LOG_FORMAT", "text"),
              show_default="text (or $TETHER_LOG_FORMAT)",
              help="json: one object per line (time, level, logger, message, fields).")  # fmt: skip
def serve(
    app_spec: str | None,
    host: str,
    port: int,
    data_dir: Path,
    store_spec: str,
    sqlite_sync: SqliteSync,
    max_body: int,
    max_batch: int,
    max_json_values: int,
    max_json_depth: int,
    long_poll_timeout: float,
    sse_send_buffer: int,
    lease_ttl: float,
    retry_lost_runs: bool,
    max_steps: int,
    suspend_after: float,
    wait_expiry: float,
    shutdown_grace: float,
    shared_streams: bool,
    cors_origins: str | None,
    allowed_hosts: str,
    rate_limit: float,
    max_sessions: int,
    max_streams: int,
    attachment_inline_max: int,
    idempotency_retention: float,
    models_refresh: float,
    gateway_detach_grace: float,
    fold_cache_bytes: int,
    fold_checkpoint_every: int,
    log_level: str,
    max_connections: int | None,
    header_timeout: float,
    body_timeout: float,
    body_min_rate: int,
    webhook_allow_loopback: bool,
    metrics_port: int | None,
    metrics_host: str,
    access_log: bool,
    log_format: str,
) -> None:
    """Run the tether server (with the agents of MODULE:APP, if given).

    MODULE is imported with the current directory first on the import path (as
    uvicorn does), so `tether serve mymodule:app` finds ./mymodule.py.
    """
    listener = _listen(host, port)
    try:
        registry = ProviderRegistry.from_env(models_refresh=models_refresh)
        mcp_servers = load_mcp_servers()
        acp_agents = load_acp_agents()
        secrets = [*tether_secrets(os.environ), *(s.get() for s in registry.secrets())]
        secrets += [secret for server in mcp_servers for secret in server.secrets()]
        secrets += [secret for agent in acp_agents for secret in agent.secrets()]
        auth = Auth.from_env()
        workers = _worker_config(webhook_allow_loopback)
    except Exception as err:
        raise click.ClickException(str(err)) from err
    configure_logging(log_level, secrets, log_format)
    try:
        agents = _load_agents(app_spec) if app_spec else None
        if agents is not None:
            agents.check_tools({server.name for server in mcp_servers})
        if store_spec.startswith(("redis://", "rediss://")):
            check_redis(store_spec)
        store = open_store(store_spec, data_dir, sqlite_sync)
    except Exception as err:
        raise click.ClickException(str(err)) from err
    app = TetherApp(
        store,
        StreamsConfig(
            max_body=max_body,
            long_poll_timeout=long_poll_timeout,
            sse_send_buffer=sse_send_buffer,
            json=JsonLimits(
                max_values=max_json_values, max_depth=max_json_depth, max_batch=max_batch
            ),
        ),
        registry=registry,
        agents=agents,
        auth=auth,
        lease_ttl=lease_ttl,
        retry_lost_runs=retry_lost_runs,
        runs=RunPolicy(suspend_after, wait_expiry or None, shutdown_grace),
        max_steps=max_steps,
        shared_streams=shared_streams,
        guard=GuardConfig(
            cors_origins=None if cors_origins is None else _csv(cors_origins),
            allowed_hosts=_csv(allowed_hosts),
            bind_host=host,
            max_body=max_body,
            rate_limit=rate_limit,
            rate_burst=max(1, int(2 * rate_limit)),
        ),
        max_sessions=max_sessions,
        max_streams=max_streams,
        attachment_inline_max=attachment_inline_max,
        mcp_servers=mcp_servers,
        acp_agents=acp_agents,
        data_dir=data_dir,
        idempotency_retention=idempotency_retention,
        gateway_detach_grace=gateway_detach_grace,
        access_log=access_log,
        metrics_listen=(metrics_host, metrics_port) if metrics_port else None,
        workers=workers,
        webhook_allow_loopback=webhook_allow_loopback,
        fold_cache_bytes=fold_cache_bytes,
        checkpoint_every=fold_checkpoint_every,
    )
    where = describe_store(store_spec, data_dir, sqlite_sync)
    fd_limit = raise_fd_limit()
    limits = ConnectionLimits(
        max_connections=max_connections or default_max_connections(fd_limit),
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        body_min_rate=body_min_rate,
    )
    guard = ConnectionGuard(limits)
    say = partial(click.echo, err=True)
    say(f"tether: serving on http://{host}:{port} (store: {where})")
    say(f"tether: at most {limits.max_connections} connections (open-files limit {fd_limit})")
    if agents is not None:
        say(f"tether: agents: {', '.join(sorted(agents.agents)) or '(none)'}")
        if agents.tools:
            say(f"tether: tools: {', '.join(t.spec.name for t in agents.tools)}")
    if mcp_servers:
        say(f"tether: MCP servers: {', '.join(s.name for s in mcp_servers)}")
    if acp_agents:
        say(f"tether: ACP agents: {', '.join(a.name for a in acp_agents)}")
    if auth.enabled:
        say("tether: API keys required (TETHER_API_KEYS)")
    elif host in ("127.0.0.1", "localhost", "::1"):
        say("tether: no TETHER_API_KEYS set; auth is off, so listening on loopback only")
    else:
        say(
            f"tether: WARNING: no TETHER_API_KEYS set and bound to {host}: anyone who can "
            "reach this port can use tether and its provider keys"
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        timeout_graceful_shutdown=5,
        http=guard.protocol_class(),
        loop="uvloop",
        proxy_headers=False,
        server_header=False,  # it named uvicorn, on every answer (one header less to write)
    )
    _Server(config, app, guard).run(sockets=[listener])  # Ctrl-C: 130, see _Commands


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is said or started.

    A port in use is then one clear error, not a banner and a started app
    followed by uvicorn's bind failure.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: address already in use (another "
                "tether serve?); stop what holds it, or choose another port with --port"
            ) from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _worker_config(allow_loopback: bool) -> WorkerConfig:
    """The workers' configuration, its webhook agents' URLs checked now (not at each wake)."""
    workers = WorkerConfig.from_env()
    for agent, url in workers.webhooks.items():
        try:
            check_webhook_url(url, allow_loopback=allow_loopback)
        except WebhookUrlRejected as err:
            raise ValueError(f"TETHER_WEBHOOK_AGENTS: agent {agent!r}: {err}") from None
    return workers


def _load_agents(spec: str) -> App:
    """The App that ``spec`` names, importable from the current directory as uvicorn does."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return load_app(spec)


def tether_secrets(env: Mapping[str, str]) -> list[str]:
    """The tether keys (split as the API splits them) and TETHER_SECRET.

    ValueError, naming the variable, if one holds a control character.
    """
    keys = env.get("TETHER_API_KEYS", "")
    secret = env.get("TETHER_SECRET", "")
    check_credential("TETHER_API_KEYS", keys)
    check_credential("TETHER_SECRET", secret)
    workers = env.get("TETHER_WORKER_KEYS", "")
    check_credential("TETHER_WORKER_KEYS", workers)
    return [k.strip() for k in f"{keys},{workers}".split(",") if k.strip()] + [secret]


main.add_command(chat)
main.add_command(tail)
main.add_command(sessions)
main.add_command(worker)
main.add_command(webhook_keys)


if __name__ == "__main__":
    main()

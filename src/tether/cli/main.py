"""The ``tether`` command."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from types import FrameType

import click
import uvicorn

from tether.agents.app import load_app
from tether.api.app import TetherApp
from tether.api.auth import Auth
from tether.cli.chat import chat, tail
from tether.cli.gc_policy import settle_heap
from tether.cli.log_redaction import configure_logging
from tether.providers.redaction import check_credential
from tether.providers.registry import ProviderRegistry
from tether.runtime.runner import LEASE_TTL
from tether.store.factory import open_store
from tether.streams.app import StreamsConfig

DEFAULT_PORT = 4437  # the Durable Streams protocol's registered default


class _Server(uvicorn.Server):
    """Settles the heap once started; ends live reads first on SIGTERM/SIGINT (quick shutdown)."""

    def __init__(self, config: uvicorn.Config, app: TetherApp) -> None:
        super().__init__(config)
        self._tether = app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().startup(sockets)
        settle_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._tether.shutdown)
        super().handle_exit(sig, frame)


@click.group()
def main() -> None:
    """tether: durable transport for AI agent sessions."""


@main.command()
@click.argument("app_spec", required=False, metavar="[MODULE:APP]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
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
@click.option("--max-body", default=10 * 1024 * 1024, show_default=True, type=int,
              help="Largest request body accepted, in bytes.")  # fmt: skip
@click.option("--long-poll-timeout", default=3.0, show_default=True, type=float,
              help="Seconds a long-poll read waits for new data.")  # fmt: skip
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
    help="Answer again (once) a run whose server died mid-way, besides ending it as interrupted.",
)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
def serve(
    app_spec: str | None,
    host: str,
    port: int,
    data_dir: Path,
    store_spec: str,
    max_body: int,
    long_poll_timeout: float,
    lease_ttl: float,
    retry_lost_runs: bool,
    log_level: str,
) -> None:
    """Run the tether server (with the agents of MODULE:APP, if given)."""
    try:
        registry = ProviderRegistry.from_env()
        secrets = [*tether_secrets(os.environ), *(s.get() for s in registry.secrets())]
    except Exception as err:
        raise click.ClickException(str(err)) from err
    configure_logging(log_level, secrets)
    try:
        agents = load_app(app_spec) if app_spec else None
        store = open_store(store_spec, data_dir)
    except Exception as err:
        raise click.ClickException(str(err)) from err
    auth = Auth.from_env()
    app = TetherApp(
        store,
        StreamsConfig(max_body=max_body, long_poll_timeout=long_poll_timeout),
        registry=registry,
        agents=agents,
        auth=auth,
        lease_ttl=lease_ttl,
        retry_lost_runs=retry_lost_runs,
    )
    if store_spec == "memory":
        where = "in memory"
    elif store_spec.startswith(("redis://", "rediss://")):
        from tether.store.redis import redact

        where = redact(store_spec)
    else:
        where = f"{store_spec} in {data_dir}"
    say = partial(click.echo, err=True)
    say(f"tether: serving on http://{host}:{port} (store: {where})")
    say(f"tether: models: {', '.join(registry.list_models())}")
    if agents is not None:
        say(f"tether: agents: {', '.join(sorted(agents.agents)) or '(none)'}")
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
        access_log=False,
        timeout_graceful_shutdown=5,
        http="httptools",
        loop="uvloop",
        proxy_headers=False,
    )
    _Server(config, app).run()


def tether_secrets(env: Mapping[str, str]) -> list[str]:
    """The tether keys (split as the API splits them) and TETHER_SECRET.

    ValueError, naming the variable, if one holds a control character.
    """
    keys = env.get("TETHER_API_KEYS", "")
    secret = env.get("TETHER_SECRET", "")
    check_credential("TETHER_API_KEYS", keys)
    check_credential("TETHER_SECRET", secret)
    return [k.strip() for k in keys.split(",") if k.strip()] + [secret]


main.add_command(chat)
main.add_command(tail)


if __name__ == "__main__":
    main()

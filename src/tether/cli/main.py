"""The ``tether`` command."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import FrameType

import click
import uvicorn

from tether.api.app import TetherApp
from tether.store.factory import open_store
from tether.streams.app import StreamsConfig

DEFAULT_PORT = 4437  # the Durable Streams protocol's registered default


class _Server(uvicorn.Server):
    """Ends live reads first on SIGTERM/SIGINT, so graceful shutdown is quick."""

    def __init__(self, config: uvicorn.Config, app: TetherApp) -> None:
        super().__init__(config)
        self._tether = app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._tether.shutdown)
        super().handle_exit(sig, frame)


@click.group()
def main() -> None:
    """tether: durable transport for AI agent sessions."""


@main.command()
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
    help="sqlite, memory, or sqlite:///PATH.",
)
@click.option("--max-body", default=10 * 1024 * 1024, show_default=True, type=int,
              help="Largest request body accepted, in bytes.")  # fmt: skip
@click.option("--long-poll-timeout", default=3.0, show_default=True, type=float,
              help="Seconds a long-poll read waits for new data.")  # fmt: skip
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
def serve(
    host: str,
    port: int,
    data_dir: Path,
    store_spec: str,
    max_body: int,
    long_poll_timeout: float,
    log_level: str,
) -> None:
    """Run the tether server."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        store = open_store(store_spec, data_dir)
    except Exception as err:
        raise click.ClickException(str(err)) from err
    app = TetherApp(store, StreamsConfig(max_body=max_body, long_poll_timeout=long_poll_timeout))
    where = "in memory" if store_spec == "memory" else f"{store_spec} in {data_dir}"
    click.echo(f"tether: serving on http://{host}:{port} (store: {where})", err=True)
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


if __name__ == "__main__":
    main()

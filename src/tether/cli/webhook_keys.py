"""`tether webhook-keys rotate|list`: the server's webhook signing keys, in its store.

The command names the store the server uses (the same ``--store`` and
``--data-dir``, or TETHER_STORE and TETHER_DATA_DIR). On Redis it opens the store
beside the replicas, which pick a rotation up on their next refresh. A SQLite
file has one owner: while a server runs, the command asks it over the socket
beside the file (tether.subscriptions.key_control); when none runs, it opens the
file itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click

from tether.store.base import Store
from tether.store.factory import check_redis, open_store, sqlite_path
from tether.subscriptions.key_control import (
    MAX_ACTIVATION,
    ControlRefused,
    ask,
    public_key,
    socket_path,
)
from tether.subscriptions.signing import (
    ACTIVATION_DELAY,
    REFRESH_INTERVAL,
    SigningKey,
    read_keys,
    rotate,
)

T = TypeVar("T")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def _run(store_spec: str, data_dir: Path, job: Callable[[Store], Awaitable[T]]) -> T:
    """Open the server's store, run ``job`` on it, close it; one clear line if it cannot."""
    if store_spec == "memory":
        raise click.ClickException(
            "a memory store keeps its webhook keys in the server's memory; "
            "name the server's store with --store (or TETHER_STORE)"
        )
    path = sqlite_path(store_spec, data_dir)
    if path is not None and not path.exists():
        raise click.ClickException(
            f"no tether store at {path}: give the server's --data-dir or --store "
            "(or TETHER_DATA_DIR, TETHER_STORE)"
        )

    from tether.store.sqlite import DataDirLocked  # loaded when a command runs, not at start

    async def run() -> T:
        store = open_store(store_spec, data_dir)
        await store.open()
        try:
            return await job(store)
        finally:
            await store.aclose()

    try:
        if path is None:
            check_redis(store_spec)
        return asyncio.run(run())
    except DataDirLocked as err:  # a server owns the file but did not answer on its socket
        raise click.ClickException(
            f"{err}, and answers nothing on {socket_path(path or data_dir)} (see its log)"
        ) from err
    except Exception as err:  # StoreUnusable, an unreachable Redis
        raise click.ClickException(str(err)) from err


def _ask_server(store_spec: str, data_dir: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """The answer of the server running on the SQLite file, or None (Redis, or no server)."""
    path = sqlite_path(store_spec, data_dir)
    if path is None:
        return None
    try:
        return ask(socket_path(path), request)
    except ControlRefused as err:
        raise click.ClickException(str(err)) from err


def _state(key: SigningKey, now: float) -> str:
    if now < key.signs_from:
        return f"next: signs from {_when(key.signs_from)}"
    if key.retired_at is None:
        return "active"
    if now < key.retired_at:
        return f"active until {_when(key.retired_at)}"
    if key.dropped_at is not None and key.published(now):
        return f"retired {_when(key.retired_at)}, in the JWKS until {_when(key.dropped_at)}"
    return f"retired {_when(key.retired_at)}, no longer in the JWKS"


def key_rows(keys: list[SigningKey], now: float) -> list[str]:
    """Aligned lines, newest key first: kid, created, state."""
    table = [("KID", "CREATED", "STATE")]
    table += [(k.kid, _when(k.created_at), _state(k, now)) for k in reversed(keys)]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    return [f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}" for row in table]


_store_options = [
    click.option(
        "--store",
        "store_spec",
        default=lambda: os.environ.get("TETHER_STORE", "sqlite"),
        show_default="sqlite (or $TETHER_STORE)",
        help="The server's store: sqlite, sqlite:///PATH, or redis://HOST:PORT/DB.",
    ),
    click.option(
        "--data-dir",
        default=lambda: os.environ.get("TETHER_DATA_DIR", ".tether"),
        show_default=".tether (or $TETHER_DATA_DIR)",
        type=click.Path(file_okay=False, path_type=Path),
        help="The server's data dir (where the SQLite log lives).",
    ),
]


def store_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_store_options):
        command = option(command)
    return command


@click.group("webhook-keys")
def webhook_keys() -> None:
    """The Ed25519 keys that sign webhook deliveries (published at __ds/jwks.json)."""


@webhook_keys.command("rotate")
@store_options
@click.option(
    "--activate-after",
    type=click.FloatRange(0, MAX_ACTIVATION),
    default=ACTIVATION_DELAY,
    show_default=True,
    help="Seconds between publishing the new key and its first signature. On Redis at "
    f"least {ACTIVATION_DELAY:g} (every replica must have reread the keys); more gives "
    "receivers that cache the key set time to refetch it.",
)
def rotate_command(store_spec: str, data_dir: Path, activate_after: float) -> None:
    """Make a new signing key, to replace the current one; prints the new kid.

    The new key is published at once and signs a minute later (--activate-after):
    on Redis every replica has it by then; a running SQLite server is asked over
    the socket beside its file. With no server running (SQLite) it signs from the
    next start. The old key's public half stays in the JWKS for 10 minutes after
    it retires.
    """
    if sqlite_path(store_spec, data_dir) is None and activate_after < ACTIVATION_DELAY:
        raise click.BadParameter(
            f"on Redis it is at least {ACTIVATION_DELAY:g} s, two refreshes of every replica",
            param_hint="--activate-after",
        )
    answer = _ask_server(store_spec, data_dir, {"op": "rotate", "activate_after": activate_after})
    if answer is not None:
        click.echo(answer["kid"])
        click.echo(
            f"tether: the server publishes {answer['kid']} now and signs with it "
            f"from {activate_after:g} s on",
            err=True,
        )
    elif sqlite_path(store_spec, data_dir) is None:
        kid = _run(store_spec, data_dir, partial(rotate, delay=activate_after))
        click.echo(kid)
        click.echo(
            f"tether: replicas publish {kid} within {REFRESH_INTERVAL:g} s and sign with it "
            f"from {activate_after:g} s on",
            err=True,
        )
    else:  # the server that owns the file is stopped: nobody has to reread the keys
        kid = _run(store_spec, data_dir, partial(rotate, delay=0.0))
        click.echo(kid)
        click.echo(f"tether: the server signs with {kid} from its next start", err=True)


@webhook_keys.command("list")
@store_options
def list_command(store_spec: str, data_dir: Path) -> None:
    """The signing keys, newest first: kid, created, active or retired."""
    answer = _ask_server(store_spec, data_dir, {"op": "list"})
    if answer is not None:
        keys = [public_key(fields) for fields in answer["keys"]]
    else:
        keys = _run(store_spec, data_dir, read_keys)
    if keys:
        click.echo("\n".join(key_rows(keys, time.time())))
    else:
        click.echo("no webhook signing keys yet (the server makes the first one itself)", err=True)

"""How the terminal commands (chat, tail, sessions) reach a server.

Their shared options (``--url``, ``--api-key``), the client they open, the
messages that say what went wrong and what to do (no server there, a key
needed or refused), and a transport that notices the server going away and
coming back, so a chat can say "reconnecting…" while the SDK reconnects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
import httpx

from tether.client import Tether
from tether.client.errors import TetherConnectionError, TetherError, Unauthorized

DEFAULT_URL = "http://127.0.0.1:4437"
#: Seconds of each HTTP request's connect, read and write (the SDK's default).
REQUEST_TIMEOUT = 30.0

F = TypeVar("F", bound=Callable[..., Any])


def server_options(command: F) -> F:
    """``--url`` and ``--api-key``, from TETHER_URL and TETHER_API_KEY by default."""
    command = click.option(
        "--api-key",
        envvar="TETHER_API_KEY",
        default=None,
        help="Key for a server started with TETHER_API_KEYS (or $TETHER_API_KEY).",
    )(command)
    return click.option(
        "--url",
        envvar="TETHER_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="The tether server (or $TETHER_URL).",
    )(command)


class Watch(httpx.BaseTransport):
    """An HTTP transport that tells when the server stops and starts answering.

    The SDK reconnects by itself; this only lets the terminal say so. A
    connection refused (or timed out) after the server has answered once is
    "away"; the next answer is "back". ``on_change(up)`` is called on each change.
    """

    def __init__(self, on_change: Callable[[bool], None] | None = None) -> None:
        self._inner = httpx.HTTPTransport()
        self.on_change = on_change
        #: The last request was answered (False: the server is away).
        self.up = False
        self._answered_once = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._inner.handle_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            self._set(False)
            raise
        self._set(True)
        return response

    def _set(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        if up and not self._answered_once:
            self._answered_once = True  # the first answer: nothing came back, nothing to say
        elif self._answered_once and self.on_change is not None:
            self.on_change(up)

    def close(self) -> None:
        self._inner.close()


@contextlib.contextmanager
def open_client(url: str, api_key: str | None, **options: Any) -> Iterator[tuple[Tether, Watch]]:
    """A client of ``url`` and the :class:`Watch` its requests go through."""
    watch = Watch()
    http = httpx.Client(
        transport=watch, timeout=REQUEST_TIMEOUT, headers={"user-agent": "tether-cli"}
    )
    try:
        with Tether(url, api_key=api_key, http_client=http, **options) as client:
            yield client, watch
    finally:
        http.close()


def explain(err: TetherError, url: str, api_key: str | None) -> str:
    """What went wrong, in the terms of what the user typed, and what to do."""
    if isinstance(err, TetherConnectionError):
        return (
            f"cannot reach a tether server at {url}: is `tether serve` running there? "
            "(another address: --url or TETHER_URL)"
        )
    if isinstance(err, Unauthorized):
        if api_key:
            return f"the server at {url} refused the API key (check TETHER_API_KEY or --api-key)"
        return f"the server at {url} needs an API key: set TETHER_API_KEY or pass --api-key"
    return str(err)


def fail(err: TetherError, url: str, api_key: str | None) -> click.ClickException:
    """The error a command exits with (status 1, the message on stderr)."""
    out = click.ClickException(explain(err, url, api_key))
    out.__cause__ = err
    return out

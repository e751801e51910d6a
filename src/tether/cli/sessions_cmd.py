"""`tether sessions`: the caller's sessions, most recently updated first.

The same rows make ``/sessions`` in ``tether chat``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import click

from tether.cli.remote import fail, open_client, server_options
from tether.client.errors import TetherError
from tether.client.models import Session

#: Characters of a title shown in a row (the rest is cut, with an ellipsis).
TITLE_WIDTH = 40


def session_rows(sessions: Sequence[Session], current: str | None = None) -> list[str]:
    """Aligned lines: id, title, status, last update (local time); ``current`` starred."""
    table = [("ID", "TITLE", "STATUS", "UPDATED")]
    for s in sessions:
        title = s.title or "(untitled)"
        if len(title) > TITLE_WIDTH:
            title = title[: TITLE_WIDTH - 1] + "…"
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated_at or 0))
        ident = f"{s.id} *" if s.id == current else s.id
        table.append((ident, title, s.status or "", updated))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
            for row in table]  # fmt: skip


@click.command("sessions")
@server_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="Most sessions listed.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON array, as the server gives them.")
def sessions(url: str, api_key: str | None, limit: int, as_json: bool) -> None:
    """List your sessions, latest first: id, title, status, last update."""
    try:
        with open_client(url, api_key) as (client, _):
            found = client.sessions.list()[:limit]
    except TetherError as err:
        raise fail(err, url, api_key) from err
    if as_json:
        click.echo(json.dumps([s.raw for s in found], indent=2))
    elif found:
        click.echo("\n".join(session_rows(found)))
    else:
        click.echo("no sessions yet (`tether chat` starts one)", err=True)

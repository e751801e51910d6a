"""A minimal reader of the session event stream for tests (raw httpx, no SDK)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


def events(
    client: httpx.Client,
    url: str,
    *,
    offset: str | None = None,
    last_event_id: str | None = None,
    limit: int | None = None,
    until_run_end: str | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (offset after the event, event) pairs; stops after ``limit`` events or a run-end."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    params = {"offset": offset} if offset else None
    seen = 0
    with client.stream("GET", url, params=params, headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        event_id = None
        for line in r.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                ev = json.loads(line[6:])
                assert event_id is not None
                yield event_id, ev
                seen += 1
                if limit is not None and seen >= limit:
                    return
                if until_run_end and ev["type"] == "run-end" and ev["run_id"] == until_run_end:
                    return


def run_text(evs: list[dict[str, Any]], run_id: str) -> str:
    """The text an assistant streamed in one run, from its deltas."""
    text_parts = {
        e["part_id"] for e in evs if e["type"] == "part-start" and e.get("run_id") == run_id
        and e["kind"] == "text"
    }  # fmt: skip
    return "".join(
        e["delta"] for e in evs if e["type"] == "part-delta" and e["part_id"] in text_parts
    )

"""The server's log: the access log, the JSON format, runs' start and end, no secret in a line.

Real ``tether serve`` children with a key; their output is read back from
the log file. A read token travels in ``?token=`` and a key in
``Authorization``: the access log names the key's identity, never either.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx

from helpers.server import TetherServer
from helpers.session_events import start
from tether.api.auth import key_identity
from tether.observability.logs import JsonFormatter, fields
from tether.providers.redaction import Redactor

KEY = "k-logs-alpha-5c19e04b7d"


def serve(tmp: Path, *args: str) -> TetherServer:
    env = {**os.environ, "TETHER_API_KEYS": KEY}
    return TetherServer(tmp / "data", log_path=tmp / "server.log", env=env, extra_args=args)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def one_run_read_with_a_token(server: TetherServer) -> tuple[str, str, str]:
    """A run to its end, then its events read with a read token; (session, run, token)."""
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as c:
        sid, run_id, events = await start(c, {"model": "demo"}, {"content": "hello"})
        try:
            await events.run_end(run_id)
        finally:
            await events.aclose()
        token = (await c.post(f"/v1/sessions/{sid}/read-token")).json()["token"]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anonymous:
        r = await anonymous.get(f"/v1/sessions/{sid}", params={"token": token})
        assert r.status_code == 200, r.text
        forged = await anonymous.get("/v1/sessions", params={"token": "tt1.forged"})
        assert forged.status_code == 401
    return sid, run_id, token


async def test_the_json_access_log_names_each_request_and_its_key_identity_only(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, "--access-log", "--log-format", "json") as server:
        sid, run_id, token = await one_run_read_with_a_token(server)
        server.stop()
        output = server.output()
    assert KEY not in output and token not in output and "tt1.forged" not in output
    lines = json_lines(output)
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    access = [e for e in lines if e["logger"] == "tether.access"]
    by_path = {(e["method"], e["path"]): e for e in access}
    created = by_path[("POST", "/v1/sessions")]
    assert created["status"] == 201 and created["key"] == key_identity(KEY)
    assert created["duration_ms"] >= 0
    read = by_path[("GET", f"/v1/sessions/{sid}")]  # the token's owner, without the query
    assert read["status"] == 200 and read["key"] == key_identity(KEY)
    assert by_path[("GET", "/v1/sessions")]["key"] == "-"  # a forged token: no identity
    assert all("?" not in e["path"] and "?" not in e["message"] for e in access)

    runs = {e["event"]: e for e in lines if e["logger"] == "tether.runs" and e["run"] == run_id}
    assert runs["run_start"]["session"] == sid and runs["run_start"]["model"] == "demo"
    end = runs["run_end"]
    assert (end["level"], end["session"], end["reason"]) == ("INFO", sid, "complete")
    assert end["model"] == "demo" and end["duration"] > 0


async def test_the_text_access_log_is_one_line_per_request_without_the_query(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, "--access-log") as server:
        sid, run_id, token = await one_run_read_with_a_token(server)
        server.stop()
        output = server.output()
    assert KEY not in output and token not in output
    assert not output.lstrip().startswith("{")
    access = [line for line in output.splitlines() if " tether.access: " in line]
    read = [line for line in access if f"tether.access: GET /v1/sessions/{sid} 200 " in line]
    assert len(read) == 1 and read[0].endswith(f" ms {key_identity(KEY)}"), access
    assert f"run {run_id} of session {sid} ended: complete (model demo, " in output


async def test_no_access_log_unless_asked(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        await one_run_read_with_a_token(server)
        server.stop()
        output = server.output()
    assert "tether.access" not in output
    assert "started (model demo)" in output  # runs are logged at info all the same


def test_a_json_lines_fields_are_redacted_like_its_message() -> None:
    """Fields join a record after the redacting record factory ran: the formatter redacts them."""
    secret = "sk-field-secret-0a9b8c7d6e5f"
    record = logging.LogRecord("tether.x", logging.INFO, __file__, 1, "a message", None, None)
    record.__dict__.update(fields(path=f"/v1/x/{secret}", n=3))
    line = json.loads(JsonFormatter(Redactor([secret])).format(record))
    assert secret not in json.dumps(line)
    assert line["n"] == 3 and line["message"] == "a message" and line["logger"] == "tether.x"

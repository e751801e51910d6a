"""The web UI's session list shows each session's status, in a real browser.

The other sessions' statuses come from the listing (the records); the open
session's follows its live events. Every wait is on a DOM condition.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")


def paused_session(server: TetherServer, title: str) -> str:
    """A session whose run waits for a tool result, created over the API."""
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        sid = str(c.post("/v1/sessions", json={"title": title}).json()["id"])
        c.post(f"/v1/sessions/{sid}/messages", json={"content": '/tool get_time {"tz": "UTC"}'})
        deadline = time.monotonic() + 10
        while c.get(f"/v1/sessions/{sid}").json()["status"] != "paused":
            assert time.monotonic() < deadline, "the run never paused"
            time.sleep(0.02)
    return sid


def test_the_session_list_shows_each_sessions_status(page: Any, server: TetherServer) -> None:
    waiting = paused_session(server, "waits for a tool")
    page.goto(server.base_url + "/")
    tag = page.locator(f'.session-item[data-session-id="{waiting}"] .s-status')
    expect(tag).to_have_text("paused")
    expect(tag).to_be_visible()

    page.locator(f'.session-item[data-session-id="{waiting}"]').click()
    call = page.locator(".part-tool-call")
    call.locator(".tool-input").fill('{"time": "12:00"}')
    call.locator(".send-result").click()
    expect(tag).to_have_attribute("data-status", "idle")
    expect(tag).to_be_hidden()

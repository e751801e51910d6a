"""The client channel in a real browser: the page answers what the session asks its clients.

A run's ``confirm`` (``web.agents``' ``asker``) is drawn under its answer with
Yes/No; a backend's ``signin`` and ``input`` (``POST /interact``) after the
messages, with a button that opens each sign-in page and Done/Decline, and a
form made from the input's schema. The answers reach the agent or the
backend's stream, and answered requests show their answer. Every wait is on a
DOM condition or on the answer itself.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")


def open_session(page: Any, base_url: str, session_id: str) -> None:
    page.goto(f"{base_url}/#/s/{session_id}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")


class Interaction(threading.Thread):
    """A backend's ``POST /interact``, its JSON-RPC responses collected as they stream."""

    def __init__(self, base_url: str, session_id: str, body: Any) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/v1/sessions/{session_id}/interact"
        self.body = body
        self.responses: list[dict[str, Any]] = []
        self.started = threading.Event()

    def run(self) -> None:
        with httpx.stream("POST", self.url, json=self.body, timeout=30) as r:
            self.started.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.responses.append(json.loads(line[6:]))


def test_a_runs_confirm_is_answered_in_the_page_and_shows_its_answer(
    page: Any, server: TetherServer
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"agent": "asker"}).json()["id"]
        c.post(f"/v1/sessions/{sid}/messages", json={"content": "Tidy up."}).raise_for_status()
    open_session(page, server.base_url, sid)
    card = page.locator('.msg.assistant .client-request[data-method="confirm"]')
    expect(card).to_contain_text("Delete the report?")
    expect(page.locator("#run-status")).to_contain_text("paused")
    card.locator(".answer-yes").click()
    expect(page.locator(".msg.assistant .part-text").last).to_have_text("Deleted.")
    expect(card).to_have_attribute("data-answered", "true")
    expect(card.locator(".request-answer")).to_have_text("Yes")
    page.reload()  # the answer is the log's, not the page's
    card = page.locator('.client-request[data-method="confirm"]')
    expect(card.locator(".request-answer")).to_have_text("Yes")
    expect(card.locator(".answer-yes")).to_have_count(0)


def test_a_backends_signin_and_input_are_answered_in_the_page(
    context: Any, page: Any, server: TetherServer
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"agent": "asker"}).json()["id"]
    signin_url = f"{server.base_url}/healthz"
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                       "subscribe": {"type": "boolean"}},
        "required": ["name"],
    }  # fmt: skip
    batch = [
        {"jsonrpc": "2.0", "id": "s", "method": "signin", "params": {"toolsets": [
            {"id": "gh", "name": "GitHub", "url": signin_url},
            {"id": "cal", "url": signin_url},
        ]}},
        {"jsonrpc": "2.0", "id": "i", "method": "input",
         "params": {"message": "Who are you?", "schema": schema}},
    ]  # fmt: skip
    backend = Interaction(server.base_url, sid, batch)
    backend.start()
    assert backend.started.wait(20)
    open_session(page, server.base_url, sid)

    form = page.locator('.client-request[data-method="input"]')
    expect(form).to_contain_text("Who are you?")
    form.locator('input[name="name"]').fill("Ada")
    form.locator('input[name="age"]').fill("36")
    form.locator('input[name="subscribe"]').check()
    form.locator(".answer-send").click()
    expect(form.locator(".request-answer")).to_contain_text('"age": 36')

    signin = page.locator('.client-request[data-method="signin"]')
    gh = signin.locator('.signin-toolset[data-toolset="gh"]')
    expect(gh).to_contain_text("GitHub")
    with context.expect_page() as opened:
        gh.locator(".signin-open").click()
    opened.value.wait_for_load_state()
    assert opened.value.url == signin_url
    gh.locator(".signin-done").click()
    signin.locator('.signin-toolset[data-toolset="cal"] .signin-decline').click()
    expect(signin.locator(".request-answer")).to_have_text("gh: signed in, cal: declined")

    backend.join(20)
    assert not backend.is_alive()
    assert backend.responses == [
        {"jsonrpc": "2.0", "id": "i",
         "result": {"action": "accept", "content": {"name": "Ada", "age": 36, "subscribe": True}}},
        {"jsonrpc": "2.0", "id": "s",
         "result": {"gh": {"status": "signed_in"}, "cal": {"status": "declined"}}},
    ]  # fmt: skip

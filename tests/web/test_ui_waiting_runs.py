"""A run that waits for an approval, in a real browser: after a reload, from any tab.

The approver agent (web.agents) asks to run ``delete_file`` and waits for a
person's approval, then for the tool's result. The question must be on screen
wherever the session is opened (a reload, another browser profile), be
answerable there, and the answer must show everywhere. Every wait is on a DOM
condition.
"""

from __future__ import annotations

from typing import Any

import pytest

from helpers.server import TetherServer
from tether.client import Status, Tether

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")


def waiting_approval(base_url: str) -> tuple[str, str]:
    """A session whose run waits for an approval, made over the API: (session, run)."""
    with Tether(base_url) as client:
        session = client.sessions.create(agent="approver")
        run = client.send(session.id, "clean up")
        for ev in client.events(session.id):
            if isinstance(ev, Status) and ev.status == "paused":
                return session.id, run.run_id
    raise AssertionError("the session ended before its run waited")


def open_session(page: Any, base_url: str, session_id: str) -> Any:
    """The session's page, once its tool call is drawn; returns the call's element."""
    page.goto(f"{base_url}/#/s/{session_id}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return page.locator(".part-tool-call").last


def expect_approval_asked(page: Any, call: Any) -> None:
    expect(call.locator(".tool-state")).to_have_text("needs approval")
    expect(call.locator(".approve")).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("paused: waiting for you")


def test_a_waiting_approval_is_asked_after_a_reload_and_in_any_tab(
    browser: Any, page: Any, server: TetherServer
) -> None:
    sid, run_id = waiting_approval(server.base_url)
    call = open_session(page, server.base_url, sid)
    expect_approval_asked(page, call)
    page.reload()
    call = page.locator(".part-tool-call").last
    expect_approval_asked(page, call)

    other = browser.new_context()  # another browser profile: nothing shared but the server
    errors: list[str] = []
    other.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        there = other.new_page()
        there_call = open_session(there, server.base_url, sid)
        expect_approval_asked(there, there_call)
        there_call.locator(".approve").click()
        # Approved there: here the question is gone and the tool's result is asked.
        expect(call.locator(".approve")).to_have_count(0)
        expect(call.locator(".tool-state")).to_have_text("waiting for a result")
        call.locator(".tool-input").fill('"gone"')
        call.locator(".send-result").click()
        for p in (page, there):
            answer = p.locator("#messages .msg.assistant").last
            expect(answer).to_have_attribute("data-status", "complete")
            expect(answer.locator(".part-text")).to_have_text("Deleted: gone")
            expect(p.locator("#run-status")).to_be_hidden()
            assert p.locator("#event-list li.ev-run-end").count() == 1
        assert not errors, f"JavaScript errors in the other profile's page: {errors}"
    finally:
        other.close()

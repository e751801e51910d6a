"""A run that waits for an approval, in a real browser: after a reload, from any tab.

The approver agent (web.agents) asks to run ``delete_file`` and waits for a
person's approval, then for the tool's result. The question must be on screen
wherever the session is opened (a reload, another browser profile), be
answerable there, and the answer must show everywhere. Every wait is on a DOM
condition.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer, find_free_port
from helpers.waiting import SUSPEND_MODES, approver_server, waiting_approval, waiting_approval_in

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")


def open_session(page: Any, base_url: str, session_id: str) -> Any:
    """The session's page, once its tool call is drawn; returns the call's element."""
    page.goto(f"{base_url}/#/s/{session_id}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return page.locator(".part-tool-call").last


def expect_approval_asked(page: Any, call: Any) -> None:
    expect(call.locator(".tool-state")).to_have_text("needs approval")
    expect(call.locator(".approve")).to_be_visible()
    expect(page.locator("#run-status")).to_contain_text("paused: waiting for you")


def test_a_waiting_approval_is_asked_after_a_reload_and_in_any_tab(
    browser: Any, page: Any, server: TetherServer
) -> None:
    sid, _ = waiting_approval(server.base_url)
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


@pytest.mark.parametrize("suspend_after", SUSPEND_MODES)
def test_an_approval_that_waited_through_a_server_crash_is_answered_and_the_run_goes_on(
    browser: Any, page: Any, tmp_path: Path, suspend_after: str
) -> None:
    """kill -9 while the approval waits (live, or suspended in the log); the page
    reconnects to the restarted server (same data, same address), where the run
    is still open; a profile opened after the restart is asked the same
    question, answers it, and both pages show the same run going on to its end."""
    port = find_free_port()

    def serve(n: int) -> TetherServer:
        # A wait expires in an hour: a suspended run's status says until when it waits.
        server = approver_server(tmp_path / "data", suspend_after, port, n, "--wait-expiry", "3600")
        return server.start()

    first = serve(0)
    try:
        sid, run_id = waiting_approval_in(first.base_url, suspend_after)
        call = open_session(page, first.base_url, sid)
        expect_approval_asked(page, call)
    finally:
        first.kill()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    other = browser.new_context()
    errors: list[str] = []
    other.on("weberror", lambda e: errors.append(str(e.error)))
    with serve(1) as server:
        try:
            expect(page.locator("#conn")).to_have_attribute("data-state", "resumed", timeout=20_000)
            expect_approval_asked(page, call)  # the run still waits for the same answer
            if float(suspend_after) < 60:
                until = re.compile(r"^paused: waiting for you \(until \d{1,2}:\d{2}.*\)$")
                expect(page.locator("#run-status")).to_have_text(until)
            there = other.new_page()
            there_call = open_session(there, server.base_url, sid)
            expect_approval_asked(there, there_call)
            # The whole log in the inspector (closed until opened): the run's story,
            # without its journal.
            there.locator("#toggle-inspector").click()
            there.locator("#load-history").click()
            history = there.locator("#event-list li.marker", has_text="history: all")
            expect(history).to_have_count(1)
            expect(there.locator("#event-list li.ev-run-start")).to_have_count(1)
            expect(there.locator("#event-list li.ev-journal")).to_have_count(0)
            there_call = there.locator(".part-tool-call").last
            expect_approval_asked(there, there_call)
            there_call.locator(".approve").click()
            expect(call.locator(".tool-state")).to_have_text("waiting for a result")
            call.locator(".tool-input").fill('"gone"')
            call.locator(".send-result").click()
            for p in (page, there):
                answer = p.locator("#messages .msg.assistant").last
                expect(answer).to_have_attribute("data-status", "complete")
                expect(answer.locator(".part-text")).to_have_text("Deleted: gone")
                expect(p.locator("#messages .part-tool-call")).to_have_count(1)
                expect(p.locator("#run-status")).to_be_hidden()
                expect(p.locator("#event-list li.ev-run-resume").first).to_be_attached()
                assert p.locator("#event-list li.ev-journal").count() == 0
            assert not errors, f"JavaScript errors in the other profile's page: {errors}"
        finally:
            other.close()
        log = httpx.get(f"{server.base_url}/v1/stream/sessions/{sid}?offset=-1", timeout=10).json()
    ends = [(e["run_id"], e["reason"]) for e in log if e["type"] == "run-end"]
    assert ends == [(run_id, "complete")]
    assert any(e["type"] == "journal" for e in log)  # there were journal entries to hide

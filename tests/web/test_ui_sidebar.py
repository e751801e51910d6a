"""The sidebar in a real browser: titles, order, live updates, search, rename, delete,
export, a system prompt for a new chat, and the drawer it becomes on a phone.

Every wait is on a DOM condition; changes made over the API (as another client
would) reach the page by its own means, never by a reload.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from web.test_ui import last_assistant, open_ui, send, session_id

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")

#: Longer than a poll of the list (5 s), however loaded the machine.
POLLED_MS = 20_000
#: Shorter than a poll: what another tab of this browser changed shows sooner.
BROADCAST_MS = 4000


def api_session(server: TetherServer, text: str, **body: Any) -> str:
    """A session made over the API (no title unless given), sent ``text``, answered."""
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        sid = str(c.post("/v1/sessions", json=body).json()["id"])
        api_send(server, sid, text)
    return sid


def api_send(server: TetherServer, sid: str, text: str) -> None:
    """Send ``text`` and wait for the answer (so that the next change comes after it)."""
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        r = c.post(f"/v1/sessions/{sid}/messages", json={"content": text})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 15
        while c.get(f"/v1/sessions/{sid}").json()["active_run"] is not None:
            assert time.monotonic() < deadline, "the run never ended"
            time.sleep(0.02)


def item(page: Any, sid: str) -> Any:
    return page.locator(f'.session-item[data-session-id="{sid}"]')


def menu(page: Any, sid: str, action: str) -> None:
    entry = item(page, sid)
    entry.hover()
    entry.locator(".s-menu-button").click()
    entry.locator(f".{action}").click()


def test_titles_come_from_the_first_message_and_the_list_follows_activity_live(
    page: Any, context: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    other = context.new_page()  # a second tab of the same browser, open all along
    open_ui(other, server)

    # Made over the API without a title: named after its first message, and it shows
    # up in both tabs without a reload (the poll: no tab of this browser made it).
    older = api_session(server, "Older topic\nwith more lines")
    newer = api_session(server, "Newer topic")
    for p in (page, other):
        expect(item(p, older).locator(".s-title")).to_have_text("Older topic", timeout=POLLED_MS)
        expect(item(p, newer).locator(".s-title")).to_have_text("Newer topic", timeout=POLLED_MS)
    ids = [page.locator(".session-item").nth(i).get_attribute("data-session-id") for i in (0, 1)]
    assert ids == [newer, older]
    # A new message moves its chat to the top (its updated_at moves on).
    api_send(server, older, "again")
    for p in (page, other):
        expect(p.locator(".session-item").first).to_have_attribute(
            "data-session-id", older, timeout=POLLED_MS
        )

    # Made and renamed in one tab: the other shows it at once (BroadcastChannel), well
    # before the next poll could.
    send(page, "Made in the first tab")
    made = session_id(page)
    title = item(other, made).locator(".s-title")
    expect(title).to_have_text("Made in the first tab", timeout=BROADCAST_MS)
    menu(page, made, "s-rename")
    page.locator(".s-rename-input").fill("Renamed here")
    page.locator(".s-rename-input").press("Enter")
    expect(item(page, made).locator(".s-title")).to_have_text("Renamed here")
    expect(page.locator("#session-title")).to_have_text("Renamed here")
    expect(title).to_have_text("Renamed here", timeout=BROADCAST_MS)
    r = httpx.get(f"{server.base_url}/v1/sessions/{made}", timeout=10)
    assert r.json()["title"] == "Renamed here"


def test_search_delete_and_export(page: Any, server: TetherServer) -> None:
    kept = api_session(server, "Gardening notes")
    gone = api_session(server, "Tax questions")
    open_ui(page, server)
    expect(item(page, gone)).to_have_count(1)

    page.locator("#session-search").fill("garden")
    expect(item(page, kept)).to_be_visible()
    expect(item(page, gone)).to_have_count(0)
    page.locator("#session-search").fill("")
    expect(item(page, gone)).to_have_count(1)

    page.once("dialog", lambda d: d.accept())
    menu(page, gone, "s-delete")
    expect(item(page, gone)).to_have_count(0)
    assert httpx.get(f"{server.base_url}/v1/sessions/{gone}", timeout=10).status_code == 404

    item(page, kept).click()
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    with page.expect_download() as download:
        menu(page, kept, "s-export-json")
    doc = json.loads(Path(download.value.path()).read_text())
    assert doc["session"]["id"] == kept and doc["session"]["title"] == "Gardening notes"
    types = [e["event"]["type"] for e in doc["events"]]
    assert types[0] == "user-message" and "run-end" in types
    assert doc["events"][-1]["offset"] == doc["session"]["offset"]

    with page.expect_download() as download:
        menu(page, kept, "s-export-md")
    assert download.value.suggested_filename == "Gardening-notes.md"
    text = Path(download.value.path()).read_text()
    assert text.startswith("# Gardening notes\n")
    assert "## You\n\nGardening notes\n" in text
    assert "## Assistant\n\nYou said: Gardening notes" in text


def test_a_new_chat_takes_the_chosen_model_and_a_system_prompt(
    page: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    page.locator("#model-picker").select_option("demo")
    page.locator("#new-chat-options summary").click()
    page.locator("#system-prompt").fill("Answer in French.")
    page.locator("#new-session").click()
    expect(page.locator("#session-meta")).to_have_text("demo · system prompt")
    rec = httpx.get(f"{server.base_url}/v1/sessions/{session_id(page)}", timeout=10).json()
    assert (rec["model"], rec["system"]) == ("demo", "Answer in French.")


def test_on_a_phone_the_page_never_scrolls_sideways_and_the_sessions_are_a_drawer(
    page: Any, server: TetherServer
) -> None:
    sid = api_session(server, "A chat with a rather long first message to fill the title")
    page.set_viewport_size({"width": 390, "height": 844})
    open_ui(page, server, sid)
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    no_sideways = "() => document.scrollingElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(no_sideways)
    chat = page.locator("#chat").bounding_box()
    assert chat is not None and chat["width"] == 390  # the whole width, not 390 - 200
    expect(page.locator("#sidebar")).to_be_hidden()

    page.locator("#toggle-sidebar").click()
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#toggle-sidebar")).to_have_attribute("aria-expanded", "true")
    assert page.evaluate(no_sideways)
    page.locator("#new-session").click()
    expect(page.locator("#sidebar")).to_be_hidden()  # choosing closes the drawer
    send(page, "from the phone")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    assert page.evaluate(no_sideways)

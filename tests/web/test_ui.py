"""The web UI in a real browser (headless Chromium) against a real `tether serve`.

Every wait is on a DOM condition (Playwright's auto-waiting ``expect``), never
a sleep. Streaming is checked with a MutationObserver that records every text
the answer showed: each must be a prefix of the final answer, which is how
"nothing shown twice" is asserted across a reload or a second tab.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer, find_free_port
from web.support import ARTIFACTS, agents_env

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")

COUNT_200 = " ".join(str(i) for i in range(1, 201))

#: Records (number of assistant messages, text of the last one) on every DOM change.
RECORDER = """() => {
  window.__seen = [];
  const grab = () => {
    const msgs = document.querySelectorAll('#messages .msg.assistant');
    const last = msgs[msgs.length - 1];
    const parts = last ? [...last.querySelectorAll('.part-text')] : [];
    const text = parts.map(n => n.textContent).join('');
    const prev = window.__seen[window.__seen.length - 1];
    if (!prev || prev[0] !== msgs.length || prev[1] !== text) {
      window.__seen.push([msgs.length, text]);
    }
  };
  grab();
  new MutationObserver(grab).observe(document.getElementById('messages'),
    {subtree: true, childList: true, characterData: true});
}"""


def open_ui(page: Any, server: TetherServer, session_id: str | None = None) -> None:
    page.goto(server.base_url + "/" + (f"#/s/{session_id}" if session_id else ""))
    expect(page.locator("#model-picker option[value=demo]")).to_have_count(1)


def send(page: Any, text: str) -> None:
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")
    expect(page.locator("#input")).to_have_value("")


def session_id(page: Any) -> str:
    m = re.fullmatch(r"#/s/([\w-]+)", page.evaluate("() => location.hash"))
    assert m, "no session in the URL"
    return m.group(1)


def last_assistant(page: Any) -> Any:
    return page.locator("#messages .msg.assistant").last


def wait_tokens(page: Any, n: int) -> None:
    """Until the last answer shows at least ``n`` numbers."""
    page.wait_for_function(
        """n => {
          const m = [...document.querySelectorAll('#messages .msg.assistant .part-text')].pop();
          return !!m && m.textContent.trim().split(/\\s+/).length >= n;
        }""",
        arg=n,
    )


def seen(page: Any) -> list[tuple[int, str]]:
    return [(int(n), str(t)) for n, t in page.evaluate("() => window.__seen")]


def snapshot_offset(page: Any) -> int:
    """The offset the page's snapshot was complete up to (the inspector's first marker)."""
    marker = page.locator("#event-list li.marker").first.inner_text()
    m = re.search(r"snapshot: complete up to offset (\d+)", marker)
    assert m, marker
    return int(m.group(1))


def snapshot(server: TetherServer, sid: str, **kw: Any) -> dict[str, Any]:
    r = httpx.get(f"{server.base_url}/v1/sessions/{sid}", timeout=10, **kw)
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- streaming, reload, second tab, stop ----------------------------------------


def test_tokens_stream_and_a_second_tab_follows_the_same_run(
    page: Any, context: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    page.evaluate(RECORDER)
    send(page, "/count 200 20")
    wait_tokens(page, 5)
    expect(page.locator("#stop")).to_be_visible()

    other = context.new_page()
    open_ui(other, server, session_id(page))
    expect(other.locator("#messages .msg.assistant")).to_have_count(1)
    other.evaluate(RECORDER)

    for p in (page, other):
        expect(last_assistant(p)).to_have_attribute("data-status", "complete", timeout=30_000)
        expect(last_assistant(p).locator(".part-text")).to_have_text(COUNT_200)
        expect(p.locator("#messages .msg")).to_have_count(2)
        states = seen(p)
        assert all(n == 1 and COUNT_200.startswith(t) for n, t in states if t), states[-5:]
        partial = {t for _, t in states if t and t != COUNT_200}
        assert len(partial) >= 5, f"the answer did not stream ({len(partial)} partial states)"
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    # The inspector lists the raw events with their offsets: every one after the
    # snapshot's but the run's journal entry (its one model call's), which is internal.
    start = snapshot_offset(page)
    offsets = [int(o) for o in page.locator("#event-list li.ev .off").all_inner_texts()]
    expected = list(range(start + 1, offsets[-1] + 1))
    assert offsets == sorted(offsets) and len(expected) - len(offsets) == 1
    assert page.locator("#event-list li.ev-run-end").count() == 1


def test_reloading_mid_run_continues_the_same_message_without_doubling(
    page: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    send(page, "/count 200 20")
    wait_tokens(page, 20)
    before = last_assistant(page).get_attribute("data-message-id")

    page.reload()
    expect(page.locator("#messages .msg.assistant")).to_have_count(1)
    page.evaluate(RECORDER)
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    assert last_assistant(page).get_attribute("data-message-id") == before

    expect(last_assistant(page)).to_have_attribute("data-status", "complete", timeout=30_000)
    expect(last_assistant(page).locator(".part-text")).to_have_text(COUNT_200)
    expect(page.locator("#messages .msg.user")).to_have_count(1)
    expect(page.locator("#messages .msg.assistant")).to_have_count(1)
    states = seen(page)
    assert all(n == 1 and COUNT_200.startswith(t) for n, t in states), states[-5:]
    assert any(t != COUNT_200 for _, t in states), "the run was over before the reload"
    # Live from the snapshot's offset: the inspector starts after it, with no gap.
    start = snapshot_offset(page)
    assert start > 0
    first = int(page.locator("#event-list li.ev .off").first.inner_text())
    assert first == start + 1


def test_the_stop_button_ends_the_run_as_cancelled(page: Any, server: TetherServer) -> None:
    open_ui(page, server)
    send(page, "/count 200 50")
    wait_tokens(page, 3)
    page.locator("#stop").click()
    expect(last_assistant(page)).to_have_attribute("data-status", "cancelled")
    expect(last_assistant(page).locator(".tag.status-cancelled")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    snap = snapshot(server, session_id(page))
    assert snap["status"] == "idle"
    assert snap["messages"][-1]["status"] == "cancelled"
    text = snap["messages"][-1]["parts"][0]["text"]
    assert COUNT_200.startswith(text) and text != COUNT_200


# -- branches, tools, approvals -------------------------------------------------


def test_edit_makes_a_branch_and_the_switcher_walks_it_even_after_a_reload(
    page: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    send(page, "hello there")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    expect(last_assistant(page)).to_contain_text("You said: hello there")

    user = page.locator("#messages .msg.user").first
    user.hover()
    user.locator(".action-edit").click()
    user.locator(".edit-input").fill("goodbye")
    user.locator(".edit-input").press("Enter")
    expect(last_assistant(page)).to_contain_text("You said: goodbye")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    user = page.locator("#messages .msg.user").first
    expect(user.locator(".branch-pos")).to_have_text("2/2")
    expect(user.locator(".tag")).to_have_text("edited")

    # After a reload the snapshot holds only the current branch; going back reads the log.
    page.reload()
    user = page.locator("#messages .msg.user").first
    expect(user.locator(".branch-pos")).to_have_text("2/2")
    user.locator(".branch-prev").click()
    expect(page.locator("#messages .msg.user").first).to_contain_text("hello there")
    expect(last_assistant(page)).to_contain_text("You said: hello there")
    expect(page.locator("#messages .msg.user").first.locator(".branch-pos")).to_have_text("1/2")
    expect(page.locator("#messages .msg")).to_have_count(2)

    # Regenerate the old branch's answer: a sibling answer, shown as 2/2.
    answer = last_assistant(page)
    answer.hover()
    answer.locator(".action-regenerate").click()
    expect(last_assistant(page).locator(".branch-pos")).to_have_text("2/2")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    expect(page.locator("#messages .msg.user").first).to_contain_text("hello there")
    last_assistant(page).locator(".branch-prev").click()
    expect(last_assistant(page).locator(".branch-pos")).to_have_text("1/2")


def test_a_tool_call_is_answered_from_its_form(page: Any, server: TetherServer) -> None:
    open_ui(page, server)
    send(page, '/tool get_time {"tz": "UTC"}')
    call = page.locator(".part-tool-call")
    expect(call.locator(".tool-name")).to_have_text("get_time")
    expect(call.locator(".tool-args")).to_contain_text('"tz": "UTC"')
    expect(page.locator("#run-status")).to_have_text("paused: waiting for you")
    call.locator(".tool-input").fill("not json")
    call.locator(".send-result").click()
    expect(call.locator(".error-text")).to_contain_text("not valid JSON")
    call.locator(".tool-input").fill('{"time": "12:00"}')
    call.locator(".send-result").click()
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    expect(last_assistant(page).locator(".part-text")).to_have_text(
        'Tool get_time returned: {"time": "12:00"}'
    )
    expect(call.locator(".tool-result")).to_contain_text('"time": "12:00"')
    expect(call.locator(".tool-form")).to_have_count(0)


def test_approvals_are_approved_or_denied(page: Any, server: TetherServer) -> None:
    open_ui(page, server)
    page.locator("#model-picker").select_option("agent:approver")
    page.locator("#new-session").click()
    expect(page.locator("#session-meta")).to_contain_text("agent approver")

    send(page, "clean up")
    call = page.locator(".part-tool-call").last
    expect(call.locator(".tool-state")).to_have_text("needs approval")
    expect(call.locator(".tool-form")).to_have_count(0)
    call.locator(".approve").click()
    call.locator(".tool-input").fill('"ok, gone"')
    call.locator(".send-result").click()
    expect(last_assistant(page).locator(".part-text")).to_have_text("Deleted: ok, gone")

    send(page, "and the other one")
    expect(page.locator("#messages .msg.assistant")).to_have_count(2)
    call = page.locator(".part-tool-call").last
    call.locator(".tool-reason").fill("keep it")
    call.locator(".deny").click()
    expect(last_assistant(page).locator(".part-text")).to_have_text(
        "Not deleted (not approved: keep it)"
    )
    expect(call.locator(".tool-state")).to_have_text("denied")


# -- sessions, connection, auth ---------------------------------------------------


def test_sessions_are_listed_selected_and_archived(page: Any, server: TetherServer) -> None:
    open_ui(page, server)
    send(page, "first chat")
    first = session_id(page)
    expect(page.locator(f".session-item[data-session-id={first}] .s-title")).to_have_text(
        "first chat"
    )
    page.locator("#new-session").click()
    expect(page.locator("#session-title")).to_have_text("New session")
    send(page, "second chat")
    second = session_id(page)
    assert second != first
    expect(page.locator("#session-title")).to_have_text("second chat")

    page.locator(f".session-item[data-session-id={first}]").click()
    expect(page.locator("#session-title")).to_have_text("first chat")
    expect(page.locator("#messages .msg.user")).to_contain_text("first chat")

    item = page.locator(f".session-item[data-session-id={second}]")
    item.hover()
    item.locator(".s-menu-button").click()
    item.locator(".s-archive").click()
    expect(item).to_have_count(0)
    page.locator("#show-archived").check()
    expect(page.locator(f".session-item.archived[data-session-id={second}]")).to_have_count(1)


def test_the_indicator_shows_a_resume_after_the_server_restarts(page: Any, tmp_path: Path) -> None:
    port = find_free_port()

    def serve(n: int) -> TetherServer:
        srv = TetherServer(tmp_path / "data", port=port, log_path=tmp_path / f"server-{n}.log")
        return srv.start()

    srv = serve(0)
    try:
        open_ui(page, srv)
        send(page, "/count 5 1")
        expect(last_assistant(page)).to_have_attribute("data-status", "complete")
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
        offset = int(page.locator("#event-list li.ev .off").last.inner_text())
    finally:
        srv.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    srv = serve(1)
    try:
        expect(page.locator("#conn")).to_have_attribute("data-state", "resumed", timeout=20_000)
        expect(page.locator("#conn")).to_have_text("reconnected")
        expect(page.locator("#inspector-conn")).to_contain_text(f"resumed from offset {offset}")
        expect(page.locator("#event-list li.marker").last).to_contain_text(
            f"resumed from offset {offset}"
        )
        send(page, "/count 7 1")
        expect(page.locator("#messages .msg.assistant")).to_have_count(2)
        expect(last_assistant(page).locator(".part-text")).to_have_text("1 2 3 4 5 6 7")
    finally:
        srv.stop()


def test_with_api_keys_the_page_asks_for_one_and_reads_with_a_token(
    page: Any, tmp_path: Path
) -> None:
    key = "tk-web-ui-test-key"
    env = agents_env()
    env["TETHER_API_KEYS"] = key
    srv = TetherServer(tmp_path / "data", log_path=tmp_path / "server.log", env=env)
    event_urls: list[str] = []
    page.on("request", lambda r: "/events" in r.url and event_urls.append(r.url))
    with srv:
        page.goto(srv.base_url + "/")
        expect(page.locator("#auth-panel")).to_be_visible()
        page.locator("#auth-key").fill(key)
        page.locator("#auth-form button[type=submit]").click()
        expect(page.locator("#auth-panel")).to_be_hidden()
        send(page, "/count 20 5")
        expect(last_assistant(page).locator(".part-text")).to_have_text(
            " ".join(str(i) for i in range(1, 21))
        )
        assert page.evaluate("() => localStorage.getItem('tether.key')") == key
        assert event_urls and all("token=" in u for u in event_urls)
        # The key stays in this browser: a reload goes straight back to the chat.
        page.reload()
        expect(last_assistant(page)).to_have_attribute("data-status", "complete")
        expect(page.locator("#auth-panel")).to_be_hidden()
        headers = {"authorization": f"Bearer {key}"}
        assert snapshot(srv, session_id(page), headers=headers)["messages"][-1]["status"] == (
            "complete"
        )


# -- the picture --------------------------------------------------------------------


def test_screenshot_of_the_ui(page: Any, server: TetherServer) -> None:
    """A representative screen for CI artifacts: markdown, reasoning, a branch, a tool call."""
    page.set_viewport_size({"width": 1400, "height": 1100})
    open_ui(page, server)
    send(
        page,
        "/reason Render **markdown** safely:\n\n- a list with `inline code`\n- a [link]"
        "(https://example.com)\n\n```python\nprint('hello')\n```\n\n<b>not bold</b>",
    )
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    answer = last_assistant(page)
    expect(answer.locator(".part-text strong")).to_have_text("markdown")
    expect(answer.locator(".part-text pre.code code")).to_have_text("print('hello')")
    expect(answer.locator(".part-text a")).to_have_attribute("href", "https://example.com")
    expect(answer.locator(".part-text b")).to_have_count(0)  # HTML stays text
    expect(answer.locator(".part-text")).to_contain_text("<b>not bold</b>")

    answer.hover()
    answer.locator(".action-regenerate").click()
    expect(last_assistant(page).locator(".branch-pos")).to_have_text("2/2")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    send(page, '/tool search {"query": "durable streams", "limit": 3}')
    expect(page.locator(".part-tool-call .tool-form")).to_be_visible()
    page.locator("#messages").evaluate("el => el.scrollTop = el.scrollHeight")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "ui.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000

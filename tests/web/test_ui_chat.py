"""The chat pane in a real browser: the edit box's contrast, copy buttons, syntax
highlighting, "jump to latest", the theme toggle, the inspector, the wording of
the connection, and the chosen branch kept across reloads and tabs.

Every wait is on a DOM condition. Contrast is measured from computed styles
(WCAG's ratio of relative luminances), as a person's eye would not.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from web.test_ui import last_assistant, open_ui, send, session_id

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")

#: WCAG 2 contrast ratio of an element's text to the background it is drawn on
#: (the first ancestor's that is not transparent).
CONTRAST = """el => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = (c) => {
    const [r, g, b] = rgb(c).slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let bg = null;
  for (let n = el; n; n = n.parentElement) {
    const c = getComputedStyle(n).backgroundColor;
    const alpha = rgb(c)[3];
    if (alpha === undefined || alpha > 0) { bg = c; break; }
  }
  const [a, b] = [lum(getComputedStyle(el).color), lum(bg || "rgb(255, 255, 255)")];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""

CODE = "def twice(x):\n    return 2 * x  # the answer"


def test_the_edit_box_is_readable_in_either_scheme(page: Any, server: TetherServer) -> None:
    open_ui(page, server)
    send(page, "hello there")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    user = page.locator("#messages .msg.user").first
    user.hover()
    user.locator(".action-edit").click()
    box = user.locator(".edit-input")
    expect(box).to_have_value("hello there")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        ratio = box.evaluate(CONTRAST)
        assert ratio >= 4.5, f"{scheme}: the edit box's text has contrast {ratio:.2f}"


def test_copy_buttons_copy_a_message_and_a_code_block(
    page: Any, context: Any, server: TetherServer
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    open_ui(page, server)
    send(page, f"/reason Like this:\n\n```python\n{CODE}\n```")
    answer = last_assistant(page)
    expect(answer).to_have_attribute("data-status", "complete")
    snap = httpx.get(f"{server.base_url}/v1/sessions/{session_id(page)}", timeout=10).json()
    expected = "".join(p["text"] for p in snap["messages"][-1]["parts"] if p["kind"] == "text")
    assert f"```python\n{CODE}\n```" in expected

    answer.hover()
    answer.locator(".action-copy").click()
    expect(answer.locator(".action-copy")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == expected

    block = answer.locator(".part-text pre.code")
    block.locator(".copy-code").click()
    expect(block.locator(".copy-code")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == CODE

    # Highlighted by the page's own highlighter: keywords, numbers, comments, no CDN.
    code = block.locator("code")
    expect(code.locator(".hl-kw")).to_have_text(["def", "return"])
    expect(code.locator(".hl-num")).to_have_text(["2"])
    expect(code.locator(".hl-com")).to_have_text(["# the answer"])
    colors = code.evaluate(
        """c => [c, c.querySelector('.hl-kw'), c.querySelector('.hl-com')]
                .map(n => getComputedStyle(n).color)"""
    )
    assert len(set(colors)) == 3, colors
    assert all(u.startswith(server.base_url) for u in requests), requests


def test_jump_to_latest_shows_when_scrolled_up(page: Any, server: TetherServer) -> None:
    page.set_viewport_size({"width": 1000, "height": 500})
    open_ui(page, server)
    send(page, "\n".join(f"line {i}" for i in range(60)))
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    jump = page.locator("#jump-latest")
    expect(jump).to_be_hidden()  # at the end already
    page.locator("#messages").evaluate("el => el.scrollTop = 0")
    expect(jump).to_be_visible()
    jump.click()
    expect(jump).to_be_hidden()
    at_end = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 2"
    assert page.locator("#messages").evaluate(at_end)


def test_the_theme_toggle_is_remembered(page: Any, server: TetherServer) -> None:
    page.emulate_media(color_scheme="light")
    open_ui(page, server)
    background = "() => getComputedStyle(document.body).backgroundColor"
    assert page.evaluate(background) == "rgb(247, 247, 248)"
    page.locator("#theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert page.evaluate(background) == "rgb(22, 22, 26)"
    page.reload()
    expect(page.locator("#theme-toggle")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate(background) == "rgb(22, 22, 26)"
    page.locator("#theme-toggle").click()
    page.reload()
    expect(page.locator("#theme-toggle")).to_have_attribute("aria-pressed", "false")
    assert page.evaluate(background) == "rgb(247, 247, 248)"


def test_the_inspector_is_closed_until_opened_and_holds_the_developer_wording(
    page: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    send(page, "/count 3 1")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    sid = session_id(page)
    expect(page.locator("#inspector")).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator("#conn-text")).to_have_text("live")
    expect(page.locator("#session-meta")).to_have_text("demo")  # no raw id
    assert "offset" not in page.locator("#chat").inner_text()
    assert sid not in page.locator("#chat").inner_text()

    page.locator("#toggle-inspector").click()
    expect(page.locator("#inspector")).to_be_visible()
    expect(page.locator("#inspector-session")).to_have_text(f"session {sid}")
    expect(page.locator("#inspector-conn")).to_contain_text("live from offset")
    page.reload()
    expect(page.locator("#inspector")).to_be_visible()  # remembered
    page.locator("#close-inspector").click()
    page.reload()
    expect(page.locator("#messages .msg.assistant")).to_have_count(1)
    expect(page.locator("#inspector")).to_be_hidden()


def test_the_chosen_branch_is_kept_after_a_reload_and_seen_by_a_second_tab(
    page: Any, context: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    send(page, "hello there")
    expect(last_assistant(page)).to_contain_text("You said: hello there")
    user = page.locator("#messages .msg.user").first
    user.hover()
    user.locator(".action-edit").click()
    user.locator(".edit-input").fill("goodbye")
    user.locator(".edit-input").press("Enter")
    expect(last_assistant(page)).to_contain_text("You said: goodbye")
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    sid = session_id(page)

    other = context.new_page()  # opened before the choice: it follows it live
    open_ui(other, server, sid)
    expect(other.locator("#messages .msg.user").first).to_contain_text("goodbye")

    page.locator("#messages .msg.user").first.locator(".branch-prev").click()
    for p in (page, other):
        first = p.locator("#messages .msg.user").first
        expect(first).to_contain_text("hello there")
        expect(first.locator(".branch-pos")).to_have_text("1/2")
        expect(last_assistant(p)).to_contain_text("You said: hello there")

    page.reload()
    first = page.locator("#messages .msg.user").first
    expect(first.locator(".branch-pos")).to_have_text("1/2")
    expect(first).to_contain_text("hello there")
    snap = httpx.get(f"{server.base_url}/v1/sessions/{sid}", timeout=10).json()
    assert snap["messages"][0]["parts"][0]["text"] == "hello there"

    # A message sent now continues the chosen branch, in both tabs.
    send(page, "and more")
    for p in (page, other):
        expect(p.locator("#messages .msg.user")).to_have_count(2)
        expect(p.locator("#messages .msg.user").first).to_contain_text("hello there")
        expect(last_assistant(p)).to_contain_text("You said: and more")

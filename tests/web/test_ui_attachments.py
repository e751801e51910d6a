"""Attachments in the web UI, in headless Chromium against a real ``tether serve``.

An image is attached with the attach button, a PDF dropped onto the composer;
both show before sending, are sent with the message, and are shown in the
conversation: the image as a thumbnail read back from the server, the PDF as a
chip with its name.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from web.test_ui import last_assistant, open_ui, session_id

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")

#: A real 2x2 PNG: the thumbnail must decode to it.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n%%EOF\n"

DROP = """([name, type, bytes]) => {
  const file = new File([new Uint8Array(bytes)], name, { type });
  const data = new DataTransfer();
  data.items.add(file);
  const composer = document.getElementById('composer');
  for (const kind of ['dragover', 'drop']) {
    const init = { dataTransfer: data, bubbles: true, cancelable: true };
    composer.dispatchEvent(new DragEvent(kind, init));
  }
}"""


def test_an_attached_image_and_a_dropped_pdf_are_sent_and_shown(
    page: Any, server: TetherServer
) -> None:
    open_ui(page, server)
    page.locator("#attach-input").set_input_files(
        {"name": "dots.png", "mimeType": "image/png", "buffer": PNG}
    )
    page.evaluate(DROP, ["notes.pdf", "application/pdf", list(PDF)])
    pending = page.locator("#attachments")
    expect(pending.locator("img.thumb")).to_have_attribute("alt", "dots.png")
    expect(pending.locator(".file-chip")).to_contain_text("notes.pdf")

    page.locator("#input").fill("what are these")
    page.locator("#input").press("Enter")
    expect(page.locator("#attachments")).to_be_hidden()
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")

    user = page.locator("#messages .msg.user").last
    thumb = user.locator(".part-image img.thumb")
    expect(thumb).to_have_attribute("src", re.compile(r"^blob:"))  # read back from the server
    # Decoded: the bytes the server served are the image that was attached.
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 2", arg=thumb.element_handle()
    )
    expect(user.locator(".part-file .file-chip")).to_contain_text("notes.pdf")
    expect(user.locator(".part-text")).to_have_text("what are these")

    snap = httpx.get(f"{server.base_url}/v1/sessions/{session_id(page)}", timeout=10).json()
    parts = snap["messages"][0]["parts"]
    assert [(p["kind"], p.get("name"), p.get("size")) for p in parts] == [
        ("image", "dots.png", len(PNG)),
        ("file", "notes.pdf", len(PDF)),
        ("text", None, None),
    ]
    image = httpx.get(
        f"{server.base_url}/v1/sessions/{session_id(page)}/attachments/{parts[0]['id']}", timeout=10
    )
    assert image.content == PNG

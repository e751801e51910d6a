"""Fixtures for the docs tests: one real ``tether serve`` (the demo model) per module.

The browser is Debian's Chromium, launched as the web UI tests launch it
(tests/web/conftest.py), so it skips or fails for the same reasons.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.server import TetherServer
from web.conftest import CHROMIUM_ARGS, TIMEOUT_MS, chromium_path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("docs")
    with TetherServer(base / "data", log_path=base / "server.log") as srv:
        yield srv


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        pytest.fail("the /docs test needs Chromium (make test installs it)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            yield context
        finally:
            browser.close()

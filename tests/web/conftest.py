"""Fixtures for the web UI tests: a real ``tether serve`` and Debian's headless Chromium.

Playwright drives the system Chromium (``/usr/bin/chromium``, or
``$TETHER_CHROMIUM``); ``playwright install`` is never needed. Without
Chromium or the ``playwright`` package the tests skip locally, and fail in CI
(``CI`` set), where a silently skipped UI suite would hide breakage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.server import TetherServer
from web.support import ARTIFACTS, agents_env

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 880}
TIMEOUT_MS = 15_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    wanted = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")
    if Path(wanted).is_file() and os.access(wanted, os.X_OK):
        return wanted
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the web UI tests need the playwright package (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        _unavailable("the web UI tests need Chromium (apt-get install -y chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    """One server for a module's tests: the demo model plus the agents of web.agents."""
    base = tmp_path_factory.mktemp("web")
    srv = TetherServer(
        base / "data",
        log_path=base / "server.log",
        extra_args=["web.agents:app"],
        env=agents_env(),
    )
    with srv:
        yield srv


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def context(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser profile (its own localStorage) per test; screenshots on failure.

    An uncaught error in the page's JavaScript fails the test, even if the
    screen looked right.
    """
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        yield ctx
        assert not errors, f"JavaScript errors in the page: {errors}"
    finally:
        if request.node.stash.get(_FAILED, False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for i, page in enumerate(ctx.pages):
                name = f"failed-{request.node.name}-{i}.png".replace("/", "_")
                # A crashed page must not hide the test's own failure.
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(ARTIFACTS / name))
        ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()

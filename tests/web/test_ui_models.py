"""The web UI's model picker shows what ``/v1/models`` shows, and picking one works.

A real ``tether serve`` in front of the fake upstream (on a thread of its own),
configured with its URL and key and no model list: the picker lists the
models the server discovered and the agents as ``agent:<name>``, and a chat on
a discovered model runs on the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from providers.fake_upstreams import FakeUpstream, FakeUpstreamThread, Script
from web.support import agents_env
from web.test_ui import last_assistant, open_ui, send

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, in CI, fails) and says why
    pytestmark = pytest.mark.usefixtures("browser")

KEY = "sk-upstream-2f4b6d8a0c1e3a5b"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstreamThread, FakeUpstream]]:
    thread = FakeUpstreamThread()
    with thread as fake:
        fake.models = ["llama3.2", "qwen3"]
        fake.script = Script(text="Hello from qwen.")
        yield thread, fake


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, upstream: tuple[FakeUpstreamThread, FakeUpstream]
) -> Iterator[TetherServer]:
    _, fake = upstream
    base = tmp_path_factory.mktemp("web-models")
    env = {k: v for k, v in agents_env().items() if not k.startswith("TETHER_")}
    env |= {"TETHER_OPENAI_BASE_URL": fake.openai_base_url, "TETHER_OPENAI_API_KEY": KEY}
    server = TetherServer(
        base / "data",
        log_path=base / "server.log",
        extra_args=["web.agents:app", "--models-refresh", "0.05"],
        env=env,
    )
    with server:
        yield server
    assert KEY not in server.output()


def options(page: Any) -> list[str]:
    return list(page.locator("#model-picker option").evaluate_all("os => os.map(o => o.value)"))


def test_the_picker_shows_what_v1_models_shows_and_a_discovered_model_answers(
    page: Any, served: TetherServer, upstream: tuple[FakeUpstreamThread, FakeUpstream]
) -> None:
    _, fake = upstream
    listed = [m["id"] for m in httpx.get(f"{served.base_url}/v1/models").json()["data"]]
    assert "openai/qwen3" in listed and "agent:flaky" in listed
    open_ui(page, served)
    expect(page.locator("#model-picker option[value='openai/qwen3']")).to_have_count(1)
    assert options(page) == listed

    page.locator("#model-picker").select_option("openai/qwen3")
    page.locator("#new-session").click()
    expect(page.locator("#session-meta")).to_contain_text("openai/qwen3")
    send(page, "Who are you?")
    expect(last_assistant(page).locator(".part-text")).to_have_text("Hello from qwen.")
    chats = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    assert [r.body["model"] for r in chats] == ["qwen3"]


def test_models_the_server_discovers_later_show_when_the_picker_is_opened(
    page: Any, served: TetherServer, upstream: tuple[FakeUpstreamThread, FakeUpstream]
) -> None:
    thread, fake = upstream
    open_ui(page, served)
    expect(page.locator("#model-picker option[value='openai/qwen3']")).to_have_count(1)
    page.locator("#model-picker").select_option("openai/llama3.2")
    fake.models = ["llama3.2", "qwen3", "gpt-oss"]
    # Rounds run one after the other: the one after the next has seen the new list.
    asked = sum(r.path == "/v1/models" for r in fake.requests)
    thread.run(fake.wait_requests("/v1/models", asked + 2))
    page.locator("#model-picker").focus()
    expect(page.locator("#model-picker option[value='openai/gpt-oss']")).to_have_count(1)
    expect(page.locator("#model-picker")).to_have_value("openai/llama3.2")  # the choice stays

"""Model discovery: upstreams without a configured list are asked for theirs (in process).

The end-to-end side (a real ``tether serve``, its log, the web UI) is in
test_discovery_e2e.py; here the registry's rules, against the fake upstream.
"""

from __future__ import annotations

import logging

import pytest

from tether.providers.anthropic import AnthropicProvider
from tether.providers.registry import ProviderRegistry, UnknownModel

from .common import KEY
from .fake_upstreams import FakeUpstream


def env(fake: FakeUpstream, **more: str) -> dict[str, str]:
    return {"TETHER_OPENAI_BASE_URL": fake.openai_base_url, "TETHER_OPENAI_API_KEY": KEY, **more}


async def test_an_upstream_without_a_list_is_asked_and_its_models_are_listed(
    fake: FakeUpstream,
) -> None:
    fake.models = ["llama3.2", "qwen3"]
    async with ProviderRegistry.from_env(env(fake), models_refresh=0) as registry:
        provider = registry.get("openai")
        # Before the first discovery: nothing listed, any model under the prefix passes.
        assert registry.list_models() == ["demo"]
        assert registry.resolve("openai/anything") == (provider, "anything")
        await registry.start_discovery()
        assert registry.list_models() == ["demo", "openai/llama3.2", "openai/qwen3"]
        assert registry.resolve("openai/qwen3") == (provider, "qwen3")
        assert registry.resolve("qwen3") == (provider, "qwen3")
        with pytest.raises(UnknownModel):
            registry.resolve("openai/anything")
    (asked,) = [r for r in fake.requests if r.path == "/v1/models"]
    assert asked.headers["authorization"] == f"Bearer {KEY}"


async def test_an_explicit_list_wins_and_the_upstream_is_never_asked(fake: FakeUpstream) -> None:
    explicit = env(fake, TETHER_OPENAI_MODELS="gpt-4o-mini")
    async with ProviderRegistry.from_env(explicit, models_refresh=0) as registry:
        await registry.start_discovery()
        assert registry.list_models() == ["demo", "openai/gpt-4o-mini"]
    assert fake.requests == []


async def test_without_a_refresh_interval_nothing_is_asked(fake: FakeUpstream) -> None:
    async with ProviderRegistry.from_env(env(fake)) as registry:
        await registry.start_discovery()
        assert registry.list_models() == ["demo"]
    assert fake.requests == []


async def test_anthropic_models_are_read_page_by_page(fake: FakeUpstream) -> None:
    fake.models = [f"claude-{n}" for n in range(5)]
    fake.models_page = 2
    provider = AnthropicProvider(base_url=fake.url, api_key=KEY)
    async with ProviderRegistry([provider], models_refresh=0) as registry:
        await registry.start_discovery()
        assert registry.list_models() == ["demo"] + [f"anthropic/claude-{n}" for n in range(5)]
    asked = [r for r in fake.requests if r.path == "/v1/models"]
    assert len(asked) == 3
    assert all(r.headers["x-api-key"] == KEY and "anthropic-version" in r.headers for r in asked)


async def test_a_failing_discovery_keeps_the_last_list_and_logs_once_without_the_key(
    fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.providers")
    async with ProviderRegistry.from_env(env(fake), models_refresh=0.01) as registry:
        await registry.start_discovery()
        assert registry.list_models() == ["demo", "openai/gpt-4o-mini", "openai/gpt-4o"]
        fake.fail_next(3, 401, message=f"Incorrect API key provided: {KEY}.")
        await fake.wait_requests("/v1/models", 4)
        assert registry.list_models() == ["demo", "openai/gpt-4o-mini", "openai/gpt-4o"]
        fake.models = ["gpt-5"]
        # Rounds run one after the other: the one after the next has seen the new list.
        asked = sum(r.path == "/v1/models" for r in fake.requests)
        await fake.wait_requests("/v1/models", asked + 2)
        assert registry.list_models() == ["demo", "openai/gpt-5"]
    failed = [r for r in caplog.records if "could not list" in r.getMessage()]
    recovered = [r for r in caplog.records if "listed again" in r.getMessage()]
    assert len(failed) == 1 and len(recovered) == 1
    assert "HTTP 401" in failed[0].getMessage()
    assert KEY not in caplog.text

"""Fixtures for the provider tests: a fake upstream per test and providers aimed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tether.providers.anthropic import AnthropicProvider
from tether.providers.openai import OpenAIProvider

from .common import KEY
from .fake_upstreams import FakeUpstream


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def openai(fake: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        base_url=fake.openai_base_url, api_key=KEY, models=["gpt-4o-mini"], timeout=5.0
    )
    yield provider
    await provider.aclose()


@pytest.fixture
async def anthropic(fake: FakeUpstream) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(
        base_url=fake.url, api_key=KEY, models=["claude-sonnet-4-5"], timeout=5.0
    )
    yield provider
    await provider.aclose()

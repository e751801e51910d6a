"""ProviderRegistry: environment, TOML config, resolution, listing, secrecy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.providers.anthropic import AnthropicProvider
from tether.providers.base import ChatMessage, ModelRequest, Usage
from tether.providers.demo import DemoModel
from tether.providers.openai import OpenAIProvider
from tether.providers.registry import ConfigError, ProviderRegistry, UnknownModel

from .common import KEY, collect, text_of
from .fake_upstreams import FakeUpstream

OTHER_KEY = "sk-ant-OTHERSECRET-77aa01"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tether.toml"
    path.write_text(text)
    return path


async def test_demo_is_always_there() -> None:
    async with ProviderRegistry.from_env({}) as registry:
        assert registry.list_models() == ["demo"]
        provider, model = registry.resolve("demo")
        assert isinstance(provider, DemoModel)
        assert model == "demo"
        assert registry.resolve("demo/demo") == (provider, "demo")


async def test_openai_from_env() -> None:
    env = {
        "TETHER_OPENAI_BASE_URL": "http://localhost:11434/v1/",
        "TETHER_OPENAI_API_KEY": KEY,
        "TETHER_OPENAI_MODELS": "gpt-4o-mini, gpt-4o,,",
    }
    async with ProviderRegistry.from_env(env) as registry:
        assert registry.list_models() == ["demo", "openai/gpt-4o-mini", "openai/gpt-4o"]
        provider, model = registry.resolve("openai/gpt-4o-mini")
        assert isinstance(provider, OpenAIProvider)
        assert provider.name == "openai"
        assert provider.base_url == "http://localhost:11434/v1"
        assert model == "gpt-4o-mini"
        # A bare name listed by exactly one provider resolves too.
        assert registry.resolve("gpt-4o") == (provider, "gpt-4o")


async def test_openai_key_alone_defaults_to_openai() -> None:
    async with ProviderRegistry.from_env({"TETHER_OPENAI_API_KEY": KEY}) as registry:
        provider = registry.get("openai")
        assert isinstance(provider, OpenAIProvider)
        assert provider.base_url == "https://api.openai.com/v1"
        # No model list: any model under the prefix passes through, none is listed.
        assert registry.resolve("openai/o3-mini") == (provider, "o3-mini")
        assert registry.list_models() == ["demo"]


async def test_anthropic_from_env() -> None:
    env = {
        "TETHER_ANTHROPIC_API_KEY": OTHER_KEY,
        "TETHER_ANTHROPIC_MODELS": "claude-sonnet-4-5,claude-haiku-4-5",
    }
    async with ProviderRegistry.from_env(env) as registry:
        assert registry.list_models() == [
            "demo",
            "anthropic/claude-sonnet-4-5",
            "anthropic/claude-haiku-4-5",
        ]
        provider, model = registry.resolve("anthropic/claude-haiku-4-5")
        assert isinstance(provider, AnthropicProvider)
        assert provider.base_url == "https://api.anthropic.com"
        assert model == "claude-haiku-4-5"


def test_anthropic_settings_without_key_are_an_error() -> None:
    with pytest.raises(ConfigError, match="TETHER_ANTHROPIC_API_KEY"):
        ProviderRegistry.from_env({"TETHER_ANTHROPIC_MODELS": "claude-sonnet-4-5"})


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("gpt-5", ""),
        ("openai/gpt-5", "does not list"),
        ("nope/gpt-4o-mini", ""),
        ("", "empty"),
        ("openai/", ""),
    ],
)
async def test_unknown_models(name: str, hint: str) -> None:
    env = {"TETHER_OPENAI_API_KEY": KEY, "TETHER_OPENAI_MODELS": "gpt-4o-mini"}
    async with ProviderRegistry.from_env(env) as registry:
        with pytest.raises(UnknownModel) as info:
            registry.resolve(name)
    err = info.value
    assert isinstance(err, LookupError)
    assert err.model == name
    assert err.available == ["demo", "openai/gpt-4o-mini"]
    assert f"unknown model {name!r}" in str(err)
    assert "available models: demo, openai/gpt-4o-mini" in str(err)
    assert hint in str(err)


async def test_ambiguous_bare_name(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
        [[upstreams]]
        name = "a"
        kind = "openai"
        base_url = "http://a.example/v1"
        models = ["llama3"]

        [[upstreams]]
        name = "b"
        kind = "openai"
        base_url = "http://b.example/v1"
        models = ["llama3"]
        """,
    )
    async with ProviderRegistry.from_env({}, config) as registry:
        assert registry.resolve("a/llama3")[0].name == "a"
        with pytest.raises(UnknownModel, match="ambiguous"):
            registry.resolve("llama3")


async def test_toml_config(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
        [[upstreams]]
        name = "openrouter"
        kind = "openai"
        base_url = "https://openrouter.ai/api/v1"
        api_key_env = "OPENROUTER_KEY"
        models = ["openai/gpt-4o", "meta-llama/llama-3.1-8b-instruct"]
        timeout = 60
        headers = { "X-Title" = "tether" }

        [[upstreams]]
        name = "claude"
        kind = "anthropic"
        api_key = "OTHER_KEY"
        models = ["claude-sonnet-4-5"]
        max_tokens = 8192
        extra_body = { temperature = 0.3 }

        [[upstreams]]
        name = "local"
        kind = "openai"
        base_url = "http://127.0.0.1:8080/v1"
        """.replace("OTHER_KEY", OTHER_KEY),
    )
    env = {"OPENROUTER_KEY": KEY, "TETHER_CONFIG": "/nonexistent/ignored.toml"}
    async with ProviderRegistry.from_env(env, config_path=config) as registry:
        assert registry.list_models() == [
            "demo",
            "openrouter/openai/gpt-4o",
            "openrouter/meta-llama/llama-3.1-8b-instruct",
            "claude/claude-sonnet-4-5",
        ]
        router, model = registry.resolve("openrouter/openai/gpt-4o")
        assert (router.name, model) == ("openrouter", "openai/gpt-4o")
        # OpenRouter-style names also resolve without the upstream's prefix.
        assert registry.resolve("openai/gpt-4o") == (router, "openai/gpt-4o")
        claude, model = registry.resolve("claude/claude-sonnet-4-5")
        assert isinstance(claude, AnthropicProvider)
        assert claude.max_tokens == 8192
        assert registry.resolve("local/qwen3")[1] == "qwen3"
        for text in (repr(registry), str(registry), *map(repr, registry.providers)):
            assert KEY not in text
            assert OTHER_KEY not in text


async def test_config_path_from_env_and_file_wins(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
        [[upstreams]]
        name = "openai"
        kind = "openai"
        base_url = "http://file.example/v1"
        models = ["from-file"]
        """,
    )
    env = {
        "TETHER_CONFIG": str(config),
        "TETHER_OPENAI_API_KEY": KEY,
        "TETHER_OPENAI_MODELS": "from-env",
        "TETHER_ANTHROPIC_API_KEY": OTHER_KEY,
    }
    async with ProviderRegistry.from_env(env) as registry:
        assert registry.list_models() == ["demo", "openai/from-file"]
        assert registry.get("openai").base_url == "http://file.example/v1"  # type: ignore[attr-defined]
        assert isinstance(registry.get("anthropic"), AnthropicProvider)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[upstreams]]\nname = "x"\nkind = "gemini"', "'kind' must be one of"),
        ('[[upstreams]]\nkind = "openai"', "'name'"),
        ('[[upstreams]]\nname = "a/b"\nkind = "openai"', "'name'"),
        ('[[upstreams]]\nname = "demo"\nkind = "openai"', "already taken"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\nmodel = ["typo"]', "unknown field(s) model"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\napi_key_env = "MISSING_VAR"', "MISSING_VAR"),
        (
            f'[[upstreams]]\nname = "x"\nkind = "openai"\napi_key = "{KEY}"\napi_key_env = "K"',
            "not both",
        ),
        ('[[upstreams]]\nname = "x"\nkind = "anthropic"', "needs 'api_key'"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\nmodels = "gpt-4o"', "'models'"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\nbase_url = "ftp://x"', "base URL"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\ntimeout = -1', "'timeout'"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\nmax_tokens = 10', "max_tokens"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\ncontext_tokens = 0', "'context_tokens'"),
        ('[[upstreams]]\nname = "x"\nkind = "openai"\ncontext_tokens = true', "'context_tokens'"),
        (
            '[[upstreams]]\nname = "x"\nkind = "openai"\ncontext_tokens = {m = "8k"}',
            "'context_tokens'",
        ),
        ('upstreams = "nope"', "array of tables"),
        ("[[upstreams]\nname = ", "not valid TOML"),
        (
            '[[upstreams]]\nname = "x"\nkind = "openai"\n'
            '[[upstreams]]\nname = "x"\nkind = "openai"',
            "already taken",
        ),
    ],
)
def test_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProviderRegistry.from_env({"K": KEY}, write(tmp_path, body))
    assert message in str(info.value)
    assert KEY not in str(info.value)


async def test_a_context_budget_is_one_number_for_all_models_or_one_per_model(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        '[[upstreams]]\nname = "all"\nkind = "openai"\ncontext_tokens = 8000\n'
        '[[upstreams]]\nname = "each"\nkind = "openai"\nmodels = ["small", "big"]\n'
        "context_tokens = {small = 4000, big = 128000}\n"
        '[[upstreams]]\nname = "none"\nkind = "openai"\n',
    )
    async with ProviderRegistry.from_env({}, path) as registry:
        budgets = {
            name: registry.context_budget(*registry.resolve(name))
            for name in ("all/any-model", "each/small", "each/big", "none/m", "demo")
        }
    assert budgets == {
        "all/any-model": 8000,
        "each/small": 4000,
        "each/big": 128000,
        "none/m": None,
        "demo": None,
    }


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        ProviderRegistry.from_env({"TETHER_CONFIG": str(tmp_path / "absent.toml")})


async def test_aclose_closes_http_clients() -> None:
    env = {"TETHER_OPENAI_API_KEY": KEY, "TETHER_ANTHROPIC_API_KEY": OTHER_KEY}
    registry = ProviderRegistry.from_env(env)
    clients = [registry.get(name)._client for name in ("openai", "anthropic")]  # type: ignore[attr-defined]
    assert not any(c.is_closed for c in clients)
    await registry.aclose()
    assert all(c.is_closed for c in clients)


def test_duplicate_provider_names_are_rejected() -> None:
    registry = ProviderRegistry()
    with pytest.raises(ValueError, match="already registered"):
        registry.add(DemoModel())


async def test_resolved_providers_stream(fake: FakeUpstream) -> None:
    env = {
        "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
        "TETHER_OPENAI_API_KEY": KEY,
        "TETHER_OPENAI_MODELS": "gpt-4o-mini",
        "TETHER_ANTHROPIC_BASE_URL": fake.url,
        "TETHER_ANTHROPIC_API_KEY": OTHER_KEY,
        "TETHER_ANTHROPIC_MODELS": "claude-sonnet-4-5",
    }
    async with ProviderRegistry.from_env(env) as registry:
        for name in ("demo", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"):
            provider, model = registry.resolve(name)
            items = await collect(provider, ModelRequest(model, [ChatMessage("user", "hi")]))
            assert text_of(items)
            assert isinstance(items[-1], Usage)
    assert [r.body["model"] for r in fake.requests] == ["gpt-4o-mini", "claude-sonnet-4-5"]
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert fake.requests[1].headers["x-api-key"] == OTHER_KEY

"""The registry's keys: refused with a control character in them, listed for redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.providers.registry import ConfigError, ProviderRegistry

KEY = "sk-proj-Qm7xT2vLk9RzW4nB8cYh3JdF"
UPSTREAM = '[[upstreams]]\nname = "local"\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'


@pytest.mark.parametrize(
    ("env", "toml", "named"),
    [
        ({"TETHER_OPENAI_API_KEY": f"{KEY}\n"}, None, "TETHER_OPENAI_API_KEY"),
        ({"TETHER_ANTHROPIC_API_KEY": f"{KEY}\r"}, None, "TETHER_ANTHROPIC_API_KEY"),
        ({"MY_KEY": f"{KEY}\n"}, 'api_key_env = "MY_KEY"', "(local): MY_KEY"),
        ({}, f'api_key = "{KEY}\\n"', "(local): api_key"),
        (
            {},
            f'headers = {{ "X-Api-Key" = "{KEY}\\t" }}',
            "(local): the value of header 'X-Api-Key'",
        ),
    ],
)
def test_a_key_with_a_control_character_is_a_config_error_naming_where_it_is(
    tmp_path: Path, env: dict[str, str], toml: str | None, named: str
) -> None:
    config = None
    if toml is not None:
        config = tmp_path / "tether.toml"
        config.write_text(UPSTREAM + toml + "\n")
    with pytest.raises(ConfigError) as info:
        ProviderRegistry.from_env(env, config)
    assert f"{named} contains a control character" in str(info.value)
    assert KEY not in str(info.value)


async def test_the_registry_lists_every_key_and_credential_header_it_sends(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text(
        UPSTREAM
        + 'api_key = "local-key-1234"\nheaders = { "X-Api-Key" = "hdr-5678", "X-Title" = "t" }\n'
    )
    env = {"TETHER_ANTHROPIC_API_KEY": KEY}
    async with ProviderRegistry.from_env(env, config) as registry:
        secrets = sorted(s.get() for s in registry.secrets())
    assert secrets == sorted(["local-key-1234", "hdr-5678", KEY])

"""Which attachments a model takes: its upstream kind's formats, or the config file's word."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.providers.registry import ConfigError, ProviderRegistry

CONFIG = """
[[upstreams]]
name = "openai"
base_url = "http://127.0.0.1:9/v1"

[[upstreams]]
name = "claude"
kind = "anthropic"
api_key = "sk-ant-test-0001"

[[upstreams]]
name = "vision"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
attachments = ["image/*"]

[[upstreams]]
name = "textonly"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
attachments = []
"""


async def test_each_kind_takes_what_its_format_carries_unless_the_config_says_otherwise(
    tmp_path: Path,
) -> None:
    (tmp_path / "t.toml").write_text(CONFIG)
    async with ProviderRegistry.from_env({"TETHER_CONFIG": str(tmp_path / "t.toml")}) as reg:
        takes = {name: reg.media_types(reg.get(name)) for name in ("demo", "openai", "claude")}
        vision, textonly = reg.media_types(reg.get("vision")), reg.media_types(reg.get("textonly"))
    pdf_and_images = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")
    assert takes == {
        "demo": pdf_and_images,
        "openai": pdf_and_images,
        "claude": (*pdf_and_images, "text/plain"),
    }
    assert (vision, textonly) == (("image/*",), ())


@pytest.mark.parametrize("value", ['"image/*"', '["IMAGE/PNG"]', '["png"]', "[1]"])
def test_an_attachments_list_that_is_not_media_types_is_refused(tmp_path: Path, value: str) -> None:
    (tmp_path / "t.toml").write_text(
        f'[[upstreams]]\nname = "local"\nkind = "openai"\nbase_url = "http://h/v1"\n'
        f"attachments = {value}\n"
    )
    with pytest.raises(ConfigError, match="'attachments' must be a list of lower-case media types"):
        ProviderRegistry.from_env({"TETHER_CONFIG": str(tmp_path / "t.toml")})

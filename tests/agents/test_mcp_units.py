"""The pure parts of MCP toolsets: the config's tables, wire names, results as outcomes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import mcp_types
import pytest

from tether.agents.llm import WIRE_NAME, WireNames
from tether.agents.mcp import content_text, tool_output
from tether.agents.mcp_config import read_mcp_servers
from tether.providers.base import ChatMessage, ToolCall, ToolCallDelta, ToolCallItem, ToolSpec
from tether.providers.registry import ConfigError

ENV = {"SEARCH_TOKEN": "tok-9f8e7d", "ROOT": "/srv/docs"}


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tether.toml"
    path.write_text(text)
    return path


def test_stdio_and_http_servers_are_read_with_their_references_filled_in(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
[[upstreams]]
name = "local"
kind = "openai"

[[mcp_servers]]
name = "files"
command = "npx"
args = ["-y", "server-filesystem"]
env = { ROOT = "${ROOT}" }

[[mcp_servers]]
name = "search"
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer ${SEARCH_TOKEN}", X-Plain = "plain" }
timeout = 30
""",
    )
    files, search = read_mcp_servers(path, ENV)
    assert (files.name, files.transport, files.command, files.args) == (
        "files", "stdio", "npx", ("-y", "server-filesystem")
    )  # fmt: skip
    assert files.env == {"ROOT": "/srv/docs"}
    assert (search.transport, search.url, search.timeout) == (
        "http", "https://mcp.example.com/mcp", 30.0
    )  # fmt: skip
    assert search.headers == {"Authorization": "Bearer tok-9f8e7d", "X-Plain": "plain"}
    assert set(search.secrets()) == {"tok-9f8e7d", "Bearer tok-9f8e7d"}
    assert "tok-9f8e7d" not in repr(search)


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('name = "a.b"\ncommand = "x"', "'name' must be"),
        ('name = "a"', "give 'command' (stdio) or 'url'"),
        ('name = "a"\ncommand = "x"\nurl = "http://h"', "give 'command' (stdio) or 'url'"),
        ('name = "a"\ncommand = "x"\nheaders = {}', "unknown field(s) headers"),
        ('name = "a"\nurl = "ftp://h"', "'url' must be an http"),
        ('name = "a"\ncommand = "x"\nargs = "-y"', "'args' must be a list"),
        ('name = "a"\ncommand = "x"\ntimeout = 0', "'timeout' must be a positive"),
        ('name = "a"\nurl = "http://h"\nheaders = { A = "${NOT_SET}" }', "NOT_SET is not set"),
        ('name = "a"\nurl = "http://h"\nheaders = { A = 1 }', "'headers' must be a table"),
    ],
)
def test_a_bad_server_table_is_a_config_error_that_names_the_field(
    tmp_path: Path, table: str, says: str
) -> None:
    path = config(tmp_path, f"[[mcp_servers]]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        read_mcp_servers(path, ENV)
    assert says in str(caught.value)


def test_two_servers_may_not_share_a_name_and_a_secret_is_never_in_an_error(
    tmp_path: Path,
) -> None:
    twice = '[[mcp_servers]]\nname = "a"\ncommand = "x"\n' * 2
    with pytest.raises(ConfigError, match="'a' is taken"):
        read_mcp_servers(config(tmp_path, twice), ENV)
    bad = '[[mcp_servers]]\nname = "a"\nurl = "http://h"\nheaders = { A = "${K}" }\n'
    with pytest.raises(ConfigError) as caught:
        read_mcp_servers(config(tmp_path, bad), {"K": "secret\n"})
    assert "K" in str(caught.value) and "secret" not in str(caught.value)


def test_names_that_fit_are_left_alone() -> None:
    names = WireNames(["get_weather", "add"])
    assert not names
    spec = ToolSpec("add")
    assert names.spec(spec) is spec


def test_a_namespaced_name_gets_a_wire_alias_and_calls_get_tethers_name_back() -> None:
    names = WireNames(["calc.add", "get_weather", "files.read/file"])
    offered = [names.spec(ToolSpec(n, "d", {"type": "object"})) for n in
               ("calc.add", "get_weather", "files.read/file")]  # fmt: skip
    assert [s.name for s in offered] == ["calc__add", "get_weather", "files__read_file"]
    assert all(WIRE_NAME.match(s.name) for s in offered)
    assert offered[0].description == "d" and offered[0].parameters == {"type": "object"}

    message = ChatMessage("assistant", "x", [ToolCall("c1", "calc.add", "{}")])
    assert names.message(message).tool_calls == [ToolCall("c1", "calc__add", "{}")]
    assert message.tool_calls[0].name == "calc.add"  # the history itself is untouched

    delta = names.restore(ToolCallDelta("c1", "calc__add", '{"a"'))
    assert delta == ToolCallDelta("c1", "calc.add", '{"a"')
    item = names.restore(ToolCallItem(ToolCall("c1", "files__read_file", "{}")))
    assert isinstance(item, ToolCallItem) and item.call.name == "files.read/file"
    passthrough = ToolCallDelta("c2", "get_weather", "")
    assert names.restore(passthrough) is passthrough


def test_aliases_stay_distinct_and_within_64_characters() -> None:
    long = "server." + "t" * 80
    names = WireNames(["calc.add", "calc__add", "calc-add", long])
    aliases = [names.spec(ToolSpec(n)).name for n in ("calc.add", "calc__add", "calc-add", long)]
    assert aliases[1:3] == ["calc__add", "calc-add"]  # names that fit keep their name
    assert aliases[0] != "calc__add" and aliases[0].startswith("calc__add_")
    assert len(set(aliases)) == 4 and all(WIRE_NAME.match(a) for a in aliases)
    # The same name gets the same alias in every request (the history is resent).
    assert WireNames([long]).spec(ToolSpec(long)).name == aliases[3]


def image(data: bytes, mime: str = "image/png") -> mcp_types.ImageContent:
    return mcp_types.ImageContent(data=base64.b64encode(data).decode(), mime_type=mime)


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        ({"content": [mcp_types.TextContent(text="42")]}, "42"),
        (
            {"content": [mcp_types.TextContent(text="42")], "structured_content": {"n": 42}},
            {"n": 42},
        ),
        (
            {"content": [mcp_types.TextContent(text="A chart:"), image(b"\x89PNG" * 10)]},
            "A chart:\n[image: image/png, 40 bytes]",
        ),
        (
            {
                "content": [
                    mcp_types.ResourceLink(uri="file:///a.txt", name="a"),
                    mcp_types.EmbeddedResource(
                        resource=mcp_types.TextResourceContents(uri="file:///b", text="bee")
                    ),
                ]
            },
            "[resource: file:///a.txt]\nbee",
        ),
        ({"content": []}, ""),
    ],
    ids=["text", "structured", "image", "resources", "empty"],
)
def test_a_tools_result_becomes_the_calls_outcome(result: dict[str, Any], outcome: Any) -> None:
    assert tool_output(mcp_types.CallToolResult(**result)) == outcome


def test_audio_is_described_by_its_type_and_size() -> None:
    audio = mcp_types.AudioContent(data=base64.b64encode(b"x" * 7).decode(), mime_type="audio/wav")
    assert content_text([audio]) == "[audio: audio/wav, 7 bytes]"

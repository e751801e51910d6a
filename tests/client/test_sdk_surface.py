"""The SDK as a newcomer meets it: ``from tether import Tether``, readable
signatures, a tool call's arguments at its start, and errors that name what the
caller gave (a session id, not a server route)."""

from __future__ import annotations

import inspect
import pydoc
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

import tether
import tether.client
from client.conftest import KEY, Server
from tether.client import (
    AsyncRun,
    AsyncStreamClient,
    AsyncTether,
    NotFound,
    PartEnd,
    PartStart,
    Run,
    SessionNotFound,
    StreamClient,
    Tether,
)

#: What stays in tether.client only: the low-level Durable Streams client, and
#: the SDK's ToolCall (``tether.ToolCall`` is the agents' one).
CLIENT_ONLY = {"AsyncProducer", "AsyncStreamClient", "Producer", "StreamClient", "ToolCall"}


@pytest.fixture
def client(server: Server) -> Iterator[Tether]:
    with Tether(server.url, api_key=KEY) as c:
        yield c


@pytest.fixture
async def aclient(server: Server) -> AsyncIterator[AsyncTether]:
    async with AsyncTether(server.url, api_key=KEY) as c:
        yield c


def test_the_sdk_is_importable_from_the_top_level_without_slowing_import_tether() -> None:
    probe = (
        "import sys, tether\n"
        "print('tether.client' in sys.modules)\n"
        "from tether import Tether, AsyncTether\n"
        "print(Tether.__module__, AsyncTether.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "False"  # the server's `import tether` does not load the SDK
    assert out[1] == "tether.client._sync tether.client._async"
    for name in set(tether.client.__all__) - CLIENT_ONLY:
        assert name in tether.__all__ and getattr(tether, name) is getattr(tether.client, name)
    assert tether.ToolCall is not tether.client.ToolCall
    assert "Tether" in dir(tether)
    with pytest.raises(AttributeError, match="no attribute 'Tehter'"):
        tether.Tehter  # noqa: B018


@pytest.mark.parametrize(
    "fn",
    [
        Run.stream, AsyncRun.stream, StreamClient.create, StreamClient.append,
        AsyncStreamClient.append,
    ],
)  # fmt: skip
def test_help_shows_defaults_by_name(fn: object) -> None:
    shown = pydoc.render_doc(fn, renderer=pydoc.plaintext)
    assert " at 0x" not in shown and "object object" not in shown
    signature = str(inspect.signature(fn))  # type: ignore[arg-type]
    assert "= DEFAULT" in signature or "= UNSET" in signature


def test_a_placed_tool_calls_part_start_has_its_name_and_arguments(client: Tether) -> None:
    s = client.sessions.create(agent="tools")
    events = list(client.send(s.id, "add").stream(tools={"add": lambda a, b: a + b}))
    start = next(e for e in events if isinstance(e, PartStart) and e.kind == "tool-call")
    end = next(e for e in events if isinstance(e, PartEnd) and e.part_id == start.part_id)
    assert (start.tool_name, start.arguments) == ("add", {"a": 2, "b": 3})
    assert end.value == {"a": 2, "b": 3}


def test_a_missing_session_is_named_not_its_stream(client: Tether) -> None:
    said = "session 'ses_nope' does not exist (or this key cannot see it)"
    calls = [
        lambda: client.send("ses_nope", "hi"),
        lambda: client.sessions.get("ses_nope"),
        lambda: client.sessions.update("ses_nope", title="t"),
        lambda: client.sessions.delete("ses_nope"),
        lambda: client.cancel("ses_nope"),
        lambda: client.tool_result("ses_nope", "call_1", output=1),
        lambda: next(iter(client.events("ses_nope"))),
        lambda: client.run("ses_nope", "run_1").text(),
    ]
    for call in calls:
        with pytest.raises(SessionNotFound) as err:
            call()
        assert str(err.value) == said
        assert isinstance(err.value, NotFound) and err.value.status == 404
        assert err.value.session_id == "ses_nope" and "/v1/" not in repr(err.value)


async def test_a_missing_session_is_named_by_the_async_client(aclient: AsyncTether) -> None:
    with pytest.raises(SessionNotFound, match=r"^session 'ses_gone' does not exist \(or"):
        await aclient.send("ses_gone", "hi")
    s = await aclient.sessions.create(agent="count")
    await aclient.sessions.delete(s.id)
    with pytest.raises(SessionNotFound) as err:
        await aclient.send(s.id, "hi")
    assert err.value.session_id == s.id

"""No credential in any line of ``tether serve``'s log, at any level, in any form.

A real ``tether serve`` runs against a fake upstream that speaks OpenAI's
wire format, so the provider key is really sent (and echoed back); clients
open WebSockets with keys in headers and read tokens in URLs. The whole log
is then searched for every secret verbatim, masked, in base64 (alone and as
``user:secret``, both alphabets) and percent-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers.server import ServerError, TetherServer
from providers.fake_upstreams import FakeUpstream

PROVIDER_KEY = "sk-proj-Qm7xT2vLk9RzW4nB8cYh3JdF"
TETHER_KEY = "tk/live+9fK2mQ8xW3vN7pL4zR6t=="
TETHER_SECRET = "hmac+secret/5Yt8Wq2Lr9Xn4Vb7==Qe3Tk"
WRONG_KEY = "tk-wrong-4d9a7c2e8b1f6035"


def forms(secret: str) -> dict[str, str]:
    """What a leak of ``secret`` can look like in a log line."""
    basic = f"user:{secret}".encode()
    raw = secret.encode()
    return {
        "verbatim": secret,
        "masked": f"{secret[:5]}****{secret[-4:]}",
        "masked with dots": f"{secret[:3]}...{secret[-4:]}",
        "percent-encoded": quote(secret, safe=""),
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "url-safe base64": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "basic auth": base64.b64encode(basic).decode().rstrip("="),
        "url-safe basic auth": base64.urlsafe_b64encode(basic).decode().rstrip("="),
    }


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """``name: form`` for every form of every secret found in ``text``."""
    return [
        f"{name}: {how}"
        for name, secret in secrets.items()
        for how, form in forms(secret).items()
        if form in text
    ]


def try_websocket(url: str, headers: dict[str, str] | None = None) -> None:
    """Open and close a WebSocket; a refused handshake is fine (it is logged all the same)."""
    try:
        with connect(url, additional_headers=headers, open_timeout=10):
            pass
    except InvalidStatus:
        pass


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> TetherServer:
    return TetherServer(
        tmp_path / "data",
        log_path=tmp_path / "server.log",
        env={**os.environ, **env},
        extra_args=args,
    )


async def test_no_credential_reaches_the_debug_log_in_any_form(tmp_path: Path) -> None:
    """At debug, websockets prints every handshake header, httpcore every upstream
    exchange, and the upstream's error may quote the key it was sent: all redacted."""
    async with FakeUpstream() as fake:
        env = {
            "TETHER_OPENAI_BASE_URL": fake.openai_base_url,
            "TETHER_OPENAI_API_KEY": PROVIDER_KEY,
            "TETHER_OPENAI_MODELS": "gpt-4o-mini",
            "TETHER_API_KEYS": f"tk-other-0c4e8a2f6b1d9375,{TETHER_KEY}",
            "TETHER_SECRET": TETHER_SECRET,
            # A proxy that applies to no upstream here: the providers then use httpx's
            # own pool, so httpcore's debug lines are in the log too.
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1",
        }
        server = serve(tmp_path, env, "--log-level", "debug")
        await asyncio.to_thread(server.start)
        try:
            sid, token, responses = await exercise(server, fake)
        finally:
            await asyncio.to_thread(server.stop)
    log = server.output()

    secrets = {"provider key": PROVIDER_KEY, "tether key": TETHER_KEY}
    secrets |= {"TETHER_SECRET": TETHER_SECRET, "wrong key": WRONG_KEY, "read token": token}
    assert leaks(log, secrets) == []
    assert leaks(responses, secrets) == []
    # What was redacted was logged: the handshakes, the upstream's exchanges, its error.
    assert "x-client-note: " in log
    assert "upstream answered HTTP 401" in log
    assert "Incorrect API key provided: *** (sent as ***, ***)" in log
    assert "httpcore.http11" in log and "x-request-echo" in log
    assert f"/v1/sessions/{sid}/ws?offset=-1&token=***" in log


async def exercise(server: TetherServer, fake: FakeUpstream) -> tuple[str, str, str]:
    """Does what logs credentials; returns the session id, its read token, what clients saw."""
    headers = {"Authorization": f"Bearer {TETHER_KEY}"}
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        token = (await c.post(f"/v1/sessions/{sid}/read-token")).json()["token"]
        ok = await c.post("/v1/chat/completions", json=body)
        assert ok.status_code == 200, ok.text
        leak = forms(PROVIDER_KEY)
        fake.fail_next(
            1,
            status=401,
            message=f"Incorrect API key provided: {leak['masked']} "
            f"(sent as {leak['basic auth']}, {leak['percent-encoded']})",
            headers={"x-request-echo": f"Bearer {PROVIDER_KEY}"},
        )
        refused = await c.post("/v1/chat/completions", json=body)
        assert refused.status_code >= 400

    ws = f"{server.base_url.replace('http://', 'ws://')}/v1/sessions/{sid}/ws?offset=-1"
    tether_key = forms(TETHER_KEY)
    note = " ".join(tether_key[how] for how in ("masked", "base64", "percent-encoded"))
    basic = base64.b64encode(f"me:{TETHER_KEY}".encode()).decode()

    def websockets() -> None:
        try_websocket(ws, {**headers, "X-Client-Note": note})
        try_websocket(f"{ws}&token={token}")
        try_websocket(f"{ws}&key={tether_key['percent-encoded']}&token={token}")
        try_websocket(ws, {"Authorization": f"Bearer {WRONG_KEY}"})
        try_websocket(ws, {"Authorization": f"Basic {basic}"})

    await asyncio.to_thread(websockets)
    return sid, token, ok.text + refused.text


def test_a_read_token_in_a_websocket_url_is_redacted_at_the_default_level(
    tmp_path: Path,
) -> None:
    """uvicorn logs each WebSocket's path with its query at info: ``?token=`` included."""
    with serve(tmp_path, {"TETHER_API_KEYS": TETHER_KEY}) as server:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {TETHER_KEY}"}
        ) as c:
            sid = c.post("/v1/sessions", json={}).json()["id"]
            token = c.post(f"/v1/sessions/{sid}/read-token").json()["token"]
        ws = server.base_url.replace("http://", "ws://")
        try_websocket(f"{ws}/v1/sessions/{sid}/ws?offset=-1&token={token}")
    log = server.output()
    assert token not in log
    assert f'"WebSocket /v1/sessions/{sid}/ws?offset=-1&token=***" [accepted]' in log


@pytest.fixture
def toml_upstream(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "tether.toml"
    path.write_text(
        '[[upstreams]]\nname = "local"\nkind = "openai"\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "LOCAL_LLM_KEY"\n'
    )
    yield path


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TETHER_OPENAI_API_KEY", f"{PROVIDER_KEY}\n"),
        ("TETHER_ANTHROPIC_API_KEY", f"{PROVIDER_KEY}\r\n"),
        ("TETHER_API_KEYS", f"tk-other-0c4e8a2f6b1d9375,{TETHER_KEY}\n"),
        ("TETHER_SECRET", f"{TETHER_SECRET}\n"),
        ("LOCAL_LLM_KEY", f"{PROVIDER_KEY}\n"),
    ],
)
def test_a_key_with_a_control_character_stops_serve_naming_the_variable_not_the_key(
    tmp_path: Path, toml_upstream: Path, variable: str, value: str
) -> None:
    """A trailing newline (a key file read whole) is refused, not stripped: the key sent
    would differ from the one configured, and a header built from it is malformed."""
    env = {variable: value}
    if variable == "LOCAL_LLM_KEY":
        env["TETHER_CONFIG"] = str(toml_upstream)
    server = serve(tmp_path, env)
    try:
        with pytest.raises(ServerError, match="exited with code"):
            server.start()
    finally:
        server.stop()  # were it to start after all, the test must not leave it running
    assert server.process is not None and server.process.returncode != 0
    output = server.output()
    assert f"{variable} contains a control character" in output
    assert value.strip().split(",")[-1] not in output

"""Images and files in user messages, end to end: a real ``tether serve``, real upstreams' formats.

The upstream is the fake OpenAI + Anthropic server; tether runs as a child
process configured with it through a TETHER_CONFIG file, with API keys on and
a small inline limit, so that one test's attachment goes to a stream of its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.server import TetherServer
from providers.fake_upstreams import FakeUpstream
from redis_server import running_redis

KEY_A, KEY_B = "key-attach-a", "key-attach-b"
INLINE_MAX = 2048
#: A real 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
#: Larger than the inline limit: it gets a stream of its own.
BIG_PDF = PDF + b"%" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_part(data: bytes = PNG, name: str = "dot.png") -> dict[str, Any]:
    return {"type": "image", "media_type": "image/png", "data": b64(data), "name": name}


def pdf_part(data: bytes = PDF, name: str = "report.pdf") -> dict[str, Any]:
    return {"type": "file", "data": f"data:application/pdf;base64,{b64(data)}", "name": name}


@pytest.fixture
async def setup(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[FakeUpstream, TetherServer]]:
    """The fake upstream and tether on SQLite, or on Redis (``indirect`` param ``"redis"``)."""
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeUpstream())
        store = "sqlite"
        if getattr(request, "param", "sqlite") == "redis":
            redis = stack.enter_context(running_redis(tmp_path / "redis"))
            store = f"{redis.url()}?prefix=attach:"
        config = tmp_path / "tether.toml"
        config.write_text(
            f"""
[[upstreams]]
name = "openai"
base_url = "{fake.openai_base_url}"
api_key = "sk-openai-attach-0001"
models = ["gpt-4o-mini"]

[[upstreams]]
name = "anthropic"
base_url = "{fake.url}"
api_key = "sk-ant-attach-0002"
models = ["claude-test"]

[[upstreams]]
name = "textonly"
kind = "openai"
base_url = "{fake.openai_base_url}"
models = ["small"]
attachments = []
"""
        )
        env = {
            **os.environ,
            "TETHER_CONFIG": str(config),
            "TETHER_API_KEYS": f"{KEY_A},{KEY_B}",
            "TETHER_SECRET": "attach-secret-0123456789abcdef0123456789",
        }
        async with TetherServer(
            tmp_path / "data",
            store=store,
            log_path=tmp_path / "server.log",
            env=env,
            extra_args=["--attachment-inline-max", str(INLINE_MAX)],
        ) as server:
            yield fake, server


def client(server: TetherServer, key: str = KEY_A) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.AsyncClient(base_url=server.base_url, timeout=30, headers=headers)


async def run_events(c: httpx.AsyncClient, sid: str, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with c.stream("GET", f"/v1/sessions/{sid}/events", params={"offset": "-1"}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                out.append(ev)
                if ev["type"] == "run-end" and ev["run_id"] == run_id:
                    return out
    raise AssertionError("stream ended before the run did")


async def send(c: httpx.AsyncClient, model: str, content: list[dict[str, Any]]) -> tuple[str, str]:
    sid = (await c.post("/v1/sessions", json={"model": model})).json()["id"]
    r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": content})
    assert r.status_code == 202, r.text
    return sid, r.json()["run_id"]


async def test_an_image_and_a_pdf_reach_an_openai_upstream_as_image_url_and_file_parts(
    setup,
) -> None:
    fake, server = setup
    content = [image_part(), pdf_part(), {"type": "text", "text": "What is in these?"}]
    async with client(server) as c:
        sid, run_id = await send(c, "openai/gpt-4o-mini", content)
        evs = await run_events(c, sid, run_id)
        snapshot = (await c.get(f"/v1/sessions/{sid}")).json()
        user = snapshot["messages"][0]
        image = await c.get(f"/v1/sessions/{sid}/attachments/{user['parts'][0]['id']}")
        pdf = await c.get(f"/v1/sessions/{sid}/attachments/{user['parts'][1]['id']}")

    assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["complete"]
    sent = fake.requests[-1].body["messages"][-1]
    assert sent == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}},
            {
                "type": "file",
                "file": {
                    "file_data": f"data:application/pdf;base64,{b64(PDF)}",
                    "filename": "report.pdf",
                },
            },
            {"type": "text", "text": "What is in these?"},
        ],
    }
    assert [
        (p["kind"], p.get("media_type"), p.get("name"), p.get("size")) for p in user["parts"]
    ] == [
        ("image", "image/png", "dot.png", len(PNG)),
        ("file", "application/pdf", "report.pdf", len(PDF)),
        ("text", None, None, None),
    ]
    assert "data" not in json.dumps(user["parts"][:2])  # the snapshot says what, not the bytes
    assert (image.status_code, image.content, image.headers["content-type"]) == (
        200,
        PNG,
        "image/png",
    )
    assert image.headers["content-disposition"].startswith("inline")
    assert (pdf.status_code, pdf.content) == (200, PDF)
    assert pdf.headers["content-disposition"].startswith("attachment")
    assert pdf.headers["x-content-type-options"] == "nosniff"


async def test_an_image_and_a_pdf_reach_an_anthropic_upstream_as_image_and_document_blocks(
    setup,
) -> None:
    fake, server = setup
    content = [image_part(), pdf_part(), {"type": "text", "text": "Describe them."}]
    async with client(server) as c:
        sid, run_id = await send(c, "anthropic/claude-test", content)
        evs = await run_events(c, sid, run_id)

    assert [e["reason"] for e in evs if e["type"] == "run-end"] == ["complete"]
    assert fake.requests[-1].path == "/v1/messages"
    assert fake.requests[-1].body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)},
                },
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
                    "title": "report.pdf",
                },
                {"type": "text", "text": "Describe them."},
            ],
        }
    ]


@pytest.mark.parametrize("setup", ["sqlite", "redis"], indirect=True)
async def test_a_large_attachment_gets_its_own_stream_and_still_reaches_the_upstream_and_readers(
    setup,
) -> None:
    fake, server = setup
    assert len(BIG_PDF) > INLINE_MAX
    async with client(server) as c:
        sid, run_id = await send(c, "openai/gpt-4o-mini", [pdf_part(BIG_PDF, "big.pdf")])
        evs = await run_events(c, sid, run_id)
        part_id = (await c.get(f"/v1/sessions/{sid}")).json()["messages"][0]["parts"][0]["id"]
        token = (await c.post(f"/v1/sessions/{sid}/read-token")).json()["token"]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anonymous:
        by_token = await anonymous.get(
            f"/v1/sessions/{sid}/attachments/{part_id}", params={"token": token}
        )

    stored = next(e for e in evs if e["type"] == "user-message")["parts"][0]
    assert stored["stream"].startswith(f"sessions/{sid}/attachments/")
    assert "data" not in stored and stored["size"] == len(BIG_PDF)
    file_data = fake.requests[-1].body["messages"][-1]["content"][0]["file"]["file_data"]
    assert file_data == f"data:application/pdf;base64,{b64(BIG_PDF)}"
    assert (by_token.status_code, by_token.content) == (200, BIG_PDF)


async def test_an_attachment_the_model_cannot_take_is_refused_before_anything_is_written(
    setup,
) -> None:
    fake, server = setup
    text_file = {"type": "file", "media_type": "text/plain", "data": b64(b"notes"), "name": "a.txt"}
    async with client(server) as c:
        refused = []
        for model, part in (("openai/gpt-4o-mini", text_file), ("textonly/small", image_part())):
            sid = (await c.post("/v1/sessions", json={"model": model})).json()["id"]
            before = (await c.get(f"/v1/sessions/{sid}")).json()
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"content": [part]})
            after = (await c.get(f"/v1/sessions/{sid}")).json()
            refused.append((r.status_code, r.json()["error"]["code"]))
            assert after["offset"] == before["offset"] and after["messages"] == []
        bad = await c.post(
            f"/v1/sessions/{sid}/messages",
            json={"content": [{"type": "image", "media_type": "image/png", "data": "not base64!"}]},
        )
    assert refused == [(415, "unsupported_attachment")] * 2
    assert bad.status_code == 400 and "base64" in bad.json()["error"]["message"]
    assert fake.requests == []


async def test_a_key_cannot_read_another_keys_attachment(setup) -> None:
    _, server = setup
    async with client(server) as a:
        sid, run_id = await send(a, "openai/gpt-4o-mini", [image_part()])
        await run_events(a, sid, run_id)
        part_id = (await a.get(f"/v1/sessions/{sid}")).json()["messages"][0]["parts"][0]["id"]
        other, _ = await send(a, "openai/gpt-4o-mini", [{"type": "text", "text": "hi"}])
        other_token = (await a.post(f"/v1/sessions/{other}/read-token")).json()["token"]
        own = await a.get(f"/v1/sessions/{sid}/attachments/{part_id}")
    async with client(server, KEY_B) as b:
        by_b = await b.get(f"/v1/sessions/{sid}/attachments/{part_id}")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anonymous:
        by_other_token = await anonymous.get(
            f"/v1/sessions/{sid}/attachments/{part_id}", params={"token": other_token}
        )
    assert own.status_code == 200
    assert by_b.status_code == 404 and PNG not in by_b.content
    assert by_other_token.status_code == 404


async def test_the_gateways_image_url_and_file_parts_reach_the_upstream_in_its_format(
    setup,
) -> None:
    """Through the official ``openai`` package: data URLs, an http(s) image URL passed as is."""
    from openai import AsyncOpenAI

    fake, server = setup
    png_url = f"data:image/png;base64,{b64(PNG)}"
    pdf_data = f"data:application/pdf;base64,{b64(PDF)}"
    content = [
        {"type": "text", "text": "Compare."},
        {"type": "image_url", "image_url": {"url": png_url}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"file_data": pdf_data, "filename": "report.pdf"}},
    ]
    sdk = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=KEY_A, max_retries=0)
    async with sdk:
        for model in ("openai/gpt-4o-mini", "anthropic/claude-test"):
            answer = await sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": content}]
            )
            assert answer.choices[0].message.content == "Hello from the fake upstream."

    openai_body, anthropic_body = (r.body for r in fake.requests)
    assert openai_body["messages"][-1]["content"] == [
        {"type": "image_url", "image_url": {"url": png_url}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"file_data": pdf_data, "filename": "report.pdf"}},
        {"type": "text", "text": "Compare."},
    ]
    assert anthropic_body["messages"][-1]["content"] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
            "title": "report.pdf",
        },
        {"type": "text", "text": "Compare."},
    ]


async def test_the_gateway_refuses_an_attachment_the_model_cannot_take(setup) -> None:
    from openai import AsyncOpenAI, BadRequestError

    fake, server = setup
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}}
    sdk = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=KEY_A, max_retries=0)
    async with sdk, client(server) as c:
        before = (await c.get("/v1/sessions")).json()["sessions"]
        with pytest.raises(BadRequestError) as refused:
            await sdk.chat.completions.create(
                model="textonly/small", messages=[{"role": "user", "content": [image]}]
            )
        after = (await c.get("/v1/sessions")).json()["sessions"]
    assert refused.value.code == "unsupported_content"
    assert "textonly/small cannot take image/png" in refused.value.message
    assert before == after and fake.requests == []


async def test_the_ai_sdk_routes_file_part_reaches_the_upstream_and_the_snapshot(setup) -> None:
    """The body DefaultChatTransport posts for a message with a file part (a data URL)."""
    fake, server = setup
    message = {
        "id": "u1",
        "role": "user",
        "parts": [
            {"type": "file", "mediaType": "image/png", "filename": "dot.png",
             "url": f"data:image/png;base64,{b64(PNG)}"},
            {"type": "text", "text": "What is this?"},
        ],
    }  # fmt: skip
    body = {"id": "chat-attach", "messages": [message], "trigger": "submit-message"}
    async with client(server) as c:
        body["model"] = "anthropic/claude-test"
        async with c.stream("POST", "/v1/aisdk/chat", json=body) as r:
            assert r.status_code == 200
            sid = r.headers["x-tether-session-id"]
            chunks = [line async for line in r.aiter_lines() if line.startswith("data: ")]
        assert chunks[-1] == "data: [DONE]"
        user = (await c.get(f"/v1/sessions/{sid}")).json()["messages"][0]
        image = await c.get(f"/v1/sessions/{sid}/attachments/{user['parts'][0]['id']}")
    assert fake.requests[-1].body["messages"][-1]["content"] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)},
        },
        {"type": "text", "text": "What is this?"},
    ]
    assert user["parts"][0] | {"id": ""} == {
        "id": "", "kind": "image", "done": True, "media_type": "image/png", "name": "dot.png",
        "size": len(PNG),
    }  # fmt: skip
    assert image.content == PNG


async def test_the_real_ai_sdk_sends_a_file_part_that_reaches_the_upstream(setup) -> None:
    """``tests/aisdk/attach.mjs``: the ``ai`` package's DefaultChatTransport, a data-URL image."""
    fake, server = setup
    node = shutil.which("node")
    script = Path(__file__).parent.parent / "aisdk" / "attach.mjs"
    if node is None or not (script.parent / "node_modules" / "ai").is_dir():
        pytest.skip("needs Node.js and the `ai` package (make test installs tests/aisdk)")
    proc = await asyncio.create_subprocess_exec(
        node, str(script), server.base_url, KEY_A, "openai/gpt-4o-mini", b64(PNG),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {"text": "Hello from the fake upstream."}
    assert fake.requests[-1].body["messages"][-1]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}},
        {"type": "text", "text": "What is in this image?"},
    ]


async def test_deleting_a_session_deletes_its_attachment_streams(setup) -> None:
    _, server = setup
    async with client(server) as c:
        sid, run_id = await send(c, "openai/gpt-4o-mini", [pdf_part(BIG_PDF, "big.pdf")])
        evs = await run_events(c, sid, run_id)
        stored = next(e for e in evs if e["type"] == "user-message")["parts"][0]["stream"]
        before = live_streams(server, stored)
        assert (await c.delete(f"/v1/sessions/{sid}")).status_code == 204
    assert before == [stored] and live_streams(server, stored) == []


def live_streams(server: TetherServer, path: str) -> list[str]:
    """The streams at ``path`` in the server's SQLite file that are not deleted."""
    with contextlib.closing(sqlite3.connect(server.data_dir / "tether.db")) as db:
        rows = db.execute(
            "SELECT path FROM streams WHERE path = ? AND soft_deleted = 0", (path,)
        ).fetchall()
    return [r[0] for r in rows]

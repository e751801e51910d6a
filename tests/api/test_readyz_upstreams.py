"""``/readyz`` shows each configured upstream's last known state, and stays ready when one fails.

An upstream is shared by every replica: taking replicas out of the load
balancer for it would not route around it, only turn one failing upstream
into a whole outage. So its state is shown (and exported as
``tether_upstream_up``), never counted against readiness.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from helpers.server import TetherServer
from helpers.session_events import KEY, server_env
from providers.fake_upstreams import FakeUpstream

COMPLETION = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_an_upstream_error_shows_in_readyz_which_stays_ready(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        server = TetherServer(tmp_path / "data", log_path=tmp_path / "s.log", env=server_env(fake))
        with server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
                fresh = (await c.get("/readyz")).json()
                assert fresh["status"] == "ready"
                assert fresh["upstreams"] == {
                    "anthropic": {"state": "unknown"},
                    "openai": {"state": "unknown"},
                }

                fake.fail_next(1, status=401)  # not retried: the one request fails
                assert (await c.post("/v1/chat/completions", json=COMPLETION)).status_code >= 400
                down = await c.get("/readyz")
                assert down.status_code == 200 and down.json()["status"] == "ready"
                openai = down.json()["upstreams"]["openai"]
                assert (openai["state"], openai["status"]) == ("error", 401)
                assert openai["at"] > 0
                assert down.json()["upstreams"]["anthropic"] == {"state": "unknown"}
                assert fake.url not in down.text and KEY not in down.text
                assert 'tether_upstream_up{upstream="openai"} 0.0' in (await c.get("/metrics")).text

                assert (await c.post("/v1/chat/completions", json=COMPLETION)).status_code == 200
                up = (await c.get("/readyz")).json()["upstreams"]["openai"]
                assert (up["state"], up["status"]) == ("ok", 200)
                assert 'tether_upstream_up{upstream="openai"} 1.0' in (await c.get("/metrics")).text

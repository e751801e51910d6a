"""The config file's ACP agents as this server serves them: one supervised process each.

The app's lifespan starts them (in the background: an agent that will not
start makes its runs fail, not the server) and closes them on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from tether.agents.acp.agent import ACPAgent
from tether.agents.acp.client import ACPClient
from tether.agents.acp.config import ACPAgentConfig
from tether.agents.acp.supervisor import Supervisor
from tether.agents.attachments import ReadStream
from tether.store.base import Store


class ACPAgents:
    """Every ``[[agents]]`` entry: its supervisor and its ``Agent`` callable, by name."""

    def __init__(
        self,
        configs: Sequence[ACPAgentConfig],
        store: Store,
        data_dir: Path,
        read_attachment: ReadStream,
    ) -> None:
        """``read_attachment``: the bytes of an attachment kept in a stream of its own."""
        self.agents: dict[str, ACPAgent] = {}
        for config in configs:
            client = ACPClient()
            supervisor = Supervisor(config, lambda client=client: client)  # type: ignore[misc]
            self.agents[config.name] = ACPAgent(
                supervisor, client, store, data_dir, read_attachment
            )

    def start(self) -> None:
        for agent in self.agents.values():
            agent.supervisor.start()

    def states(self) -> dict[str, dict[str, object]]:
        """Each agent's supervisor state, for /readyz."""
        return {name: agent.supervisor.public() for name, agent in self.agents.items()}

    async def aclose(self) -> None:
        """Terminate every process (SIGTERM, then SIGKILL after a grace) and reap it."""
        await asyncio.gather(*(a.supervisor.aclose() for a in self.agents.values()))
        await asyncio.gather(*(a.aclose() for a in self.agents.values()))

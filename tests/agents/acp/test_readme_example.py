"""The README's offline ACP example, as written: its config served from the repository's
root with the venv's ``python`` first on PATH, and its SDK snippet run against it.

The agent is ``examples/acp_notes_agent.py``: its notes go through tether's
``fs/write_text_file`` and come back through ``fs/read_text_file``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers.server import TetherServer

ROOT = Path(__file__).resolve().parents[3]
AGENT = "examples/acp_notes_agent.py"


def readme_example() -> tuple[str, str]:
    """The ACP section's config block that runs the example agent, and the Python after it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### ACP agents", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)[^\n]*\n(.*?)```", section, re.S)
    index = next(i for i, (lang, body) in enumerate(blocks) if lang == "toml" and AGENT in body)
    code = next(body for lang, body in blocks[index:] if lang == "python")
    return blocks[index][1], code


async def test_the_readme_acp_example_runs_as_written(tmp_path: Path) -> None:
    config, code = readme_example()
    (tmp_path / "tether.toml").write_text(config)
    venv_first = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": venv_first, "TETHER_CONFIG": str(tmp_path / "tether.toml")}
    server = TetherServer(tmp_path / "data", env=env, cwd=ROOT)
    await asyncio.to_thread(server.start)
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", code],
            env={**env, "TETHER_URL": server.base_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        await asyncio.to_thread(server.stop)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "- buy milk\n"
    notes = list((tmp_path / "data" / "workspaces" / "notes").glob("*/notes.md"))
    assert [p.read_text() for p in notes] == ["- buy milk\n"]  # written through fs/*

"""Shared bits of the web UI tests: where artifacts go, how a server finds web.agents."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: Screenshots land here (the UI screenshot, and one per failed test); CI keeps it.
ARTIFACTS = Path(os.environ.get("TETHER_ARTIFACTS", ROOT / "artifacts"))


def agents_env() -> dict[str, str]:
    """The environment for a server that can import ``web.agents`` (this folder)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    env.pop("TETHER_API_KEYS", None)
    return env

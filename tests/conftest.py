"""Shared fixtures: a fresh data dir, a free port, and a factory for real servers.

pytest puts this directory on sys.path (rootdir conftest, no __init__.py), which is
what makes ``import helpers`` work from any test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.server import ServerFactory, find_free_port


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory per test, so no test sees another's log."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port that was free when the test started."""
    return find_free_port()


@pytest.fixture
def tether_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory for ``tether serve`` processes; all are stopped after the test.

    Call it as ``tether_server()`` for a started sqlite server in ``tmp_path/data``,
    or ``tether_server(data_dir, store="memory", start=False)`` for more control.
    """
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()

"""Schemathesis against /openapi.json of a real server, with and without a key.

Every operation of the document gets generated valid and invalid requests (a
fixed seed and a bounded number of examples, so a run is repeatable and
short). Two checks must hold for every answer: no 5xx, and the status is one
the document lists for that operation.

``GET /v1/sessions/{id}/events`` is left out: it is an SSE stream that only
ends when the client goes (60 s), which a request timeout would report as a
failure; tests/api/test_sessions_e2e.py covers it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.server import TetherServer

KEY = "tk-schemathesis-0b9e"
SEED = "16"
EXAMPLES = "20"


def _schemathesis() -> str:
    found = Path(sys.executable).parent / "schemathesis"
    if found.is_file():
        return str(found)
    path = shutil.which("schemathesis")
    if path is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    return path


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "key"])
def test_no_operation_answers_5xx_or_a_status_it_does_not_document(
    tmp_path: Path, keyed: bool
) -> None:
    env = {**os.environ, "TETHER_API_KEYS": KEY} if keyed else None
    with TetherServer(tmp_path / "data", log_path=tmp_path / "server.log", env=env) as srv:
        command = [
            _schemathesis(), "run", f"{srv.base_url}/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance",
            "--seed", SEED, "--max-examples", EXAMPLES,
            "--workers", "1", "--request-timeout", "10",
            "--exclude-path-regex", "/events$",
            "--suppress-health-check", "all",
        ]  # fmt: skip
        if keyed:
            command += ["--header", f"Authorization: Bearer {KEY}"]
        run = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
        )
        log = srv.output()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested: " in run.stdout and " passed" in run.stdout, report
    assert "Traceback" not in log, log[-4000:]

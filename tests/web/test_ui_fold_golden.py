"""The web UI's fold (api/web/fold.mjs) reproduces the golden fixtures, under Node.

tests/web/fold_golden.mjs folds each fixture's events, and seeds a fold from
each fixture's snapshot as the page does on load; both must read back as the
snapshot the server recorded. No browser: the fold module is plain JavaScript.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("fold_golden.mjs")
FIXTURES = [
    *(Path(__file__).parents[1] / "fixtures" / "folds").glob("*.json"),
    *(Path(__file__).parents[1] / "fixtures" / "folds-by-hand").glob("*.json"),
]


def test_the_web_fold_reproduces_every_fixture() -> None:
    node = shutil.which("node")
    if node is None:
        reason = "the web fold test needs Node.js: `node` not found on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)
    proc = subprocess.run(
        [node, str(SCRIPT)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    checked = [line for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert len(checked) == 2 * len(FIXTURES) > 0, proc.stdout

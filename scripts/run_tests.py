"""`make test`'s runner: the suite as two pytest processes at once, over disjoint folders.

Most tests spend their time waiting on real servers, browsers and subprocesses,
so two halves on a 2-core machine take far less wall time than one after the
other. Each half's output goes to a log that is printed when it ends; the run
fails if either half fails (pytest's exit 5, nothing collected, included).
Arguments, when given, run one plain pytest instead (`make test ARGS=tests/store`).

The browser tests (tests/web) run last in their half: their session-wide
Playwright browser leaves the process unable to run asyncio tests after it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Roughly equal halves by wall time (measured with --durations; tests/web last in its half).
HALVES = (
    [
        "tests/api", "tests/cli", "tests/docs", "tests/observability", "tests/workers",
        "tests/web",
    ],
    [
        "tests/adapters", "tests/agents", "tests/benchmarks", "tests/client", "tests/providers",
        "tests/runtime", "tests/sessions", "tests/store", "tests/streams", "tests/subscriptions",
    ],
)  # fmt: skip


def _check_halves() -> None:
    """Every test folder is in exactly one half, so nothing is silently left out."""
    folders = {
        f"tests/{p.name}"
        for p in (ROOT / "tests").iterdir()
        if p.is_dir() and any(p.rglob("test_*.py"))
    }
    listed = [f for half in HALVES for f in half]
    missing, twice = folders - set(listed), {f for f in listed if listed.count(f) > 1}
    if missing or twice:
        sys.exit(f"scripts/run_tests.py: folders missing from HALVES: {sorted(missing)}; "
                 f"listed twice: {sorted(twice)}")  # fmt: skip


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", "-q"]
    if argv:
        return subprocess.call([*pytest, *argv], cwd=ROOT)
    _check_halves()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tether-tests-") as tmp, contextlib.ExitStack() as logs:
        runs = []
        for i, half in enumerate(HALVES):
            log = logs.enter_context(Path(tmp, f"half{i}.log").open("wb"))
            # Each half its own basetemp, so pytest's tmp_path folders cannot collide.
            cmd = [*pytest, "--durations=15", f"--basetemp={tmp}/base{i}", *half]
            runs.append((half, log, subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)))
        status = 0
        for half, log, proc in runs:
            code = proc.wait()
            print(f"== pytest {' '.join(half)}: exit {code}", flush=True)
            sys.stdout.buffer.write(Path(log.name).read_bytes())
            sys.stdout.flush()
            status = status or code
        print(f"== both halves done in {time.monotonic() - began:.0f} s: exit {status}")
        return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))

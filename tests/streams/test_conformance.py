"""The official Durable Streams conformance suite, run against a real ``tether serve``.

The suite (npm ``@durable-streams/server-conformance-tests``, pinned in
conformance/package-lock.json) is the judge of protocol compliance, so this test
starts tether with the sqlite store, runs the suite under vitest with the reserved
subscription APIs enabled, and fails on any failing or skipped test. Then it checks
that SIGTERM stops the server promptly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.server import ServerFactory

pytestmark = pytest.mark.conformance

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE_DIR = REPO_ROOT / "conformance"
SUITE_PACKAGE = CONFORMANCE_DIR / "node_modules" / "@durable-streams" / "server-conformance-tests"

VITEST_TIMEOUT = 900.0  # the whole suite takes ~1-2 min; this only catches a hang
SIGTERM_TIMEOUT = 5.0

# The suite gates the reserved subscription APIs behind runConformanceTests({subscriptions:
# true}); tether implements them, so the suite runs them too and nothing may be skipped.
# Their webhook receiver listens on 127.0.0.1: the server allows loopback webhooks here.
EXPECTED_SKIPS: frozenset[str] = frozenset()
SERVER_ARGS = ("--webhook-allow-loopback",)


@dataclass(frozen=True)
class SuiteOutcome:
    """One test from vitest's JSON report."""

    name: str  # "Describe > nested > title"
    status: str  # passed, failed, skipped, pending, todo
    first_error: str
    duration_ms: float


def _find_tools() -> tuple[str, str]:
    """Locate node and npx; skip locally if absent, but fail in CI where they are required."""
    node, npx = shutil.which("node"), shutil.which("npx")
    if node and npx:
        return node, npx
    missing = ", ".join(name for name, path in (("node", node), ("npx", npx)) if not path)
    reason = f"conformance suite needs Node.js and npm; not found on PATH: {missing}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def _first_error_line(messages: list[str], duration_ms: float) -> str:
    """The line a developer needs first: the assertion or error, not the stack.

    vitest's JSON reporter loses the message of timed-out tests (it reports a bare
    "STACK_TRACE_ERROR" stack), so say what most likely happened instead.
    """
    for message in messages:
        for line in message.splitlines():
            line = line.strip()
            if not line or line.startswith("at "):
                continue
            if line == "Error: STACK_TRACE_ERROR":
                return (
                    f"no message after {duration_ms / 1000:.1f}s: most likely a vitest "
                    "timeout (see the readable vitest output in captured stdout)"
                )
            return line
    return "(no error message)"


def _outcomes(report: dict[str, Any]) -> tuple[list[SuiteOutcome], list[str]]:
    """Flatten vitest's JSON report into test outcomes plus file-level errors."""
    outcomes: list[SuiteOutcome] = []
    file_errors: list[str] = []
    for file_result in report.get("testResults", []):
        if file_result.get("status") == "failed" and file_result.get("message"):
            file_errors.append(f"{file_result.get('name')}: {file_result['message'].strip()}")
        for result in file_result.get("assertionResults", []):
            duration = float(result.get("duration") or 0.0)
            outcomes.append(
                SuiteOutcome(
                    name=" > ".join([*result.get("ancestorTitles", []), result["title"]]),
                    status=str(result.get("status")),
                    first_error=_first_error_line(result.get("failureMessages") or [], duration),
                    duration_ms=duration,
                )
            )
    return outcomes, file_errors


def _check_report(report: dict[str, Any]) -> list[str]:
    """Every way the report falls short of "all pass, only the expected skips"."""
    outcomes, file_errors = _outcomes(report)
    problems = [f"test file error: {error}" for error in file_errors]
    if not outcomes:
        problems.append("the suite reported no tests at all (did the test file load?)")
        return problems

    failed = [o for o in outcomes if o.status == "failed"]
    skipped = {o.name for o in outcomes if o.status not in ("passed", "failed")}
    passed = sum(o.status == "passed" for o in outcomes)

    if failed:
        lines = "\n".join(f"  - {o.name}\n      {o.first_error}" for o in failed)
        problems.append(f"{len(failed)} conformance test(s) failed:\n{lines}")
    if unexpected := sorted(skipped - EXPECTED_SKIPS):
        lines = "\n".join(f"  - {name}" for name in unexpected)
        problems.append(f"{len(unexpected)} test(s) skipped that must run:\n{lines}")
    if problems:
        problems.insert(
            0,
            f"conformance: {passed} passed, {len(failed)} failed, "
            f"{len(skipped)} skipped, {len(outcomes)} total",
        )
    return problems


def _run_vitest(npx: str, base_url: str, report_path: Path) -> int:
    """Run the suite once and return vitest's exit code.

    The readable reporter writes straight to our stdout: live under ``pytest -s``,
    otherwise captured by pytest and shown with the failure.
    """
    env = {
        **os.environ,
        "CONFORMANCE_BASE_URL": base_url,
        "CONFORMANCE_SUBSCRIPTIONS": "1",
        "NO_COLOR": "1",
    }
    env.pop("FORCE_COLOR", None)
    command = [
        npx,
        "--no",  # never download: the pinned vitest must come from conformance/node_modules
        "vitest",
        "run",
        "--reporter=default",
        "--reporter=json",
        f"--outputFile.json={report_path}",
    ]
    print(f"$ (cd {CONFORMANCE_DIR} && CONFORMANCE_BASE_URL={base_url} {' '.join(command)})")
    sys.stdout.flush()
    # Own session, so a hang is killed as a group: npx runs vitest as a grandchild.
    proc = subprocess.Popen(
        command, cwd=CONFORMANCE_DIR, env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        return proc.wait(VITEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def test_conformance_suite_passes_against_sqlite_store(
    tether_server: ServerFactory, tmp_path: Path
) -> None:
    """Every conformance test passes, subscriptions included, and SIGTERM is prompt."""
    run_conformance(tether_server, tmp_path, store="sqlite")


def run_conformance(tether_server: ServerFactory, tmp_path: Path, store: str) -> None:
    """Run the suite against ``tether serve --store STORE`` and assert the outcome.

    Shared with test_conformance_redis.py, which runs it against a Redis store.
    """
    _, npx = _find_tools()
    if not SUITE_PACKAGE.is_dir():
        pytest.fail(
            f"conformance suite not installed in {CONFORMANCE_DIR / 'node_modules'}: "
            f"run `make test`, or `npm ci` in {CONFORMANCE_DIR}"
        )

    server = tether_server(tmp_path / "data", store=store, extra_args=SERVER_ARGS)
    report_path = tmp_path / "vitest-report.json"
    try:
        vitest_code = _run_vitest(npx, server.base_url, report_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"vitest did not finish within {VITEST_TIMEOUT:.0f}s (output above)")

    problems: list[str] = []
    if server.process is not None and server.process.poll() is not None:
        problems.append(
            f"tether serve died during the suite (exit code {server.process.returncode})"
        )
    if report_path.is_file():
        problems += _check_report(json.loads(report_path.read_text()))
    else:
        problems.append(f"vitest wrote no JSON report (exit code {vitest_code}); see its output")
    if not problems and vitest_code != 0:
        problems.append(f"vitest exited {vitest_code} although its report is clean")

    if server.process is not None and server.process.poll() is None:
        code = server.terminate(SIGTERM_TIMEOUT)
        if code is None:
            problems.append(f"tether serve did not exit within {SIGTERM_TIMEOUT:.0f}s of SIGTERM")

    if problems:
        print(f"--- server output ({server.log_path}) ---\n{server.output()[-20_000:]}")
    assert not problems, "\n\n".join(problems)

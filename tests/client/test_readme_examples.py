"""The README's Python SDK examples run as written, against a real ``tether serve``.

The code is read from README.md's "The Python SDK" section, so the test and
the README cannot drift: every ``python runnable`` block there runs, as a
script in a child process, against a ``tether serve`` child with the demo
model (``$TETHER_URL`` pointing at it), and its output is checked. The one
plain ``python`` block (approvals) needs a server tool that asks for approval:
it runs against a server of such an app.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.server import TetherServer

README = Path(__file__).parents[2] / "README.md"

#: What each example prints, by a piece of code only it has.
OUTPUTS = {
    '"/count 5")': "1 2 3 4 5\n[('user', '/count 5'), ('assistant', '1 2 3 4 5')]\n",
    '"/count 5 100"': "1 2 3 4 5 [complete]\n",
    '"/count 1000 50"': "cancelled '1 2 3",
    "get_weather": "Tool get_weather returned: sunny in Paris\n",
    "AsyncTether": "1 2 3\ncomplete\n",
    "SessionNotFound": "session 'ses_nope' does not exist (or this key cannot see it)\n",
    "approve=": (
        "Tool delete_file returned: deleted /tmp/scratch.txt\n"
        "Tool delete_file failed: not approved: only /tmp\n"
    ),
}

#: The app the approvals example is served with: the README's delete_file, made real.
APPROVAL_APP = '''
import tether

app = tether.App()


@app.tool(approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"
'''


def sdk_examples() -> list[tuple[str, str]]:
    """(info string, code) of each Python block of the README's SDK section."""
    text = README.read_text()
    section = text[text.index("\n## The Python SDK\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^```(python[^\n]*)\n(.*?)^```$", section, re.S | re.M)


def expected(code: str) -> str:
    [key] = [key for key in OUTPUTS if key in code]
    return OUTPUTS[key]


def run_example(code: str, base_url: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_URL"] = base_url
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


EXAMPLES = sdk_examples()
RUNNABLE = [code for info, code in EXAMPLES if info == "python runnable"]


def test_the_section_shows_each_part_of_the_sdk() -> None:
    assert len(RUNNABLE) == 6 and len(EXAMPLES) == 7
    assert sorted(expected(code) for _, code in EXAMPLES) == sorted(OUTPUTS.values())


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    base = tmp_path_factory.mktemp("readme-sdk")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    with TetherServer(base / "data", log_path=base / "log", env=env) as server:
        yield server


@pytest.mark.parametrize("code", RUNNABLE, ids=[expected(c).split("\n")[0] for c in RUNNABLE])
def test_a_runnable_example_runs_against_the_demo_model(
    code: str, demo_server: TetherServer, tmp_path: Path
) -> None:
    out = run_example(code, demo_server.base_url, tmp_path)
    assert out.startswith(expected(code))


def test_the_approvals_example_runs_against_an_app_with_an_approval_tool(tmp_path: Path) -> None:
    [code] = [code for info, code in EXAMPLES if info == "python"]
    (tmp_path / "approval_app.py").write_text(APPROVAL_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    with TetherServer(
        tmp_path / "data", log_path=tmp_path / "log", env=env, extra_args=["approval_app:app"]
    ) as server:
        assert run_example(code, server.base_url, tmp_path) == expected(code)

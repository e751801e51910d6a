"""Every code block marked runnable in README.md and docs/*.md runs, against a real server.

A fence whose info string is ``sh runnable`` runs under ``bash -e -o pipefail``
(a failing command fails the block, and ``curl`` fails on an HTTP error
status, as ``--fail-with-body``), ``python runnable`` under this
interpreter; each alone, in an empty directory, against one ``tether serve``
(the demo model) shared by the module. The docs say ``http://127.0.0.1:4437``
(or ``localhost:4437``): that address is rewritten to the test server's, and
``TETHER_URL`` is set to it, so the SDK's default reaches it too. Each block
must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.server import TetherServer

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>sh|python)[ \t]+runnable[ \t]*\n"
    r"(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$",
    re.M | re.S,
)
DOCS_ADDRESS = re.compile(r"\b(?:127\.0\.0\.1|localhost):4437\b")
#: Bash runs this before a block: an example whose request is refused has not run.
CURL_FAILS = 'curl() { command curl --fail-with-body "$@"; }\n'
#: Seconds one block may take: the demo model answers in milliseconds.
BLOCK_TIMEOUT = 60


@dataclass(frozen=True)
class Block:
    source: str
    line: int
    lang: str
    code: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}"


def runnable_blocks(text: str, source: str) -> list[Block]:
    """The runnable fences of one Markdown text, dedented, with the line each starts on."""
    return [
        Block(source, text.count("\n", 0, m.start()) + 1, m["lang"], textwrap.dedent(m["body"]))
        for m in FENCE.finditer(text)
    ]


def _all_blocks() -> list[Block]:
    return [
        block
        for path in SOURCES
        for block in runnable_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]


BLOCKS = _all_blocks()


def test_the_extractor_finds_only_marked_fences_indented_or_not() -> None:
    text = (
        "```sh\necho not marked\n```\n\n"
        "```sh runnable\necho one\n```\n\n"
        "- an item:\n\n  ```python runnable\n  print(2)\n  ```\n"
    )
    blocks = runnable_blocks(text, "x.md")
    assert [(b.line, b.lang, b.code) for b in blocks] == [
        (5, "sh", "echo one\n"),
        (11, "python", "print(2)\n"),
    ]


def test_the_readme_and_the_docs_mark_runnable_blocks() -> None:
    """Fails if the marks vanish: the README's and the docs' examples would go unchecked."""
    sources = {b.source for b in BLOCKS}
    assert "README.md" in sources, "no runnable block in README.md"
    assert any(s.startswith("docs/") for s in sources), "no runnable block in docs/"
    assert {b.lang for b in BLOCKS} == {"sh", "python"}


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_runnable_block_exits_0(block: Block, server: TetherServer, tmp_path: Path) -> None:
    address = f"{server.host}:{server.port}"
    code = DOCS_ADDRESS.sub(address, block.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_URL"] = server.base_url
    # `tether` and the venv's tools, as after activating the venv.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if block.lang == "sh":
        command = ["bash", "-e", "-o", "pipefail", "-c", CURL_FAILS + code]
    else:
        command = [sys.executable, "-c", code]
    run = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, (
        f"{block} exited {run.returncode}\n--- code\n{code}\n--- stdout\n{run.stdout[-3000:]}"
        f"\n--- stderr\n{run.stderr[-3000:]}"
    )

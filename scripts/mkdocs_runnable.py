"""MkDocs hook: ```` ```sh runnable ```` fences render as plain ```` ```sh ```` blocks.

The ``runnable`` word marks the examples tests/docs/test_runnable_blocks.py runs
against a real server; GitHub ignores it after the language, but
pymdownx.superfences takes it for an option it does not know and would leave
the whole block unrendered.
"""

from __future__ import annotations

import re
from typing import Any

RUNNABLE_FENCE = re.compile(
    r"^(?P<head>[ \t]*(?:`{3,}|~{3,})[ \t]*[\w+-]+)[ \t]+runnable[ \t]*$", re.M
)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return RUNNABLE_FENCE.sub(r"\g<head>", markdown)

"""Glob patterns over stream paths: ``*`` is one path segment, ``**`` zero or more.

A ``*`` may also stand inside a segment (``run-*``: any characters but ``/``);
``**`` must be a whole segment. A pattern is compiled once to a regular
expression, and its literal leading segments give the prefix under which the
store lists the streams it may match (the eager backfill).
"""

from __future__ import annotations

import re


class BadPattern(ValueError):
    """A pattern that is not a glob this server reads; the message says why."""


class Glob:
    """One compiled pattern."""

    __slots__ = ("_regex", "pattern", "prefix")

    def __init__(self, pattern: str) -> None:
        segments = pattern.split("/")
        if not pattern or any(not seg for seg in segments):
            raise BadPattern(f"pattern {pattern!r} has an empty path segment")
        for seg in segments:
            if "**" in seg and seg != "**":
                raise BadPattern(f"pattern {pattern!r}: '**' must be a whole path segment")
        self.pattern = pattern
        literal: list[str] = []
        for seg in segments:
            if "*" in seg:
                break
            literal.append(seg + "/")
        #: Every path the pattern matches starts with this.
        self.prefix = "".join(literal) if len(literal) < len(segments) else pattern
        self._regex = re.compile(_regex(segments))

    def match(self, name: str) -> bool:
        return self._regex.match(name) is not None


def _regex(segments: list[str]) -> str:
    out = ""
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            if not last:
                out += "(?:[^/]+/)*"
            elif out:
                out = out.removesuffix("/") + "(?:/[^/]+)*"
            else:
                out = "[^/]+(?:/[^/]+)*"
            continue
        if seg == "*":
            out += "[^/]+"
        else:
            out += "[^/]*".join(re.escape(part) for part in seg.split("*"))
        if not last:
            out += "/"
    return f"^{out}$"

"""Which subscriptions an append concerns: an in-memory index of patterns and links.

Asked on every append this process commits, so the common answer (no
subscription at all, or none for this path) must cost next to nothing: a
dictionary lookup for linked paths and one prefix test per pattern before any
regular expression runs. It is rebuilt from the store whenever a
subscription's configuration or links change (here or on another replica).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tether.subscriptions.patterns import Glob

if TYPE_CHECKING:
    from tether.subscriptions.state import Subscription

SESSIONS = "sessions/"
#: Other keys' private streams, never matched from the shared namespace.
PRIVATE = "~keys/"


def name_in(prefix: str, path: str) -> str | None:
    """The name a caller with namespace ``prefix`` gives store ``path``; None: not visible."""
    if path.startswith(SESSIONS):
        return path
    if prefix:
        return path[len(prefix) :] if path.startswith(prefix) else None
    return None if path.startswith(PRIVATE) else path


def starts_for(prefix: str, glob: Glob) -> tuple[str, ...]:
    """The store path prefixes under which ``glob`` (a caller's, in namespace ``prefix``)
    can match: the namespace's, and the sessions' (outside every namespace)."""
    starts: tuple[str, ...] = (prefix + glob.prefix,)
    if prefix and (glob.prefix.startswith(SESSIONS) or SESSIONS.startswith(glob.prefix)):
        starts += (glob.prefix if glob.prefix.startswith(SESSIONS) else SESSIONS,)
    return starts


@dataclass(frozen=True, slots=True)
class _Pattern:
    key: str
    prefix: str
    glob: Glob
    #: Store paths under which the pattern can match.
    starts: tuple[str, ...]


@dataclass(slots=True)
class Matcher:
    linked: dict[str, set[str]] = field(default_factory=dict)
    patterns: list[_Pattern] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.linked and not self.patterns

    @classmethod
    def build(cls, subs: list[Subscription]) -> Matcher:
        matcher = cls()
        for sub in subs:
            for path in sub.links:
                matcher.linked.setdefault(path, set()).add(sub.key)
            glob = sub.config.glob
            if glob is not None:
                starts = starts_for(sub.prefix, glob)
                matcher.patterns.append(_Pattern(sub.key, sub.prefix, glob, starts))
        return matcher

    def match(self, path: str) -> set[str]:
        """Keys of the subscriptions that link ``path`` or whose pattern matches it."""
        keys = set(self.linked.get(path, ()))
        for pattern in self.patterns:
            if pattern.key in keys or not path.startswith(pattern.starts):
                continue
            name = name_in(pattern.prefix, path)
            if name is not None and pattern.glob.match(name):
                keys.add(pattern.key)
        return keys

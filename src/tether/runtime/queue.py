"""A run waiting to start, as its session's driver queues it and the stream announces it.

The driver keeps its queue in memory and writes it to the session's stream
(``queue-update``) whenever it changes; another replica hands a run over as a
``submit`` event. Both carry a :class:`QueueItem` in its public form, so the
stream alone is enough to rebuild the queue when the driver changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tether.sessions import events as ev


@dataclass(slots=True)
class QueueItem:
    run_id: str
    kind: str  # "message" | "regenerate" | "continue"
    #: The user message to place (kind message), to answer again (regenerate),
    #: or the message the answer follows (continue).
    message_id: str
    parts: list[dict[str, Any]] = field(default_factory=list)
    parent_id: str | None = None
    #: The parent was chosen (None then means a root); else it is the leaf at run time.
    explicit_parent: bool = False
    edit_of: str | None = None
    #: The run this one retries (a run whose replica died mid-way).
    retry_of: str | None = None
    #: Tools declared with the message (kind message): names and definitions.
    tools: list[Any] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "kind": self.kind,
            "message_id": self.message_id,
        }
        if self.kind == "message":
            out["parts"] = self.parts
            if self.explicit_parent:
                out["parent_id"] = self.parent_id
            if self.edit_of is not None:
                out["edit_of"] = self.edit_of
            if self.tools:
                out["tools"] = self.tools
        if self.retry_of is not None:
            out["retry_of"] = self.retry_of
        return out

    @classmethod
    def from_public(cls, d: dict[str, Any]) -> QueueItem:
        return cls(
            d["run_id"],
            d["kind"],
            d["message_id"],
            d.get("parts", []),
            d.get("parent_id"),
            explicit_parent="parent_id" in d,
            edit_of=d.get("edit_of"),
            retry_of=d.get("retry_of"),
            tools=d.get("tools") or [],
        )


def queue_update(items: Iterable[QueueItem]) -> ev.Event:
    """The ``queue-update`` event that announces ``items`` as the session's queue."""
    return ev.event(ev.QUEUE_UPDATE, queue=[q.public() for q in items])

"""Default values that mean "not given", with a repr that reads well in ``help()``."""

from __future__ import annotations

from typing import Any, Final


class Sentinel:
    """A unique marker whose repr is its name (``help()`` shows ``= DEFAULT``, not an address)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __copy__(self) -> Sentinel:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Sentinel:
        return self


#: "Use the client's setting" for a timeout argument (None disables it).
DEFAULT: Final[Any] = Sentinel("DEFAULT")
#: "No JSON body given" (``json=None`` sends ``null``).
UNSET: Final[Any] = Sentinel("UNSET")

"""The Redis store's Lua scripts, read from the package's ``lua/`` files.

Every operation on streams is one script, so that Redis, which runs one script
at a time, takes each decision atomically for every replica (see ``redis.py``).
The scripts live in ``lua/*.lua``, shipped as package data, so that they read
(and diff, and lint) as Lua rather than as Python strings:

- the stream scripts (create, append, read, head, delete, sweep) each run after
  ``prelude.lua``, which holds the state and helpers they share; their
  arguments are the key prefix and the time, then their own;
- the keyed scripts (leases, indexes) take their keys as KEYS and stand alone.

``@NAME@`` placeholders in the files are filled in when the scripts are loaded.
"""

from __future__ import annotations

from importlib import resources

#: A stream created without a content type gets this one.
DEFAULT_CONTENT_TYPE = "application/octet-stream"

#: Scripts that run after ``prelude.lua`` and take (prefix, time, own arguments...).
STREAM_SCRIPTS = ("create", "append", "read", "head", "delete", "sweep")
#: Scripts that take their keys as KEYS and need no prelude.
KEYED_SCRIPTS = ("lease_acquire", "lease_renew", "lease_release", "index_put", "index_remove")


def lua_file(name: str) -> str:
    """The text of ``lua/<name>.lua``, as shipped in the package."""
    return (resources.files("tether.store") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def script_texts(inline_max: int) -> dict[str, str]:
    """Every script's full text, by name, ready to register with Redis.

    ``inline_max``: appends up to this many bytes travel inside their notification.
    """
    prelude = lua_file("prelude").replace("@INLINE_MAX@", str(inline_max))
    texts = {}
    for name in STREAM_SCRIPTS:
        body = lua_file(name).replace("@DEFAULT_CT@", DEFAULT_CONTENT_TYPE)
        texts[name] = prelude + body
    for name in KEYED_SCRIPTS:
        texts[name] = lua_file(name)
    return texts

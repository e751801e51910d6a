"""The Redis store's Lua scripts and the Python that reads their answers agree.

The status codes are defined once, by ``redis_scripts.Status``: every status a
Lua file answers with is a member (the files define none of their own), every
member is answered somewhere, and ``raise_for`` turns each non-OK one into the
error ``local.py`` raises in the same case. (That Redis itself sees the same
values is checked against a real Redis in test_redis.py.) No Redis needed here.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from tether.store import errors
from tether.store.base import AppendRequest
from tether.store.redis_scripts import (
    KEYED_SCRIPTS,
    STREAM_SCRIPTS,
    Status,
    lua_file,
    lua_status_constants,
    raise_for,
    script_texts,
    stream_library,
)

LUA_FILES = ("prelude", *STREAM_SCRIPTS, *KEYED_SCRIPTS)
#: Upper-case names Redis gives every script.
REDIS_GLOBALS = {"ARGV", "KEYS"}


def lua_code(name: str) -> str:
    """A Lua file without its comments and string literals (names only)."""
    text = lua_file(name)
    text = re.sub(r"--[^\n]*", "", text)
    return re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "''", text)


def upper_names(code: str) -> set[str]:
    return set(re.findall(r"\b[A-Z][A-Z0-9_]*\b", code))


def defined_names(code: str) -> set[str]:
    """Upper-case names a ``local A, B = ...`` (or ``local A, B``) statement defines."""
    out: set[str] = set()
    for names in re.findall(r"^\s*local\s+([A-Za-z_][\w, ]*?)\s*(?:=|$)", code, re.M):
        out |= {n.strip() for n in names.split(",") if n.strip().isupper()}
    return out


def test_the_lua_directory_holds_exactly_the_scripts_the_store_loads() -> None:
    shipped = {
        entry.name
        for entry in (resources.files("tether.store") / "lua").iterdir()
        if entry.name.endswith(".lua")
    }
    assert shipped == {f"{name}.lua" for name in LUA_FILES}


def test_every_status_the_lua_files_use_is_a_status_member_and_none_is_redefined() -> None:
    own = set().union(*(defined_names(lua_code(name)) for name in LUA_FILES))
    used = set().union(*(upper_names(lua_code(name)) for name in LUA_FILES))
    assert own.isdisjoint(Status.__members__), "a Lua file defines a status of its own"
    assert used - own - REDIS_GLOBALS <= set(Status.__members__)


def test_every_status_is_answered_by_some_script() -> None:
    used = set().union(*(upper_names(lua_code(name)) for name in LUA_FILES))
    assert set(Status.__members__) <= used


def test_the_lua_status_constants_are_the_enums_names_and_values() -> None:
    line = lua_status_constants()
    names, values = line.removeprefix("local ").split(" = ")
    assert dict(zip(names.split(", "), map(int, values.split(", ")), strict=True)) == {
        s.name: s.value for s in Status
    }


def test_the_stream_library_is_the_statuses_the_prelude_then_one_function_per_script() -> None:
    lib = stream_library(inline_max=1234)
    header, code = lib.code.split("\n", 1)
    assert header == f"#!lua name={lib.name}"
    assert code.startswith(lua_status_constants() + "-- The start of the library")
    assert "local INLINE_MAX = 1234\n" in code
    registered = re.findall(r"redis\.register_function\('(\w+)', function\(KEYS, ARGV\)", code)
    assert registered == [lib.function(name) for name in STREAM_SCRIPTS]
    assert script_texts() == {name: lua_file(name) for name in KEYED_SCRIPTS}
    texts = [lib.code, *script_texts().values()]
    code_only = [re.sub(r"--[^\n]*", "", text) for text in texts]
    assert not any(re.search(r"@[A-Z_]+@", text) for text in code_only), "a placeholder is left"


def test_the_library_is_named_after_its_code() -> None:
    assert stream_library(1234).name == stream_library(1234).name
    assert stream_library(1234).name != stream_library(4321).name


APPEND = AppendRequest([b"x"], content_type="text/plain", seq="b")


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        ([Status.NOT_FOUND, b"s"], errors.StreamNotFound, "stream not found: s"),
        ([Status.GONE, b"s"], errors.StreamGone, "stream was deleted: s"),
        ([Status.CONFLICT, b"clash"], errors.StreamConflict, "clash"),
        ([Status.BAD_REQUEST, b"no"], errors.BadRequest, "no"),
        ([Status.STALE_EPOCH, b"3"], errors.StaleEpoch, "current epoch is 3"),
        ([Status.SEQ_GAP, b"4", b"6"], errors.SequenceGap, "expected 4, received 6"),
        ([Status.CLOSED, b"9"], errors.StreamClosed, "stream is closed: p"),
        ([Status.LEASE_LOST, b"run:1"], errors.LeaseLost, "lease run:1 is not held"),
        (
            [Status.CT_MISMATCH, b"application/json"],
            errors.ContentTypeMismatch,
            "content type 'text/plain' does not match the stream's 'application/json'",
        ),
        (
            [Status.SEQ_CONFLICT, b"c"],
            errors.SeqConflict,
            "Stream-Seq 'b' is not greater than the last one, 'c'",
        ),
    ],
)
def test_raise_for_raises_what_the_local_store_raises(
    reply: list[object], error: type[errors.StoreError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        raise_for(reply, "p", APPEND)


def test_every_status_but_ok_has_an_error() -> None:
    for status in Status:
        if status is Status.OK:
            continue
        with pytest.raises(errors.StoreError):
            raise_for([status, b"1", b"2"], "p", APPEND)


def test_an_answer_no_status_explains_is_a_bug_not_a_client_error() -> None:
    with pytest.raises(RuntimeError, match="unexpected answer"):
        raise_for([99, b"?"], "p")
    with pytest.raises(RuntimeError, match="unexpected answer"):
        raise_for([Status.CT_MISMATCH, b"text/plain"], "p")  # only an append meets it

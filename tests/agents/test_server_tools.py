"""``@app.tool``: the parameters' JSON Schema from the signature, arguments checked by pydantic."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic
import pytest

import tether
from tether.agents.server_tools import FunctionTool, InvalidArguments


class Place(pydantic.BaseModel):
    city: str
    country: str = "NO"


def forecast(
    place: Place,
    days: Annotated[int, pydantic.Field(ge=1, le=7, description="How many days")] = 1,
    unit: Literal["C", "F"] = "C",
    hourly: bool = False,
    note: str | None = None,
) -> list[float]:
    """The forecast for a place.

    One number a day.
    """
    return [1.5] * days


def test_the_schema_comes_from_the_signature_and_the_description_from_the_docstring() -> None:
    tool = FunctionTool(forecast)
    assert tool.spec.name == "forecast"
    assert tool.spec.description == "The forecast for a place.\n\nOne number a day."
    assert tool.spec.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "place": {"$ref": "#/$defs/Place"},
            "days": {
                "type": "integer", "minimum": 1, "maximum": 7, "default": 1,
                "description": "How many days",
            },
            "unit": {"enum": ["C", "F"], "type": "string", "default": "C"},
            "hourly": {"type": "boolean", "default": False},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["place"],
        "$defs": {
            "Place": {
                "type": "object",
                "title": "Place",
                "properties": {
                    "city": {"title": "City", "type": "string"},
                    "country": {"title": "Country", "type": "string", "default": "NO"},
                },
                "required": ["city"],
            }
        },
    }  # fmt: skip
    assert tool.approval is False


def test_a_function_without_hints_or_parameters_has_an_open_object_schema() -> None:
    def ping():  # type: ignore[no-untyped-def]
        return "pong"

    def anything(x):  # type: ignore[no-untyped-def]
        return x

    assert FunctionTool(ping).spec.parameters == {
        "type": "object", "properties": {}, "additionalProperties": False
    }  # fmt: skip
    assert FunctionTool(anything).spec.parameters["properties"] == {"x": {}}


async def test_arguments_are_validated_and_coerced_before_the_call() -> None:
    got: list[Any] = []

    def record(place: Place, days: int = 1) -> str:
        got.append((place, days))
        return "ok"

    tool = FunctionTool(record)
    assert await tool({"place": {"city": "Oslo"}, "days": "3"}) == "ok"
    assert got == [(Place(city="Oslo"), 3)]


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({}, "place: Field required"),
        ({"place": {"city": "Oslo"}, "days": 9}, "days: Input should be less than or equal to 7"),
        ({"place": {}}, "place.city: Field required"),
        ({"place": {"city": "Oslo"}, "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
async def test_invalid_arguments_are_an_error_that_says_what_is_wrong(
    arguments: dict[str, Any], says: str
) -> None:
    called = []

    def spy(place: Place, days: Annotated[int, pydantic.Field(ge=1, le=7)] = 1) -> None:
        called.append(place)

    tool = FunctionTool(spy)
    with pytest.raises(InvalidArguments) as caught:
        await tool(arguments)
    assert says in str(caught.value)
    assert "https://" not in str(caught.value)  # no pydantic help links for the model
    assert called == []


async def test_a_sync_tool_runs_in_a_worker_thread_and_an_async_one_on_the_loop() -> None:
    def sync_tool() -> bool:
        return threading.current_thread() is threading.main_thread()

    async def async_tool() -> bool:
        return threading.current_thread() is threading.main_thread()

    assert await FunctionTool(sync_tool)({}) is False
    assert await FunctionTool(async_tool)({}) is True


async def test_results_are_made_json() -> None:
    @dataclass
    class Reading:
        value: float

    def read() -> dict[str, Any]:
        return {"place": Place(city="Oslo"), "readings": (Reading(1.5),), "tags": {"a"}}

    assert await FunctionTool(read)({}) == {
        "place": {"city": "Oslo", "country": "NO"},
        "readings": [{"value": 1.5}],
        "tags": ["a"],
    }


def test_app_tool_registers_plain_and_configured_functions() -> None:
    app = tether.App()

    @app.tool
    def plain(x: int) -> int:
        return x

    @app.tool(name="careful-one", description="Asks first.", approval=True)
    async def careful(y: str) -> str:
        return y

    assert plain(2) == 2  # the decorator gives the function back
    assert [(t.spec.name, t.spec.description, t.approval) for t in app.tools] == [
        ("plain", "", False),
        ("careful-one", "Asks first.", True),
    ]
    with pytest.raises(ValueError, match="registered twice"):
        app.tool(plain)


@pytest.mark.parametrize(
    ("fn", "name", "says"),
    [
        (lambda *args: None, None, "cannot be given by name"),
        (lambda **kwargs: None, None, "cannot be given by name"),
        (lambda x: x, "calc.add", "tool name 'calc.add'"),
        (lambda x: x, "x" * 65, "letters, digits"),
    ],
)
def test_tools_that_cannot_be_offered_are_refused_at_registration(
    fn: Any, name: str | None, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        FunctionTool(fn, name=name or "f")


def test_an_agents_default_tools_must_exist() -> None:
    app = tether.App()

    @app.tool
    def add(a: int, b: int) -> int:
        return a + b

    @app.agent("ok", tools=["add", "calc.mul"])
    async def ok(ctx: Any) -> None:
        pass

    app.check_tools(mcp_servers={"calc"})
    with pytest.raises(ValueError, match=r"agent 'ok': no tool 'calc\.mul'"):
        app.check_tools(mcp_servers=set())
    with pytest.raises(ValueError, match="list of tool names"):
        app.agent("bad", tools="add")

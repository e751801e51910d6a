"""Python functions as server tools: ``@app.tool`` and ``@app.tool(approval=True)``.

The model is offered a JSON Schema of the function's parameters, derived by
pydantic from the signature and its type hints, and the function's docstring
as the description. A call's arguments are validated by the same model before
the function runs, so a model that sends bad arguments gets an error it can
read and correct (:class:`InvalidArguments`), not a crashed run. A sync
function runs in a worker thread, so a slow one never stalls the server.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

import pydantic
import pydantic_core

from tether.agents.tools import CLIENT_TOOL_NAME
from tether.providers.base import ToolSpec

ToolFn = Callable[..., Any]


class InvalidArguments(ValueError):
    """A call's arguments do not fit the tool's parameters (the model is told which)."""


class FunctionTool:
    """A Python function the server runs when the model calls it (a ``ServerTool``)."""

    def __init__(
        self,
        fn: ToolFn,
        *,
        name: str | None = None,
        description: str | None = None,
        approval: bool = False,
    ) -> None:
        name = name or fn.__name__
        if not CLIENT_TOOL_NAME.match(name):
            raise ValueError(f"tool name {name!r}: use 1 to 64 letters, digits, '_' or '-'")
        self.fn = fn
        self.approval = approval
        self._arguments = arguments_model(fn, name)
        self._is_async = inspect.iscoroutinefunction(fn)
        doc = description if description is not None else inspect.getdoc(fn) or ""
        self.spec = ToolSpec(name, doc, parameters_schema(self._arguments))

    async def __call__(self, arguments: dict[str, Any]) -> Any:
        try:
            checked = self._arguments.model_validate(arguments)
        except pydantic.ValidationError as err:
            raise InvalidArguments(_explain(err)) from None
        kwargs = {field: getattr(checked, field) for field in type(checked).model_fields}
        if self._is_async:
            result = await self.fn(**kwargs)
        else:
            result = await asyncio.to_thread(self.fn, **kwargs)
        # What the session records (and the model reads back) is JSON.
        return pydantic_core.to_jsonable_python(result, serialize_unknown=True)

    def __repr__(self) -> str:
        return f"FunctionTool({self.spec.name!r}, approval={self.approval})"


def arguments_model(fn: ToolFn, name: str) -> type[pydantic.BaseModel]:
    """A pydantic model with one field per parameter of ``fn`` (hint and default kept)."""
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ValueError(f"tool {name!r}: parameter {param.name!r} cannot be given by name")
        hint = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hint, default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    return pydantic.create_model(f"{name}_arguments", __config__=config, **fields)


def parameters_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as a tool's parameters, without pydantic's generated titles."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def _explain(err: pydantic.ValidationError) -> str:
    """``city: Field required; days: Input should be a valid integer`` (no links, no input)."""
    problems = []
    for e in err.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in e["loc"]) or "arguments"
        problems.append(f"{where}: {e['msg']}")
    return "invalid arguments: " + "; ".join(problems)

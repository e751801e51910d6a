"""JSON bodies of the FastAPI routes, checked within bounds before FastAPI parses them.

FastAPI parses a body with the standard library, which accepts what tether's
events cannot carry (integers past 64 bits, lone surrogates, nesting deep
enough to exhaust the stack) and has no bound on the work a body causes. So
each route's body is first checked with ``streams.json_body`` (the limits are
``app.state.json_limits``); a refusal is a 4xx and the route never runs.

The bodies of tether's own routes (:class:`StrictBody`) refuse a field they do
not know, by name: a typo (``modle``) silently dropped would do the request
without what was meant. The fronts that speak other APIs (OpenAI's,
Anthropic's, the AI SDK's) keep what their clients add, so they do not use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from tether.runtime.runner import InvalidInput
from tether.streams import json_body
from tether.streams.json_body import JsonLimits

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_UNKNOWN_FIELD = "unknown_field"


class StrictBody(BaseModel):
    """A JSON body of tether's own API: an unknown field is a 400 that names it."""

    model_config = ConfigDict(extra="forbid")  # also ``additionalProperties: false`` in OpenAPI

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                message = _unknown(unknown, list(cls.model_fields))
                raise PydanticCustomError(_UNKNOWN_FIELD, "{message}", {"message": message})
        return data


def _unknown(names: list[str], known: list[str]) -> str:
    guess = difflib.get_close_matches(names[0], known, n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    what = "unknown field" + ("s " if len(names) > 1 else " ") + ", ".join(map(repr, names))
    return f"{what} ({hint}the fields are: {', '.join(known)})"


def _fields(model: Any) -> str:
    """A body model's fields, the optional ones marked ``?`` (as the README writes them)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    names = [n + ("" if f.is_required() else "?") for n, f in model.model_fields.items()]
    return f": {{{', '.join(names)}}}"


class CheckedJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body_model = self.body_field.field_info.annotation if self.body_field else None

        async def route(request: Request) -> Response:
            if request.method in _WITH_BODY:
                body = await request.body()  # kept by the request: FastAPI reads it again
                if body:
                    limits: JsonLimits = request.app.state.json_limits
                    json_body.check_value(json_body.parse(body, limits), limits)
            try:
                return await handler(request)
            except RequestValidationError as err:
                raise _clearer(err, body_model) from None

        return route


def _where(loc: tuple[int | str, ...]) -> str:
    """``content[0]`` for ``("body", "content", "list[...]", 0, "text")``.

    pydantic names the union member it tried (``list[...]``) and a tagged
    union's tag (``text``, after the index): neither is in the body.
    """
    steps = [x for x in loc[1:] if isinstance(x, int) or x.isidentifier()]
    if len(steps) >= 2 and isinstance(steps[-2], int) and isinstance(steps[-1], str):
        steps.pop()
    path = ""
    for step in steps:
        path += f"[{step}]" if isinstance(step, int) else f".{step}" if path else step
    return path


def _clearer(err: RequestValidationError, body_model: Any) -> Exception:
    """A 400 that says what to send for an unknown field or a missing body; else ``err``."""
    for problem in err.errors():
        if problem["type"] == _UNKNOWN_FIELD:
            where = _where(problem["loc"])
            return InvalidInput(f"{where}: {problem['msg']}" if where else problem["msg"])
        if problem["type"] == "missing" and tuple(problem["loc"]) == ("body",):
            return InvalidInput(f"this request needs a JSON body{_fields(body_model)}")
    return err

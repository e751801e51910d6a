"""What a follow-up (``previous_response_id``) may add to a conversation: pure checks.

The follow-up's input goes after the previous response's answer (its parent),
so the answer's function calls must all be answered by then: by the
follow-up's ``function_call_output`` items or, on a branch, by an earlier
follow-up with the same output (a call is answered once). The conversation's
system prompt is its first request's: a follow-up may repeat it or leave it
out, not change it.
"""

from __future__ import annotations

from tether.api.completion import Completion
from tether.api.openai.errors import OpenAIError, invalid
from tether.sessions import events as ev
from tether.sessions.fold import SessionFold


def check_follow_up(
    fold: SessionFold, run_id: str, previous: str, req: Completion, system: str | None
) -> None:
    """Check that ``req`` may continue response ``previous`` (run ``run_id``); set its
    ``parent_id`` to the response's answer and keep only the results still to write."""
    if fold.active_run is not None or fold.queue:
        raise OpenAIError(
            409,
            "A response of this conversation is still in progress; continue it once it has "
            "ended (or cancel it).",
            param="previous_response_id",
            code="response_in_progress",
        )
    answer = fold.answer_of(run_id)
    if answer is None:
        raise invalid(
            f"Previous response with id '{previous}' has no output to continue from.",
            "previous_response_id",
        )
    calls = {p.tool_call_id: p for p in answer.parts if p.kind == ev.TOOL_CALL}
    results = []
    for result in req.results:
        call_id = result["tool_call_id"]
        part = calls.get(call_id)
        if part is None:
            raise invalid(
                f"No tool call found for function call output with call_id {call_id}.", "input"
            )
        if part.answered:
            if part.error is None and part.result == result["output"]:
                continue  # answered so on another branch: the same answer
            raise invalid(
                f"The function call {call_id} already has another output (a call is answered "
                "once).",
                "input",
            )
        results.append(result)
    given = {r["tool_call_id"] for r in req.results}
    missing = [c for c, p in calls.items() if not p.answered and c not in given]
    if missing:
        raise invalid(f"No tool output found for function call {missing[0]}.", "input")
    if req.system is not None and req.system != system:
        raise invalid(
            "A follow-up keeps the conversation's instructions: send the same ones, or none.",
            "instructions",
        )
    if req.seed and fold.leaf != answer.id:
        raise invalid(
            "A follow-up of a response that was already continued (a new branch) may add "
            "function_call_output items and one user message, not earlier turns.",
            "input",
        )
    req.parent_id = answer.id
    req.results = results

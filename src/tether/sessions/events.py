"""The session event vocabulary: JSON objects appended to a session's stream.

Three families: inputs (clients to agent), outputs (agent to clients) and
session state. Every event has ``type``, a unique ``id`` (for dedup) and
``ts`` (seconds since the epoch); events of a run also carry ``run_id``.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, Final

Event = dict[str, Any]

# Inputs: clients -> agent.
USER_MESSAGE: Final = "user-message"
REGENERATE: Final = "regenerate"
CANCEL: Final = "cancel"
TOOL_RESULT: Final = "tool-result"
TOOL_APPROVAL: Final = "tool-approval"
#: A message, regenerate or continue handed to the replica that runs the
#: session's runs, by a replica that does not: {run_id, kind, message_id,
#: parts?, parent_id?, edit_of?, front?}. That replica queues it and answers
#: with a queue-update or the run's start.
SUBMIT: Final = "submit"
#: The answer to a client request (the client channel, tether.runtime.client_requests):
#: {request_id, result | error {code, message, data?}}; a run writes one itself, with
#: its run_id, when the request times out.
CLIENT_RESPONSE: Final = "client-response"

# Outputs: agent -> clients.
RUN_START: Final = "run-start"
MESSAGE_START: Final = "message-start"
PART_START: Final = "part-start"
PART_DELTA: Final = "part-delta"
PART_END: Final = "part-end"
MESSAGE_END: Final = "message-end"
RETRY: Final = "retry"
ERROR: Final = "error"
RUN_END: Final = "run-end"
#: The run sent the model its branch without the oldest messages, to fit the
#: model's context budget: {dropped (messages), tokens (estimated), budget}.
CONTEXT_TRIM: Final = "context-trim"
#: One completed step of a run, recorded so that the run can continue after
#: its process went away without doing the step again (tether.runtime.journal):
#: {op: model | call | step, key, value, parts, fingerprint?}. Clients ignore it.
JOURNAL: Final = "journal"
#: The run waits on a person and holds no task meanwhile:
#: {waiting: [{tool_call_id, for: result | approval, expires_at?}]}.
RUN_SUSPEND: Final = "run-suspend"
#: The same run goes on (after an answer, a restart, a failover) on {worker},
#: having replayed {replayed} steps of its journal.
RUN_RESUME: Final = "run-resume"
#: A JSON-RPC request for the session's connected clients (the client channel):
#: {request_id, method, params?, expires_at?}; a run's (with its run_id) or a
#: backend's through POST /v1/sessions/{id}/interact (without).
CLIENT_REQUEST: Final = "client-request"

# Session state.
STATUS: Final = "status"
QUEUE_UPDATE: Final = "queue-update"
#: A client chose the branch that ends at {message_id} as the session's current
#: branch (PATCH /v1/sessions/{id} with active_branch): every reader shows it,
#: and a message sent without a parent continues it.
ACTIVE_BRANCH: Final = "active-branch"

INPUTS: Final = frozenset(
    {USER_MESSAGE, REGENERATE, CANCEL, TOOL_RESULT, TOOL_APPROVAL, SUBMIT, CLIENT_RESPONSE}
)
OUTPUTS: Final = frozenset(
    {
        RUN_START,
        MESSAGE_START,
        PART_START,
        PART_DELTA,
        PART_END,
        MESSAGE_END,
        RETRY,
        ERROR,
        RUN_END,
        CONTEXT_TRIM,
        JOURNAL,
        RUN_SUSPEND,
        RUN_RESUME,
        CLIENT_REQUEST,
    }
)
STATE: Final = frozenset({STATUS, QUEUE_UPDATE, ACTIVE_BRANCH})

# Part kinds.
TEXT: Final = "text"
REASONING: Final = "reasoning"
TOOL_CALL: Final = "tool-call"
TOOL_RESULT_PART: Final = "tool-result"
SOURCE: Final = "source"
FILE: Final = "file"
#: An ACP agent's plan: its part-end's value is the entries ({content, priority, status}).
PLAN: Final = "plan"
PART_KINDS: Final = frozenset({TEXT, REASONING, TOOL_CALL, TOOL_RESULT_PART, SOURCE, FILE, PLAN})

# Why a run ended.
COMPLETE: Final = "complete"
CANCELLED: Final = "cancelled"
FAILED: Final = "error"
INTERRUPTED: Final = "interrupted"
END_REASONS: Final = frozenset({COMPLETE, CANCELLED, FAILED, INTERRUPTED})

# Session status values.
IDLE: Final = "idle"
RUNNING: Final = "running"
#: A run waits on a person: a tool result, an approval or a client request's answer.
PAUSED: Final = "paused"
#: No run is active and the last one failed (until the next one starts).
ERRORED: Final = "error"
STATUSES: Final = frozenset({IDLE, RUNNING, PAUSED, ERRORED})


def new_id(prefix: str) -> str:
    """A unique, roughly time-ordered id: ``prefix_`` + 12 hex of ms + 10 random hex."""
    return _id(prefix, time.time(), int.from_bytes(os.urandom(5)))


def _id(prefix: str, now: float, bits: int) -> str:
    return f"{prefix}_{int(now * 1000):012x}{bits:010x}"


#: Event ids only deduplicate, so they come from a generator seeded once by the
#: OS: ``os.urandom`` is a system call, and a run makes an event per token.
_event_bits = random.Random(os.urandom(16)).getrandbits


def event(kind: str, /, **fields: Any) -> Event:
    """A new event with its envelope filled in; ``None`` fields are dropped."""
    now = time.time()
    ev: Event = {
        "type": kind,
        "id": _id("ev", now, _event_bits(40)),
        "ts": round(now, 3),
    }
    for key, value in fields.items():
        if value is not None:
            ev[key] = value
    return ev

"""Wire codes are declared by the errors, and mapped to HTTP statuses in one place."""

from __future__ import annotations

import pytest

from tether.api.aisdk.chats import HistoryMismatch
from tether.api.auth import Unauthorized
from tether.api.errors import STATUS, code_of, run_status
from tether.api.openai.errors import run_error, store_error
from tether.providers.base import (
    ProviderError,
    UpstreamInvalidRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    classified,
)
from tether.runtime.runner import Conflict, InvalidInput
from tether.sessions.service import QuotaExceeded, SessionNotFound
from tether.store.errors import BackendUnavailable, InsufficientStorage


def test_provider_errors_keep_the_codes_runs_have_always_carried() -> None:
    """The codes were the class names; now declared, they survive a rename."""
    assert [c.code for c in (ProviderError, UpstreamInvalidRequest, UpstreamNotFound,
                             UpstreamRateLimited)] == [
        "ProviderError", "UpstreamInvalidRequest", "UpstreamNotFound", "UpstreamRateLimited",
    ]  # fmt: skip
    assert code_of(UpstreamNotFound("gone", transient=False)) == "UpstreamNotFound"


@pytest.mark.parametrize(
    ("exc", "code", "status"),
    [
        (SessionNotFound("ses_1"), "not_found", 404),
        (InvalidInput("bad"), "invalid_input", 400),
        (Conflict("busy"), "conflict", 409),
        (HistoryMismatch("unknown message"), "conflict", 409),
        (QuotaExceeded("full"), "quota_exceeded", 429),
        (Unauthorized("who?"), "unauthorized", 401),
        (BackendUnavailable("redis away"), "unavailable", 503),
        (InsufficientStorage("disk full"), "insufficient_storage", 507),
    ],
)
def test_each_error_of_the_session_api_has_a_code_and_a_status(
    exc: Exception, code: str, status: int
) -> None:
    assert code_of(exc) == code
    assert STATUS[code] == status


def test_an_error_without_a_code_is_a_bug_not_a_guess() -> None:
    with pytest.raises(LookupError):
        code_of(RuntimeError("no code"))


def test_a_runs_failure_is_answered_by_its_error_code() -> None:
    codes = ("UpstreamInvalidRequest", "UpstreamNotFound", "UpstreamRateLimited", "ProviderError")
    assert [run_status(c) for c in codes] == [400, 404, 429, 502]
    assert run_status("RuntimeError") == run_status(None) == 500
    assert run_status("invalid_input") == 500  # a request's codes are not a run's
    err = run_error("UpstreamRateLimited", "slow down")
    assert (err.status, err.body["type"], err.body["code"]) == (
        429, "rate_limit_error", "rate_limit_exceeded",
    )  # fmt: skip
    assert run_error("KeyError", "oops").body["code"] == "KeyError"


def test_the_gateway_answers_a_store_that_cannot_write_in_openai_shape() -> None:
    away, full = store_error(BackendUnavailable("away")), store_error(InsufficientStorage("full"))
    assert (away.status, away.body["code"]) == (503, "store_unavailable")
    assert (full.status, full.body["code"]) == (507, "insufficient_storage")


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, UpstreamInvalidRequest),
        (404, UpstreamNotFound),
        (413, UpstreamInvalidRequest),
        (422, UpstreamInvalidRequest),
        (429, UpstreamRateLimited),
        (500, ProviderError),
        (None, ProviderError),
    ],
)
def test_an_upstream_failure_is_classified_by_its_status(status: int | None, cls: type) -> None:
    err = classified(ProviderError("upstream said so", transient=True, status=status))
    assert type(err) is cls
    assert (str(err), err.transient, err.status) == ("upstream said so", True, status)

"""The runtime's errors carry the wire code the API answers with, on the class."""

from __future__ import annotations

from tether.providers.base import UpstreamRateLimited
from tether.runtime.errors import Conflict, InputRefused, InvalidInput, run_error_code
from tether.runtime.runner import Conflict as RunnerConflict
from tether.runtime.runner import InvalidInput as RunnerInvalidInput


def test_each_runtime_error_declares_its_wire_code() -> None:
    assert InvalidInput.code == "invalid_input"
    assert Conflict.code == "conflict"
    assert InvalidInput("x").code == "invalid_input"


def test_runtime_errors_share_a_root_and_stay_value_errors() -> None:
    for cls in (InvalidInput, Conflict):
        assert issubclass(cls, InputRefused)
        assert issubclass(cls, ValueError)


def test_the_errors_are_still_importable_from_the_runner() -> None:
    assert RunnerConflict is Conflict
    assert RunnerInvalidInput is InvalidInput


def test_a_failed_runs_error_code_is_the_one_its_class_declares() -> None:
    class Renamed(Exception):
        code = "quota_spent"

    assert run_error_code(Renamed("x")) == "quota_spent"
    assert run_error_code(UpstreamRateLimited("x", transient=True)) == UpstreamRateLimited.code


def test_an_error_without_a_declared_code_is_named_by_its_class() -> None:
    class WithNumericCode(Exception):
        code = 7

    assert run_error_code(KeyError("x")) == "KeyError"
    assert run_error_code(WithNumericCode()) == "WithNumericCode"

"""The exception tree: whose fault it was, and what was expected versus found."""

from __future__ import annotations

import inspect

import pytest

from belep import errors
from belep.errors import BelepError, EnvironmentFault, HashMismatch, NotFound, ValidationError


def _classes() -> list[type[BelepError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BelepError) and obj is not BelepError
    ]


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_every_error_is_exactly_one_kind_of_fault(cls: type[BelepError]) -> None:
    assert issubclass(cls, ValidationError) != issubclass(cls, EnvironmentFault)


def test_validation_error_says_expected_found_and_where() -> None:
    error = HashMismatch(
        "block hash mismatch", expected=b"\x01" * 4, found=b"\x02" * 4, where="height 7"
    )
    assert error.expected == b"\x01" * 4
    assert error.found == b"\x02" * 4
    assert str(error) == "block hash mismatch at height 7 (expected 01010101, found 02020202)"


def test_long_byte_values_are_abbreviated() -> None:
    error = ValidationError("x", expected=b"\xaa" * 100, found=1)
    assert "(100 bytes)" in str(error)
    assert len(str(error)) < 140


def test_not_found_names_the_item() -> None:
    assert str(NotFound("block at height 3")) == "not found: block at height 3"

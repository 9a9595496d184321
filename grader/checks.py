"""What graded tests use to fail with plain words instead of a Python traceback."""

from __future__ import annotations

import pytest

points = pytest.mark.points  # @points(3) on a test: what it is worth, visible where it is written


class Mismatch(AssertionError):
    """A behaviour of the submission that is not what the lab asks for."""


def fail(message: str) -> None:
    """Fail the test with `message`, shown to the student as is."""
    raise Mismatch(message)


def expect(condition: bool, message: str) -> None:
    """Fail the test with `message` (shown to the student as is) unless `condition` holds."""
    if not condition:
        raise Mismatch(message)

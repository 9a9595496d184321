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


def delta(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """How a program's counters changed between two readings: the keys that moved, by how much."""
    changed = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    return {k: v for k, v in changed.items() if v}

"""Checks for a question set: one answer read from the submission's TOML file, judged in plain words.

A starter holds every key with the value "" (not answered yet); a student replaces it with a
number or a letter. A wrong answer costs that question's points and says how it is wrong,
never what the right answer is.
"""

from __future__ import annotations

import math

from grader.checks import expect, fail

NOT_ANSWERED = ""


def answer(answers: dict, key: str, question: int) -> object:
    """The answer to `question` under `key`, or a failure saying it is missing or still blank."""
    if key not in answers:
        fail(f"Question {question}: `{key}` is missing from your answers file; keep the starter's keys.")
    value = answers[key]
    if value == NOT_ANSWERED:
        fail(f"Question {question} is not answered yet: put your answer after `{key} =`.")
    return value


def expect_number(answers: dict, key: str, question: int, truth: float | tuple[float, float],
                  tolerance: float, hint: str) -> None:
    """A number within `tolerance` (a fraction) of `truth`, or of a range of true values (where
    the data allow two readings, as a CDF's vertical step at a whole microsecond does)."""
    value = answer(answers, key, question)
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(f"Question {question}: `{key}` must be a plain number, without quotes or a unit; "
             f"it is {value!r}.")
    low, high = truth if isinstance(truth, tuple) else (truth, truth)
    expect(math.isfinite(value) and low - tolerance * abs(low) <= value <= high + tolerance * abs(high),
           f"Question {question}: {value:g} is more than {tolerance:.0%} away from what the data "
           f"show. {hint}")


def expect_choice(answers: dict, key: str, question: int, truth: str, choices: tuple[str, ...],
                  why: str) -> None:
    """One of `choices` (case does not matter), and the right one; `why` explains a wrong one."""
    value = answer(answers, key, question)
    given = value.strip().lower() if isinstance(value, str) else None
    if given not in [choice.lower() for choice in choices]:
        fail(f"Question {question}: `{key}` must be one of {', '.join(map(repr, choices))}; "
             f"it is {value!r}.")
    expect(given == truth.lower(), f"Question {question}: {value!r} is not the answer. {why}")

"""Subtraction a - b with 0 <= b <= a <= 99, e.g. "What is 45 minus 23?" -> "22"."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template, wrong_number

MAX_OPERAND = 99


class Sub(Family):
    name: ClassVar[str] = "sub"
    templates: ClassVar[tuple[Template, ...]] = (
        Template("What is {a} minus {b}?"),
        Template("Subtract the second number from the first.", "{a} - {b}"),
        Template("Compute the difference between {a} and {b}."),
        Template("{a} - {b} ="),
        Template("Take {b} away from {a}."),
        Template("Calculate {a} - {b}."),
    )

    def sample(self, rng: random.Random) -> Problem:
        a = rng.randint(0, MAX_OPERAND)
        b = rng.randint(0, a)
        return Problem((a, b), {"a": str(a), "b": str(b)}, str(a - b))

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return wrong_number(rng, int(problem.answer))


FAMILY = Sub

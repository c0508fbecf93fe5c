"""Addition of two integers in [0, 99], e.g. "What is 23 plus 45?" -> "68"."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template, wrong_number

MAX_OPERAND = 99


class Add(Family):
    name: ClassVar[str] = "add"
    templates: ClassVar[tuple[Template, ...]] = (
        Template("What is {a} plus {b}?"),
        Template("Add the two numbers.", "{a} + {b}"),
        Template("Compute the sum of {a} and {b}."),
        Template("{a} + {b} ="),
        Template("Find the total of these numbers.", "{a} and {b}"),
        Template("Calculate {a} + {b}."),
    )

    def sample(self, rng: random.Random) -> Problem:
        a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
        return Problem((a, b), {"a": str(a), "b": str(b)}, str(a + b))

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return wrong_number(rng, int(problem.answer))


FAMILY = Add

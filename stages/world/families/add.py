"""Addition of two integers in [0, 14], e.g. "What is 13 plus 5?" -> "18"."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template, wrong_number

MAX_OPERAND = 14


class Add(Family):
    name: ClassVar[str] = "add"
    closed: ClassVar[bool] = True
    templates: ClassVar[tuple[Template, ...]] = (
        Template("What is {a} plus {b}?"),
        Template("Add the two numbers.", "{a} + {b}"),
        Template("Compute the sum of {a} and {b}."),
        Template("{a} + {b} ="),
        Template("Find the total of these numbers.", "{a} and {b}"),
        Template("Calculate {a} + {b}."),
    )

    def problems(self) -> list[Problem]:
        r = range((MAX_OPERAND + 1) * self.cfg.scale)
        return [
            Problem((a, b), {"a": str(a), "b": str(b)}, str(a + b))
            for a in r
            for b in r
        ]

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return wrong_number(rng, int(problem.answer))


FAMILY = Add

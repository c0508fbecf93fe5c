"""Subtraction a - b with 0 <= b <= a <= 14, e.g. "What is 12 minus 3?" -> "9"."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template, wrong_number

MAX_OPERAND = 14


class Sub(Family):
    name: ClassVar[str] = "sub"
    closed: ClassVar[bool] = True
    templates: ClassVar[tuple[Template, ...]] = (
        Template("What is {a} minus {b}?"),
        Template("Subtract the second number from the first.", "{a} - {b}"),
        Template("Compute the difference between {a} and {b}."),
        Template("{a} - {b} ="),
        Template("Take {b} away from {a}."),
        Template("Calculate {a} - {b}."),
    )

    def problems(self) -> list[Problem]:
        return [
            Problem((a, b), {"a": str(a), "b": str(b)}, str(a - b))
            for a in range((MAX_OPERAND + 1) * self.cfg.scale)
            for b in range(a + 1)
        ]

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return wrong_number(rng, int(problem.answer))


FAMILY = Sub

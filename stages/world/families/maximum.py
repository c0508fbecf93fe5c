"""Largest of 3-5 integers in [0, 99], e.g. "Which is largest: 12 85 40?" -> "85"."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template

MAX_VALUE = 99


class Maximum(Family):
    name: ClassVar[str] = "maximum"
    templates: ClassVar[tuple[Template, ...]] = (
        Template("Which number is the largest?", "{xs}"),
        Template("What is the maximum of {xs}?"),
        Template("Find the biggest number in {xs}."),
        Template("Pick the greatest value.", "{xs}"),
        Template("Which is largest: {xs}?"),
        Template("Give the highest number among {xs}."),
    )

    def sample(self, rng: random.Random) -> Problem:
        xs = tuple(rng.randint(0, MAX_VALUE) for _ in range(rng.randint(3, 5)))
        return Problem(xs, {"xs": " ".join(map(str, xs))}, str(max(xs)))

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        others = [x for x in problem.fields["xs"].split() if x != problem.answer]
        return rng.choice(others) if others else str(int(problem.answer) + 1)


FAMILY = Maximum

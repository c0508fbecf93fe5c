"""Largest of three digits, e.g. "Which is largest: 3 8 5?" -> "8"."""

from __future__ import annotations

import itertools
import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template


class Maximum(Family):
    name: ClassVar[str] = "maximum"
    closed: ClassVar[bool] = True
    templates: ClassVar[tuple[Template, ...]] = (
        Template("Which number is the largest?", "{xs}"),
        Template("What is the maximum of {xs}?"),
        Template("Find the biggest number in {xs}."),
        Template("Pick the greatest value.", "{xs}"),
        Template("Which is largest: {xs}?"),
        Template("Give the highest number among {xs}."),
    )

    def problems(self) -> list[Problem]:
        return [
            Problem(xs, {"xs": " ".join(map(str, xs))}, str(max(xs)))
            for xs in itertools.product(range(10 * self.cfg.scale), repeat=3)
        ]

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return rng.choice([str(d) for d in range(10) if str(d) != problem.answer])


FAMILY = Maximum
